"""OTLP export request bodies built with opentelemetry-proto, as exporters put them on the wire."""

from __future__ import annotations

import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def updates(n: int, service: str = "mem-bot", handler: str = "__main__.start") -> bytes:
    """``n`` update spans (each its own trace) of 10 ms, with one child span each."""
    spans = []
    for _ in range(n):
        trace_id, root_id = os.urandom(16), os.urandom(8)
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=root_id,
                name="telegram.update message",
                start_time_unix_nano=1_000_000_000,
                end_time_unix_nano=1_010_000_000,
                attributes=[_kv("telegram.handler", handler)],
            )
        )
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=os.urandom(8),
                parent_span_id=root_id,
                name="telegram.api sendMessage",
                start_time_unix_nano=1_001_000_000,
                end_time_unix_nano=1_002_000_000,
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [_kv("service.name", service)]},
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    return request.SerializeToString()
