"""The demo report's numbers, from what the demo's embedded ``otelbot watch`` received: its
store (handler latency, the slowest trace, Bot API calls, statements, cache, GC, findings,
the summary figures) and, where a section needs a series over time (memory trend, the most
users or connections at once, event-loop lag), the metric points decoded from the export
bodies watch's tap kept, since watch keeps only a series' newest point. The problems it
lists are the findings the bot's detectors and the agent sent (``otelbot.bot.*`` and
``otelbot.postgresql.*`` log records); nothing here detects a problem itself or knows which
handler has which.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from otelbot import semconv
from otelbot.testing.fake_bot_api import Call
from otelbot.testing.otlp_receiver import ReceivedPoint, ReceivedSpan
from otelbot.testing.scan import token_leaks
from otelbot.watch import views
from otelbot.watch.embedded import EmbeddedWatch
from otelbot.watch.store import Finding, WatchStore

DEMO_SCHEMA = "otelbot_demo"
UPDATE_PREFIX = semconv.SPAN_TELEGRAM_UPDATE + " "
API_PREFIX = semconv.SPAN_TELEGRAM_API + " "
MB = 1024 * 1024
WATERFALL_ROWS = 24


@dataclass
class Observed:
    """Everything the demo saw: watch's store, the metric points and raw bytes of its tap,
    the fake API's log, the processes."""

    duration: float
    store: WatchStore
    points: list[ReceivedPoint]  # every point received, not only each series' newest
    raw: bytes  # every export body, for the token scan
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
    #: The running watch the store belongs to (read it on its loop); None in tests.
    watch: EmbeddedWatch | None = None
    page_url: str | None = None
    service: str = ""  # the demo bot's service.name


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
    page_url: str | None = None
    #: watch's summary figures for the demo bot (views.service_summary), {} without it.
    summary: dict[str, Any] = field(default_factory=dict)
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


def _is_sql(span: ReceivedSpan) -> bool:
    return span.attributes.get(semconv.DB_SYSTEM_NAME) == semconv.DB_SYSTEM_POSTGRESQL


class UpdateTraces:
    """The traces of the updates watch keeps: each trace's handler, and all their spans."""

    def __init__(self, store: WatchStore) -> None:
        self.handler_of: dict[str, str] = {}
        self.spans: list[ReceivedSpan] = []
        for update in store.updates():
            trace = store.trace(update.trace_id)
            if trace is None or update.trace_id in self.handler_of:
                continue
            self.handler_of[update.trace_id] = short(update.handler)
            self.spans.extend(trace.spans)


# --------------------------------------------------------------------------- sections


def _latency(store: WatchStore) -> list[HandlerLatency]:
    out = [
        HandlerLatency(
            short(str(row["handler"])),
            int(row["count"]),
            int(row["errors"]),
            row["p50_ms"] / 1000,
            row["p95_ms"] / 1000,
            row["p99_ms"] / 1000,
            row["max_ms"] / 1000,
        )
        for row in views.handlers(store)
    ]
    return sorted(out, key=lambda h: h.p95, reverse=True)


def _detail(name: str, a: dict[str, Any]) -> str:
    if name.startswith(UPDATE_PREFIX):
        return (
            f"handler {short(str(a.get(semconv.TELEGRAM_HANDLER, '')))}, outcome "
            f"{a.get(semconv.TELEGRAM_UPDATE_OUTCOME, '?')}"
        )
    if semconv.DB_QUERY_TEXT in a:
        return str(a[semconv.DB_QUERY_TEXT])
    if name.startswith(API_PREFIX):
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


def _waterfall(store: WatchStore) -> tuple[list[WaterfallRow], str]:
    """The slowest update's trace as watch's trace view draws it (spans in tree order)."""
    slowest = views.traces(store, slowest=True, limit=1)
    found = views.trace(store, slowest[0]["trace_id"]) if slowest else None
    if found is None or not found["spans"]:
        return [], ""
    spans = found["spans"]
    rows = [
        WaterfallRow(
            s["depth"],
            s["name"],
            s["offset_ms"] / 1000,
            s["duration_ms"] / 1000,
            _detail(s["name"], s["attributes"]),
        )
        for s in spans[: WATERFALL_ROWS + 1]
    ]
    rest = spans[WATERFALL_ROWS + 1 :]
    if rest:
        start = min(s["offset_ms"] for s in rest)
        end = max(s["offset_ms"] + s["duration_ms"] for s in rest)
        rows.append(
            WaterfallRow(
                1,
                f"... {len(rest)} more spans",
                start / 1000,
                (end - start) / 1000,
                ", ".join(
                    f"{n} x {name}"
                    for name, n in Counter(str(s["name"]) for s in rest).most_common(3)
                ),
            )
        )
    return rows, short(str(slowest[0]["handler"]))


def _api(observed: Observed, spans: list[ReceivedSpan]) -> list[ApiMethod]:
    durations: dict[str, list[float]] = defaultdict(list)
    for s in spans:
        if s.name.startswith(API_PREFIX):
            durations[s.name[len(API_PREFIX) :]].append(s.duration)
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    floods: Counter[str] = Counter()
    store = observed.store
    points = store.points(semconv.TELEGRAM_API_DURATION.name)  # each series' totals
    if points:
        for p in points:
            method = str(p.attributes.get(semconv.TELEGRAM_API_METHOD, "?"))
            calls[method] += p.count
            if (
                semconv.TELEGRAM_API_ERROR_CODE in p.attributes
                or semconv.ERROR_TYPE in p.attributes
            ):
                errors[method] += p.count
        for p in store.points(semconv.TELEGRAM_API_FLOOD_WAITS.name):
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


def _statements(traces: UpdateTraces) -> list[Statement]:
    groups: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in traces.spans:
        if _is_sql(s) and semconv.DB_QUERY_TEXT in s.attributes:
            groups[str(s.attributes[semconv.DB_QUERY_TEXT])].append(s)
    out = []
    for text, members in groups.items():
        durations = [s.duration for s in members]
        handlers = Counter(traces.handler_of.get(s.trace_id, "?") for s in members)
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


def _cache(store: WatchStore) -> list[CacheLine]:
    by_op: dict[str, CacheLine] = {}
    for p in store.points(semconv.OTELBOT_CACHE_REQUESTS.name):
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
    store = observed.store
    in_process = store.points(semconv.OTELBOT_ASYNCIO_LOOP_LAG.name)
    # The agent's gauge: the largest over the run, so every point the tap kept.
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
    pauses = store.points(semconv.OTELBOT_GC_PAUSE_DURATION.name)
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


def _findings(found: Iterable[Finding]) -> tuple[list[FindingRow], int]:
    """One row per (event, handler, object) of the findings watch keeps, the newest record's
    text, grouped by kind."""
    rows: dict[tuple[str, str, str], FindingRow] = {}
    others = set()
    for f in sorted(found, key=lambda f: f.time_ns):
        table = str(f.attributes.get(semconv.DB_COLLECTION_NAME, ""))
        if (
            f.event.startswith("otelbot.postgresql.")
            and f.event != semconv.EVENT_IDLE_IN_TRANSACTION
            and not (_in_demo(f.object) or _in_demo(table))
        ):
            others.add((f.event, f.object))  # another schema in the same database
            continue
        handler = short(f.handler) if f.handler else ""
        key = (f.event, handler, f.object)
        seen = rows.get(key)
        rows[key] = FindingRow(
            f.event,
            handler,
            f.object,
            f.evidence or f.body,
            f.suggestion,
            _code(f.attributes) or (seen.code if seen else ""),
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
    """The report; with a running watch, computed on watch's loop (the store's owner)."""
    if observed.watch is not None:
        return observed.watch.call(lambda: _analyse(observed))
    return _analyse(observed)


def _analyse(observed: Observed) -> Report:
    store = observed.store
    traces = UpdateTraces(store)
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
        updates_traced=store.update_count,
        spans=store.received["spans"],
        points=store.received["points"],
        logs=store.received["logs"],
        limited=limited,
        page_url=observed.page_url,
    )
    if observed.service in store.services:
        report.summary = views.service_summary(store, observed.service)
    report.latency = _latency(store)
    report.slowest, report.slowest_handler = _waterfall(store)
    report.api = _api(observed, traces.spans)
    report.statements = _statements(traces)
    report.cache = _cache(store)
    report.runtime = _runtime(observed)
    report.memory = _memory(observed)
    report.findings, report.other_findings = _findings(store.findings)
    report.users = _users(observed)
    report.connections = _connections(observed)
    report.settings = dict(observed.settings)
    report.agent_settings = dict(observed.agent_settings)
    report.token = _token(observed)
    return report
