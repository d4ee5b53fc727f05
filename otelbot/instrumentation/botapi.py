"""Recognising Telegram Bot API requests, and what the instrumentations share about them.

A Bot API URL is ``{server}/bot{token}/{method}`` on any host (so a local Bot API server
works too); file downloads are ``{server}/file/bot{token}/{path}``.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from otelbot.semconv import (
    SPAN_TELEGRAM_API,
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
        attributes={TELEGRAM_API_METHOD: method, TELEGRAM_BOT_ID: bot_id, URL_TEMPLATE: template},
    )


class ApiCall:
    """A Bot API call whose ``telegram.api`` span a framework instrumentation (aiogram)
    holds open. The aiohttp client instrumentation puts its HTTP details on ``span``
    instead of opening a second span, and leaves the timing of the HTTP request to the
    framework's wrapper (no coroutine layer of its own): it stores in ``http`` what
    ``end_http`` needs, and the framework calls ``end_http`` once the response is read
    (or the request failed). ``status`` is the HTTP response status, 0 until known."""

    __slots__ = ("http", "span", "status")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.status = 0
        #: (recorder, target, request method, start time) while the HTTP part is timed.
        self.http: tuple[Any, Any, str, float] | None = None

    def end_http(self, status: int, exc: BaseException | None) -> None:
        """The HTTP request is over (``status`` 0 when it failed with ``exc``)."""
        http = self.http
        if http is None:
            return
        self.http = None
        http[0].finish_joined(self, http, status, exc)


#: The ApiCall in progress in this context, if any.
current_api_call: ContextVar[ApiCall | None] = ContextVar("otelbot_api_call", default=None)
