"""aiohttp server instrumentation (webhooks).

Usage (``opentelemetry-instrument`` does this for you through the
``otelbot_aiohttp_server`` entry point)::

    from aiohttp import web

    from otelbot.instrumentation.aiohttp_server import AiohttpServerInstrumentor

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    AiohttpServerInstrumentor().instrument()
    app = web.Application()
    app.router.add_get("/health", health)
    web.run_app(app)    # every request: a SERVER span "GET /health"

The request handling of ``aiohttp.web.Application`` is wrapped on the class, so it works
however the bot imports ``Application`` (no subclass is swapped in) and for applications
created before instrumentation. An incoming ``traceparent`` is honoured; the span is
current while the handler runs, so the update span and everything under it nest below.

A webhook's path is a secret: unless the bot set a secret token, knowing it is all it
takes to send the bot updates. So the path is recorded as its route says, never as
requested (span name ``{method} {route}``, ``http.route``, ``url.path``, and the
``http.route`` of ``http.server.request.duration``):

- a route with variables (``/tg/{secret}``) as its template, never the values;
- a route served by aiogram's webhook handler (``SimpleRequestHandler`` or
  ``TokenBasedRequestHandler``, whatever path it was ``register``-ed at), and a static
  route that has received Telegram's ``X-Telegram-Bot-Api-Secret-Token`` header, as
  ``/{webhook}``;
- any other static route (``/health``) as written, except a bot token in it (redacted)
  and any segment that looks generated, as secrets are: 16 characters or more mixing
  letters and digits (``/hook/SuperSecretPath_q7w8e9r0`` -> ``/hook/{secret}``);
- a request no route matches (404, or 405 for the webhook path asked with GET) with no
  path at all: only the method.

So a hand-written webhook at a static path is recorded by its path until Telegram's first
call with a secret token marks it, unless the path's secret looks generated; give it a
variable (``/hook/{secret}``) to be sure.

No request header is recorded except ``User-Agent``; the secret token header never is.
An exception a handler raises is recorded with the request's path in its message replaced
by the recorded route, and the route's variable values by ``?``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from otelbot.core.errors import error_type, record_exception, safe_message
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
    TOKEN_PLACEHOLDER,
    URL_PATH,
    URL_SCHEME,
    USER_AGENT_ORIGINAL,
)

#: The route (and path) recorded for a webhook.
WEBHOOK_ROUTE = "/{webhook}"
#: What a static route's segment that looks generated is recorded as.
SECRET_SEGMENT = "{secret}"
_MIN_GENERATED_LENGTH = 16
SECRET_TOKEN_HEADER = "X-Telegram-Bot-Api-Secret-Token"

_SERVER = SpanKind.SERVER
_CACHE_MAX = 2048
# Route variable values shorter than this are not looked for in exception messages: "7"
# would replace every 7 in them, and such a value is no secret.
_MIN_VALUE_SCRUBBED = 4


class _Route:
    """How the requests of one matched resource are recorded, decided on first sight."""

    __slots__ = ("name", "static")

    def __init__(self, name: str, static: bool) -> None:
        self.name = name  # span name suffix, http.route and url.path
        #: A static route not known to be a webhook: Telegram's header may still tell.
        self.static = static


class _ServerRequest:
    """One request between ``start`` and ``end``."""

    __slots__ = ("context_token", "method", "request", "scheme", "span", "started")

    def __init__(
        self, request: Any, span: Any, context_token: Any, method: str, scheme: str
    ) -> None:
        self.request = request
        self.span = span
        self.context_token = context_token
        self.method = method
        self.scheme = scheme
        self.started = time.perf_counter()


def _looks_generated(segment: str) -> bool:
    return (
        len(segment) >= _MIN_GENERATED_LENGTH
        and "{" not in segment  # a route variable
        and TOKEN_PLACEHOLDER not in segment  # a redacted token: keeps its bot id
        and any(c.isdigit() for c in segment)
        and any(c.isalpha() for c in segment)
    )


def _recorded_path(canonical: str) -> str:
    """A route's path or template as recorded: no token, no generated-looking segment."""
    segments = redact_path(canonical).split("/")
    return "/".join(SECRET_SEGMENT if _looks_generated(s) else s for s in segments)


def _served_by_aiogram(route: Any) -> bool:
    """Whether ``route``'s handler is aiogram's webhook handler (a bound ``handle``)."""
    module = sys.modules.get("aiogram.webhook.aiohttp_server")
    base = getattr(module, "BaseRequestHandler", None)
    owner = getattr(getattr(route, "handler", None), "__self__", None)
    return base is not None and isinstance(owner, base)


class _Telemetry:
    """The tracer, instruments and caches of one ``instrument()`` call."""

    def __init__(self, tracer: trace.Tracer, meter: Any) -> None:
        from aiohttp import web

        self.http_exception = web.HTTPException
        self.plain_resource = web.PlainResource
        # Spans without the SDK's per-span cost: see lightspan.
        self.tracer = light_tracer(tracer)
        self.duration = create_instrument(meter, HTTP_SERVER_REQUEST_DURATION)
        self.active = create_instrument(meter, HTTP_SERVER_ACTIVE_REQUESTS)
        self._active_attrs: dict[tuple[str, str], dict[str, Any]] = {}
        self._metric_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._routes: dict[Any, _Route] = {}

    def active_attrs(self, method: str, scheme: str) -> dict[str, Any]:
        key = (method, scheme)
        attrs = self._active_attrs.get(key)
        if attrs is None:
            attrs = self._active_attrs[key] = {HTTP_REQUEST_METHOD: method, URL_SCHEME: scheme}
        return attrs

    def route(self, request: Any) -> str | None:
        """What the request's route is recorded as; None when no route matched."""
        match_info = request._match_info
        route = getattr(match_info, "route", None) if match_info is not None else None
        resource = getattr(route, "resource", None)
        if resource is None:
            return None
        known = self._routes.get(resource)
        if known is None:
            if _served_by_aiogram(route):
                known = _Route(WEBHOOK_ROUTE, False)
            else:
                static = isinstance(resource, self.plain_resource)
                known = _Route(_recorded_path(resource.canonical), static)
            if len(self._routes) >= _CACHE_MAX:
                self._routes.clear()
            self._routes[resource] = known
        if known.static and SECRET_TOKEN_HEADER in request.headers:
            # Telegram calls this route: it is a webhook, its path a secret from now on.
            known.name = WEBHOOK_ROUTE
            known.static = False
        return known.name

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

    # start / end are guarded_async's hooks around Application._handle.
    def start(self, app: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _ServerRequest:
        request = args[0] if args else kwargs["request"]
        method = request.method
        scheme = request.scheme
        parent = propagate.extract(request.headers)
        # The path is known only once routing has run: it is recorded at the end.
        span = self.tracer.start_span(method, context=parent, kind=_SERVER)
        if span.is_recording():
            host = request.host or ""
            address, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
            attrs: dict[str, Any] = {
                HTTP_REQUEST_METHOD: method,
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
        return _ServerRequest(request, span, token, method, scheme)

    def end(self, state: _ServerRequest, response: Any, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - state.started
        context.detach(state.context_token)
        method, scheme, request = state.method, state.scheme, state.request
        self.active.add(-1, self.active_attrs(method, scheme))
        status = response.status if response is not None else 0
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
        span = state.span
        if span.is_recording():
            if route is not None:
                span.update_name(method + " " + route)
                span.set_attributes({HTTP_ROUTE: route, URL_PATH: route})
            if status:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            if exc is not None:
                record_exception(span, exc, message=_without_path(request, route, exc))
            elif err is not None:
                span.set_attribute(ERROR_TYPE, err)
                span.set_status(StatusCode.ERROR)
        span.end()


def _without_path(request: Any, route: str | None, exc: BaseException) -> str:
    """``exc``'s message with the request's path and the route's values replaced by the
    recorded route (a handler's error may well name the path it failed for)."""
    text = safe_message(exc)
    replacement = route or "?"
    for path in (request.raw_path, request.path):
        if path in text and path != replacement:
            text = text.replace(path, replacement)
    match_info = request._match_info
    for value in match_info.values() if match_info is not None else ():
        if isinstance(value, str) and len(value) >= _MIN_VALUE_SCRUBBED and value in text:
            text = text.replace(value, "?")
    return text


class AiohttpServerInstrumentor(OtelbotInstrumentor):
    """Traces requests served by any ``aiohttp.web.Application``."""

    _instruments: Collection[str] = ("aiohttp >= 3.9",)

    def _instrument(self, **kwargs: Any) -> None:
        from aiohttp import web_app

        tracer, meter = self.tracer_and_meter(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        self.patches.wrap(
            web_app.Application,
            "_handle",
            lambda original: guarded_async(
                original, telemetry.start, telemetry.end, "aiohttp server request"
            ),
        )
