"""aiohttp server instrumentation (webhooks).

Usage (``opentelemetry-instrument`` does this for you through the
``otelbot_aiohttp_server`` entry point)::

    from otelbot.instrumentation.aiohttp_server import AiohttpServerInstrumentor
    AiohttpServerInstrumentor().instrument()
    web.run_app(app)    # every request: a SERVER span "POST /webhook/{token}"

The request handling of ``aiohttp.web.Application`` is wrapped on the class, so it works
however the bot imports ``Application`` (no subclass is swapped in) and for applications
created before instrumentation. An incoming ``traceparent`` is honoured; the span is
current while the handler runs, so the update span and everything under it nest below.
A webhook path that contains the bot token is recorded redacted.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from otelbot.core.errors import error_type, record_exception
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.lightspan import light_tracer
from otelbot.core.patching import OtelbotInstrumentor, guarded_async
from otelbot.core.redaction import redact_path
from otelbot.semconv import (
    ERROR_TYPE,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_DURATION,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_PATH,
    URL_SCHEME,
    USER_AGENT_ORIGINAL,
)

_SERVER = SpanKind.SERVER
_CACHE_MAX = 2048


class _Recorder:
    def __init__(self, tracer: trace.Tracer, meter: Any) -> None:
        from aiohttp import web

        self.http_exception = web.HTTPException
        # Spans without the SDK's per-span cost: see lightspan.
        self.tracer = light_tracer(tracer)
        self.duration = create_instrument(meter, HTTP_SERVER_REQUEST_DURATION)
        self.active = create_instrument(meter, HTTP_SERVER_ACTIVE_REQUESTS)
        self._active_attrs: dict[tuple[str, str], dict[str, Any]] = {}
        self._metric_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._routes: dict[str, str] = {}

    def active_attrs(self, method: str, scheme: str) -> dict[str, Any]:
        key = (method, scheme)
        attrs = self._active_attrs.get(key)
        if attrs is None:
            attrs = self._active_attrs[key] = {HTTP_REQUEST_METHOD: method, URL_SCHEME: scheme}
        return attrs

    def route(self, request: Any) -> str | None:
        match_info = request._match_info
        route = getattr(match_info, "route", None) if match_info is not None else None
        resource = getattr(route, "resource", None)
        if resource is None:
            return None
        canonical = resource.canonical
        safe = self._routes.get(canonical)
        if safe is None:
            safe = redact_path(canonical)
            if len(self._routes) >= _CACHE_MAX:
                self._routes.clear()
            self._routes[canonical] = safe
        return safe

    def metric_attrs(
        self, method: str, scheme: str, route: str | None, status: int, err: str | None
    ) -> dict[str, Any]:
        key = (method, scheme, route, status, err)
        attrs = self._metric_attrs.get(key)
        if attrs is None:
            attrs = {HTTP_REQUEST_METHOD: method, URL_SCHEME: scheme}
            if route is not None:
                attrs[HTTP_ROUTE] = route
            if status:
                attrs[HTTP_RESPONSE_STATUS_CODE] = status
            if err is not None:
                attrs[ERROR_TYPE] = err
            if len(self._metric_attrs) >= _CACHE_MAX:
                self._metric_attrs.clear()
            self._metric_attrs[key] = attrs
        return attrs

    def start(self, request: Any) -> tuple[Any, Any, float, str, str]:
        method = request.method
        scheme = request.scheme
        parent = propagate.extract(request.headers)
        span = self.tracer.start_span(method, context=parent, kind=_SERVER)
        if span.is_recording():
            host = request.host or ""
            address, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
            attrs: dict[str, Any] = {
                HTTP_REQUEST_METHOD: method,
                URL_PATH: redact_path(request.path),
                URL_SCHEME: scheme,
                SERVER_ADDRESS: address,
            }
            if port.isdigit():
                attrs[SERVER_PORT] = int(port)
            agent = request.headers.get("User-Agent")
            if agent:
                attrs[USER_AGENT_ORIGINAL] = agent
            span.set_attributes(attrs)
        token = context.attach(trace.set_span_in_context(span, parent))
        self.active.add(1, self.active_attrs(method, scheme))
        return span, token, time.perf_counter(), method, scheme

    def finish(
        self,
        request: Any,
        started: tuple[Any, Any, float, str, str],
        status: int,
        exc: BaseException | None,
    ) -> None:
        span, token, t0, method, scheme = started
        elapsed = time.perf_counter() - t0
        context.detach(token)
        self.active.add(-1, self.active_attrs(method, scheme))
        if exc is not None and isinstance(exc, self.http_exception):
            status = exc.status
            exc = None if status < 500 else exc
        err: str | None = None
        if exc is not None:
            err = error_type(exc)
            status = status or 500
        elif status >= 500:
            err = str(status)
        route = self.route(request)
        self.duration.record(elapsed, self.metric_attrs(method, scheme, route, status, err))
        if span.is_recording():
            if route is not None:
                span.update_name(method + " " + route)
                span.set_attribute(HTTP_ROUTE, route)
            if status:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            if exc is not None:
                record_exception(span, exc)
            elif err is not None:
                span.set_attribute(ERROR_TYPE, err)
                span.set_status(StatusCode.ERROR)
        span.end()


def _wrap_handle(original: Any, recorder: _Recorder) -> Any:
    def begin(app: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        request = args[0] if args else kwargs["request"]
        return request, recorder.start(request)

    def end(state: Any, response: Any, exc: BaseException | None) -> None:
        request, started = state
        recorder.finish(request, started, response.status if response is not None else 0, exc)

    return guarded_async(original, begin, end, "aiohttp server request")


class AiohttpServerInstrumentor(OtelbotInstrumentor):
    """Traces requests served by any ``aiohttp.web.Application``."""

    _instruments: Collection[str] = ("aiohttp >= 3.9",)
    replaces_contrib = "aiohttp-server"

    def _instrument(self, **kwargs: Any) -> None:
        from aiohttp import web_app

        tracer, meter = self.telemetry(**kwargs)
        recorder = _Recorder(tracer, meter)
        self.patches.wrap(
            web_app.Application, "_handle", lambda original: _wrap_handle(original, recorder)
        )
