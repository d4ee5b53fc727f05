"""A small OTLP receiver (HTTP/protobuf and gRPC) that decodes what real exporters send.

Used by the tests (assertions on what arrived on the wire), by ``otelbot demo`` (the
embedded backend) and by the benchmarks (a local receiver process)::

    receiver = OtlpReceiver()
    receiver.start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint
    ...
    receiver.wait_for(lambda r: r.spans(name="telegram.update message"), timeout=10)
    receiver.stop()

As a command, it prints what arrives, one line per span, metric point or log record (or
one JSON object per line with ``--json``), until Ctrl+C (docs/testing.md)::

    python -m otelbot.testing.otlp_receiver --http 127.0.0.1:4318 --grpc 127.0.0.1:4317
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from signal import SIGTERM
from signal import signal as on_signal
from typing import Any, TextIO

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
    span_id: str = ""


class OtlpReceiver:
    """Receives OTLP traces, metrics and logs over HTTP (and gRPC when grpcio is installed)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int | None = 0,
        keep_raw: bool = True,
        grpc_host: str | None = None,
    ) -> None:
        self.host = host
        self.grpc_host = grpc_host or host
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
        #: Exports refused or not decodable: their bodies are in ``raw`` all the same.
        self.rejected = 0
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
        return f"{self.grpc_host}:{self.grpc_port}"

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
            spans = decode_spans(body)
            with self._cond:
                self._spans.extend(spans)
                self.span_count += len(spans)
                self._store(body)
        elif signal == "metrics":
            points = decode_metrics(body)
            with self._cond:
                self._points.extend(points)
                self._store(body)
        elif signal == "logs":
            logs = decode_logs(body)
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

    def reject(self, body: bytes) -> None:
        """Keep the body of an export that was refused or could not be decoded: it left the
        exporting process all the same, so ``raw_bytes()`` (what token scans read) has it."""
        with self._cond:
            self.rejected += 1
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
                        span_id=r.span_id.hex(),
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
                    receiver.reject(body)
                    self._reply(404, b"")
                    return
                if receiver.refuse_status is not None:
                    receiver.reject(body)
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
                    receiver.reject(body)  # the decompressed body when that much worked
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
            body = request.SerializeToString()
            if receiver.refuse_status is not None:
                receiver.reject(body)
                context.abort(grpc.StatusCode.UNAVAILABLE, "refused by test")
            try:
                receiver.ingest(signal, body)
            except Exception as exc:
                receiver.reject(body)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode: {exc}")
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
        self.grpc_port = server.add_insecure_port(f"{self.grpc_host}:{self._grpc_port}")
        server.start()
        self._grpc = server


# --------------------------------------------------------------------------- decoding
# Shared with otelbot.watch: one export request body (protobuf) in, decoded records out.
# A body that is not a valid request raises google.protobuf.message.DecodeError.


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    return list(OtlpReceiver._decode_spans(req))


def decode_metrics(body: bytes) -> list[ReceivedPoint]:
    req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
    return list(OtlpReceiver._decode_metrics(req))


def decode_logs(body: bytes) -> list[ReceivedLog]:
    req = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    return list(OtlpReceiver._decode_logs(req))


# --------------------------------------------------------------------------- command line
#
#   python -m otelbot.testing.otlp_receiver [--http HOST:PORT] [--grpc HOST:PORT | --no-grpc]
#                                           [--json]
#
# Prints what arrives, one line per span, metric point or log record, until Ctrl+C.

DEFAULT_HTTP = "127.0.0.1:4318"
DEFAULT_GRPC = "127.0.0.1:4317"
EXIT_CANNOT_LISTEN = 2


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:4318), got {text!r}")
    return host.strip("[]"), int(port)


def _text(value: Any) -> str:
    """A value as one token: bare when it has no space, quote or '=', else JSON-quoted."""
    if isinstance(value, str):
        if value and not any(c in value for c in ' \t\n"=') and value.isprintable():
            return value
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _pairs(attrs: dict[str, Any]) -> str:
    return "".join(f" {key}={_text(value)}" for key, value in attrs.items())


def _service(resource: dict[str, Any]) -> str:
    return _text(resource.get("service.name", "-"))


def format_span(span: ReceivedSpan) -> str:
    status = {1: " status=OK", 2: " status=ERROR"}.get(span.status_code, "")
    if span.status_message:
        status += f" status.message={_text(span.status_message)}"
    parent = f" parent={span.parent_span_id}" if span.parent_span_id else ""
    return (
        f"span {_service(span.resource)} {_text(span.name)} {span.kind} "
        f"{span.duration * 1000:.3f}ms trace={span.trace_id} span={span.span_id}{parent}"
        f"{status}{_pairs(span.attributes)}"
        + "".join(f" event={_text(e['name'])}{_pairs(e['attributes'])}" for e in span.events)
    )


def format_point(point: ReceivedPoint) -> str:
    unit = f" unit={_text(point.unit)}" if point.unit else ""
    if point.kind in ("sum", "gauge"):
        value = f"value={_text(point.value)}"
    else:
        value = f"count={point.count} sum={_text(float(point.sum))}"
        if point.min is not None and point.max is not None:
            value += f" min={_text(point.min)} max={_text(point.max)}"
    return (
        f"metric {_service(point.resource)} {_text(point.name)} {point.kind} {value}{unit}"
        f"{_pairs(point.attributes)}"
    )


def format_log(record: ReceivedLog) -> str:
    event = f" event={_text(record.event_name)}" if record.event_name else ""
    trace = f" trace={record.trace_id}" if record.trace_id.strip("0") else ""
    return (
        f"log {_service(record.resource)} {record.severity or '-'} {_text(record.body)}"
        f"{event}{trace}{_pairs(record.attributes)}"
    )


def as_json(item: ReceivedSpan | ReceivedPoint | ReceivedLog) -> str:
    kind = {ReceivedSpan: "span", ReceivedPoint: "metric", ReceivedLog: "log"}[type(item)]
    return json.dumps({"signal": kind, **asdict(item)}, ensure_ascii=False, default=str)


class PrintingReceiver(OtlpReceiver):
    """An ``OtlpReceiver`` that writes each span, metric point and log record as it arrives
    and keeps nothing (the command runs for as long as it is left running)."""

    def __init__(self, out: TextIO, json_lines: bool = False, **kwargs: Any) -> None:
        super().__init__(keep_raw=False, **kwargs)
        self.out = out
        self.json_lines = json_lines
        self.closed = threading.Event()  # the reader went away (a closed pipe)
        self._write_lock = threading.Lock()

    def ingest(self, signal: str, body: bytes) -> None:
        super().ingest(signal, body)
        with self._cond:
            items: list[Any] = [*self._spans, *self._points, *self._logs]
            self._spans, self._points, self._logs = [], [], []
        if self.json_lines:
            lines = [as_json(item) for item in items]
        else:
            formats: dict[type, Callable[[Any], str]] = {
                ReceivedSpan: format_span,
                ReceivedPoint: format_point,
                ReceivedLog: format_log,
            }
            lines = [formats[type(item)](item) for item in items]
        if not lines:
            return
        with self._write_lock:
            try:
                self.out.write("\n".join(lines) + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):  # `... | head`, or stdout closed
                self.closed.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m otelbot.testing.otlp_receiver",
        description="A local OTLP receiver: prints every span, metric point and log record "
        "it receives, one per line, until Ctrl+C.",
        epilog="Point an exporter at it, e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 "
        "opentelemetry-instrument python bot.py. Lines start with span, metric or log, then "
        "the service name; with --json each line is one JSON object whose 'signal' is span, "
        "metric or log. A port of 0 picks a free one; the first line on stderr says where it "
        "listens.",
    )
    parser.add_argument(
        "--http",
        type=_address,
        default=DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"OTLP/HTTP (protobuf) address (default {DEFAULT_HTTP})",
    )
    parser.add_argument(
        "--grpc",
        type=_address,
        default=DEFAULT_GRPC,
        metavar="HOST:PORT",
        help=f"OTLP/gRPC address (default {DEFAULT_GRPC}; needs grpcio: pip install "
        "'otelbot[grpc]')",
    )
    parser.add_argument("--no-grpc", action="store_true", help="HTTP only")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    (http_host, http_port), (grpc_host, grpc_port) = args.http, args.grpc
    prog = "otlp_receiver"

    receiver = PrintingReceiver(
        sys.stdout,
        json_lines=args.json,
        host=http_host,
        http_port=http_port,
        grpc_host=grpc_host,
        grpc_port=None if args.no_grpc else grpc_port,
    )
    try:
        receiver.start()
    except (OSError, RuntimeError) as exc:  # RuntimeError: grpcio could not bind
        receiver.stop()
        print(f"{prog}: cannot listen: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    where = f"{receiver.http_endpoint} (HTTP)"
    if receiver.grpc_port:
        where += f" and {receiver.grpc_endpoint} (gRPC)"
    elif not args.no_grpc:
        where += "; gRPC off: grpcio is not installed (pip install 'otelbot[grpc]')"
    print(f"{prog}: listening on {where}; Ctrl+C to stop", file=sys.stderr, flush=True)

    stop = receiver.closed
    on_signal(SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
