"""Recognising Telegram Bot API requests, and what the instrumentations share about them::

    from otelbot.instrumentation.botapi import parse_path

    target = parse_path("/bot123456:AAH-secret/sendMessage")
    print(target.span_name)  # telegram.api sendMessage
    print(target.safe_path)  # /bot123456:REDACTED/sendMessage

A Bot API URL is ``{server}/bot{token}/{method}`` on any host (so a local Bot API server
works too); file downloads are ``{server}/file/bot{token}/{path}``. Seeing a token here
teaches the redaction its secret part (``otelbot.core.redaction.remember_token``), so the
secret is redacted wherever it turns up later, even without its ``<id>:`` prefix.

Also here: the attribute sets of the ``telegram.api.*`` metrics and spans, shared by the
aiogram and aiohttp client instrumentations, and :class:`ApiCall`, the Bot API call a
framework holds open while the HTTP client does the request.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Protocol

from otelbot.core.redaction import remember_token
from otelbot.semconv import (
    ERROR_TYPE,
    SPAN_TELEGRAM_API,
    TELEGRAM_API_ERROR_CODE,
    TELEGRAM_API_METHOD,
    TELEGRAM_BOT_ID,
    TELEGRAM_FILE_URL_TEMPLATE,
    TELEGRAM_URL_TEMPLATE,
    URL_TEMPLATE,
)


@dataclass(frozen=True)
class BotApiTarget:
    """What a Bot API path says, computed once per distinct path (see ``parse_path``)."""

    method: str
    bot_id: str
    span_name: str
    safe_path: str  # the path with the token's secret replaced
    template: str
    attributes: dict[str, Any]  # telegram.api.method, telegram.bot.id, url.template


_cache: dict[str, BotApiTarget | None] = {}
_CACHE_MAX = 4096


def parse_path(path: str) -> BotApiTarget | None:
    """The Bot API call a URL path makes, or None when it is not a Bot API path."""
    try:
        return _cache[path]
    except KeyError:
        pass
    target = _parse(path)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[path] = target
    return target


def _parse(path: str) -> BotApiTarget | None:
    is_file = path.startswith("/file/bot")
    start = path.find("/bot")
    if start < 0 or (start != 0 and not is_file):
        # A Bot API server may live under a prefix (``/tg/bot...``): accept the last
        # "/bot<digits>:" segment.
        start = path.rfind("/bot")
        if start < 0:
            return None
    rest = path[start + 4 :]
    colon = rest.find(":")
    slash = rest.find("/")
    if colon <= 0 or slash < 0 or colon > slash or not rest[:colon].isdigit():
        return None
    bot_id = rest[:colon]
    remember_token(rest[:slash])
    tail = rest[slash + 1 :]
    safe_path = path[: start + 4] + bot_id + ":REDACTED/" + tail
    if is_file:
        method = "file"
        template = TELEGRAM_FILE_URL_TEMPLATE
    else:
        # aiogram's test environment adds "/test/" before the method.
        method = tail.rsplit("/", 1)[-1] or tail
        template = TELEGRAM_URL_TEMPLATE
    return BotApiTarget(
        method=method,
        bot_id=bot_id,
        span_name=SPAN_TELEGRAM_API + " " + method,
        safe_path=safe_path,
        template=template,
        attributes=span_attrs(method, bot_id, template),
    )


_span_attrs: dict[tuple[str, str, str], dict[str, Any]] = {}
_metric_attrs: dict[tuple[str, int, str | None], dict[str, Any]] = {}
_ATTRS_MAX = 2048


def span_attrs(method: str, bot_id: str, template: str = TELEGRAM_URL_TEMPLATE) -> dict[str, Any]:
    """A ``telegram.api`` span's own attributes, built once per (method, bot, template).

    Shared: callers must not change the dict.
    """
    key = (method, bot_id, template)
    attrs = _span_attrs.get(key)
    if attrs is None:
        attrs = {TELEGRAM_API_METHOD: method, TELEGRAM_BOT_ID: bot_id, URL_TEMPLATE: template}
        if len(_span_attrs) >= _ATTRS_MAX:
            _span_attrs.clear()
        _span_attrs[key] = attrs
    return attrs


def metric_attrs(method: str, code: int = 0, err: str | None = None) -> dict[str, Any]:
    """The attributes of a ``telegram.api.*`` metric point: the method, and for a failed
    call the Bot API error code (an HTTP status below 400 is no error code) and
    ``error.type``. Built once per combination; callers must not change the dict."""
    if code < 400:
        code = 0
    key = (method, code, err)
    attrs = _metric_attrs.get(key)
    if attrs is None:
        attrs = {TELEGRAM_API_METHOD: method}
        if code:
            attrs[TELEGRAM_API_ERROR_CODE] = code
        if err is not None:
            attrs[ERROR_TYPE] = err
        if len(_metric_attrs) >= _ATTRS_MAX:
            _metric_attrs.clear()
        _metric_attrs[key] = attrs
    return attrs


class JoinedRequest(Protocol):
    """The HTTP request of an :class:`ApiCall`, as the HTTP client instrumentation left it."""

    def end(self, call: ApiCall, status: int, exc: BaseException | None) -> None:
        """The request is over: record it (``status`` 0 when it failed with ``exc``)."""


class ApiCall:
    """A Bot API call whose ``telegram.api`` span a framework instrumentation (aiogram)
    holds open, from its start to its end.

    The aiohttp client instrumentation puts its HTTP details on ``span`` instead of opening
    a second span, and leaves the timing of the HTTP request to the framework's wrapper (no
    coroutine layer of its own): it stores in ``http`` what is needed to record the
    request, and the framework calls ``end_http`` once the response is read (or the
    request failed). ``status`` is the HTTP response status, 0 until known.
    """

    __slots__ = ("context_token", "http", "method", "span", "started", "status")

    def __init__(self, span: Any, method: str = "", started: float = 0.0) -> None:
        self.span = span
        #: The Bot API method name, and when the call started (``time.perf_counter``).
        self.method = method
        self.started = started
        self.status = 0
        self.http: JoinedRequest | None = None
        #: Resets ``current_api_call`` when the call ends.
        self.context_token: Token[ApiCall | None] | None = None

    def end_http(self, status: int, exc: BaseException | None) -> None:
        """The HTTP request is over (``status`` 0 when it failed with ``exc``)."""
        http = self.http
        if http is None:
            return
        self.http = None
        http.end(self, status, exc)


#: The ApiCall in progress in this context, if any.
current_api_call: ContextVar[ApiCall | None] = ContextVar("otelbot_api_call", default=None)
