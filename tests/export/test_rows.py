"""The row format between the bot and the export helper: what ``SpanBatch`` writes is read
back under the right ``SpanRow`` names, for SDK spans and light spans alike."""

from __future__ import annotations

import marshal
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from otelbot.core.lightspan import LightTracer
from otelbot.export.helper import rebuild
from otelbot.export.rows import CHUNK, SpanBatch, SpanRow, read_batch


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(resource=Resource({"service.name": "rows-test"}), **kwargs)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_sdk_span_fields_arrive_under_their_names() -> None:
    provider, exporter = _provider(span_limits=SpanLimits(max_span_attributes=2))
    tracer = provider.get_tracer("otelbot.test", "1.2")
    state = trace.TraceState([("vendor", "v1")])
    remote = trace.SpanContext(
        0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(1), trace_state=state
    )
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    span = tracer.start_span(
        "SELECT users",
        context=parent_ctx,
        kind=SpanKind.CLIENT,
        attributes={"a": 1, "b": "two", "c": 3.0},  # one over the limit
        links=[Link(remote, {"n": 1})],
    )
    span.add_event("retry", {"attempt": 2})
    span.set_status(StatusCode.ERROR, "boom")
    span.end()
    (ended,) = exporter.get_finished_spans()

    batch = SpanBatch()
    batch.add(ended)
    decoded = read_batch(batch.payload())
    (row,) = decoded.rows
    assert isinstance(row, SpanRow)
    assert row.name == "SELECT users"
    assert (row.trace_id, row.span_id) == (0xABC, ended.context.span_id)
    assert row.trace_flags == 1 and row.trace_state == (("vendor", "v1"),)
    assert row.parent == (0xABC, 0xDEF, True, 1)
    assert row.kind == SpanKind.CLIENT.value
    assert (row.start, row.end) == (ended.start_time, ended.end_time)
    assert row.attributes == dict(ended.attributes) and len(row.attributes) == 2
    assert row.dropped_attributes == 1
    assert [(n, a, d) for n, _t, a, d in row.events] == [("retry", {"attempt": 2}, 0)]
    assert row.links == ((0xABC, 0xDEF, True, 1, {"n": 1}, 0),)
    assert (row.status_code, row.status_description) == (StatusCode.ERROR.value, "boom")
    assert decoded.resources[row.resource][0]["service.name"] == "rows-test"
    assert decoded.scopes[row.scope][:2] == ("otelbot.test", "1.2")

    # The helper rebuilds a span that encodes to the same OTLP as the one the SDK ended.
    again = rebuild(batch.payload())
    assert encode_spans(again) == encode_spans([ended])


def test_light_span_fields_arrive_under_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELBOT_LIGHT_SPANS", "true")
    provider, _exporter = _provider()
    tracer = LightTracer(provider.get_tracer("otelbot.test", "1.2"))
    root = tracer.start_span("telegram.update message", context=context.Context())
    with trace.use_span(root, end_on_exit=True):
        leaf = tracer.start_span("GET", kind=SpanKind.CLIENT, attributes={"db.system.name": "x"})
        leaf.end()
    batch = SpanBatch()
    batch.add_light(leaf, provider.resource, None)
    decoded = read_batch(batch.payload())
    (row,) = decoded.rows
    assert row.name == "GET" and row.kind == SpanKind.CLIENT.value
    assert row.parent is not None and row.parent[1] == root.get_span_context().span_id
    assert row.attributes == {"db.system.name": "x"} and row.links == ()
    assert row.end >= row.start > 0
    assert decoded.scopes[row.scope] is None


def test_rows_over_a_chunk_and_a_format_mismatch() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("otelbot.test")
    for i in range(CHUNK * 2 + 3):
        tracer.start_span(f"span {i}").end()
    batch = SpanBatch()
    for span in exporter.get_finished_spans():
        batch.add(span)
    assert [r.name for r in read_batch(batch.payload()).rows] == [
        f"span {i}" for i in range(CHUNK * 2 + 3)
    ]

    wrong = marshal.dumps((0, (), (), ()))
    with pytest.raises(ValueError, match="format 0"):
        read_batch(wrong)
