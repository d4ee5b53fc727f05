"""otelbot's OpenTelemetry distro and SDK configurator, used by ``opentelemetry-instrument``.

    pip install otelbot
    OTEL_SERVICE_NAME=my-bot opentelemetry-instrument python bot.py

The distro sets otelbot's defaults (OTLP over HTTP/protobuf for traces, metrics and logs)
without overriding anything the user set in ``OTEL_*``, picks the trace export path by the
CPUs the process may use (``otelbot.export.cpus``: the export helper process from two CPUs
on; below, the SDK's OTLP/HTTP exporter in the bot's process with otelbot's encoder,
``otelbot.export.otlp_http``, or the SDK's gRPC exporter when the protocol is gRPC),
loads otelbot's instrumentors,
and skips the contrib instrumentations of the same libraries (they would make duplicate
spans), saying so once in the log. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otelbot_redis``
disables one of otelbot's instrumentors, and the contrib one is then used if installed.

The configurator is the SDK's own, plus a log-record processor that redacts bot tokens
from every log record before any exporter sees it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk._logs import LogRecordProcessor

from otelbot.core.redaction import redact_text
from otelbot.export import cpus

logger = logging.getLogger("otelbot")

#: otelbot entry point -> the contrib entry point for the same library.
CONTRIB_EQUIVALENTS = {
    "otelbot_aiohttp_client": "aiohttp-client",
    "otelbot_aiohttp_server": "aiohttp-server",
    "otelbot_asyncpg": "asyncpg",
    "otelbot_redis": "redis",
    "otelbot_httpx": "httpx",
}

#: OTEL_TRACES_EXPORTER when unset: OTLP all the same, encoded and sent by a helper process
#: off the bot's GIL (otelbot.export.offload) where the process may use two CPUs or more,
#: else in the bot's process (cheaper in total on one CPU): by the SDK's OTLP/HTTP exporter
#: with otelbot's encoder (otelbot.export.otlp_http), or the SDK's own exporter for gRPC.
HELPER_EXPORTER = "otelbot_offload"
IN_PROCESS_EXPORTER = "otelbot_otlp"
SDK_EXPORTER = "otlp"


def _traces_protocol() -> str:
    return (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


DEFAULTS = {
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
}

_skipped_contrib: list[str] = []

#: Why the trace exporter is what it is (also logged once, at INFO, on the otelbot logger).
trace_exporter_reason = ""


def choose_trace_exporter() -> str:
    """The trace exporter otelbot's default picks, by the CPUs this process may use."""
    global trace_exporter_reason
    budget = cpus.budget()
    if cpus.helper_pays(budget.cpus):
        chosen, how = HELPER_EXPORTER, "the export helper process"
    elif _traces_protocol() == "http/protobuf":
        chosen = IN_PROCESS_EXPORTER
        how = "the SDK's OTLP/HTTP exporter with otelbot's encoder, in the bot's process"
    else:
        chosen, how = SDK_EXPORTER, "the SDK's OTLP exporter in the bot's process"
    trace_exporter_reason = (
        f"OTEL_TRACES_EXPORTER={chosen} ({how}): {budget.describe()}; the helper is used "
        f"from {cpus.HELPER_MIN_CPUS:g} CPUs on"
    )
    return chosen


def _disabled() -> set[str]:
    value = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {name.strip() for name in value.split(",") if name.strip()}


class OtelbotDistro(BaseDistro):
    """Configures defaults and decides which instrumentors load."""

    def _configure(self, **kwargs: Any) -> None:
        global trace_exporter_reason
        for key, value in DEFAULTS.items():
            os.environ.setdefault(key, value)
        chosen = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
        if chosen:  # the user's choice always wins
            trace_exporter_reason = f"OTEL_TRACES_EXPORTER={chosen} (set in the environment)"
        else:
            os.environ["OTEL_TRACES_EXPORTER"] = choose_trace_exporter()
        logger.info("otelbot: traces: %s", trace_exporter_reason)

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        name = entry_point.name
        if entry_point.value.startswith("otelbot."):
            # Check our own dependencies: a library the bot doesn't use is skipped quietly.
            kwargs.pop("skip_dep_check", None)
            instrumentor = entry_point.load()()
            instrumentor.instrument(raise_exception_on_conflict=True, **kwargs)
            return
        disabled = _disabled()
        for ours, contrib in CONTRIB_EQUIVALENTS.items():
            if name == contrib and ours not in disabled:
                _skipped_contrib.append(name)
                return
        super().load_instrumentor(entry_point, **kwargs)


def post_instrument() -> None:
    """After all instrumentors loaded: one log line naming the contrib ones skipped."""
    if _skipped_contrib:
        logger.warning(
            "otelbot: skipped the contrib instrumentation(s) %s because otelbot instruments "
            "the same libraries (disable otelbot's with OTEL_PYTHON_DISABLED_INSTRUMENTATIONS "
            "to use them instead)",
            ", ".join(sorted(set(_skipped_contrib))),
        )


class RedactingLogRecordProcessor(LogRecordProcessor):
    """Removes bot tokens from a log record's body and attributes before export.

    Registered ahead of the exporting processors, so no exporter sees the original.
    """

    def on_emit(self, log_record: Any) -> None:
        try:
            record = getattr(log_record, "log_record", log_record)
            body = record.body
            if isinstance(body, str):
                record.body = redact_text(body)
            attrs = record.attributes
            if attrs:
                for key, value in list(attrs.items()):
                    if isinstance(value, str):
                        safe = redact_text(value)
                        if safe is not value:
                            attrs[key] = safe
        except Exception:  # never let telemetry break logging
            pass

    def emit(self, log_data: Any) -> None:  # SDKs before the on_emit rename
        self.on_emit(log_data)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class OtelbotConfigurator(_OTelSDKConfigurator):
    """The SDK configurator, with token redaction for log records, and the offload span
    processor in front of the ``otelbot_offload`` exporter (every other exporter gets the
    SDK's ``BatchSpanProcessor`` as usual)."""

    def _configure(self, **kwargs: Any) -> None:
        from otelbot.export import endpoint
        from otelbot.export.offload import export_processor

        kwargs.setdefault("export_span_processor", export_processor)
        processors = list(kwargs.pop("log_record_processors", None) or [])
        kwargs["log_record_processors"] = [RedactingLogRecordProcessor(), *processors]
        endpoint.configurator_hooks(kwargs)  # one line when the OTLP endpoint is down / back
        super()._configure(**kwargs)
        endpoint.watch_metric_readers()
