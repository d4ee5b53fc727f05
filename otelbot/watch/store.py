"""What ``otelbot watch`` keeps: recent traces, update summaries, the latest point of each
metric series, findings and the services seen, all bounded::

    store = WatchStore(retention=1800.0, max_spans=50_000)
    store.add_spans(decode_spans(body))         # from the OTLP receiver
    store.handlers()                            # per-handler latency, as the API serves it

Memory is bounded twice: anything received longer than ``retention`` seconds ago is dropped,
and whole traces are dropped oldest first while more than ``max_spans`` spans are kept (update
summaries likewise at ``max_spans``). Metric series are capped at ``max_series`` (new series
past the cap are counted, not kept) and findings at ``max_findings``. Everything is used from
one event loop (the receiver, the API and the terminal view share it), so there is no lock.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from otelbot import semconv
from otelbot.testing.otlp_receiver import ReceivedLog, ReceivedPoint, ReceivedSpan

SERVICE_NAME = "service.name"
UPDATE_SPAN_PREFIX = semconv.SPAN_TELEGRAM_UPDATE + " "  # "telegram.update message"
FINDING_PREFIX = "otelbot."
STATUS_ERROR = 2
#: A service that sent nothing for this long is shown as stale.
STALE_AFTER = 120.0
#: Window of the updates-per-second figure.
RATE_WINDOW = 60.0
#: Latest durations per handler kept for its small chart.
CHART_POINTS = 60


def service_of(resource: dict[str, Any]) -> str:
    return str(resource.get(SERVICE_NAME) or "unknown_service")


@dataclass(slots=True)
class Update:
    """One ``telegram.update`` span, summarised."""

    service: str
    handler: str
    name: str
    trace_id: str
    span_id: str
    start_ns: int
    duration: float
    error: bool
    received: float


@dataclass(slots=True)
class Trace:
    service: str
    received: float
    spans: list[ReceivedSpan] = field(default_factory=list)


@dataclass(slots=True)
class Finding:
    service: str
    event: str
    body: str
    handler: str
    object: str
    evidence: str
    suggestion: str
    code: str
    trace_id: str
    span_id: str
    time_ns: int
    received: float
    attributes: dict[str, Any]


@dataclass(slots=True)
class Series:
    point: ReceivedPoint
    received: float


@dataclass(slots=True)
class Service:
    name: str
    first_seen: float
    last_seen: float
    last_update: float | None = None
    spans: int = 0
    points: int = 0
    logs: int = 0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


def _code(attributes: dict[str, Any]) -> str:
    path = attributes.get(semconv.CODE_FILE_PATH)
    if not path:
        return ""
    line = attributes.get(semconv.CODE_LINE_NUMBER)
    func = attributes.get(semconv.CODE_FUNCTION_NAME)
    where = f"{path}:{line}" if line else str(path)
    return f"{where} in {func}" if func else where


class WatchStore:
    """Bounded in-memory telemetry of the bots (and agents) sending to watch."""

    def __init__(
        self,
        retention: float = 1800.0,
        max_spans: int = 50_000,
        max_series: int = 20_000,
        max_findings: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.retention = retention
        self.max_spans = max_spans
        self.max_series = max_series
        self.clock = clock
        self.started = clock()
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._span_total = 0
        self._updates: deque[Update] = deque()
        self._series: dict[tuple[str, str, tuple[tuple[str, str], ...]], Series] = {}
        self.findings: deque[Finding] = deque(maxlen=max_findings)
        self.services: dict[str, Service] = {}
        self._series_trimmed = 0.0
        #: What came in, and what was refused or let go to stay within bounds.
        self.received = {"spans": 0, "points": 0, "logs": 0}
        self.rejected = 0
        self.dropped_spans = 0
        self.dropped_series = 0

    # ------------------------------------------------------------------ intake
    def _seen(self, resource: dict[str, Any], now: float, kind: str, n: int) -> Service:
        name = service_of(resource)
        seen = self.services.get(name)
        if seen is None:
            seen = self.services[name] = Service(name, now, now)
        seen.last_seen = now
        setattr(seen, kind, getattr(seen, kind) + n)
        return seen

    def add_spans(self, spans: Iterable[ReceivedSpan]) -> None:
        now = self.clock()
        for span in spans:
            self.received["spans"] += 1
            service = self._seen(span.resource, now, "spans", 1)
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = Trace(service.name, now)
            trace.spans.append(span)
            self._span_total += 1
            if span.name.startswith(UPDATE_SPAN_PREFIX):
                self._add_update(span, service, now)
        self.trim()

    def _add_update(self, span: ReceivedSpan, service: Service, now: float) -> None:
        service.last_update = now
        handler = span.attributes.get(semconv.TELEGRAM_HANDLER) or "unhandled"
        self._updates.append(
            Update(
                service=service.name,
                handler=str(handler),
                name=span.name,
                trace_id=span.trace_id,
                span_id=span.span_id,
                start_ns=span.start_ns,
                duration=span.duration,
                error=span.status_code == STATUS_ERROR,
                received=now,
            )
        )

    def add_points(self, points: Iterable[ReceivedPoint]) -> None:
        now = self.clock()
        for point in points:
            self.received["points"] += 1
            service = self._seen(point.resource, now, "points", 1)
            key = (
                service.name,
                point.name,
                tuple(sorted((k, str(v)) for k, v in point.attributes.items())),
            )
            series = self._series.get(key)
            if series is not None:
                series.point, series.received = point, now
            elif len(self._series) < self.max_series:
                self._series[key] = Series(point, now)
            else:
                self.dropped_series += 1

    def add_logs(self, logs: Iterable[ReceivedLog]) -> None:
        now = self.clock()
        for record in logs:
            self.received["logs"] += 1
            service = self._seen(record.resource, now, "logs", 1)
            if not record.event_name.startswith(FINDING_PREFIX):
                continue
            a = record.attributes
            self.findings.append(
                Finding(
                    service=service.name,
                    event=record.event_name,
                    body=str(record.body or ""),
                    handler=str(a.get(semconv.TELEGRAM_HANDLER, "")),
                    object=str(a.get(semconv.FINDING_OBJECT, "")),
                    evidence=str(a.get(semconv.FINDING_EVIDENCE, "")),
                    suggestion=str(a.get(semconv.FINDING_SUGGESTION, "")),
                    code=_code(a),
                    trace_id=record.trace_id if record.trace_id.strip("0") else "",
                    span_id=record.span_id if record.span_id.strip("0") else "",
                    time_ns=record.time_ns,
                    received=now,
                    attributes=dict(a),
                )
            )

    def trim(self) -> None:
        """Drop what is older than the retention, then the oldest traces past the span cap."""
        horizon = self.clock() - self.retention
        traces = self._traces
        while traces:
            oldest = next(iter(traces.values()))
            if oldest.received >= horizon and self._span_total <= self.max_spans:
                break
            traces.popitem(last=False)
            self._span_total -= len(oldest.spans)
            self.dropped_spans += len(oldest.spans)
        updates = self._updates
        while updates and (updates[0].received < horizon or len(updates) > self.max_spans):
            updates.popleft()
        if horizon - self._series_trimmed >= 1.0:  # a walk over every series: once a second
            self._series_trimmed = horizon
            for key in [k for k, s in self._series.items() if s.received < horizon]:
                del self._series[key]
        while self.findings and self.findings[0].received < horizon:
            self.findings.popleft()

    # ------------------------------------------------------------------ sizes
    @property
    def span_count(self) -> int:
        return self._span_total

    @property
    def trace_count(self) -> int:
        return len(self._traces)

    @property
    def update_count(self) -> int:
        return len(self._updates)

    @property
    def series_count(self) -> int:
        return len(self._series)

    # ------------------------------------------------------------------ queries
    def updates(self, service: str | None = None) -> list[Update]:
        return [u for u in self._updates if service is None or u.service == service]

    def trace(self, trace_id: str) -> Trace | None:
        return self._traces.get(trace_id)

    def points(self, name: str, service: str | None = None) -> list[ReceivedPoint]:
        return [
            s.point
            for (svc, metric, _), s in self._series.items()
            if metric == name and (service is None or svc == service)
        ]

    def updates_per_second(self, service: str | None = None) -> float:
        since = self.clock() - RATE_WINDOW
        recent = sum(
            1 for u in self._updates if u.received >= since and (service in (None, u.service))
        )
        window = min(RATE_WINDOW, max(1.0, self.clock() - self.started))
        return recent / window
