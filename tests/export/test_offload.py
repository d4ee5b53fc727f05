"""The span exporters otelbot's distro picks: ``otelbot_offload`` (OTLP encoded and sent by
a helper process) and ``otelbot_otlp`` (the SDK's HTTP exporter with otelbot's encoder),
arriving at a real OTLP receiver with the same content as from the standard exporter."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from otelbot.core.lightspan import LightTracer
from otelbot.export.offload import (
    OffloadSpanExporter,
    OffloadSpanProcessor,
    export_processor,
)
from otelbot.export.otlp_http import OtlpHttpSpanExporter
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from otelbot.testing.processes import Child, free_port, instrument_command


def emit_spans(exporter: SpanExporter, service: str) -> None:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        span_limits=SpanLimits(max_span_attributes=6),
    )
    # What the SDK configurator builds for the exporter (see the distro's configurator).
    provider.add_span_processor(export_processor(exporter))
    tracer = provider.get_tracer("otelbot.test", "1.2.3")
    with tracer.start_as_current_span(
        "telegram.update message",
        kind=SpanKind.SERVER,
        attributes={"telegram.update.type": "message"},
    ) as root:
        leaf = tracer.start_span(
            "SELECT users",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "postgresql",
                "server.port": 5432,
                "ratio": 0.5,
                "ok": True,
                "tags": ("a", "b"),
                "ids": (1, 2),
            },
        )
        leaf.add_event("exception", {"exception.type": "RuntimeError"})
        leaf.set_status(StatusCode.ERROR, "boom")
        leaf.end()
        linked = tracer.start_span("linked", links=[Link(root.get_span_context(), {"n": 1})])
        for i in range(8):  # two over the limit: the dropped count travels too
            linked.set_attribute(f"k{i}", i)
        linked.end()
        root.set_attribute("telegram.update.outcome", "handled")
    for _ in range(300):  # more than one batch
        tracer.start_span("INCRBY", kind=SpanKind.CLIENT).end()
    provider.shutdown()


def comparable(span: ReceivedSpan) -> tuple[object, ...]:
    resource = {k: v for k, v in span.resource.items() if k != "service.name"}
    return (
        span.name,
        span.kind,
        span.attributes,
        span.events,
        span.status_code,
        span.status_message,
        span.scope,
        sorted(resource.items()),
        span.parent_span_id != "",
        span.end_ns >= span.start_ns > 0,
    )


@pytest.fixture
def otlp_env(otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> OtlpReceiver:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    return otlp_receiver


def test_offloaded_spans_arrive_as_the_standard_exporter_sends_them(
    otlp_env: OtlpReceiver,
) -> None:
    emit_spans(OTLPSpanExporter(), "standard")
    emit_spans(OffloadSpanExporter(), "offload")  # through the OffloadSpanProcessor
    emit_spans(OtlpHttpSpanExporter(), "in-process")  # otelbot's encoder in the bot
    spans = otlp_env.spans()
    standard = [s for s in spans if s.resource["service.name"] == "standard"]
    offload = [s for s in spans if s.resource["service.name"] == "offload"]
    in_process = [s for s in spans if s.resource["service.name"] == "in-process"]
    assert len(standard) == len(offload) == len(in_process) == 303
    assert sorted(map(comparable, offload)) == sorted(map(comparable, standard))
    assert sorted(map(comparable, in_process)) == sorted(map(comparable, standard))
    # Trace structure survives the trip: the leaf is the root's child, in the root's trace.
    root = next(s for s in offload if s.name == "telegram.update message")
    leaf = next(s for s in offload if s.name == "SELECT users")
    assert (leaf.trace_id, leaf.parent_span_id) == (root.trace_id, root.span_id)
    assert leaf.attributes["tags"] == ["a", "b"] and leaf.status_code == 2
    assert dropped_counts(otlp_env) == {"standard": 2, "offload": 2, "in-process": 2}


def dropped_counts(receiver: OtlpReceiver) -> dict[str, int]:
    """dropped_attributes_count of the span named "linked", per service, off the wire."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    found = {}
    for body in receiver.raw:
        try:
            req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except Exception:
            continue
        for rs in req.resource_spans:
            service = next(
                a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
            )
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if span.name == "linked":
                        found[service] = span.dropped_attributes_count
    return found


def emit_light_spans(exporter: SpanExporter, service: str) -> LightTracer:
    """What otelbot's instrumentations make: light update and leaf spans."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(export_processor(exporter))
    light = LightTracer(provider.get_tracer("otelbot.test", "1.2.3"))
    root = light.start_span(
        "telegram.update message",
        context=context.Context(),
        kind=SpanKind.SERVER,
        attributes={"telegram.update.type": "message"},
    )
    with trace.use_span(root, end_on_exit=True):
        leaf = light.start_span(
            "telegram.api sendMessage",
            kind=SpanKind.CLIENT,
            attributes={
                "telegram.api.method": "sendMessage",
                "server.port": 443,
                "ratio": 0.5,
                "ok": True,
                "tags": ("a", "b"),
            },
        )
        leaf.add_event("telegram.flood_wait", {"telegram.api.retry_after": 3})
        leaf.set_status(StatusCode.ERROR, "Too Many Requests")
        leaf.end()
        root.set_attribute("telegram.update.outcome", "handled")
    for _ in range(300):  # more than one batch
        light.start_span("INCRBY", kind=SpanKind.CLIENT).end()
    provider.shutdown()
    return light


def test_light_spans_read_directly_arrive_as_the_standard_exporter_sends_them(
    otlp_env: OtlpReceiver,
) -> None:
    standard = emit_light_spans(OTLPSpanExporter(), "standard")
    offload = emit_light_spans(OffloadSpanExporter(), "offload")
    in_process = emit_light_spans(OtlpHttpSpanExporter(), "in-process")
    assert standard.offload is None and isinstance(offload.offload, OffloadSpanProcessor)
    assert in_process.offload is None and in_process._fast  # light spans, then SDK spans
    spans = otlp_env.spans()
    by_service = {
        name: sorted(comparable(s) for s in spans if s.resource["service.name"] == name)
        for name in ("standard", "offload", "in-process")
    }
    assert len(by_service["offload"]) == len(by_service["in-process"]) == 302
    assert by_service["offload"] == by_service["standard"]
    assert by_service["in-process"] == by_service["standard"]
    root = next(
        s
        for s in spans
        if s.name == "telegram.update message" and s.resource["service.name"] == "offload"
    )
    leaf = next(
        s
        for s in spans
        if s.name == "telegram.api sendMessage" and s.resource["service.name"] == "offload"
    )
    assert (leaf.trace_id, leaf.parent_span_id) == (root.trace_id, root.span_id)


def test_helper_is_a_separate_process_that_exits_with_the_exporter(
    otlp_env: OtlpReceiver,
) -> None:
    exporter = OffloadSpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    provider.get_tracer("t").start_span("one").end()
    assert provider.force_flush(10_000)
    otlp_env.wait_for(lambda r: r.spans("one"), 10)
    helper = exporter._proc
    assert helper is not None and helper.pid != os.getpid()
    provider.shutdown()
    assert helper.poll() is not None


def test_enum_attribute_values_are_sent_as_their_plain_value(otlp_env: OtlpReceiver) -> None:
    import enum

    class ChatType(str, enum.Enum):
        PRIVATE = "private"

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OffloadSpanExporter()))
    provider.get_tracer("t").start_span("enum", attributes={"chat": ChatType.PRIVATE}).end()
    provider.shutdown()
    assert otlp_env.wait_for(lambda r: r.spans("enum"), 10)[0].attributes["chat"] == "private"


def test_offload_exporter_also_works_behind_the_standard_batch_processor(
    otlp_env: OtlpReceiver,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OffloadSpanExporter()))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer"):
        tracer.start_span("inner").end()
    provider.shutdown()
    spans = {s.name: s for s in otlp_env.wait_for(lambda r: len(r.spans()) >= 2 and r.spans())}
    assert spans["inner"].parent_span_id == spans["outer"].span_id


def test_configurator_puts_the_offload_processor_in_front_of_the_offload_exporter() -> None:
    assert isinstance(export_processor(OffloadSpanExporter()), OffloadSpanProcessor)
    assert isinstance(export_processor(OTLPSpanExporter()), BatchSpanProcessor)
    assert isinstance(export_processor(OtlpHttpSpanExporter()), BatchSpanProcessor)


def test_spans_over_the_queue_size_are_dropped_not_kept(
    otlp_env: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "20")
    processor = OffloadSpanProcessor(OffloadSpanExporter())
    processor._sending.acquire()  # the writer is stuck (a helper that does not read)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(100):
        tracer.start_span("x").end()
    assert processor._queued <= 20 and processor.dropped == 80
    processor._sending.release()
    provider.shutdown()
    assert len(otlp_env.wait_for(lambda r: r.spans("x"))) == 20


def test_an_interrupt_does_not_end_the_helper_before_the_bot_closes_it(
    otlp_env: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = OffloadSpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(export_processor(exporter))
    tracer = provider.get_tracer("t")
    tracer.start_span("before").end()
    assert provider.force_flush(10_000)
    helper = exporter._proc
    assert helper is not None
    os.kill(helper.pid, signal.SIGINT)
    tracer.start_span("after").end()
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert helper.returncode == 0  # it ended at EOF, as always, not on the interrupt
    assert "restarting" not in caplog.text
    assert {s.name for s in otlp_env.wait_for(lambda r: len(r.spans()) >= 2 and r.spans())} == {
        "before",
        "after",
    }


# A bot stopped with Ctrl+C that ends one more span while it shuts down (as a framework
# closing its session does).
INTERRUPTED_BOT = """
import time
from opentelemetry import trace

tracer = trace.get_tracer("interrupt-test")
for i in range(5):
    tracer.start_span(f"before {i}").end()
print("ready", flush=True)
try:
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    tracer.start_span("after the interrupt").end()
    print("interrupted", flush=True)
"""


def test_ctrl_c_stops_the_bot_and_its_helper_quietly_and_loses_no_span(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    script = tmp_path / "bot.py"
    script.write_text(INTERRUPTED_BOT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME="interrupt-test",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        PYTHONUNBUFFERED="1",
    )
    with Child(
        [instrument_command(), sys.executable, str(script)], env=env, new_session=True
    ) as out:
        out.wait_for_line("ready", 30)
        # The helper runs and has sent the first spans: the bot is mid-flight.
        otlp_receiver.wait_for(lambda r: len(r.spans()) >= 5, 20)
        os.killpg(out.proc.pid, signal.SIGINT)  # Ctrl+C: SIGINT to the whole foreground group
        assert out.wait() == 0, out.output
    assert out.matching("interrupted") == ["interrupted"], out.output
    assert "Traceback" not in out.output and "KeyboardInterrupt" not in out.output, out.output
    assert out.matching("export helper exited") == [], out.output
    otlp_receiver.wait_for(lambda r: r.spans("after the interrupt"), 10)
    assert {s.name for s in otlp_receiver.spans()} == {
        *(f"before {i}" for i in range(5)),
        "after the interrupt",
    }


def test_the_helper_says_once_when_the_endpoint_is_down_and_once_when_it_is_back(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The helper's own sender (no SDK exporter in it) drives the same two lines."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # a refused export gives up at once
    provider = TracerProvider()
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("t")
    for name in ("lost 1", "lost 2", "lost 3", "delivered"):
        tracer.start_span(name).end()
    lost_1, lost_2, lost_3, delivered = kept.get_finished_spans()
    # The helper writes to the bot's stderr (capfd sees it) at the level it is given.
    exporter = OffloadSpanExporter(
        command=[sys.executable, "-I", "-m", "otelbot.export.helper", "--log-level=30"]
    )
    exporter.export([lost_1])  # the endpoint is down: nothing listens on the port
    exporter.export([lost_2, lost_3])
    assert exporter.force_flush(10_000)
    down = capfd.readouterr().err
    with OtlpReceiver(http_port=port, grpc_port=None) as receiver:
        exporter.export([delivered])
        assert exporter.force_flush(10_000)
        exporter.shutdown()
        assert [s.name for s in receiver.spans()] == ["delivered"]
    back = capfd.readouterr().err
    assert down.splitlines() == [
        f"otelbot: cannot export spans to {url} (Connection refused); "
        "dropping spans until the endpoint takes them again"
    ]
    assert back.splitlines() == [
        f"otelbot: {url} takes spans again; 2 exports had failed, 3 spans were not delivered"
    ]
