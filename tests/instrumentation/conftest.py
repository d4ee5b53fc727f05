"""Telemetry on the wire for the privacy tests: SDK providers whose spans, metric points and
log records go through the real OTLP/HTTP exporters to the receiver fixture, so a test can
scan the very bytes a collector would get."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelbot.export.distro import RedactingLogRecordProcessor
from otelbot.testing.otlp_receiver import OtlpReceiver


class WireTelemetry:
    """Tracer, meter and logger providers exporting OTLP/HTTP to ``receiver``.

    Log records of the ``logging`` loggers named in ``capture_logs`` go through otelbot's
    redacting processor first, as under the distro's configurator.
    """

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        endpoint = receiver.http_endpoint
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces"))
        )
        self.metric_reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"),
            export_interval_millis=3_600_000,
        )
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(RedactingLogRecordProcessor())
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint + "/v1/logs"))
        )
        self._handlers: list[tuple[logging.Logger, logging.Handler, int]] = []

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def capture_logs(self, name: str, level: int = logging.INFO) -> None:
        """Export the records of logger ``name`` (as the SDK's logging handler would)."""
        logger = logging.getLogger(name)
        with warnings.catch_warnings():
            # Deprecated, but it is what OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED
            # puts on the root logger under opentelemetry-instrument.
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(level=level, logger_provider=self.logger_provider)
        self._handlers.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(level)

    def exported(self) -> bytes:
        """Everything exported so far, as the receiver got it (metrics collected now)."""
        self.tracer_provider.force_flush()
        self.metric_reader.collect()
        self.meter_provider.force_flush()
        self.logger_provider.force_flush()
        return self.receiver.raw_bytes()

    def shutdown(self) -> None:
        for logger, handler, level in self._handlers:
            logger.removeHandler(handler)
            logger.setLevel(level)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


@pytest.fixture
def wire(otlp_receiver: OtlpReceiver) -> Iterator[WireTelemetry]:
    telemetry = WireTelemetry(otlp_receiver)
    yield telemetry
    telemetry.shutdown()
