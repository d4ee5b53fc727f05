"""otelbot's OTLP encoder writes what the SDK's encoder writes: for SDK spans, light spans
and the export helper's rows, over every field the SDK fills, compared as parsed
``ExportTraceServiceRequest`` messages and byte for byte."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from otelbot.core.lightspan import LightSpan, LightTracer
from otelbot.export.otlp import encode_rows, encode_spans
from otelbot.export.rows import SpanBatch, read_rows

#: Every kind of attribute value the SDK takes, edge values included.
VALUES: dict[str, Any] = {
    "str": "postgresql",
    "str.empty": "",
    "str.unicode": "привет, 世界 🤖",
    "str.long": "x" * 300,  # a two-byte length
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.small": 5432,
    "int.negative": -1,
    "int.min": -(2**63),
    "int.max": 2**63 - 1,
    "float": 0.25,
    "float.negative_zero": -0.0,
    "float.inf": float("inf"),
    "bytes": b"\x00\xffraw",
    "bytes.empty": b"",
    "seq.str": ("a", "", "ü"),
    "seq.int": (1, -2, 2**40),
    "seq.float": (0.5, -1.5),
    "seq.bool": (True, False),
    "seq.none": ("a", None),
    "seq.empty": (),
}

REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(1),
    trace_state=TraceState([("vendor", "v1"), ("other@tenant", "o-2")]),
)
LOCAL = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(0))


def provider(resource: Resource, **kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    made = TracerProvider(resource=resource, **kwargs)
    exporter = InMemorySpanExporter()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    return made, exporter


def wide_spans() -> list[ReadableSpan]:
    """Spans filling every field the SDK's encoder writes, from two resources (one of them
    twice, as equal but distinct objects) and several scopes."""
    resource = Resource({"service.name": "bot", "service.instance.id": "i-1", "n": 3})
    sdk, ended = provider(
        resource, span_limits=SpanLimits(max_span_attributes=40, max_events=3, max_links=1)
    )
    db = sdk.get_tracer("otelbot.asyncpg", "1.0", schema_url="https://opentelemetry.io/s/1.26.0")
    api = sdk.get_tracer("otelbot.bot_api", attributes={"scope.attr": "x", "scope.n": 1})
    bare = sdk.get_tracer("")

    remote_parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    with api.start_as_current_span(
        "telegram.update message", context=remote_parent, kind=SpanKind.SERVER, attributes=VALUES
    ) as root:
        root.add_event("flood_wait", {"retry_after": 3, "ok": True, "tags": ("a",)})
        root.add_event("")  # no name, no attributes
        for i in range(3):  # one over max_events: dropped_events_count
            root.add_event(f"tick {i}", timestamp=1_700_000_000_000_000_000 + i)
        child = db.start_span(
            "SELECT users",
            kind=SpanKind.CLIENT,
            links=[Link(LOCAL), Link(REMOTE, {"link.n": 1})],  # one over: dropped_links_count
        )
        child.set_status(StatusCode.ERROR, "connection reset: ошибка")
        child.end()
        leaf = bare.start_span("", kind=SpanKind.PRODUCER)  # empty name, empty scope name
        leaf.set_status(StatusCode.OK)
        leaf.end()
        db.start_span("consume", kind=SpanKind.CONSUMER, links=[Link(LOCAL, {})]).end()
        err = api.start_span("failed")
        err.set_status(StatusCode.ERROR)  # no description
        err.end()
    # A root with its own trace state, a local parent and a large dropped-attributes count.
    limited, limited_ended = provider(
        Resource({"service.name": "bot", "service.instance.id": "i-1", "n": 3}),
        span_limits=SpanLimits(
            max_span_attributes=2, max_event_attributes=1, max_link_attributes=1
        ),
    )
    tracer = limited.get_tracer(
        "otelbot.asyncpg", "1.0", schema_url="https://opentelemetry.io/s/1.26.0"
    )
    state = trace.set_span_in_context(
        trace.NonRecordingSpan(
            SpanContext(0x99, 0x98, False, TraceFlags(1), TraceState([("k", "v")]))
        )
    )
    span = tracer.start_span(
        "limited",
        context=state,
        attributes={f"a{i}": i for i in range(200)},
        links=[Link(REMOTE, {"l1": 1, "l2": 2})],
    )
    span.add_event("limited event", {"e1": 1, "e2": 2, "e3": 3})
    span.end()
    other, other_ended = provider(
        Resource({"service.name": "agent"}, schema_url="https://opentelemetry.io/s/1.25.0")
    )
    other.get_tracer("otelbot.agent", "2").start_span("scrape").end()
    spans = [*ended.get_finished_spans()]
    # Interleaved: the first resource's spans again after the other resource's one.
    return [
        *spans[:2],
        *other_ended.get_finished_spans(),
        *limited_ended.get_finished_spans(),
        *spans[2:],
    ]


def no_scope_span() -> ReadableSpan:
    return ReadableSpan(
        "no scope",
        context=SpanContext(7, 8, False, TraceFlags(1)),
        resource=Resource({"service.name": "bot", "service.instance.id": "i-1", "n": 3}),
        # Attributes as given (not cleaned by the SDK's span): an empty key, a list.
        attributes={"k": "v", "": "an empty key", "list": [1, 2]},
        instrumentation_scope=None,
        start_time=10,
        end_time=20,
    )


def same(ours: bytes, spans: list[Any]) -> None:
    """Our bytes parse to the SDK's message for ``spans``, and are its very bytes."""
    expected = sdk_encode(spans)
    assert ExportTraceServiceRequest.FromString(ours) == expected
    assert ours == expected.SerializePartialToString()


def test_every_field_the_sdk_fills_is_covered_by_these_spans() -> None:
    # The comparison below cannot pass by both sides leaving a field empty: each field of
    # each message the SDK writes is set somewhere in the SDK's own encoding of the spans.
    message = sdk_encode([*wide_spans(), no_scope_span()])
    seen: dict[str, set[str]] = {}

    def walk(msg: Any) -> None:
        name = msg.DESCRIPTOR.name
        seen.setdefault(name, set())
        for field, value in msg.ListFields():
            seen[name].add(field.name)
            if field.message_type is None:
                continue
            for item in value if field.is_repeated else [value]:
                walk(item)

    walk(message)
    assert seen["Span"] == {f.name for f in Span.DESCRIPTOR.fields}
    assert seen["Event"] == {"time_unix_nano", "name", "attributes", "dropped_attributes_count"}
    # No trace_state: the SDK's encoder leaves a link's out.
    assert seen["Link"] == {
        "trace_id",
        "span_id",
        "attributes",
        "dropped_attributes_count",
        "flags",
    }
    assert seen["Status"] == {"code", "message"}
    assert seen["ResourceSpans"] == {"resource", "scope_spans", "schema_url"}
    assert seen["ScopeSpans"] == {"scope", "spans", "schema_url"}
    assert seen["InstrumentationScope"] == {"name", "version", "attributes"}
    assert seen["AnyValue"] == {
        "string_value",
        "bool_value",
        "int_value",
        "double_value",
        "array_value",
        "bytes_value",
    }
    assert len(message.resource_spans) == 2


def test_sdk_spans_encode_as_the_sdk_encodes_them() -> None:
    spans = wide_spans()
    same(encode_spans(spans), spans)
    same(encode_spans([*spans, no_scope_span()]), [*spans, no_scope_span()])
    # Encoded again from the caches (keys, strings, resources, scopes): the same bytes.
    same(encode_spans(spans), spans)
    for span in spans:  # one at a time: each span's own request
        same(encode_spans([span]), [span])


def test_an_empty_batch_is_an_empty_request() -> None:
    same(encode_spans([]), [])
    assert encode_rows((), (), []) == b""


def rows_of(spans: list[Any]) -> Iterator[bytes]:
    batch = SpanBatch()
    for span in spans:
        batch.add(span)
    raw = read_rows(batch.payload())
    yield encode_rows(raw.resources, raw.scopes, raw.rows)


def test_rows_encode_as_the_spans_they_came_from() -> None:
    spans = [*wide_spans(), no_scope_span()]
    (from_rows,) = rows_of(spans)
    assert from_rows == encode_spans(spans)
    same(from_rows, spans)


def light_spans() -> tuple[list[LightSpan], list[ReadableSpan], Any]:
    """Light spans as otelbot's instrumentations make them, and the SDK spans the SDK's
    processors got for them."""
    sdk, ended = provider(Resource({"service.name": "light"}))
    light = LightTracer(sdk.get_tracer("otelbot.aiogram", "0.1"))
    root = light.start_span(
        "telegram.update message",
        context=context.Context(),
        kind=SpanKind.SERVER,
        attributes={"telegram.update.type": "message", "n": 1},
    )
    made = [root]
    with trace.use_span(root, end_on_exit=True):
        leaf = light.start_span(
            "telegram.api sendMessage",
            kind=SpanKind.CLIENT,
            attributes={"server.port": 443, "ratio": 0.5, "tags": ("a", "b")},
        )
        leaf.add_event("telegram.flood_wait", {"telegram.api.retry_after": 3})
        leaf.set_attribute("late", [1, 2])
        leaf.set_status(StatusCode.ERROR, "Too Many Requests")
        leaf.end()
        made.append(leaf)
        remote = light.start_span(
            "webhook", context=trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
        )
        remote.end()
        made.append(remote)
    return made, list(ended.get_finished_spans()), light


def test_light_spans_encode_as_the_sdk_encodes_the_spans_they_become(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTELBOT_LIGHT_SPANS", "true")
    made, ended, light = light_spans()
    assert all(type(s) is LightSpan for s in made) and len(ended) == 3
    order = {s.get_span_context().span_id: i for i, s in enumerate(made)}
    ended.sort(key=lambda s: order[s.context.span_id])
    same(encode_spans(made), ended)
    batch = SpanBatch()
    for span in made:
        batch.add_light(span, light.resource, light.scope)
    raw = read_rows(batch.payload())
    same(encode_rows(raw.resources, raw.scopes, raw.rows), ended)


def test_values_protobuf_refuses_are_left_out_as_the_sdk_leaves_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sdk, ended = provider(Resource({"service.name": "bot"}))
    attributes = {
        "before": 1,
        "int.too_big": 2**64,
        "int.too_small": -(2**63) - 1,
        "str.surrogate": "\ud800",
        "seq.one_too_big": (1, 2**70),
        "after": "kept",
    }
    sdk.get_tracer("t").start_span("refused", attributes=attributes).end()
    spans = list(ended.get_finished_spans())
    with caplog.at_level(logging.ERROR):  # the SDK's encoder logs each refusal
        expected = sdk_encode(spans)
    kept = [kv.key for kv in expected.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert kept == ["before", "after"]
    same(encode_spans(spans), spans)
    (from_rows,) = rows_of(spans)
    same(from_rows, spans)


def test_equal_resources_and_scopes_are_one_group_as_in_the_sdk() -> None:
    def span(resource: Resource, scope: InstrumentationScope, n: int) -> ReadableSpan:
        return ReadableSpan(
            f"s{n}",
            context=SpanContext(1, n, False, TraceFlags(1)),
            resource=resource,
            instrumentation_scope=scope,
            start_time=n,
            end_time=n + 1,
        )

    r1, r2 = Resource({"a": 1}), Resource({"a": 1})  # equal, not the same object
    r3 = Resource({"a": 2})
    s1 = InstrumentationScope("x", "1", None, {"k": "first"})
    s2 = InstrumentationScope("x", "1", None, {"k": "first"})  # equal, not the same object
    s3 = InstrumentationScope("x", "1", None, {"k": "other"})  # attributes differ: not equal
    s4 = InstrumentationScope("y")
    spans = [
        span(r1, s1, 1),
        span(r3, s1, 2),
        span(r2, s2, 3),
        span(r2, s4, 4),
        span(r1, s3, 5),
        span(r1, s4, 6),
    ]
    same(encode_spans(spans), spans)
    (from_rows,) = rows_of(spans)
    same(from_rows, spans)
    message = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert [len(rs.scope_spans) for rs in message.resource_spans] == [3, 1]
    assert [len(ss.spans) for ss in message.resource_spans[0].scope_spans] == [2, 2, 1]
