"""``otelbot_otlp``'s span processor, which encodes each span when it ends: at a real OTLP
receiver it sends the very requests the SDK's ``BatchSpanProcessor`` + OTLP/HTTP exporter
send for the same spans, keeps to the queue bound, delivers everything on flush and
shutdown, and queues only objects the garbage collector does not track."""

from __future__ import annotations

import gc
import logging

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

from otelbot.core.lightspan import LightSpan, LightTracer
from otelbot.export import endpoint
from otelbot.export.encoding import EncodingSpanProcessor, export_processor
from otelbot.export.otlp_http import OtlpHttpSpanExporter
from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.processes import free_port


def url(receiver: OtlpReceiver) -> str:
    return receiver.http_endpoint.rstrip("/") + "/v1/traces"


@pytest.fixture(autouse=True)
def batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches by size and flush only (no timer), for both processors alike."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    monkeypatch.setenv("OTELBOT_LIGHT_SPANS", "true")


def many_sdk_spans(count: int) -> list[ReadableSpan]:
    """Ended SDK spans of two resources and three scopes (two of them equal but distinct
    objects), interleaved."""
    ended = InMemorySpanExporter()
    tracers = []
    for service in ("bot", "agent"):
        provider = TracerProvider(resource=Resource({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(ended))
        tracers += [
            provider.get_tracer("otelbot.asyncpg", "1.0"),
            provider.get_tracer("otelbot.redis", schema_url="https://opentelemetry.io/s/1"),
            provider.get_tracer("otelbot.asyncpg", "1.0"),
        ]
    for i in range(count):
        tracer = tracers[i % len(tracers)]
        with tracer.start_as_current_span("update", kind=SpanKind.CONSUMER) as span:
            span.set_attribute("n", i)
            if i % 7 == 0:
                span.add_event("flood_wait", {"retry_after": 3})
                span.set_status(StatusCode.ERROR, "boom")
    return list(ended.get_finished_spans())


def test_sdk_spans_are_sent_as_the_sdk_batch_processor_sends_them(
    otlp_receiver: OtlpReceiver,
) -> None:
    spans = many_sdk_spans(1100)  # two full batches and a partial one
    standard = BatchSpanProcessor(OTLPSpanExporter(endpoint=url(otlp_receiver)))
    for span in spans:
        standard.on_end(span)
    assert standard.force_flush()
    sent_by_sdk = list(otlp_receiver.raw)
    otlp_receiver.clear()
    ours = export_processor(OtlpHttpSpanExporter(endpoint=url(otlp_receiver)))
    assert isinstance(ours, EncodingSpanProcessor)
    for span in spans:
        ours.on_end(span)
    assert ours.force_flush()
    assert len(sent_by_sdk) == 3
    assert otlp_receiver.raw == sent_by_sdk
    standard.shutdown()
    ours.shutdown()


def as_readable(span: LightSpan) -> ReadableSpan:
    """The ``ReadableSpan`` a light span hands the SDK's processors when it ends."""
    owner = span._owner
    return ReadableSpan(
        name=span._name,
        context=span._context,
        parent=span._parent,
        resource=owner.resource,
        attributes=span._attributes,
        events=tuple(span._events),
        kind=span._kind,
        status=span._status,
        start_time=span._start,
        end_time=span._end,
        instrumentation_scope=owner.scope,
    )


def test_light_spans_are_encoded_without_a_readable_span_and_sent_as_the_sdk_sends_them(
    otlp_receiver: OtlpReceiver,
) -> None:
    processor = export_processor(OtlpHttpSpanExporter(endpoint=url(otlp_receiver)))
    made: list[LightSpan] = []
    providers = []
    for service in ("bot", "webhook"):
        provider = TracerProvider(resource=Resource({"service.name": service}))
        provider.add_span_processor(processor)
        providers.append(provider)
        for scope in ("otelbot.aiogram", "otelbot.bot_api"):
            light = LightTracer(provider.get_tracer(scope, "0.1"))
            root = light.start_span(
                "telegram.update message",
                context=context.Context(),
                kind=SpanKind.SERVER,
                attributes={"telegram.update.type": "message"},
            )
            with trace.use_span(root, end_on_exit=True):
                leaf = light.start_span("telegram.api sendMessage", kind=SpanKind.CLIENT)
                leaf.add_event("telegram.flood_wait", {"telegram.api.retry_after": 3})
                leaf.set_status(StatusCode.ERROR, "Too Many Requests")
                leaf.end()
            assert light.offload is processor  # ended straight into the processor
            made += [leaf, root]
    assert all(type(s) is LightSpan for s in made)
    assert processor.force_flush()
    ours = list(otlp_receiver.raw)
    otlp_receiver.clear()
    standard = BatchSpanProcessor(OTLPSpanExporter(endpoint=url(otlp_receiver)))
    for span in made:
        standard.on_end(as_readable(span))
    assert standard.force_flush()
    assert len(ours) == 1 and ours == otlp_receiver.raw
    standard.shutdown()
    providers[0].shutdown()


def test_spans_over_the_queue_size_are_dropped_counted_and_said_once(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "20")
    # Said once per process: as if not said yet, and as it was after the test.
    monkeypatch.setattr(endpoint._states["traces"], "_queue_full_said", False)
    endpoint.install()
    processor = export_processor(OtlpHttpSpanExporter(endpoint=url(otlp_receiver)))
    assert isinstance(processor, EncodingSpanProcessor)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with caplog.at_level(logging.INFO):
        with processor._exporting:  # the sender is stuck (an endpoint that hangs)
            for _ in range(100):
                tracer.start_span("x").end()
            assert processor._queued == 20 and processor.dropped == 80
        provider.shutdown()
    assert len(otlp_receiver.wait_for(lambda r: len(r.spans("x")) >= 20 and r.spans("x"))) == 20
    full = [r for r in caplog.records if "the export queue of spans is full" in r.getMessage()]
    assert len(full) == 1


def test_within_the_queue_size_nothing_is_dropped_or_said(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "20")
    processor = export_processor(OtlpHttpSpanExporter(endpoint=url(otlp_receiver)))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.INFO):
        with processor._exporting:  # type: ignore[attr-defined]
            for _ in range(20):
                provider.get_tracer("t").start_span("x").end()
        provider.shutdown()
    assert processor.dropped == 0  # type: ignore[attr-defined]
    assert len(otlp_receiver.spans("x")) == 20
    assert "full" not in caplog.text


def test_force_flush_and_shutdown_deliver_everything_queued(otlp_receiver: OtlpReceiver) -> None:
    processor = export_processor(OtlpHttpSpanExporter(endpoint=url(otlp_receiver)))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for i in range(1000):
        tracer.start_span(f"s{i}").end()
    assert provider.force_flush()
    assert len(otlp_receiver.spans()) == 1000  # no waiting: flushed means sent
    for i in range(7):
        tracer.start_span(f"late{i}").end()
    provider.shutdown()
    assert len(otlp_receiver.spans()) == 1007
    assert {s.name for s in otlp_receiver.spans()} == {
        *(f"s{i}" for i in range(1000)),
        *(f"late{i}" for i in range(7)),
    }
    tracer.start_span("after shutdown").end()
    assert not processor.force_flush()
    assert otlp_receiver.spans("after shutdown") == []


def test_only_sampled_spans_are_sent(otlp_receiver: OtlpReceiver) -> None:
    processor = EncodingSpanProcessor(OtlpHttpSpanExporter(endpoint=url(otlp_receiver)))
    for flags, name in ((TraceFlags(0), "unsampled"), (TraceFlags(1), "sampled")):
        processor.on_end(
            ReadableSpan(name, context=SpanContext(1, 2, False, flags), start_time=1, end_time=2)
        )
    processor.shutdown()
    assert [s.name for s in otlp_receiver.spans()] == ["sampled"]


def test_queued_spans_are_objects_the_garbage_collector_does_not_track(
    otlp_receiver: OtlpReceiver,
) -> None:
    processor = export_processor(OtlpHttpSpanExporter(endpoint=url(otlp_receiver)))
    assert isinstance(processor, EncodingSpanProcessor)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    light = LightTracer(provider.get_tracer("light"))
    sdk = provider.get_tracer("sdk")
    for i in range(300):
        with sdk.start_as_current_span("update", attributes={"n": i}):
            leaf = light.start_span("SELECT", kind=SpanKind.CLIENT, attributes={"n": i})
            leaf.add_event("e", {"k": "v"})
            leaf.end()
    (segment,) = processor._segments
    assert len(segment.messages) == len(segment.keys) == processor._queued == 600
    assert not any(gc.is_tracked(m) for m in segment.messages)
    assert not gc.is_tracked(segment.keys)
    assert len(segment.pairs) == 2  # one (resource, scope) per tracer, not one per span
    provider.shutdown()
    assert len(otlp_receiver.spans()) == 600


def test_endpoint_down_then_back_is_said_once_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    endpoint.install()
    port = free_port()  # nothing listens there yet
    processor = export_processor(
        OtlpHttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with caplog.at_level(logging.DEBUG, logger="otelbot.export.endpoint"):
        for attempt in range(2):
            tracer.start_span(f"lost{attempt}").end()
            provider.force_flush()
        receiver = OtlpReceiver(http_port=port).start()
        try:
            tracer.start_span("delivered").end()
            provider.force_flush()
            provider.shutdown()
        finally:
            receiver.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "otelbot.export.endpoint"]
    down = [m for m in lines if m.startswith("otelbot: cannot export spans to ")]
    back = [m for m in lines if " takes spans again; " in m]
    assert len(down) == 1 and f"127.0.0.1:{port}" in down[0], lines
    assert back == [
        f"otelbot: http://127.0.0.1:{port}/v1/traces takes spans again; "
        "2 exports had failed, 2 spans were not delivered"
    ], lines
    assert [s.name for s in receiver.spans()] == ["delivered"]
