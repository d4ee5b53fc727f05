"""Bad OTLP input gets the right HTTP or gRPC error and watch goes on receiving."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics

from otelbot.watch.options import WatchOptions
from otelbot.watch.receiver import MAX_BODY
from tests.watch._bodies import updates
from tests.watch._running import RunningWatch

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_bad_http_bodies_get_4xx_and_watch_keeps_receiving(watch: RunningWatch) -> None:
    valid = updates(2)
    assert watch.post("traces", valid[:-3]) == 400  # truncated protobuf
    assert watch.post("logs", b"\xff\xff\xff\xff") == 400  # not protobuf at all
    as_json = {"Content-Type": "application/json"}
    assert watch.post("traces", b'{"resourceSpans": [', as_json) == 400  # truncated JSON
    assert watch.post("logs", b'{"resourceLogs": 7}', as_json) == 400  # not an export
    assert watch.post("metrics", valid, {"Content-Type": "text/plain"}) == 415
    assert watch.post("traces", b"\0" * (MAX_BODY + 1)) == 413  # huge
    bomb = gzip.compress(b"\0" * (MAX_BODY * 2))  # small on the wire, huge inflated
    assert len(bomb) < MAX_BODY
    assert watch.post("traces", bomb, {"Content-Encoding": "gzip"}) == 413
    assert watch.post("traces", gzip.compress(valid)[:-8], {"Content-Encoding": "gzip"}) == 400
    assert watch.post("traces", valid, {"Content-Encoding": "br"}) == 400
    assert watch.post("profiles", valid) in (404, 405)
    no_data = ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[Metric(name="x")])])]
    )  # valid protobuf, but a metric without data points of any kind
    assert watch.post("metrics", no_data.SerializeToString()) == 400
    assert watch.call(lambda: watch.store.span_count) == 0

    assert watch.post("traces", gzip.compress(valid), {"Content-Encoding": "gzip"}) == 200
    assert watch.post("traces", valid) == 200
    assert watch.call(lambda: watch.store.span_count) == 8
    health = watch.get("/api/health")
    assert health["watch"]["rejected_requests"] == 10
    assert [b["service"] for b in health["bots"]] == ["mem-bot"]


def test_bad_grpc_bodies_get_invalid_argument_and_resource_exhausted(watch: RunningWatch) -> None:
    with grpc.insecure_channel(
        watch.grpc_endpoint, options=[("grpc.max_send_message_length", MAX_BODY * 2)]
    ) as channel:
        export = channel.unary_unary(TRACES)  # raw bytes in and out
        with pytest.raises(grpc.RpcError) as truncated:
            export(updates(2)[:-3], timeout=10)
        assert truncated.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as huge:
            export(b"\0" * (MAX_BODY + 1), timeout=30)
        assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert export(updates(3), timeout=10) == b""  # an empty ExportTraceServiceResponse
    assert watch.call(lambda: watch.store.span_count) == 6


def test_a_token_is_needed_by_the_receivers_the_api_and_the_page() -> None:
    token = "s3cret-watch-token"
    running = RunningWatch(
        WatchOptions(
            otlp_http=("127.0.0.1", 0), otlp_grpc=("127.0.0.1", 0), ui=("127.0.0.1", 0), token=token
        )
    ).start()
    try:
        assert running.post("traces", updates(1)) == 401
        assert running.post("traces", updates(1), {"Authorization": f"Bearer {token}"}) == 200
        assert running.status("/api/health") == 401
        assert running.status("/") == 401
        assert running.status(f"/?token={token}") == 200
        assert running.get("/api/health", token=token)["watch"]["spans_kept"] == 2
        with grpc.insecure_channel(running.grpc_endpoint) as channel:
            export = channel.unary_unary(TRACES)
            with pytest.raises(grpc.RpcError) as refused:
                export(updates(1), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            export(updates(1), timeout=10, metadata=[("authorization", f"Bearer {token}")])
        assert running.call(lambda: running.store.span_count) == 4
    finally:
        running.stop()


def test_remote_addresses_need_the_flag_and_a_token() -> None:
    from otelbot.cli import main

    with pytest.raises(urllib.error.URLError):  # nothing was started
        urllib.request.urlopen("http://127.0.0.1:1/", timeout=1)
    assert main(["watch", "--no-tui", "--ui", "0.0.0.0:0"]) == 2
    assert main(["watch", "--no-tui", "--ui", "0.0.0.0:0", "--allow-remote"]) == 2


def test_otlp_json_with_hex_ids_is_read_like_protobuf(watch: RunningWatch) -> None:
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "telegram.update message",
        "kind": 2,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712660250000000",
        "attributes": [{"key": "telegram.handler", "value": {"stringValue": "__main__.start"}}],
    }
    service = [{"key": "service.name", "value": {"stringValue": "json-bot"}}]
    body = {
        "resourceSpans": [{"resource": {"attributes": service}, "scopeSpans": [{"spans": [span]}]}]
    }
    as_json = {"Content-Type": "application/json"}
    assert watch.post("traces", json.dumps(body).encode(), as_json) == 200
    [row] = watch.get("/api/traces?service=json-bot")
    assert (row["trace_id"], row["handler"], row["duration_ms"]) == (
        trace_id,
        "__main__.start",
        250.0,
    )
    assert watch.get(f"/api/traces/{trace_id}")["spans"][0]["span_id"] == span_id
