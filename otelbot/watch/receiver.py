"""watch's OTLP intake: OTLP/HTTP (protobuf, or JSON) as an aiohttp app and OTLP/gRPC on
``grpc.aio``, both on the event loop that serves the page, both decoding with
:mod:`otelbot.testing.otlp_receiver`'s functions into a :class:`WatchStore`::

    intake = Intake(store, forward=Forwarder("http://collector:4318"), token=None)
    app = intake.http_app()                               # POST /v1/traces|metrics|logs
    server, port = intake.grpc_server("127.0.0.1:4317")   # then: await server.start()

Bad input never takes watch down: a body that is not a valid export request gets 400
(gRPC INVALID_ARGUMENT), a content type other than protobuf or JSON 415, a body (or a
decompressed body) over ``MAX_BODY`` 413 (gRPC RESOURCE_EXHAUSTED), a missing token 401
(UNAUTHENTICATED). A JSON export is read (and forwarded) as its protobuf equivalent.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import zlib
from collections.abc import Callable
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otelbot.testing.otlp_receiver import decode_logs, decode_metrics, decode_spans
from otelbot.watch.store import WatchStore

log = logging.getLogger("otelbot.watch")

#: Largest export body accepted, compressed or not (the SDK batches stay far below it).
MAX_BODY = 16 * 1024 * 1024
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPE = "application/json"
SIGNALS = ("traces", "metrics", "logs")
_RESPONSES: dict[str, bytes] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
    "logs": logs_service_pb2.ExportLogsServiceResponse().SerializeToString(),
}
_GRPC_SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


class BodyTooLarge(ValueError):
    pass


_HEX_IDS = frozenset({"traceId", "spanId", "parentSpanId"})
_REQUESTS: dict[str, Any] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}


def _ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping reads base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_IDS and isinstance(value, str):
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                _ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _ids_to_base64(item)


def json_to_protobuf(signal: str, body: bytes) -> bytes:
    """An OTLP/JSON export body as the protobuf one (ValueError when it is not one)."""
    try:
        data = json.loads(body)
        _ids_to_base64(data)
        request = json_format.ParseDict(data, _REQUESTS[signal](), ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None
    return bytes(request.SerializeToString())


def inflate(body: bytes, encoding: str) -> bytes:
    """Undo a gzip/deflate Content-Encoding, refusing to grow past ``MAX_BODY``."""
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise ValueError(f"unsupported Content-Encoding {encoding!r}")
    out = inflater.decompress(body, MAX_BODY + 1)
    if len(out) > MAX_BODY or inflater.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body over {MAX_BODY} bytes")
    if not inflater.eof:
        raise ValueError("truncated compressed body")
    return out


class Forwarder:
    """Tees each export body, unchanged, to a collector's OTLP/HTTP endpoint. At most
    ``max_in_flight`` requests at once: past that a body is dropped (and counted) rather
    than queued, so a slow collector cannot grow watch's memory."""

    def __init__(self, url: str, max_in_flight: int = 32) -> None:
        self.url = url.rstrip("/")
        self.max_in_flight = max_in_flight
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: ClientSession | None = None

    def send(self, signal: str, body: bytes) -> None:
        if len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self._post(signal, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, signal: str, body: bytes) -> None:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=10))
        try:
            async with self._session.post(
                f"{self.url}/v1/{signal}",
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            ) as response:
                await response.read()
                if response.status >= 300:
                    self.failed += 1
                    return
            self.sent += 1
        except Exception as exc:  # the collector is down: watch goes on
            self.failed += 1
            if self.failed == 1:
                log.warning("forwarding to %s failed: %s", self.url, exc)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._session is not None:
            await self._session.close()


class Intake:
    """Decodes OTLP exports into the store (and tees them to the forwarder)."""

    def __init__(
        self, store: WatchStore, forward: Forwarder | None = None, token: str | None = None
    ) -> None:
        self.store = store
        self.forward = forward
        self.token = token
        self._add: dict[str, Callable[[bytes], None]] = {
            "traces": lambda body: store.add_spans(decode_spans(body)),
            "metrics": lambda body: store.add_points(decode_metrics(body)),
            "logs": lambda body: store.add_logs(decode_logs(body)),
        }

    def ingest(self, signal: str, body: bytes) -> None:
        """Decode and keep one export body; DecodeError when it is not a valid request."""
        self._add[signal](body)
        if self.forward is not None:
            self.forward.send(signal, body)

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        expected = f"Bearer {self.token}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    # ------------------------------------------------------------------ HTTP
    def http_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        for signal in SIGNALS:
            app.router.add_post(f"/v1/{signal}", self._http_handler(signal))
        return app

    def _http_handler(self, signal: str) -> Callable[[web.Request], Any]:
        async def export(request: web.Request) -> web.StreamResponse:
            try:
                return await self._export(signal, request)
            except web.HTTPException:
                self.store.rejected += 1
                raise

        return export

    async def _export(self, signal: str, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request.headers.get("Authorization")):
            raise web.HTTPUnauthorized(text="watch: a bearer token is required\n")
        as_json = request.content_type == JSON_TYPE
        if request.content_type not in PROTOBUF_TYPES and not as_json:
            raise web.HTTPUnsupportedMediaType(
                text=f"watch: OTLP/HTTP takes application/x-protobuf or application/json, "
                f"not {request.content_type!r}\n"
            )
        body = await request.read()  # over client_max_size: aiohttp answers 413
        try:
            body = inflate(body, (request.headers.get("Content-Encoding") or "").lower())
            if as_json:
                self.ingest(signal, json_to_protobuf(signal, body))
                return web.Response(text="{}", content_type=JSON_TYPE)
            self.ingest(signal, body)
        except BodyTooLarge as exc:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body), text=f"watch: {exc}\n")
        except (DecodeError, ValueError, zlib.error) as exc:
            raise web.HTTPBadRequest(text=f"watch: not an OTLP {signal} export: {exc}\n")
        except Exception as exc:  # valid protobuf the decoder cannot read (a metric with no data)
            raise web.HTTPBadRequest(text=f"watch: cannot read this {signal} export: {exc!r}\n")
        return web.Response(body=_RESPONSES[signal], content_type="application/x-protobuf")

    # ------------------------------------------------------------------ gRPC
    def grpc_server(self, address: str) -> tuple[Any, int]:
        """A ``grpc.aio`` server for the three export services bound to ``address``, and the
        port it bound (not started yet). Bodies arrive undecoded (bytes) so a bad one
        is answered here, not inside grpc."""
        import grpc

        intake = self

        def method(signal: str) -> Any:
            async def export(body: bytes, context: Any) -> bytes:
                metadata = dict(context.invocation_metadata() or ())
                if not intake.authorized(metadata.get("authorization")):
                    intake.store.rejected += 1
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a token is required")
                try:
                    intake.ingest(signal, body)
                except Exception as exc:  # not protobuf, or nothing the decoder can read
                    intake.store.rejected += 1
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"not an OTLP {signal} export: {exc}"
                    )
                return _RESPONSES[signal]

            return grpc.unary_unary_rpc_method_handler(export)

        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_BODY),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    _GRPC_SERVICES[signal], {"Export": method(signal)}
                )
                for signal in SIGNALS
            ]
        )
        port = server.add_insecure_port(address)
        return server, port
