"""pyTelegramBotAPI instrumentation in-process: real ``TeleBot`` and ``AsyncTeleBot`` against
the fake Bot API (telebot's ``API_URL``), checked with the in-memory SDK."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from telebot import ExceptionHandler, TeleBot, apihelper, asyncio_helper, types
from telebot.async_telebot import AsyncTeleBot

from otelbot.instrumentation.aiohttp_client import AiohttpClientInstrumentor
from otelbot.instrumentation.telebot import TelebotInstrumentor
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.scan import token_leaks
from tests.instrumentation.conftest import WireTelemetry


class _Boom(Exception):
    pass


@pytest.fixture
def api_url(fake_bot_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    url = fake_bot_api.base_url + "/bot{0}/{1}"
    monkeypatch.setattr(apihelper, "API_URL", url)
    monkeypatch.setattr(asyncio_helper, "API_URL", url)
    yield


@pytest.fixture
def instrumented(telemetry: MemoryTelemetry, api_url: None) -> Iterator[MemoryTelemetry]:
    parts = [TelebotInstrumentor(), AiohttpClientInstrumentor()]
    for p in parts:
        p.instrument(**telemetry.providers)
    yield telemetry
    for p in parts:
        p.uninstrument()


def sync_bot(token: str, **options: Any) -> TeleBot:
    bot = TeleBot(token, **options)

    @bot.message_handler(commands=["start"])
    def start(message: types.Message) -> None:
        bot.send_message(message.chat.id, "hi")

    @bot.message_handler(commands=["boom"])
    def boom(message: types.Message) -> None:
        raise _Boom("handler failed")

    @bot.message_handler(commands=["burst"])
    def burst(message: types.Message) -> None:
        for i in range(3):
            try:
                bot.send_message(message.chat.id, f"part {i}")
            except apihelper.ApiTelegramException:
                pass

    return bot


def async_bot(token: str) -> AsyncTeleBot:
    bot = AsyncTeleBot(token)

    @bot.message_handler(commands=["start"])
    async def start(message: types.Message) -> None:
        await bot.send_message(message.chat.id, "hi")

    @bot.message_handler(commands=["boom"])
    async def boom(message: types.Message) -> None:
        raise _Boom("handler failed")

    return bot


def updates(api: FakeBotApi, *texts: str) -> list[types.Update]:
    return [types.Update.de_json(api.message_update(t)) for t in texts]


def by_name(t: MemoryTelemetry, name: str) -> list[Any]:
    return [s for s in t.spans() if s.name == name]


def test_sync_update_with_bot_api_child(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    bot = sync_bot(bot_token, threaded=False)
    bot.process_new_updates(updates(fake_bot_api, "/start", "nobody handles this"))
    first, second = by_name(instrumented, "telegram.update message")
    assert first.parent is None and first.attributes["telegram.ingress"] == "webhook"
    assert first.attributes["telegram.handler"].endswith("sync_bot.<locals>.start")
    assert first.attributes["telegram.update.outcome"] == "handled"
    assert first.attributes["telegram.chat.type"] == "private"
    assert second.attributes["telegram.handler"] == "unhandled"
    assert second.attributes["telegram.update.outcome"] == "unhandled"
    (send,) = by_name(instrumented, "telegram.api sendMessage")
    assert send.parent.span_id == first.context.span_id
    assert send.attributes["http.response.status_code"] == 200
    assert send.attributes["telegram.bot.id"] == bot_token.split(":")[0]
    outcomes = sorted(
        p.attributes["telegram.update.outcome"] for p in instrumented.points("telegram.updates")
    )
    assert outcomes == ["handled", "unhandled"]
    users = {
        p.attributes["telegram.users.window"]: p.value
        for p in instrumented.points("telegram.users.active")
    }
    assert users["5m"] == pytest.approx(1, abs=0.1)  # one user sent both


def test_sync_errors_reach_the_bot_unchanged_and_are_recorded(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    bot = sync_bot(bot_token, threaded=False)
    with pytest.raises(_Boom):
        bot.process_new_updates(updates(fake_bot_api, "/boom"))
    seen: list[BaseException] = []

    class Swallow(ExceptionHandler):  # type: ignore[misc]
        def handle(self, exception: BaseException) -> bool:
            seen.append(exception)
            return True

    swallowing = sync_bot(bot_token, threaded=False, exception_handler=Swallow())
    swallowing.process_new_updates(updates(fake_bot_api, "/boom"))
    assert [type(e) for e in seen] == [_Boom]
    spans = by_name(instrumented, "telegram.update message")
    assert len(spans) == 2
    for span in spans:
        assert span.attributes["telegram.update.outcome"] == "error"
        assert span.attributes["error.type"].endswith("_Boom")
        assert [e.name for e in span.events] == ["exception"]
        assert span.status.status_code is StatusCode.ERROR


def test_sync_flood_wait_and_bot_api_errors(
    telemetry: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str, api_url: None
) -> None:
    def calls() -> list[tuple[str, str]]:
        fake_bot_api.script(
            "sendMessage", [Fault.flood(retry_after=6), Fault.forbidden(), Fault.server_error()]
        )
        bot = TeleBot(bot_token, threaded=False)
        seen = []
        for _ in range(3):
            try:
                bot.send_message(1, "x")
            except Exception as exc:
                seen.append((type(exc).__name__, str(exc)))
        return seen

    bare = calls()
    TelebotInstrumentor().instrument(**telemetry.providers)
    try:
        instrumented = calls()
    finally:
        TelebotInstrumentor().uninstrument()
    assert [name for name, _ in bare] == [
        "ApiTelegramException",
        "ApiTelegramException",
        "ApiTelegramException",
    ]
    assert instrumented == bare
    flood, forbidden, server = by_name(telemetry, "telegram.api sendMessage")
    assert flood.attributes["telegram.api.error_code"] == 429
    assert flood.attributes["telegram.api.retry_after"] == 6
    assert [e.name for e in flood.events] == ["telegram.flood_wait", "exception"]
    assert forbidden.attributes["telegram.api.error_code"] == 403
    assert server.attributes["http.response.status_code"] == 502
    (waits,) = telemetry.points("telegram.api.flood_waits")
    assert waits.value == 1
    text = repr(
        [(dict(s.attributes), [dict(e.attributes) for e in s.events]) for s in telemetry.spans()]
    )
    assert token_leaks(text, bot_token) == []


def test_sync_polling_in_worker_threads(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    bot = sync_bot(bot_token, threaded=True, num_threads=2)
    fake_bot_api.push_updates([fake_bot_api.message_update("/start") for _ in range(3)])
    poller = threading.Thread(
        target=bot.polling, kwargs={"interval": 0, "timeout": 1, "long_polling_timeout": 1}
    )
    poller.start()
    try:
        for _ in range(100):
            if len(by_name(instrumented, "telegram.update message")) == 3:
                break
            threading.Event().wait(0.05)
    finally:
        bot.stop_polling()
        poller.join(10)
    spans = by_name(instrumented, "telegram.update message")
    assert len(spans) == 3
    assert {s.attributes["telegram.ingress"] for s in spans} == {"polling"}
    assert len({s.context.trace_id for s in spans}) == 3
    sends = by_name(instrumented, "telegram.api sendMessage")
    assert sorted(s.parent.span_id for s in sends) == sorted(s.context.span_id for s in spans)
    assert by_name(instrumented, "telegram.api getUpdates") == []  # metrics only


async def test_async_bot_update_api_call_and_swallowed_error(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    bot = async_bot(bot_token)
    fake_bot_api.script("sendMessage", [Fault.ok(), Fault.flood(retry_after=4)])
    try:
        await bot.process_new_updates(updates(fake_bot_api, "/start", "/boom", "/start"))
    finally:
        await asyncio_helper.session_manager.session.close()
    spans = by_name(instrumented, "telegram.update message")
    assert len(spans) == 3
    by_outcome = sorted(s.attributes["telegram.update.outcome"] for s in spans)
    # telebot logs the handler error and the 429 and goes on: the update spans keep them
    assert by_outcome == ["error", "error", "handled"]
    boom = next(s for s in spans if s.attributes["telegram.handler"].endswith("boom"))
    assert boom.attributes["error.type"].endswith("_Boom")
    sends = by_name(instrumented, "telegram.api sendMessage")
    assert len(sends) == 2  # one span per call: the aiohttp request joined it
    assert {s.parent.span_id for s in sends} <= {s.context.span_id for s in spans}
    assert all(s.attributes["url.full"].endswith(":REDACTED/sendMessage") for s in sends)
    flood = next(s for s in sends if s.attributes.get("telegram.api.error_code") == 429)
    assert flood.attributes["telegram.api.retry_after"] == 4
    assert flood.attributes["http.response.status_code"] == 429
    (http,) = [
        p
        for p in instrumented.points("http.client.request.duration")
        if p.attributes.get("http.response.status_code") == 429
    ]
    assert http.value.count == 1


async def test_async_the_token_is_redacted_from_everything_exported(
    wire: WireTelemetry, fake_bot_api: FakeBotApi, bot_token: str, api_url: None
) -> None:
    wire.capture_logs("TeleBot")
    parts = [TelebotInstrumentor(), AiohttpClientInstrumentor()]
    for p in parts:
        p.instrument(**wire.providers)
    try:
        bot = async_bot(bot_token)
        fake_bot_api.script("sendMessage", [Fault.flood(3), Fault.broken_json(), Fault.hang(3)])
        asyncio_helper.REQUEST_TIMEOUT = 1
        try:
            await bot.process_new_updates(updates(fake_bot_api, "/start", "/start", "/start"))
            await bot.get_updates(timeout=0)
        finally:
            asyncio_helper.REQUEST_TIMEOUT = 300
            await asyncio_helper.session_manager.session.close()
    finally:
        for p in parts:
            p.uninstrument()
    exported = wire.exported()
    assert b"telegram.api sendMessage" in exported
    assert token_leaks(exported, bot_token) == []


def test_uninstrument_restores_telebot(telemetry: MemoryTelemetry) -> None:
    originals = (TeleBot._run_middlewares_and_handler, apihelper._make_request)
    TelebotInstrumentor().instrument(**telemetry.providers)
    assert apihelper._make_request is not originals[1]
    TelebotInstrumentor().uninstrument()
    assert (TeleBot._run_middlewares_and_handler, apihelper._make_request) == originals
