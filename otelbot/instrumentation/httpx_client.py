"""httpx client instrumentation (sync and async), Telegram-aware.

Usage (``opentelemetry-instrument`` does this for you through the ``otelbot_httpx``
entry point)::

    from otelbot.instrumentation.httpx_client import HttpxClientInstrumentor
    HttpxClientInstrumentor().instrument()

    async with httpx.AsyncClient() as client:
        await client.post("https://api.telegram.org/bot<token>/sendMessage", json={...})
        # -> span "telegram.api sendMessage", url.full ".../bot123456:REDACTED/sendMessage"

Every request sent by an ``httpx.Client`` or ``httpx.AsyncClient`` gets one CLIENT span
and an ``http.client.request.duration`` point. A Bot API request (``…/bot<token>/<method>``
on any host) becomes ``telegram.api <method>`` with the token redacted and counts in
``telegram.api.duration``; ``getUpdates`` long polls are metrics only unless
``OTELBOT_TRACE_GET_UPDATES=true``. When python-telegram-bot's instrumentation holds a
``telegram.api`` span for the call, the HTTP details go on that span (no second span) and
its wrapper ends the HTTP request. Other requests carry ``traceparent``; their span
covers the time to the response headers, so no body is read on the bot's behalf.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from otelbot.core import config
from otelbot.core.errors import error_type, internal_error, record_exception
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.lightspan import light_tracer
from otelbot.core.patching import OtelbotInstrumentor, guarded_async, guarded_sync
from otelbot.core.redaction import redact_url
from otelbot.diagnosis import notes
from otelbot.instrumentation import botapi
from otelbot.instrumentation.botapi import ApiCall, BotApiTarget, current_api_call, parse_path
from otelbot.semconv import (
    ERROR_TYPE,
    HTTP_CLIENT_REQUEST_DURATION,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    SERVER_ADDRESS,
    SERVER_PORT,
    TELEGRAM_API_DURATION,
    TELEGRAM_API_ERROR_CODE,
    TELEGRAM_API_FLOOD_WAITS,
    URL_FULL,
    URL_TEMPLATE,
)

_CLIENT = SpanKind.CLIENT
_CACHE_MAX = 2048


class _Target:
    """What otelbot records for one (method, URL), computed once."""

    __slots__ = ("api", "http_attrs", "method", "span_attrs", "trace")

    def __init__(self, method: str, url: Any, trace_get_updates: bool) -> None:
        self.method = method
        self.api: BotApiTarget | None = parse_path(url.path)
        self.http_attrs: dict[str, Any] = {
            SERVER_ADDRESS: url.host or "",
            SERVER_PORT: url.port or (443 if url.scheme == "https" else 80),
            HTTP_REQUEST_METHOD: method,
        }
        if self.api is not None:
            self.http_attrs[URL_TEMPLATE] = self.api.template
        self.trace = self.api is None or self.api.method != "getUpdates" or trace_get_updates
        #: The span's attributes: the Bot API ones first, then the request's own.
        self.span_attrs: dict[str, Any] = {
            **(self.api.attributes if self.api is not None else {}),
            **self.http_attrs,
            URL_FULL: redact_url(str(url)),
        }


class _Request:
    """One request between ``start`` and ``end``; ``span`` is None for a request not
    traced (a ``getUpdates`` long poll)."""

    __slots__ = ("span", "started", "target")

    def __init__(self, target: _Target, span: Any) -> None:
        self.target = target
        self.span = span
        self.started = time.perf_counter()


class _JoinedRequest:
    """The HTTP request of a framework's open Bot API call: ``ApiCall.end_http`` ends it."""

    __slots__ = ("started", "target", "telemetry")

    def __init__(self, telemetry: _Telemetry, target: _Target) -> None:
        self.telemetry = telemetry
        self.target = target
        self.started = time.perf_counter()

    def end(self, call: ApiCall, status: int, exc: BaseException | None) -> None:
        self.telemetry.record_http(self.target, self.started, status, exc)
        span = call.span
        if status and span is not None and span.is_recording():
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)


class _Telemetry:
    """The tracer, instruments and caches of one ``instrument()`` call."""

    def __init__(self, tracer: trace.Tracer, meter: Any) -> None:
        self.tracer = light_tracer(tracer)
        self.http_duration = create_instrument(meter, HTTP_CLIENT_REQUEST_DURATION)
        self.api_duration = create_instrument(meter, TELEGRAM_API_DURATION)
        self.flood_waits = create_instrument(meter, TELEGRAM_API_FLOOD_WAITS)
        self.trace_get_updates = config.trace_get_updates()
        self._targets: dict[tuple[str, str], _Target] = {}
        self._metric_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}

    def target(self, request: Any) -> _Target:
        url = request.url
        key = (request.method, str(url))
        found = self._targets.get(key)
        if found is None:
            found = _Target(request.method, url, self.trace_get_updates)
            if len(self._targets) >= _CACHE_MAX:
                self._targets.clear()
            self._targets[key] = found
        return found

    def metric_attrs(self, target: _Target, status: int, err: str | None) -> dict[str, Any]:
        key = (id(target), status, err)
        attrs = self._metric_attrs.get(key)
        if attrs is None:
            attrs = dict(target.http_attrs)
            if status:
                attrs[HTTP_RESPONSE_STATUS_CODE] = status
            if err is not None:
                attrs[ERROR_TYPE] = err
            if len(self._metric_attrs) >= _CACHE_MAX:
                self._metric_attrs.clear()
            self._metric_attrs[key] = attrs
        return attrs

    def join(self, call: ApiCall, request: Any) -> bool:
        """Put a Bot API request's HTTP details on the framework's open call, and leave its
        end to the framework (``ApiCall.end_http``); False for other URLs."""
        target = self.target(request)
        if target.api is None:
            return False
        span = call.span
        if span is not None and span.is_recording():
            span.set_attributes(target.span_attrs)
        call.http = _JoinedRequest(self, target)
        return True

    # start / end are the guarded hooks around Client.send / AsyncClient.send.
    def start(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Request:
        request = args[0] if args else kwargs["request"]
        target = self.target(request)
        if target.api is not None:
            span = None
            if target.trace:
                span = self.tracer.start_span(
                    target.api.span_name, kind=_CLIENT, attributes=target.span_attrs
                )
            return _Request(target, span)
        span = self.tracer.start_span(target.method, kind=_CLIENT, attributes=target.span_attrs)
        # Propagate the trace to services other than Telegram.
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        for name, value in carrier.items():
            request.headers[name] = value
        return _Request(target, span)

    def end(self, request: _Request, response: Any, exc: BaseException | None) -> None:
        status = response.status_code if response is not None else 0
        target = request.target
        elapsed, err = self.record_http(target, request.started, status, exc)
        api = target.api
        if notes.noting():
            started = request.started
            if api is not None:
                code = status if status >= 400 else 0
                where = notes.bot_code_location() if code else None
                notes.note(notes.API, api.method, started, started + elapsed, (code, None, where))
            else:
                shape = target.method + " " + target.http_attrs[SERVER_ADDRESS]
                notes.note(notes.HTTP, shape, started, started + elapsed)
        if api is not None:
            self.api_duration.record(elapsed, botapi.metric_attrs(api.method, status, err))
            if status == 429:
                self.flood_waits.add(1, botapi.metric_attrs(api.method))
        span = request.span
        if span is None:
            return
        if span.is_recording():
            if status:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            if exc is not None:
                record_exception(span, exc)
            elif status >= 400:
                span.set_attribute(ERROR_TYPE, err)
                if api is not None:
                    span.set_attribute(TELEGRAM_API_ERROR_CODE, status)
                span.set_status(StatusCode.ERROR)
        span.end()

    def record_http(
        self, target: _Target, started: float, status: int, exc: BaseException | None
    ) -> tuple[float, str | None]:
        """The ``http.client.request.duration`` point; returns (elapsed, error.type)."""
        elapsed = time.perf_counter() - started
        err: str | None = None
        if exc is not None:
            err = error_type(exc)
        elif status >= 400:
            err = str(status)
        self.http_duration.record(elapsed, self.metric_attrs(target, status, err))
        return elapsed, err


def _joined(telemetry: _Telemetry, client: Any, args: tuple[Any, ...]) -> bool:
    call = current_api_call.get()
    if call is None or call.http is not None or not args:
        return False
    try:
        return telemetry.join(call, args[0])
    except Exception as exc:
        internal_error("httpx client request start", exc)
        return False


def _wrap_async_send(original: Any, telemetry: _Telemetry) -> Any:
    traced = guarded_async(original, telemetry.start, telemetry.end, "httpx client request")

    # A plain function: a Bot API request inside a framework's open call returns httpx's
    # own coroutine, ended by that call's wrapper, with no coroutine layer of ours.
    @functools.wraps(original)
    def send(client: Any, *args: Any, **kwargs: Any) -> Any:
        if _joined(telemetry, client, args):
            return original(client, *args, **kwargs)
        return traced(client, *args, **kwargs)

    return send


def _wrap_sync_send(original: Any, telemetry: _Telemetry) -> Any:
    traced = guarded_sync(original, telemetry.start, telemetry.end, "httpx client request")

    @functools.wraps(original)
    def send(client: Any, *args: Any, **kwargs: Any) -> Any:
        if _joined(telemetry, client, args):
            return original(client, *args, **kwargs)
        return traced(client, *args, **kwargs)

    return send


class HttpxClientInstrumentor(OtelbotInstrumentor):
    """Traces httpx ``Client`` / ``AsyncClient`` requests; Bot API calls become
    ``telegram.api``."""

    _instruments: Collection[str] = ("httpx >= 0.23",)

    def _instrument(self, **kwargs: Any) -> None:
        import httpx

        tracer, meter = self.tracer_and_meter(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        wrap = self.patches.wrap
        wrap(httpx.AsyncClient, "send", lambda o: _wrap_async_send(o, telemetry))
        wrap(httpx.Client, "send", lambda o: _wrap_sync_send(o, telemetry))
