"""``otelbot_otlp``: the SDK's OTLP/HTTP exporter with otelbot's encoder, against a real
OTLP receiver: the bytes it posts are the SDK exporter's, its request size limit and
compression are the SDK's, and it falls back to the SDK's encoder where the SDK's
internals it uses are missing."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otelbot.export.otlp_http import OtlpHttpSpanExporter
from otelbot.testing.otlp_receiver import OtlpReceiver


def ended_spans() -> list[ReadableSpan]:
    provider = TracerProvider(resource=Resource({"service.name": "otlp-http"}))
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("otelbot.test", "1")
    with tracer.start_as_current_span("update", kind=SpanKind.CONSUMER, attributes={"n": 1}):
        span = tracer.start_span("SELECT", kind=SpanKind.CLIENT, attributes={"port": 5432})
        span.set_status(StatusCode.ERROR, "boom")
        span.end()
    return list(kept.get_finished_spans())


def endpoint(receiver: OtlpReceiver) -> str:
    return receiver.http_endpoint.rstrip("/") + "/v1/traces"


def test_it_posts_the_bytes_the_sdk_exporter_posts(otlp_receiver: OtlpReceiver) -> None:
    spans = ended_spans()
    ours = OtlpHttpSpanExporter(endpoint=endpoint(otlp_receiver))
    assert ours.fast
    assert ours.export(spans) is SpanExportResult.SUCCESS
    sdk = OTLPSpanExporter(endpoint=endpoint(otlp_receiver))
    assert sdk.export(spans) is SpanExportResult.SUCCESS
    assert otlp_receiver.raw[0] == otlp_receiver.raw[1] == sdk_encode(spans).SerializeToString()
    assert sorted(s.name for s in otlp_receiver.spans()) == ["SELECT", "SELECT", "update", "update"]
    ours.shutdown()


def test_compression_is_the_sdks(otlp_receiver: OtlpReceiver) -> None:
    spans = ended_spans()
    ours = OtlpHttpSpanExporter(endpoint=endpoint(otlp_receiver), compression=Compression.Gzip)
    assert ours.export(spans) is SpanExportResult.SUCCESS
    # Sent with Content-Encoding: gzip and gzipped (the receiver refuses a body that is not).
    assert otlp_receiver.rejected == 0
    assert otlp_receiver.raw == [sdk_encode(spans).SerializeToString()]


def test_a_request_over_the_size_limit_is_dropped_as_the_sdk_drops_it(
    otlp_receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    ours = OtlpHttpSpanExporter(endpoint=endpoint(otlp_receiver), max_request_size=10)
    with caplog.at_level(logging.WARNING):
        assert ours.export(ended_spans()) is SpanExportResult.FAILURE
    assert any("exceeds max_request_size 10" in r.getMessage() for r in caplog.records)
    assert otlp_receiver.raw == []


def test_without_the_sdk_internals_it_uses_the_sdk_encoder(otlp_receiver: OtlpReceiver) -> None:
    spans = ended_spans()
    ours = OtlpHttpSpanExporter(endpoint=endpoint(otlp_receiver))
    ours.fast = False  # what __init__ decides when _client and the rest are not found
    assert ours.export(spans) is SpanExportResult.SUCCESS
    assert otlp_receiver.raw == [sdk_encode(spans).SerializeToString()]


def test_after_shutdown_it_refuses_as_the_sdk_exporter_does(otlp_receiver: OtlpReceiver) -> None:
    ours = OtlpHttpSpanExporter(endpoint=endpoint(otlp_receiver))
    ours.shutdown()
    assert ours.export(ended_spans()) is SpanExportResult.FAILURE
    assert otlp_receiver.raw == []
