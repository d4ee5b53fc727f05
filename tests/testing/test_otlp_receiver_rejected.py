"""The OTLP receiver keeps the bodies of exports it rejects, so token scans read them too."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.scan import token_leaks

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def post(receiver: OtlpReceiver, path: str, body: bytes) -> int:
    req = urllib.request.Request(
        receiver.http_endpoint + path,
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def undecodable_metrics() -> bytes:
    """A valid protobuf the receiver cannot turn into points (a metric without data),
    with the token in the metric's description."""
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    metric = req.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "leaky"
    metric.description = f"/bot{TOKEN}/getMe"
    return req.SerializeToString()


def test_a_body_it_cannot_decode_is_answered_400_and_kept(otlp_receiver: OtlpReceiver) -> None:
    assert post(otlp_receiver, "/v1/metrics", undecodable_metrics()) == 400
    assert post(otlp_receiver, "/v1/traces", b"not protobuf " + TOKEN.encode()) == 400
    assert token_leaks(otlp_receiver.raw_bytes(), TOKEN) == ["token", "secret part"]
    assert otlp_receiver.points() == [] and otlp_receiver.spans() == []
    assert otlp_receiver.rejected == 2 and otlp_receiver.requests == 0


def test_refused_exports_are_kept(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.refuse_status = 503
    req = trace_service_pb2.ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.name = f"GET /bot{TOKEN}/getMe"
    assert post(otlp_receiver, "/v1/traces", req.SerializeToString()) == 503
    assert "token" in token_leaks(otlp_receiver.raw_bytes(), TOKEN)
    assert otlp_receiver.rejected == 1 and otlp_receiver.spans() == []


def test_grpc_exports_it_cannot_decode_are_kept(otlp_receiver: OtlpReceiver) -> None:
    grpc = pytest.importorskip("grpc")
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

    with grpc.insecure_channel(otlp_receiver.grpc_endpoint) as channel:
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(undecodable_metrics())
        with pytest.raises(grpc.RpcError):
            stub.Export(request, timeout=10)
    assert "secret part" in token_leaks(otlp_receiver.raw_bytes(), TOKEN)
    assert otlp_receiver.rejected == 1
