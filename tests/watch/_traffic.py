"""Known traffic sent to watch with the real OpenTelemetry SDK and OTLP exporters."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otelbot import semconv

MS = 1_000_000  # ns
T0 = 1_700_000_000_000_000_000


class Bot:
    """One service's SDK pipelines (traces, metrics, logs) exporting to an endpoint."""

    def __init__(self, service: str, http_endpoint: str | None, grpc_endpoint: str | None = None):
        resource = Resource.create({"service.name": service})
        self.tracer_provider = TracerProvider(resource=resource)
        exporter = (
            GrpcSpanExporter(endpoint=grpc_endpoint, insecure=True)
            if grpc_endpoint
            else OTLPSpanExporter(endpoint=f"{http_endpoint}/v1/traces")
        )
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.tracer_provider.get_tracer("test")
        self.meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=f"{http_endpoint}/v1/metrics"),
                    export_interval_millis=3_600_000,
                )
            ]
            if http_endpoint
            else [],
        )
        self.meter = self.meter_provider.get_meter("test")
        self.logger_provider = LoggerProvider(resource=resource)
        if http_endpoint:
            self.logger_provider.add_log_record_processor(
                SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{http_endpoint}/v1/logs"))
            )
        self.logger = self.logger_provider.get_logger("test")

    def update(
        self,
        handler: str,
        start_ms: float,
        duration_ms: float,
        error: bool = False,
        children: Sequence[tuple[str, float, float]] = (("telegram.api sendMessage", 1, 2),),
    ) -> trace.Span:
        """One update span with children (name, offset ms, duration ms); ended."""
        start = T0 + int(start_ms * MS)
        root = self.tracer.start_span(
            "telegram.update message",
            kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={semconv.TELEGRAM_HANDLER: handler, semconv.TELEGRAM_UPDATE_TYPE: "message"},
        )
        ctx = trace.set_span_in_context(root)
        for name, offset, length in children:
            child = self.tracer.start_span(
                name, context=ctx, kind=SpanKind.CLIENT, start_time=start + int(offset * MS)
            )
            child.end(end_time=start + int((offset + length) * MS))
        if error:
            root.set_status(Status(StatusCode.ERROR, "ValueError"))
        root.end(end_time=start + int(duration_ms * MS))
        return root

    def finding(self, event: str, handler: str, summary: str, span: trace.Span | None) -> None:
        self.logger.emit(
            event_name=event,
            body=summary,
            severity_text="WARN",
            attributes={
                semconv.TELEGRAM_HANDLER: handler,
                semconv.FINDING_OBJECT: "sendMessage",
                semconv.FINDING_EVIDENCE: f"evidence for {event}",
                semconv.FINDING_SUGGESTION: f"suggestion for {event}",
                semconv.CODE_FILE_PATH: "bot.py",
                semconv.CODE_LINE_NUMBER: 42,
                semconv.CODE_FUNCTION_NAME: handler.rsplit(".", 1)[-1],
            },
            context=trace.set_span_in_context(span) if span is not None else None,
        )

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()
        self.logger_provider.force_flush()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()
