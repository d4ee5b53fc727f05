"""aiohttp client instrumentation, Telegram-aware.

Usage (``opentelemetry-instrument`` does this for you through the
``otelbot_aiohttp_client`` entry point)::

    from otelbot.instrumentation.aiohttp_client import AiohttpClientInstrumentor
    AiohttpClientInstrumentor().instrument()

    async with aiohttp.ClientSession() as s:
        await s.post("https://api.telegram.org/bot<token>/sendMessage", json={...})
        # -> span "telegram.api sendMessage", url.full ".../bot123456:REDACTED/sendMessage"

Every request gets one CLIENT span and an ``http.client.request.duration`` point. A Bot
API request (``…/bot<token>/<method>`` on any host) becomes ``telegram.api <method>``
with ``url.template`` ``/bot{token}/{method}``, the token redacted, and also counts in
``telegram.api.duration``; ``getUpdates`` long polls are metrics only unless
``OTELBOT_TRACE_GET_UPDATES=true``. When the aiogram instrumentation already holds a
``telegram.api`` span for the call, the HTTP details go on that span (no second span) and
aiogram's wrapper times the HTTP request, up to the moment aiogram has read the response
body. Other requests carry ``traceparent``; their span covers the time to the response
headers, so no body is read on the bot's behalf.
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
from otelbot.core.patching import OtelbotInstrumentor, guarded_async
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
    """What otelbot records for one URL string, computed once."""

    __slots__ = ("api", "host_attrs", "request_attrs", "safe_url", "span_attrs", "trace")

    def __init__(self, url: Any, trace_get_updates: bool) -> None:
        self.api: BotApiTarget | None = parse_path(url.raw_path)
        self.safe_url = redact_url(str(url))
        self.host_attrs: dict[str, Any] = {
            SERVER_ADDRESS: url.host or "",
            SERVER_PORT: url.port or (443 if url.scheme == "https" else 80),
        }
        if self.api is not None:
            self.host_attrs[URL_TEMPLATE] = self.api.template
        self.trace = self.api is None or self.api.method != "getUpdates" or trace_get_updates
        #: Per request method, built once: the request's HTTP attributes, and those of
        #: this URL's own span (the Bot API ones first).
        self.request_attrs: dict[str, dict[str, Any]] = {}
        self.span_attrs: dict[str, dict[str, Any]] = {}

    def http_attrs_for(self, method: str) -> dict[str, Any]:
        attrs = self.request_attrs.get(method)
        if attrs is None:
            attrs = self.request_attrs[method] = {
                **self.host_attrs,
                HTTP_REQUEST_METHOD: method,
                URL_FULL: self.safe_url,
            }
        return attrs

    def attrs_for(self, method: str) -> dict[str, Any]:
        attrs = self.span_attrs.get(method)
        if attrs is None:
            attrs = self.span_attrs[method] = {
                **(self.api.attributes if self.api is not None else {}),
                **self.http_attrs_for(method),
            }
        return attrs


class _Request:
    """One request between ``start`` and ``end``.

    ``span`` is the request's own span, None for a request not traced (a ``getUpdates``
    long poll), or the framework's open :class:`ApiCall` the request reports to.
    """

    __slots__ = ("method", "span", "started", "target")

    def __init__(self, target: _Target, method: str, span: Any, started: float) -> None:
        self.target = target
        self.method = method
        self.span = span
        self.started = started


class _JoinedRequest:
    """The HTTP request of a framework's open Bot API call, timed by the framework's
    wrapper: ``ApiCall.end_http`` calls ``end`` once the response is read."""

    __slots__ = ("method", "started", "target", "telemetry")

    def __init__(self, telemetry: _Telemetry, target: _Target, method: str) -> None:
        self.telemetry = telemetry
        self.target = target
        self.method = method
        self.started = time.perf_counter()

    def end(self, call: ApiCall, status: int, exc: BaseException | None) -> None:
        self.telemetry.record_http(self.target, self.method, self.started, status, exc)
        _status_on_call(call, status)


class _Telemetry:
    """The tracer, instruments and caches of one ``instrument()`` call."""

    def __init__(self, tracer: trace.Tracer, meter: Any) -> None:
        from yarl import URL

        self._URL = URL
        # Spans without the SDK's per-span cost: see lightspan.
        self.tracer = light_tracer(tracer)
        self.http_duration = create_instrument(meter, HTTP_CLIENT_REQUEST_DURATION)
        self.api_duration = create_instrument(meter, TELEGRAM_API_DURATION)
        self.flood_waits = create_instrument(meter, TELEGRAM_API_FLOOD_WAITS)
        self.trace_get_updates = config.trace_get_updates()
        self._targets: dict[Any, _Target] = {}
        self._metric_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}

    def target(self, session: Any, str_or_url: Any) -> _Target:
        base = getattr(session, "_base_url", None)
        key = (str_or_url, base) if base is not None else str_or_url
        try:
            return self._targets[key]
        except (KeyError, TypeError):
            pass
        url = str_or_url if isinstance(str_or_url, self._URL) else self._URL(str(str_or_url))
        if base is not None and not url.is_absolute():
            url = base.join(url)
        found = _Target(url, self.trace_get_updates)
        if len(self._targets) >= _CACHE_MAX:
            self._targets.clear()
        try:
            self._targets[key] = found
        except TypeError:
            pass
        return found

    def http_attrs(
        self, target: _Target, method: str, status: int, err: str | None
    ) -> dict[str, Any]:
        key = (id(target), method, status, err)
        attrs = self._metric_attrs.get(key)
        if attrs is None:
            attrs = {HTTP_REQUEST_METHOD: method, **target.host_attrs}
            if status:
                attrs[HTTP_RESPONSE_STATUS_CODE] = status
            if err is not None:
                attrs[ERROR_TYPE] = err
            if len(self._metric_attrs) >= _CACHE_MAX:
                self._metric_attrs.clear()
            self._metric_attrs[key] = attrs
        return attrs

    # start / end are guarded_async's hooks around ClientSession._request.
    def start(self, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Request:
        """Open the span for a request, or annotate the framework's open call."""
        target = self.target(session, args[1])
        method = args[0].upper()
        api = target.api
        span: Any
        if api is not None:
            outer = current_api_call.get()
            if outer is not None:
                outer_span = outer.span
                if outer_span is not None and outer_span.is_recording():
                    outer_span.set_attributes(target.http_attrs_for(method))
                span = outer
            elif target.trace:
                span = self.tracer.start_span(
                    api.span_name, kind=_CLIENT, attributes=target.attrs_for(method)
                )
            else:
                span = None
            return _Request(target, method, span, time.perf_counter())
        span = self.tracer.start_span(method, kind=_CLIENT, attributes=target.attrs_for(method))
        # Propagate the trace to services other than Telegram.
        headers = kwargs.get("headers")
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            if headers is None:
                kwargs["headers"] = carrier
            else:
                merged = dict(headers.items()) if hasattr(headers, "items") else dict(headers)
                merged.update(carrier)
                kwargs["headers"] = merged
        return _Request(target, method, span, time.perf_counter())

    def end(self, request: _Request, response: Any, exc: BaseException | None) -> None:
        status = response.status if response is not None else 0
        target = request.target
        elapsed, err = self.record_http(target, request.method, request.started, status, exc)
        span = request.span
        if isinstance(span, ApiCall):
            # The framework's call: it records the Bot API metrics itself.
            span.status = status
            _status_on_call(span, status)
            return
        api = target.api
        if notes.noting():
            started = request.started
            if api is not None:
                code = status if status >= 400 else 0
                notes.note(notes.API, api.method, started, started + elapsed, (code, None))
            else:
                host = target.host_attrs[SERVER_ADDRESS]
                notes.note(notes.HTTP, f"{request.method} {host}", started, started + elapsed)
        api = target.api
        if api is not None:
            self.api_duration.record(elapsed, botapi.metric_attrs(api.method, status, err))
            if status == 429:
                self.flood_waits.add(1, botapi.metric_attrs(api.method))
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

    def join(self, call: ApiCall, session: Any, method: str, str_or_url: Any) -> bool:
        """Put a Bot API request's HTTP details on the framework's open call, and leave
        the timing to it (``ApiCall.end_http``); False for a URL that is not the Bot API."""
        target = self.target(session, str_or_url)
        if target.api is None:
            return False
        upper = method.upper()
        span = call.span
        if span is not None and span.is_recording():
            span.set_attributes(target.http_attrs_for(upper))
        call.http = _JoinedRequest(self, target, upper)
        return True

    def record_http(
        self, target: _Target, method: str, started: float, status: int, exc: BaseException | None
    ) -> tuple[float, str | None]:
        """The ``http.client.request.duration`` point; returns (elapsed, error.type)."""
        elapsed = time.perf_counter() - started
        err: str | None = None
        if exc is not None:
            err = error_type(exc)
        elif status >= 400:
            err = str(status)
        self.http_duration.record(elapsed, self.http_attrs(target, method, status, err))
        return elapsed, err


def _status_on_call(call: ApiCall, status: int) -> None:
    outer = call.span
    if status and outer is not None and outer.is_recording():
        outer.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)


def _wrap_request(original: Any, telemetry: _Telemetry) -> Any:
    traced = guarded_async(original, telemetry.start, telemetry.end, "aiohttp client request")

    # A plain function: a Bot API request made inside a framework's open call (aiogram's
    # make_request) returns aiohttp's own coroutine, timed by that call's wrapper, so no
    # second coroutine layer sits in its await chain.
    @functools.wraps(original)
    def request(session: Any, *args: Any, **kwargs: Any) -> Any:
        call = current_api_call.get()
        if call is not None and call.http is None and len(args) >= 2:
            try:
                joined = telemetry.join(call, session, args[0], args[1])
            except Exception as exc:
                internal_error("aiohttp client request start", exc)
                joined = False
            if joined:
                return original(session, *args, **kwargs)
        return traced(session, *args, **kwargs)

    return request


class AiohttpClientInstrumentor(OtelbotInstrumentor):
    """Traces aiohttp ``ClientSession`` requests; Bot API calls become ``telegram.api``."""

    _instruments: Collection[str] = ("aiohttp >= 3.9",)

    def _instrument(self, **kwargs: Any) -> None:
        import aiohttp

        tracer, meter = self.tracer_and_meter(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        self.patches.wrap(
            aiohttp.ClientSession, "_request", lambda original: _wrap_request(original, telemetry)
        )
