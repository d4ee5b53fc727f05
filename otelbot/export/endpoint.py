"""One line when the OTLP endpoint stops taking a signal, one line when it takes it again.

    from otelbot.export import endpoint
    endpoint.install()                                       # once per process
    exporter = endpoint.WatchedSpanExporter(OTLPSpanExporter())
    # the endpoint goes down, then comes back:
    #   otelbot: cannot export spans to http://collector:4318/v1/traces (Connection refused);
    #     dropping spans until the endpoint takes them again
    #   otelbot: http://collector:4318/v1/traces takes spans again; 9 exports had failed,
    #     1024 spans were not delivered

While an endpoint is down, the SDK's OTLP exporters log "Transient error … retrying" and
"Failed to export …" at every export, and its batch processors "Queue full, dropping …" for
every span or log record after that. The ``Watched*`` exporters wrap an exporter, see each
export's result, and say it once per outage instead: a WARNING line when the first export
fails, a DEBUG line for each further failure, and a line (WARNING in the bot, INFO in the
agent) at the first export that succeeds again, with how many exports failed and how many
items were not delivered. ``install()`` puts a filter on the SDK exporters' loggers that
drops their failure lines for the signals a ``Watched*`` exporter reports (it keeps the
reason for our line) and lets every other record through.

Per signal, not per endpoint: traces, metrics and logs each have their own URL
(``…/v1/traces``, ``…/v1/metrics``), may go to different places
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and are exported on their own schedules, so each
goes down and comes back on its own. Used by the bot's SDK configurator
(``otelbot.export.distro``), the span export helper (when it sends with the SDK's client)
and the agent. The state behind the lines is ``otelbot.export.endpoint_state``, which needs
no SDK (the helper's own OTLP/HTTP sender drives it directly); this module imports nothing
else from otelbot.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otelbot.export import endpoint_state
from otelbot.export.endpoint_state import ITEMS, EndpointState, log

__all__ = [
    "ITEMS",
    "SDK_LOGGERS",
    "EndpointState",
    "WatchedLogExporter",
    "WatchedMetricExporter",
    "WatchedSpanExporter",
    "configurator_hooks",
    "install",
    "log",
    "log_record_processor",
    "short_reason",
    "watch_metric_readers",
]

#: Loggers of the SDK's OTLP exporters and batch processors.
SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
)
_FAILURE_LINES = ("Transient error", "Failed to export", "Shutdown in progress, aborting retry")
_QUEUE_FULL_LINE = "Queue full, dropping"
#: Words the SDK's lines use for a signal (in their arguments or logger names).
_SIGNAL_WORDS = {
    "spans": "traces",
    "traces": "traces",
    "span": "traces",
    "trace_exporter": "traces",
    "metrics": "metrics",
    "metric_exporter": "metrics",
    "logs": "logs",
    "log": "logs",
    "_log_exporter": "logs",
}
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_GRPC_CODE = re.compile(r"StatusCode\.(\w+)")
_HTTP_CODE = re.compile(r"code: (\d+), reason: ([^,]*)")


def _watch(signal: str, exporter: Any) -> EndpointState:
    return endpoint_state.watch(signal, getattr(exporter, "_endpoint", None))


def _signal_of(record: logging.LogRecord) -> str | None:
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        if isinstance(arg, str) and arg.lower() in _SIGNAL_WORDS:
            return _SIGNAL_WORDS[arg.lower()]
    return _SIGNAL_WORDS.get(record.name.rsplit(".", 1)[-1])


def short_reason(text: str) -> str | None:
    """What went wrong, from one of the SDK's failure lines: ``Connection refused``,
    ``UNAVAILABLE``, ``HTTP 404 Not Found``, ``timed out``; None when it does not say."""
    errno = _ERRNO.search(text)
    if errno:
        return errno.group(1).strip()
    grpc_code = _GRPC_CODE.search(text)
    if grpc_code:
        return grpc_code.group(1)
    http_code = _HTTP_CODE.search(text)
    if http_code:
        return f"HTTP {http_code.group(1)} {http_code.group(2).strip()}".strip()
    if "timed out" in text.lower():  # not "due to timeout, max retries": that says nothing
        return "timed out"
    return None


class _SdkExportLines(logging.Filter):
    """Drops the SDK's per-export failure lines for watched signals; keeps their reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if not isinstance(msg, str):
            return True
        if msg.startswith(_FAILURE_LINES):
            signal = _signal_of(record)
            if signal is None:  # e.g. gRPC's shutdown line: it only ever follows a failure
                return not endpoint_state.WATCHED
            if signal not in endpoint_state.WATCHED:
                return True
            try:
                reason = short_reason(record.getMessage())
            except Exception:  # a record whose arguments do not fit its message
                reason = None
            if reason is not None:
                endpoint_state.STATES[signal].reason = reason
            return False
        if msg.startswith(_QUEUE_FULL_LINE):
            signal = _signal_of(record)
            if signal in endpoint_state.WATCHED:
                endpoint_state.STATES[signal].dropped_from_queue()
                return False
        return True


_FILTER = _SdkExportLines()


def install(prefix: str = "otelbot: ", back_level: int = logging.WARNING) -> None:
    """Filter the SDK exporters' failure lines (idempotent). ``prefix`` starts our lines
    (the agent's log handler adds its own); ``back_level`` is the level of the line said
    when an endpoint takes data again."""
    endpoint_state.configure(prefix, back_level)
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _points(metrics_data: MetricsData) -> int:
    return sum(
        len(m.data.data_points)
        for rm in metrics_data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )


class WatchedSpanExporter(SpanExporter):
    """A span exporter whose results drive the endpoint lines; ``on_loss`` gets the number
    of spans of each failed export."""

    def __init__(self, inner: SpanExporter, on_loss: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        self._state = _watch("traces", inner)
        self._on_loss = on_loss

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        result = SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        finally:
            _report(self._state, result is SpanExportResult.SUCCESS, len(spans), self._on_loss)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class WatchedMetricExporter(MetricExporter):
    """A metric exporter whose results drive the endpoint lines; ``on_loss`` gets the number
    of data points of each failed export."""

    def __init__(self, inner: MetricExporter, on_loss: Callable[[int], None] | None = None) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self._state = _watch("metrics", inner)
        self._on_loss = on_loss

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = MetricExportResult.FAILURE
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        finally:
            ok = result is MetricExportResult.SUCCESS
            _report(self._state, ok, 0 if ok else _points(metrics_data), self._on_loss)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


class WatchedLogExporter(LogRecordExporter):
    """A log record exporter whose results drive the endpoint lines; ``on_loss`` gets the
    number of records of each failed export."""

    def __init__(
        self, inner: LogRecordExporter, on_loss: Callable[[int], None] | None = None
    ) -> None:
        self.inner = inner
        self._state = _watch("logs", inner)
        self._on_loss = on_loss

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        result = LogRecordExportResult.FAILURE
        try:
            result = self.inner.export(batch)
        finally:
            _report(self._state, result is LogRecordExportResult.SUCCESS, len(batch), self._on_loss)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _report(
    found: EndpointState, ok: bool, items: int, on_loss: Callable[[int], None] | None
) -> None:
    if ok:
        found.exported()
        return
    found.failed(items)
    if on_loss is not None:
        on_loss(items)


# --------------------------------------------------------------------------- SDK configurator


def log_record_processor(exporter: LogRecordExporter) -> Any:
    """The configurator's ``export_log_record_processor``: the SDK's batch processor in front
    of the watched exporter."""
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    return BatchLogRecordProcessor(WatchedLogExporter(exporter))


def configurator_hooks(kwargs: dict[str, Any]) -> None:
    """Before the SDK configurator runs: filter its exporters' lines, and watch the log
    exporters (where this SDK lets a configurator choose their processor)."""
    install()
    from opentelemetry.sdk._configuration import _initialize_components

    if "export_log_record_processor" in inspect.signature(_initialize_components).parameters:
        kwargs.setdefault("export_log_record_processor", log_record_processor)


def watch_metric_readers(meter_provider: Any = None) -> None:
    """After the SDK configurator ran: watch the exporter of each periodic metric reader.

    The configurator has no hook for the metric exporter, so this wraps the reader's
    exporter in place; if a future SDK keeps it elsewhere, metrics are simply not watched
    (and the SDK's own lines stay, since the filter only hides watched signals)."""
    if meter_provider is None:
        from opentelemetry import metrics

        meter_provider = metrics.get_meter_provider()
    for reader in getattr(meter_provider, "_metric_readers", ()):
        exporter = getattr(reader, "_exporter", None)
        if isinstance(exporter, MetricExporter) and not isinstance(exporter, WatchedMetricExporter):
            reader._exporter = WatchedMetricExporter(exporter)
