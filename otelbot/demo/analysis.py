"""The demo report's numbers, computed from what arrived on the wire (spans, metric points,
log records). The problems it lists are the findings the bot's detectors and the agent sent
(``otelbot.bot.*`` and ``otelbot.postgresql.*`` log records); nothing here detects a
problem itself or knows which handler has which.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from otelbot import semconv
from otelbot.testing.fake_bot_api import Call
from otelbot.testing.otlp_receiver import ReceivedLog, ReceivedPoint, ReceivedSpan
from otelbot.testing.scan import token_leaks

DEMO_SCHEMA = "otelbot_demo"
UPDATE_PREFIX = semconv.SPAN_TELEGRAM_UPDATE + " "
API_PREFIX = semconv.SPAN_TELEGRAM_API + " "
MB = 1024 * 1024
WATERFALL_ROWS = 24


@dataclass
class Observed:
    """Everything the demo saw: the receiver's data, the fake API's log, the processes."""

    duration: float
    spans: list[ReceivedSpan]
    points: list[ReceivedPoint]
    logs: list[ReceivedLog]
    raw: bytes
    requests: int
    api_calls: list[Call]
    api_floods: int
    sent: dict[str, int]
    outputs: dict[str, str]
    token: str
    otlp_endpoint: str | None = None  # set: telemetry went there, not to the demo
    #: What the demo changed from the defaults: the bot's OTELBOT_* settings, the agent's keys.
    settings: dict[str, str] = field(default_factory=dict)
    agent_settings: dict[str, str] = field(default_factory=dict)


@dataclass
class HandlerLatency:
    handler: str
    updates: int
    errors: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass
class WaterfallRow:
    depth: int
    name: str
    offset: float
    duration: float
    detail: str


@dataclass
class ApiMethod:
    method: str
    calls: int
    errors: int
    flood_waits: int
    p95: float | None


@dataclass
class Statement:
    text: str
    calls: int
    total: float
    mean: float
    p95: float
    handlers: list[str]


@dataclass
class CacheLine:
    what: str
    hits: int
    misses: int

    @property
    def ratio(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


@dataclass
class Runtime:
    loop_lag_max: float | None
    loop_lag_source: str
    gc_collections: int
    gc_pause_total: float
    gc_pause_max: float | None
    tasks_max: float | None


@dataclass
class MemoryTrend:
    samples: list[tuple[float, float]]  # (seconds since the first sample, bytes)

    @property
    def first(self) -> float:
        return self.samples[0][1]

    @property
    def last(self) -> float:
        return self.samples[-1][1]

    @property
    def peak(self) -> float:
        return max(v for _, v in self.samples)

    @property
    def growth(self) -> float:
        return self.last - self.first

    @property
    def per_minute(self) -> float:
        span = self.samples[-1][0] - self.samples[0][0]
        return self.growth / span * 60 if span > 0 else 0.0


@dataclass
class FindingRow:
    """One finding as the report lists it: one row per (event, handler, object), the
    newest record's text, and how many records of it arrived."""

    event: str
    handler: str  # short name; "" for a finding not about a handler (most agent findings)
    object: str
    evidence: str
    suggestion: str
    code: str  # file:line of the bot's code, "" when the finding has none
    table: str
    records: int = 1

    @property
    def kind(self) -> str:
        return self.event.rsplit(".", 1)[-1]

    @property
    def source(self) -> str:
        return self.event.split(".")[1] if self.event.count(".") >= 2 else "?"


@dataclass
class Gauge:
    """A gauge or up-down counter series: its newest value and the largest seen."""

    what: str
    last: float
    max: float


@dataclass
class Connections:
    pool: list[Gauge] = field(default_factory=list)  # db.client.connection.* per pool, state
    server: list[Gauge] = field(default_factory=list)  # the agent's postgresql.* metrics


@dataclass
class TokenCheck:
    clean: bool
    bytes_scanned: int
    requests: int
    output_chars: int
    found_in: list[str]


@dataclass
class Report:
    duration: float
    updates_sent: int
    updates_traced: int
    spans: int
    points: int
    logs: int
    limited: str | None
    latency: list[HandlerLatency] = field(default_factory=list)
    slowest: list[WaterfallRow] = field(default_factory=list)
    slowest_handler: str = ""
    api: list[ApiMethod] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)
    cache: list[CacheLine] = field(default_factory=list)
    runtime: Runtime | None = None
    memory: MemoryTrend | None = None
    findings: list[FindingRow] = field(default_factory=list)
    other_findings: int = 0
    users: list[Gauge] = field(default_factory=list)
    connections: Connections = field(default_factory=Connections)
    settings: dict[str, str] = field(default_factory=dict)
    agent_settings: dict[str, str] = field(default_factory=dict)
    token: TokenCheck | None = None


# --------------------------------------------------------------------------- helpers


def short(handler: str) -> str:
    return handler.rsplit(".", 1)[-1] if handler else "?"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _latest(points: Iterable[ReceivedPoint]) -> list[ReceivedPoint]:
    """The newest point of every series (cumulative sums and histograms: the totals)."""
    newest: dict[tuple[Any, ...], ReceivedPoint] = {}
    for p in points:
        key = (
            tuple(sorted((k, str(v)) for k, v in p.attributes.items())),
            tuple(sorted((k, str(v)) for k, v in p.resource.items())),
        )
        if key not in newest or p.time_ns >= newest[key].time_ns:
            newest[key] = p
    return list(newest.values())


def _is_sql(span: ReceivedSpan) -> bool:
    return span.attributes.get(semconv.DB_SYSTEM_NAME) == semconv.DB_SYSTEM_POSTGRESQL


class Traces:
    """Spans grouped into update traces: root ``telegram.update`` span plus descendants."""

    def __init__(self, spans: list[ReceivedSpan]) -> None:
        by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for s in spans:
            by_trace[s.trace_id].append(s)
        self.roots: list[ReceivedSpan] = []
        self.members: dict[str, list[ReceivedSpan]] = {}
        for trace_id, members in by_trace.items():
            roots = [s for s in members if s.name.startswith(UPDATE_PREFIX)]
            if not roots:
                continue
            root = roots[0]
            self.roots.append(root)
            self.members[trace_id] = sorted(
                (s for s in members if s is not root), key=lambda s: s.start_ns
            )

    def handler(self, root: ReceivedSpan) -> str:
        return short(str(root.attributes.get(semconv.TELEGRAM_HANDLER, "")))

    def children(self, root: ReceivedSpan) -> list[ReceivedSpan]:
        return self.members.get(root.trace_id, [])

    def by_handler(self) -> dict[str, list[ReceivedSpan]]:
        out: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for root in self.roots:
            out[self.handler(root)].append(root)
        return out


# --------------------------------------------------------------------------- sections


def _latency(traces: Traces) -> list[HandlerLatency]:
    out = []
    for handler, roots in traces.by_handler().items():
        durations = [r.duration for r in roots]
        errors = sum(
            1 for r in roots if r.attributes.get(semconv.TELEGRAM_UPDATE_OUTCOME) == "error"
        )
        out.append(
            HandlerLatency(
                handler,
                len(roots),
                errors,
                percentile(durations, 50),
                percentile(durations, 95),
                percentile(durations, 99),
                max(durations),
            )
        )
    return sorted(out, key=lambda h: h.p95, reverse=True)


def _detail(span: ReceivedSpan) -> str:
    a = span.attributes
    if semconv.DB_QUERY_TEXT in a:
        return str(a[semconv.DB_QUERY_TEXT])
    if span.name.startswith(API_PREFIX):
        if semconv.TELEGRAM_API_ERROR_CODE in a:
            text = (
                f"HTTP {a.get(semconv.HTTP_RESPONSE_STATUS_CODE, '?')}, error "
                f"{a[semconv.TELEGRAM_API_ERROR_CODE]}"
            )
            if semconv.TELEGRAM_API_RETRY_AFTER in a:
                text += f", retry_after {a[semconv.TELEGRAM_API_RETRY_AFTER]} s"
            return text
        return f"HTTP {a.get(semconv.HTTP_RESPONSE_STATUS_CODE, '?')}"
    return ""


def _waterfall(traces: Traces) -> tuple[list[WaterfallRow], str]:
    if not traces.roots:
        return [], ""
    root = max(traces.roots, key=lambda r: r.duration)
    members = traces.children(root)
    by_id = {s.span_id: s for s in members}

    def depth(s: ReceivedSpan) -> int:
        d, parent = 1, s.parent_span_id
        while parent in by_id and d < 10:
            d, parent = d + 1, by_id[parent].parent_span_id
        return d

    rows = [
        WaterfallRow(
            0,
            root.name,
            0.0,
            root.duration,
            f"handler {traces.handler(root)}, outcome "
            f"{root.attributes.get(semconv.TELEGRAM_UPDATE_OUTCOME, '?')}",
        )
    ]
    for s in members[:WATERFALL_ROWS]:
        rows.append(
            WaterfallRow(
                depth(s), s.name, (s.start_ns - root.start_ns) / 1e9, s.duration, _detail(s)
            )
        )
    if len(members) > WATERFALL_ROWS:
        rest = members[WATERFALL_ROWS:]
        end = max(s.end_ns for s in rest)
        rows.append(
            WaterfallRow(
                1,
                f"... {len(rest)} more spans",
                (rest[0].start_ns - root.start_ns) / 1e9,
                (end - rest[0].start_ns) / 1e9,
                ", ".join(
                    f"{n} x {name}" for name, n in Counter(s.name for s in rest).most_common(3)
                ),
            )
        )
    return rows, traces.handler(root)


def _api(observed: Observed, spans: list[ReceivedSpan]) -> list[ApiMethod]:
    durations: dict[str, list[float]] = defaultdict(list)
    for s in spans:
        if s.name.startswith(API_PREFIX):
            durations[s.name[len(API_PREFIX) :]].append(s.duration)
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    floods: Counter[str] = Counter()
    points = [p for p in observed.points if p.name == semconv.TELEGRAM_API_DURATION.name]
    if points:
        for p in _latest(points):
            method = str(p.attributes.get(semconv.TELEGRAM_API_METHOD, "?"))
            calls[method] += p.count
            if (
                semconv.TELEGRAM_API_ERROR_CODE in p.attributes
                or semconv.ERROR_TYPE in p.attributes
            ):
                errors[method] += p.count
        for p in _latest(
            x for x in observed.points if x.name == semconv.TELEGRAM_API_FLOOD_WAITS.name
        ):
            floods[str(p.attributes.get(semconv.TELEGRAM_API_METHOD, "?"))] += int(p.value or 0)
    else:  # no metrics (telemetry sent elsewhere): what the fake Bot API logged
        for call in observed.api_calls:
            calls[call.method] += 1
        # The fake API's flood control answers sends; count those as errors and floods.
        if observed.api_floods:
            errors["sendMessage"] += observed.api_floods
            floods["sendMessage"] += observed.api_floods
    out = [
        ApiMethod(
            m, n, errors[m], floods[m], percentile(durations[m], 95) if durations[m] else None
        )
        for m, n in calls.items()
    ]
    return sorted(out, key=lambda a: a.calls, reverse=True)


def _statements(traces: Traces, spans: list[ReceivedSpan]) -> list[Statement]:
    handler_of = {r.trace_id: traces.handler(r) for r in traces.roots}
    groups: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in spans:
        if _is_sql(s) and semconv.DB_QUERY_TEXT in s.attributes:
            groups[str(s.attributes[semconv.DB_QUERY_TEXT])].append(s)
    out = []
    for text, members in groups.items():
        durations = [s.duration for s in members]
        handlers = Counter(handler_of.get(s.trace_id, "(no update)") for s in members)
        out.append(
            Statement(
                text,
                len(members),
                sum(durations),
                statistics.fmean(durations),
                percentile(durations, 95),
                [h for h, _ in handlers.most_common(2)],
            )
        )
    return sorted(out, key=lambda s: s.total, reverse=True)[:10]


def _cache(observed: Observed) -> list[CacheLine]:
    by_op: dict[str, CacheLine] = {}
    for p in _latest(x for x in observed.points if x.name == semconv.OTELBOT_CACHE_REQUESTS.name):
        op = str(p.attributes.get(semconv.DB_OPERATION_NAME, "?"))
        line = by_op.setdefault(op, CacheLine(op, 0, 0))
        if p.attributes.get(semconv.CACHE_RESULT) == semconv.CACHE_HIT:
            line.hits += int(p.value or 0)
        else:
            line.misses += int(p.value or 0)
    lines = sorted(by_op.values(), key=lambda c: c.what)
    if len(lines) > 1:
        lines.append(
            CacheLine("all reads", sum(c.hits for c in lines), sum(c.misses for c in lines))
        )
    return lines


def _runtime(observed: Observed) -> Runtime:
    lag_source, lag = "", None
    in_process = [p for p in observed.points if p.name == semconv.OTELBOT_ASYNCIO_LOOP_LAG.name]
    agent = [
        p
        for p in observed.points
        if p.name == semconv.OTELBOT_ASYNCIO_LOOP_LAG_MAX.name and p.value is not None
    ]
    if agent:
        lag, lag_source = (
            max(float(p.value or 0) for p in agent),
            "otelbot.asyncio.loop.lag.max (agent, from the runtime stats file)",
        )
    elif in_process:
        lag = max((p.max or 0.0) for p in in_process)
        lag_source = "otelbot.asyncio.loop.lag (bot)"
    pauses = _latest(p for p in observed.points if p.name == semconv.OTELBOT_GC_PAUSE_DURATION.name)
    collections = sum(p.count for p in pauses)
    total = sum(p.sum for p in pauses)
    maxima = [p.max for p in pauses if p.max is not None]
    tasks = [
        float(p.value)
        for p in observed.points
        if p.name == semconv.OTELBOT_ASYNCIO_TASKS.name and p.value is not None
    ]
    return Runtime(
        lag,
        lag_source,
        collections,
        total,
        max(maxima) if maxima else None,
        max(tasks) if tasks else None,
    )


def _memory(observed: Observed) -> MemoryTrend | None:
    points = sorted(
        (p for p in observed.points if p.name == semconv.PROCESS_MEMORY_USAGE.name and p.value),
        key=lambda p: p.time_ns,
    )
    if len(points) < 2:
        return None
    t0 = points[0].time_ns
    samples: list[tuple[float, float]] = []
    for p in points:
        t = (p.time_ns - t0) / 1e9
        if samples and abs(samples[-1][0] - t) < 1e-6:
            continue
        samples.append((t, float(p.value or 0)))
    return MemoryTrend(samples) if len(samples) >= 2 else None


def _in_demo(name: str) -> bool:
    return name.startswith(DEMO_SCHEMA + ".")


#: Order of the sources in the problem table: the bot's findings first, then the agent's.
_SOURCE_ORDER = {"bot": 0, "postgresql": 1}


def _code(attributes: dict[str, Any]) -> str:
    path = attributes.get(semconv.CODE_FILE_PATH)
    if not path:
        return ""
    line = attributes.get(semconv.CODE_LINE_NUMBER)
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return f"{name}:{line}" if line is not None else name


def _findings(observed: Observed) -> tuple[list[FindingRow], int]:
    """One row per (event, handler, object), the newest record's text, grouped by kind."""
    rows: dict[tuple[str, str, str], FindingRow] = {}
    others = set()
    for record in sorted(observed.logs, key=lambda r: r.time_ns):
        if not record.event_name.startswith("otelbot."):
            continue
        a = record.attributes
        obj = str(a.get(semconv.FINDING_OBJECT, ""))
        table = str(a.get(semconv.DB_COLLECTION_NAME, ""))
        if (
            record.event_name.startswith("otelbot.postgresql.")
            and record.event_name != semconv.EVENT_IDLE_IN_TRANSACTION
            and not (_in_demo(obj) or _in_demo(table))
        ):
            others.add((record.event_name, obj))  # another schema in the same database
            continue
        handler = (
            short(str(a.get(semconv.TELEGRAM_HANDLER, "")))
            if a.get(semconv.TELEGRAM_HANDLER)
            else ""
        )
        key = (record.event_name, handler, obj)
        seen = rows.get(key)
        rows[key] = FindingRow(
            record.event_name,
            handler,
            obj,
            str(a.get(semconv.FINDING_EVIDENCE, record.body)),
            str(a.get(semconv.FINDING_SUGGESTION, "")),
            _code(a) or (seen.code if seen else ""),
            table,
            seen.records + 1 if seen else 1,
        )
    ordered = sorted(
        rows.values(),
        key=lambda f: (_SOURCE_ORDER.get(f.source, 2), f.kind, f.handler, f.object),
    )
    return ordered, len(others)


def _gauges(
    points: Iterable[ReceivedPoint], name: str, label: Callable[[dict[str, Any]], str]
) -> list[Gauge]:
    """Per series of metric ``name`` (labelled by ``label(attributes)``): the newest value
    and the largest; series with the same label are added up at each export."""
    at: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for p in points:
        if p.name == name and p.value is not None:
            at[label(p.attributes)][p.time_ns] += float(p.value)
    out = []
    for what, values in at.items():
        newest = max(values)
        out.append(Gauge(what, values[newest], max(values.values())))
    return sorted(out, key=lambda g: g.what)


def _users(observed: Observed) -> list[Gauge]:
    return _gauges(
        observed.points,
        semconv.TELEGRAM_USERS_ACTIVE.name,
        lambda a: f"{a.get(semconv.TELEGRAM_USERS_WINDOW, '?')} window",
    )


def _connections(observed: Observed) -> Connections:
    def pool(a: dict[str, Any]) -> str:
        return str(a.get(semconv.DB_CLIENT_CONNECTION_POOL_NAME, "?"))

    pools = _gauges(
        observed.points,
        semconv.DB_CLIENT_CONNECTION_COUNT.name,
        lambda a: f"{pool(a)} {a.get(semconv.DB_CLIENT_CONNECTION_STATE, '?')}",
    ) + _gauges(observed.points, semconv.DB_CLIENT_CONNECTION_MAX.name, lambda a: f"{pool(a)} max")
    pools.sort(key=lambda g: g.what)
    server = _gauges(
        observed.points,
        semconv.POSTGRESQL_BACKENDS.name,
        lambda a: (
            f"{a.get(semconv.DB_NAMESPACE, '?')} backends "
            f"{a.get(semconv.POSTGRESQL_BACKEND_STATE) or '?'}, application "
            f"{a.get(semconv.POSTGRESQL_APPLICATION_NAME) or '(none)'}"
        ),
    ) + _gauges(
        observed.points,
        semconv.POSTGRESQL_CONNECTION_MAX.name,
        lambda a: f"{a.get(semconv.DB_NAMESPACE, '?')} max_connections",
    )
    return Connections(pools, server)


def _token(observed: Observed) -> TokenCheck:
    found = []
    if token_leaks(observed.raw, observed.token):
        found.append("OTLP data")
    for name, text in observed.outputs.items():
        if token_leaks(text, observed.token):
            found.append(f"{name} output")
    return TokenCheck(
        not found,
        len(observed.raw),
        observed.requests,
        sum(len(t) for t in observed.outputs.values()),
        found,
    )


# --------------------------------------------------------------------------- entry point


def analyse(observed: Observed) -> Report:
    spans = observed.spans
    traces = Traces(spans)
    limited = None
    if observed.otlp_endpoint:
        limited = (
            f"Telemetry went to {observed.otlp_endpoint}, not to the demo: this report "
            "only has what the demo saw itself (updates sent, the fake Bot API's call "
            "log, the processes' output). Look at traces and metrics in your backend."
        )
    report = Report(
        duration=observed.duration,
        updates_sent=sum(observed.sent.values()),
        updates_traced=len(traces.roots),
        spans=len(spans),
        points=len(observed.points),
        logs=len(observed.logs),
        limited=limited,
    )
    report.latency = _latency(traces)
    report.slowest, report.slowest_handler = _waterfall(traces)
    report.api = _api(observed, spans)
    report.statements = _statements(traces, spans)
    report.cache = _cache(observed)
    report.runtime = _runtime(observed)
    report.memory = _memory(observed)
    report.findings, report.other_findings = _findings(observed)
    report.users = _users(observed)
    report.connections = _connections(observed)
    report.settings = dict(observed.settings)
    report.agent_settings = dict(observed.agent_settings)
    report.token = _token(observed)
    return report
