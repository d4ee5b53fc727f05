"""The demo report's numbers, computed from what arrived on the wire (spans, metric points,
log records), and the built-in problems found in them, each attributed to its handler.

Nothing here knows which handler has which problem: every attribution comes from the
telemetry (trace shapes, span attributes, the agent's findings, metric trends).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
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
_WHERE_COLUMN = re.compile(r"\bWHERE\s+(?:\w+\.)?(\w+)\s*=", re.IGNORECASE)

# Problem keys, in report order.
N_PLUS_ONE = "n+1 queries"
MISSING_INDEX = "missing index"
UNUSED_INDEX = "unused index"
BLOCKING = "blocked event loop"
CACHE_MISS = "cache that always misses"
FLOOD = "flood control (429)"
MEMORY = "growing memory"
PROBLEMS = (N_PLUS_ONE, MISSING_INDEX, UNUSED_INDEX, BLOCKING, CACHE_MISS, FLOOD, MEMORY)


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
    event: str
    object: str
    evidence: str
    suggestion: str
    table: str


@dataclass
class Problem:
    key: str
    found: bool
    handler: str = ""
    evidence: str = ""


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
    problems: list[Problem] = field(default_factory=list)
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


def _is_redis(span: ReceivedSpan, operation: str | None = None) -> bool:
    if span.attributes.get(semconv.DB_SYSTEM_NAME) != semconv.DB_SYSTEM_REDIS:
        return False
    return operation is None or span.attributes.get(semconv.DB_OPERATION_NAME) == operation


def _flooded(span: ReceivedSpan) -> bool:
    return span.attributes.get(semconv.TELEGRAM_API_ERROR_CODE) == 429


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


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

    def handlers_touching(self, table: str, operations: set[str] | None = None) -> list[str]:
        """Handlers whose SQL reads or writes ``table`` (most spans first)."""
        counts: Counter[str] = Counter()
        for root in self.roots:
            for s in self.children(root):
                if not _is_sql(s) or s.attributes.get(semconv.DB_COLLECTION_NAME) != table:
                    continue
                if operations and s.attributes.get(semconv.DB_OPERATION_NAME) not in operations:
                    continue
                counts[self.handler(root)] += 1
        return [h for h, _ in counts.most_common()]

    def self_time(self, root: ReceivedSpan) -> float:
        """Time of the update not covered by any child span: the handler's own code."""
        intervals = sorted(
            (max(s.start_ns, root.start_ns), min(s.end_ns, root.end_ns))
            for s in self.children(root)
        )
        covered, cursor = 0, root.start_ns
        for start, end in intervals:
            start = max(start, cursor)
            if end > start:
                covered += end - start
                cursor = end
        return max(0.0, (root.end_ns - root.start_ns - covered) / 1e9)


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


def _handler_cache(traces: Traces) -> dict[str, tuple[int, int]]:
    """Per handler: (reads, misses), a miss being a GET followed by SQL and a SET
    (cache-aside refilling what it did not find)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for root in traces.roots:
        kids = traces.children(root)
        gets = [s for s in kids if _is_redis(s, "GET")]
        if not gets:
            continue
        first = gets[0]
        later = [s for s in kids if s.start_ns >= first.end_ns]
        miss = any(_is_sql(s) for s in later) and any(_is_redis(s, "SET") for s in later)
        counts = out[traces.handler(root)]
        counts[0] += 1
        counts[1] += miss
    return {h: (c[0], c[1]) for h, c in out.items()}


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


def _findings(observed: Observed) -> tuple[list[FindingRow], int]:
    latest: dict[tuple[str, str], FindingRow] = {}
    others = set()
    for record in observed.logs:
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
        latest[(record.event_name, obj)] = FindingRow(
            record.event_name,
            obj,
            str(a.get(semconv.FINDING_EVIDENCE, record.body)),
            str(a.get(semconv.FINDING_SUGGESTION, "")),
            table,
        )
    return list(latest.values()), len(others)


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


# --------------------------------------------------------------------------- problems


def _n_plus_one(traces: Traces) -> Problem:
    best: tuple[float, str, str, float] | None = None
    for handler, roots in traces.by_handler().items():
        repeats, totals, statement = [], [], Counter[str]()
        for root in roots:
            texts = Counter(
                str(s.attributes.get(semconv.DB_QUERY_TEXT, s.name))
                for s in traces.children(root)
                if _is_sql(s)
            )
            totals.append(sum(texts.values()))
            if texts:
                text, n = texts.most_common(1)[0]
                repeats.append(n)
                statement[text] += n
        if not repeats:
            continue
        mean_repeat = statistics.fmean(repeats)
        if mean_repeat >= 5 and (best is None or mean_repeat > best[0]):
            best = (mean_repeat, handler, statement.most_common(1)[0][0], statistics.fmean(totals))
    if best is None:
        return Problem(N_PLUS_ONE, False)
    repeat, handler, text, total = best
    return Problem(
        N_PLUS_ONE,
        True,
        handler,
        f"{total:.0f} SQL queries per update on average; `{text}` runs "
        f"{repeat:.0f}x in one update (one query per row: fetch them in one query "
        "with a JOIN or `= ANY($1)`)",
    )


def _index_problem(
    key: str,
    event: str,
    findings: list[FindingRow],
    traces: Traces,
    statements: list[Statement],
    operations: set[str] | None,
) -> Problem:
    rows = [f for f in findings if f.event == event]
    if not rows:
        return Problem(key, False)
    f = rows[0]
    table = f.table or f.object
    handlers = traces.handlers_touching(table, operations)
    handler = handlers[0] if handlers else "(no handler touches it)"
    evidence = f"agent: {f.evidence}. Suggested: {f.suggestion}"
    if key == MISSING_INDEX:
        slow = [s for s in statements if table in s.text and s.text.upper().startswith("SELECT")]
        if slow:
            evidence = f"`{slow[0].text}` p95 {_ms(slow[0].p95)}; " + evidence
            column = _WHERE_COLUMN.search(slow[0].text)
            if column:
                evidence += (
                    f". The traced statement filters on {column.group(1)}: "
                    f"CREATE INDEX CONCURRENTLY ON {table} ({column.group(1)});"
                )
    else:
        evidence = f"{handler} writes {table}, maintaining {f.object} on every write; " + evidence
    return Problem(key, True, handler, evidence)


def _blocking(traces: Traces, runtime: Runtime) -> Problem:
    best: tuple[float, str, int] | None = None
    for handler, roots in traces.by_handler().items():
        # Waiting out a flood wait (asyncio.sleep) is not blocking: leave those traces out.
        own = [
            traces.self_time(r) for r in roots if not any(_flooded(s) for s in traces.children(r))
        ]
        if len(own) < 1:
            continue
        median = statistics.median(own)
        if median >= 0.05 and (best is None or median > best[0]):
            best = (median, handler, len(own))
    if best is None:
        return Problem(BLOCKING, False)
    median, handler, n = best
    lag = f"; event-loop lag up to {runtime.loop_lag_max:.2f} s" if runtime.loop_lag_max else ""
    return Problem(
        BLOCKING,
        True,
        handler,
        f"median {_ms(median)} per update in the handler's own code with no SQL, "
        f"Redis or Bot API call under way ({n} updates){lag}: a blocking call stalls "
        "every other update",
    )


def _cache_problem(traces: Traces, cache: list[CacheLine], minimum: int) -> Problem:
    per_handler = _handler_cache(traces)
    candidates = [
        (misses / reads, reads, misses, h)
        for h, (reads, misses) in per_handler.items()
        if reads >= minimum
    ]
    if not candidates:
        return Problem(CACHE_MISS, False)
    ratio, reads, misses, handler = max(candidates)
    if ratio < 0.95:
        return Problem(CACHE_MISS, False)
    overall = next((c for c in cache if c.what in ("all reads", "GET")), None)
    total = (
        f"; cache hit ratio overall {overall.ratio:.0%} (otelbot.cache.requests)"
        if overall is not None and overall.ratio is not None
        else ""
    )
    others = ", ".join(
        f"{h} {1 - m / r:.0%} hits"
        for h, (r, m) in per_handler.items()
        if h != handler and r >= minimum
    )
    return Problem(
        CACHE_MISS,
        True,
        handler,
        f"{misses} of {reads} cache reads missed (GET, then a database read and a "
        f"SET in the same update, every time: the key it writes is not the key it "
        f"reads){total}" + (f"; compare {others}" if others else ""),
    )


def _flood(traces: Traces, api: list[ApiMethod]) -> Problem:
    per_handler: Counter[str] = Counter()
    retry: list[float] = []
    methods: Counter[str] = Counter()
    for root in traces.roots:
        for s in traces.children(root):
            if _flooded(s):
                per_handler[traces.handler(root)] += 1
                methods[s.name[len(API_PREFIX) :]] += 1
                retry.append(float(s.attributes.get(semconv.TELEGRAM_API_RETRY_AFTER, 0)))
    if not per_handler:
        return Problem(FLOOD, False)
    handler, n = per_handler.most_common(1)[0]
    counted = sum(a.flood_waits for a in api)
    return Problem(
        FLOOD,
        True,
        handler,
        f"{n} Bot API calls ({', '.join(methods)}) refused with 429 Too Many "
        f"Requests, retry_after {max(retry):.0f} s; telegram.api.flood_waits counted "
        f"{counted}: a burst into one chat, send at most ~1 message/s per chat",
    )


def _lower_quartile(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 4]


def _memory_problem(traces: Traces, memory: MemoryTrend | None) -> Problem:
    best: tuple[float, str, float, float] | None = None
    grew = memory is not None and memory.growth > 0
    # Growing by at least 5% over the run: a heap that keeps something.
    growing = memory is not None and memory.growth >= 0.05 * memory.first
    # A handler whose own time rose by half a millisecond and by half of its early time is
    # the likely cause. With the bot's memory growing, a rise of a millisecond or more is
    # enough even when it is only a quarter of the early time (the work it does every call,
    # GC included, can be most of that early time in a short run on a slow machine); on a
    # fast machine the same leak doubles a short early time by less than a millisecond, so
    # the first rule still applies then.
    rules = ((0.0005, 1.5), (0.001, 1.25)) if growing else ((0.0005, 1.5),)
    for handler, roots in traces.by_handler().items():
        ordered = sorted(roots, key=lambda r: r.start_ns)
        if len(ordered) < 9:
            continue
        third = len(ordered) // 3
        # The lower quartile of each third: time an update spends waiting behind a blocked
        # event loop only ever adds to its own time, so the low end shows the handler's own
        # cost; a median is pulled up whenever a few updates overlapped a stall.
        early = _lower_quartile([traces.self_time(r) for r in ordered[:third]])
        late = _lower_quartile([traces.self_time(r) for r in ordered[-third:]])
        growth = late - early
        rose = any(
            growth >= min_growth and late >= min_ratio * early for min_growth, min_ratio in rules
        )
        if rose and (best is None or growth > best[0]):
            best = (growth, handler, early, late)
    if best is None:
        return Problem(MEMORY, False)
    _, handler, early, late = best
    mem = (
        f"bot memory grew {memory.first / MB:.0f} -> {memory.last / MB:.0f} MB "
        f"({memory.per_minute / MB:+.1f} MB/min, process.memory.usage); "
        if memory is not None and grew
        else ""
    )
    return Problem(
        MEMORY,
        True,
        handler,
        f"{mem}{handler} slows down as the bot runs: own time (lower quartile) "
        f"{_ms(early)} in the first third of its updates -> {_ms(late)} in the last "
        "third (it walks a structure that only grows; bound it or use a dict/set)",
    )


# --------------------------------------------------------------------------- entry point


def analyse(observed: Observed, min_cache_reads: int = 5) -> Report:
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
    report.problems = [
        _n_plus_one(traces),
        _index_problem(
            MISSING_INDEX,
            semconv.EVENT_MISSING_INDEX,
            report.findings,
            traces,
            report.statements,
            {"SELECT"},
        ),
        _index_problem(
            UNUSED_INDEX,
            semconv.EVENT_UNUSED_INDEX,
            report.findings,
            traces,
            report.statements,
            {"INSERT", "UPDATE", "DELETE"},
        ),
        _blocking(traces, report.runtime),
        _cache_problem(traces, report.cache, min_cache_reads),
        _flood(traces, report.api),
        _memory_problem(traces, report.memory),
    ]
    report.token = _token(observed)
    return report
