"""Light spans give the exporters the same spans the SDK's tracer would (roots, children
of local and remote parents, any sampler), and step aside whenever they could not."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode

from otelbot.core.errors import record_exception
from otelbot.core.lightspan import LightSpan, LightTracer, light_tracer

ATTRS = {
    "db.system.name": "postgresql",
    "db.namespace": "test",
    "server.port": 5432,
    "db.query.text": "SELECT ?",
}


def _setup(
    monkeypatch: pytest.MonkeyPatch, fast: bool = True, **provider_kwargs: Any
) -> tuple[TracerProvider, InMemorySpanExporter]:
    monkeypatch.setenv("OTELBOT_LIGHT_SPANS", "true" if fast else "false")
    provider = TracerProvider(resource=Resource({"service.name": "leaf-test"}), **provider_kwargs)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _scenario(provider: TracerProvider) -> list[Any]:
    """What the instrumentations do with a leaf: start it under the update span, add
    attributes, an event, an error; plus a plain successful one."""
    tracer = provider.get_tracer("otelbot.test", "1.0")
    leaves = light_tracer(tracer)
    spans = []
    # A root made current (the polling update span), with a span of the bot's own code
    # (the SDK's tracer) under it.
    root = leaves.start_span(
        "telegram.update message",
        context=context.Context(),
        kind=SpanKind.SERVER,
        attributes={"telegram.update.type": "x"},
    )
    spans.append(root)
    with trace.use_span(root, end_on_exit=True):
        with tracer.start_as_current_span("user code"):
            pass
    # A child of a remote parent (a webhook request with traceparent).
    remote = trace.SpanContext(
        0x1234,
        0x5678,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        trace_state=trace.TraceState([("vendor", "v1")]),
    )
    child = leaves.start_span(
        "POST", context=trace.set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.SERVER
    )
    spans.append(child)
    child.end()
    with tracer.start_as_current_span("telegram.update callback_query"):
        ok = leaves.start_span("SELECT pg_class", kind=SpanKind.CLIENT, attributes=ATTRS)
        ok.set_attribute("db.response.returned_rows", 1)
        ok.set_attribute("none.value", None)  # the SDK keeps it (an empty value)
        ok.set_attributes({"list.value": ["a", "b"]})
        spans.append(ok)
        ok.end()
        failed = leaves.start_span(
            "telegram.api sendMessage",
            kind=SpanKind.CLIENT,
            attributes={"telegram.api.method": "sendMessage"},
        )
        failed.add_event("telegram.flood_wait", {"telegram.api.retry_after": 3})
        try:
            raise RuntimeError("Too Many Requests: retry after 3")
        except RuntimeError as exc:
            record_exception(failed, exc)
        failed.set_status(StatusCode.OK)  # OK after ERROR wins, as in the SDK
        failed.update_name("telegram.api sendMessage")
        spans.append(failed)
        failed.end()
        failed.set_attribute("after.end", 1)  # ignored, as in the SDK
        failed.end()  # a second end is ignored
    return spans


def _normalized(exporter: InMemorySpanExporter) -> list[Any]:
    """The OTLP protobuf of the finished spans, with ids and times zeroed."""
    request = encode_spans(exporter.get_finished_spans())
    out = []
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.trace_id = b""
                span.span_id = b""
                span.parent_span_id = b""
                span.start_time_unix_nano = span.end_time_unix_nano = 0
                for event in span.events:
                    event.time_unix_nano = 0
                    for attr in event.attributes:
                        if attr.key == "exception.stacktrace":
                            attr.value.string_value = "<stack>"
                out.append(
                    (
                        rs.resource.SerializeToString(),
                        ss.scope.SerializeToString(),
                        span.SerializeToString(),
                    )
                )
    return sorted(out)


SAMPLERS = {
    "default": None,
    "always_on": ALWAYS_ON,
    "parentbased_traceidratio": ParentBased(TraceIdRatioBased(1.0)),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_otlp_content_as_sdk_spans(monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    kwargs = {"sampler": SAMPLERS[sampler]} if SAMPLERS[sampler] else {}
    sdk_provider, sdk_exporter = _setup(monkeypatch, fast=False, **kwargs)
    sdk_spans = _scenario(sdk_provider)
    fast_provider, fast_exporter = _setup(monkeypatch, fast=True, **kwargs)
    fast_spans = _scenario(fast_provider)

    assert not any(isinstance(s, LightSpan) for s in sdk_spans)
    assert all(isinstance(s, LightSpan) for s in fast_spans)
    assert len(fast_exporter.get_finished_spans()) == 6
    assert _normalized(fast_exporter) == _normalized(sdk_exporter)


def test_ids_and_parents(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = _setup(monkeypatch)
    _scenario(provider)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root, user = spans["telegram.update message"], spans["user code"]
    assert user.parent == root.context  # the bot's own spans nest under a light span
    assert root.parent is None and root.context.trace_id != 0
    server = spans["POST"]
    assert server.parent.is_remote and server.context.trace_id == 0x1234
    assert server.context.trace_state.get("vendor") == "v1"


def test_leaf_is_a_child_of_the_current_span(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = _setup(monkeypatch)
    tracer = provider.get_tracer("t")
    before = dict(ATTRS)
    with tracer.start_as_current_span("parent") as parent:
        leaf = light_tracer(tracer).start_span("leaf", attributes=ATTRS)
        assert isinstance(leaf, LightSpan)
        leaf.set_attribute("extra", 1)
        leaf.end()
    finished = {s.name: s for s in exporter.get_finished_spans()}
    ctx = parent.get_span_context()
    assert finished["leaf"].parent == ctx
    assert finished["leaf"].context.trace_id == ctx.trace_id
    assert finished["leaf"].context.span_id not in (0, ctx.span_id)
    assert finished["leaf"].context.trace_flags == ctx.trace_flags
    assert finished["leaf"].start_time <= finished["leaf"].end_time
    assert finished["leaf"].attributes["extra"] == 1
    assert before == ATTRS  # the cached dict the caller passed is not touched


def test_unsampled_parent_gives_a_non_recording_child(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = _setup(monkeypatch, sampler=ParentBased(TraceIdRatioBased(0.0)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent") as parent:
        leaf = light_tracer(tracer).start_span("leaf")
    assert isinstance(leaf, NonRecordingSpan) and not leaf.is_recording()
    assert leaf.get_span_context().trace_id == parent.get_span_context().trace_id
    assert not leaf.get_span_context().trace_flags.sampled
    # Under a light unsampled root the leaf is that root's span: nothing is allocated.
    light = light_tracer(tracer)
    root = light.start_span("root", context=context.Context())
    assert isinstance(root, NonRecordingSpan) and root.get_span_context().is_valid
    token = context.attach(trace.set_span_in_context(root))
    try:
        assert light.start_span("leaf") is root
    finally:
        context.detach(token)
    leaf.end()
    root.end()
    assert exporter.get_finished_spans() == ()


class _StartWatcher(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


@pytest.mark.parametrize("case", ["on_start", "limits", "env"])
def test_steps_aside(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    kwargs: dict[str, Any] = {}
    if case == "limits":
        kwargs["span_limits"] = SpanLimits(max_span_attribute_length=10)
    provider, exporter = _setup(monkeypatch, fast=case != "env", **kwargs)
    watcher = _StartWatcher()
    if case == "on_start":
        provider.add_span_processor(watcher)
    tracer = provider.get_tracer("t")
    leaves = light_tracer(tracer)
    assert isinstance(leaves, LightTracer)
    with tracer.start_as_current_span("parent"):
        span = leaves.start_span("leaf", attributes=ATTRS)
    assert not isinstance(span, LightSpan)
    span.end()
    assert "leaf" in [s.name for s in exporter.get_finished_spans()]
    if case == "on_start":
        assert watcher.started == ["parent", "leaf"]


def test_processor_added_later_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ = _setup(monkeypatch)
    tracer = provider.get_tracer("t")
    leaves = light_tracer(tracer)
    with tracer.start_as_current_span("parent"):
        assert isinstance(leaves.start_span("first"), LightSpan)
        watcher = _StartWatcher()
        provider.add_span_processor(watcher)
        assert not isinstance(leaves.start_span("second"), LightSpan)
    assert watcher.started == ["second"]


def test_non_sdk_tracers_are_left_alone() -> None:
    noop = trace.NoOpTracer()
    assert light_tracer(noop) is noop


def test_current_span_lookup_matches_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelbot.core.lightspan import _span_in

    provider, _ = _setup(monkeypatch)
    tracer = provider.get_tracer("t")

    class Custom(NonRecordingSpan):
        pass

    sdk_span = tracer.start_span("sdk")
    light_span = light_tracer(tracer).start_span("light")
    values: list[Any] = [
        None,
        sdk_span,
        light_span,
        NonRecordingSpan(sdk_span.get_span_context()),
        Custom(sdk_span.get_span_context()),
        "not a span",
    ]
    for value in values:
        ctx = context.set_value(trace.propagation._SPAN_KEY, value, context.Context())
        assert _span_in(ctx) is trace.get_current_span(ctx)
        token = context.attach(ctx)
        try:
            assert _span_in(None) is trace.get_current_span()
        finally:
            context.detach(token)
    assert _span_in(context.Context()) is trace.INVALID_SPAN
