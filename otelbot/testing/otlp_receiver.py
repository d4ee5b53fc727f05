"""A small OTLP receiver (HTTP/protobuf and gRPC) that decodes what real exporters send.

Used by the tests (assertions on what arrived on the wire), by ``otelbot demo`` (the
embedded backend) and by the benchmarks (a local receiver process)::

    receiver = OtlpReceiver()
    receiver.start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint
    ...
    receiver.wait_for(lambda r: r.spans(name="telegram.update message"), timeout=10)
    receiver.stop()
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SPAN_KINDS = {
    0: "UNSPECIFIED",
    1: "INTERNAL",
    2: "SERVER",
    3: "CLIENT",
    4: "PRODUCER",
    5: "CONSUMER",
}


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope: str

    @property
    def duration(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class ReceivedPoint:
    name: str
    unit: str
    kind: str  # sum | gauge | histogram | exponential_histogram | summary
    attributes: dict[str, Any]
    value: float | None
    resource: dict[str, Any]
    time_ns: int = 0
    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    monotonic: bool | None = None


@dataclass
class ReceivedLog:
    body: Any
    event_name: str
    severity: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    trace_id: str
    time_ns: int


class OtlpReceiver:
    """Receives OTLP traces, metrics and logs over HTTP (and gRPC when grpcio is installed)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int | None = 0,
        keep_raw: bool = True,
    ) -> None:
        self.host = host
        self._http_port = http_port
        self._grpc_port = grpc_port
        self.keep_raw = keep_raw
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self._logs: list[ReceivedLog] = []
        self.raw: list[bytes] = []
        self.requests = 0
        self.span_count = 0
        self._http: ThreadingHTTPServer | None = None
        self._grpc: Any = None
        self.http_port = 0
        self.grpc_port = 0
        #: When set, every export is refused with this HTTP status / gRPC UNAVAILABLE.
        self.refuse_status: int | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def start(self) -> OtlpReceiver:
        self._http = ThreadingHTTPServer((self.host, self._http_port), self._handler_class())
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        if self._grpc_port is not None:
            self._start_grpc()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ decoding
    def ingest(self, signal: str, body: bytes) -> None:
        """Decode one export request body (protobuf) of the given signal."""
        if signal == "traces":
            req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            spans = list(self._decode_spans(req))
            with self._cond:
                self._spans.extend(spans)
                self.span_count += len(spans)
                self._store(body)
        elif signal == "metrics":
            mreq = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            points = list(self._decode_metrics(mreq))
            with self._cond:
                self._points.extend(points)
                self._store(body)
        elif signal == "logs":
            lreq = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
            logs = list(self._decode_logs(lreq))
            with self._cond:
                self._logs.extend(logs)
                self._store(body)
        else:
            raise ValueError(signal)

    def _store(self, body: bytes) -> None:
        self.requests += 1
        if self.keep_raw:
            self.raw.append(body)
        self._cond.notify_all()

    @staticmethod
    def _decode_spans(req: Any) -> Any:
        for rs in req.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    yield ReceivedSpan(
                        name=s.name,
                        kind=SPAN_KINDS.get(s.kind, str(s.kind)),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes=attributes(s.attributes),
                        events=[
                            {"name": e.name, "attributes": attributes(e.attributes)}
                            for e in s.events
                        ],
                        status_code=s.status.code,
                        status_message=s.status.message,
                        resource=resource,
                        scope=ss.scope.name,
                    )

    @staticmethod
    def _decode_metrics(req: Any) -> Any:
        for rm in req.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    for dp in data.data_points:
                        point = ReceivedPoint(
                            name=m.name,
                            unit=m.unit,
                            kind=kind,
                            attributes=attributes(dp.attributes),
                            value=None,
                            resource=resource,
                            time_ns=dp.time_unix_nano,
                        )
                        if kind in ("sum", "gauge"):
                            which = dp.WhichOneof("value")
                            point.value = getattr(dp, which) if which else None
                            if kind == "sum":
                                point.monotonic = data.is_monotonic
                        elif kind == "histogram":
                            point.count = dp.count
                            point.sum = dp.sum
                            point.min = dp.min if dp.HasField("min") else None
                            point.max = dp.max if dp.HasField("max") else None
                            point.bucket_counts = list(dp.bucket_counts)
                            point.explicit_bounds = list(dp.explicit_bounds)
                        else:
                            point.count = getattr(dp, "count", 0)
                            point.sum = getattr(dp, "sum", 0.0)
                        yield point

    @staticmethod
    def _decode_logs(req: Any) -> Any:
        for rl in req.resource_logs:
            resource = attributes(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    yield ReceivedLog(
                        body=any_value(r.body),
                        event_name=getattr(r, "event_name", "") or "",
                        severity=r.severity_text,
                        attributes=attributes(r.attributes),
                        resource=resource,
                        trace_id=r.trace_id.hex(),
                        time_ns=r.time_unix_nano,
                    )

    # ------------------------------------------------------------------ queries
    def spans(self, name: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if name is None or s.name == name]

    def points(self, name: str | None = None) -> list[ReceivedPoint]:
        with self._lock:
            return [p for p in self._points if name is None or p.name == name]

    def metric_names(self) -> set[str]:
        with self._lock:
            return {p.name for p in self._points}

    def logs(self, event_name: str | None = None) -> list[ReceivedLog]:
        with self._lock:
            return [r for r in self._logs if event_name is None or r.event_name == event_name]

    def raw_bytes(self) -> bytes:
        with self._lock:
            return b"".join(self.raw)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._points.clear()
            self._logs.clear()
            self.raw.clear()

    def wait_for(self, predicate: Callable[[OtlpReceiver], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate(self)`` is truthy; return its value, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"OTLP receiver: condition not met within {timeout:.1f}s")
            with self._cond:
                self._cond.wait(min(remaining, 0.2))

    # ------------------------------------------------------------------ transports
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self
        paths = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                signal = paths.get(self.path.split("?")[0])
                if signal is None:
                    self._reply(404, b"")
                    return
                if receiver.refuse_status is not None:
                    self._reply(receiver.refuse_status, b"")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    receiver.ingest(signal, body)
                except Exception:
                    self._reply(400, b"")
                    return
                self._reply(200, b"")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _start_grpc(self) -> None:
        try:
            from concurrent import futures

            import grpc
            from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
            from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
            from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
        except ImportError:
            return
        receiver = self

        def handle(signal: str, request: Any, context: Any, reply: Any) -> Any:
            if receiver.refuse_status is not None:
                context.abort(grpc.StatusCode.UNAVAILABLE, "refused by test")
            receiver.ingest(signal, request.SerializeToString())
            return reply

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return handle(
                    "traces", request, context, trace_service_pb2.ExportTraceServiceResponse()
                )

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return handle(
                    "metrics", request, context, metrics_service_pb2.ExportMetricsServiceResponse()
                )

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return handle(
                    "logs", request, context, logs_service_pb2.ExportLogsServiceResponse()
                )

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        self.grpc_port = server.add_insecure_port(f"{self.host}:{self._grpc_port}")
        server.start()
        self._grpc = server
