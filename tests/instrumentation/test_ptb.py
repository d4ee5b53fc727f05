"""python-telegram-bot instrumentation in-process: a real Application and Bot against the fake
Bot API (PTB's ``base_url``), checked with the in-memory SDK."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from telegram import Update
from telegram.error import Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from otelbot.instrumentation.httpx_client import HttpxClientInstrumentor
from otelbot.instrumentation.ptb import PtbInstrumentor
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.scan import token_leaks
from tests.instrumentation.conftest import WireTelemetry

App = Application[Any, Any, Any, Any, Any, Any]


class _Boom(Exception):
    pass


async def hello(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, "hi")


async def boom(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    raise _Boom("handler failed")


async def later(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await asyncio.sleep(0.2)
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, "later")


async def flood(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, "too fast")


def build(api: FakeBotApi, token: str, **options: Any) -> App:
    builder = Application.builder().token(token).base_url(api.base_url + "/bot")
    if options.get("concurrent"):
        builder = builder.concurrent_updates(8)
    app = builder.build()
    app.add_handler(CommandHandler("start", hello))
    app.add_handler(MessageHandler(filters.Regex("^hello$"), hello))
    app.add_handler(MessageHandler(filters.Regex("^boom$"), boom))
    app.add_handler(MessageHandler(filters.Regex("^later$"), later, block=False))
    app.add_handler(MessageHandler(filters.Regex("^flood$"), flood))
    return app


@pytest.fixture
def instrumented(telemetry: MemoryTelemetry) -> Iterator[MemoryTelemetry]:
    parts = [PtbInstrumentor(), HttpxClientInstrumentor()]
    for p in parts:
        p.instrument(**telemetry.providers)
    yield telemetry
    for p in parts:
        p.uninstrument()


@pytest.fixture
async def app(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> AsyncIterator[App]:
    application = build(fake_bot_api, bot_token)
    await application.initialize()
    instrumented.clear()  # getMe
    yield application
    await application.shutdown()


def by_name(t: MemoryTelemetry, name: str) -> list[Any]:
    return [s for s in t.spans() if s.name == name]


def update(api: FakeBotApi, text: str, app: App) -> Update:
    parsed = Update.de_json(api.message_update(text), app.bot)
    assert parsed is not None
    return parsed


async def test_direct_process_update_with_bot_api_child(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    app: App,
    bot_token: str,
) -> None:
    tracer = instrumented.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("webhook") as outer:
        await app.process_update(update(fake_bot_api, "hello", app))
    (span,) = by_name(instrumented, "telegram.update message")
    assert span.parent.span_id == outer.get_span_context().span_id  # direct: under the caller
    assert span.attributes["telegram.ingress"] == "direct"
    assert span.attributes["telegram.handler"] == f"{__name__}.hello"
    assert span.attributes["telegram.update.outcome"] == "handled"
    assert span.attributes["telegram.chat.type"] == "private"
    assert span.attributes["telegram.bot.id"] == bot_token.split(":")[0]
    (api,) = by_name(instrumented, "telegram.api sendMessage")
    assert api.parent.span_id == span.context.span_id
    assert api.attributes["http.response.status_code"] == 200
    assert api.attributes["url.template"] == "/bot{token}/{method}"
    assert api.attributes["url.full"].endswith(
        "/bot" + bot_token.split(":")[0] + ":REDACTED/sendMessage"
    )
    # one span per Bot API call: nothing else from the httpx layer
    assert [s.name for s in instrumented.spans()] == [
        "telegram.api sendMessage",
        "telegram.update message",
        "webhook",
    ]
    (handled,) = instrumented.points("telegram.updates")
    assert handled.attributes == {
        "telegram.update.type": "message",
        "telegram.handler": f"{__name__}.hello",
        "telegram.ingress": "direct",
        "telegram.update.outcome": "handled",
    }
    durations = instrumented.points("telegram.update.duration")
    assert [p.attributes["telegram.handler"] for p in durations] == [f"{__name__}.hello"]
    (http,) = instrumented.points("http.client.request.duration")
    # initialize()'s getMe and the sendMessage: each request recorded once (the joined call)
    assert http.value.count == 2


async def test_unhandled_update(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    app: App,
) -> None:
    await app.process_update(update(fake_bot_api, "nobody handles this", app))
    (span,) = by_name(instrumented, "telegram.update message")
    assert span.attributes["telegram.update.outcome"] == "unhandled"
    assert span.attributes["telegram.handler"] == "unhandled"


@pytest.mark.parametrize("error_handler", ["none", "swallows", "stops"])
async def test_handler_errors_are_recorded_even_when_an_error_handler_swallows_them(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    app: App,
    error_handler: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[object] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(context.error)
        if error_handler == "stops":
            raise ApplicationHandlerStop

    if error_handler != "none":
        app.add_error_handler(on_error)
    with caplog.at_level(logging.ERROR, "telegram"):
        await app.process_update(update(fake_bot_api, "boom", app))
    if error_handler == "none":
        assert "No error handlers are registered" in caplog.text  # PTB's own behaviour
    else:
        assert [type(e) for e in seen] == [_Boom]  # the error handler got it unchanged
    (span,) = by_name(instrumented, "telegram.update message")
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"].endswith("_Boom")
    assert span.attributes["telegram.update.outcome"] == "error"
    assert span.attributes["error.type"].endswith("_Boom")
    assert span.attributes["telegram.handler"] == f"{__name__}.boom"
    assert span.status.status_code is StatusCode.ERROR
    (count,) = instrumented.points("telegram.updates")
    assert count.attributes["error.type"].endswith("_Boom")


async def test_non_blocking_handler_keeps_the_update_open_until_it_ends(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    bot_token: str,
) -> None:
    application = build(fake_bot_api, bot_token)
    async with application:  # initialize / shutdown
        await application.start()
        try:
            await application.process_update(update(fake_bot_api, "later", application))
            assert by_name(instrumented, "telegram.update message") == []  # still running
            for _ in range(100):
                if by_name(instrumented, "telegram.update message"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await application.stop()
    (span,) = by_name(instrumented, "telegram.update message")
    (api,) = by_name(instrumented, "telegram.api sendMessage")
    assert api.parent.span_id == span.context.span_id
    assert span.end_time >= api.end_time
    assert span.attributes["telegram.handler"] == f"{__name__}.later"


@pytest.mark.parametrize("concurrent", [False, True])
async def test_polling_gives_each_update_its_own_trace(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    bot_token: str,
    concurrent: bool,
) -> None:
    application = build(fake_bot_api, bot_token, concurrent=concurrent)
    fake_bot_api.push_updates([fake_bot_api.message_update(t) for t in ("hello", "/start", "x")])
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=1)
        try:
            for _ in range(200):
                if len(by_name(instrumented, "telegram.update message")) == 3:
                    break
                await asyncio.sleep(0.05)
        finally:
            await application.updater.stop()
            await application.stop()
    updates = by_name(instrumented, "telegram.update message")
    assert len(updates) == 3
    assert all(s.parent is None for s in updates)  # roots
    assert len({s.context.trace_id for s in updates}) == 3
    assert {s.attributes["telegram.ingress"] for s in updates} == {"polling"}
    assert sorted(s.attributes["telegram.handler"] for s in updates) == [
        f"{__name__}.hello",
        f"{__name__}.hello",
        "unhandled",
    ]
    sends = by_name(instrumented, "telegram.api sendMessage")
    assert sorted(s.parent.span_id for s in sends) == sorted(
        s.context.span_id for s in updates if s.attributes["telegram.handler"] != "unhandled"
    )
    # getUpdates long polls: metrics only
    assert by_name(instrumented, "telegram.api getUpdates") == []
    methods = {
        p.attributes["telegram.api.method"] for p in instrumented.points("telegram.api.duration")
    }
    assert "getUpdates" in methods


async def test_flood_wait_and_bot_api_errors_reach_the_bot_unchanged(
    telemetry: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    async def calls() -> list[tuple[str, str]]:
        fake_bot_api.script(
            "sendMessage",
            [Fault.flood(retry_after=7), Fault.forbidden(), Fault.server_error(), Fault.hang(3)],
        )
        application = build(fake_bot_api, bot_token)
        seen = []
        async with application:
            for read_timeout in (None, None, None, 0.5):
                try:
                    await application.bot.send_message(1, "x", read_timeout=read_timeout)
                except Exception as exc:
                    seen.append((type(exc).__name__, str(exc)))
        return seen

    bare = await calls()
    parts = [PtbInstrumentor(), HttpxClientInstrumentor()]
    for p in parts:
        p.instrument(**telemetry.providers)
    try:
        instrumented = await calls()
    finally:
        for p in parts:
            p.uninstrument()
    assert [name for name, _ in bare] == [
        RetryAfter.__name__,
        Forbidden.__name__,
        NetworkError.__name__,
        TimedOut.__name__,
    ]
    assert instrumented == bare
    flood_span, forbidden, server, timeout = by_name(telemetry, "telegram.api sendMessage")
    assert flood_span.attributes["telegram.api.error_code"] == 429
    assert flood_span.attributes["telegram.api.retry_after"] == 7
    assert [e.name for e in flood_span.events] == ["telegram.flood_wait", "exception"]
    assert forbidden.attributes["telegram.api.error_code"] == 403
    assert forbidden.attributes["error.type"] == "telegram.error.Forbidden"
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["telegram.api.error_code"] == 502
    assert timeout.attributes["error.type"] == "telegram.error.TimedOut"
    assert "telegram.api.error_code" not in timeout.attributes
    assert all(
        s.status.status_code == StatusCode.ERROR for s in (flood_span, forbidden, server, timeout)
    )
    (waits,) = telemetry.points("telegram.api.flood_waits")
    assert waits.value == 1 and waits.attributes == {"telegram.api.method": "sendMessage"}
    (retry_after,) = telemetry.points("telegram.api.retry_after")
    assert retry_after.value.sum == 7
    codes = sorted(
        p.attributes.get("telegram.api.error_code", 0)
        for p in telemetry.points("telegram.api.duration")
        if p.attributes["telegram.api.method"] == "sendMessage"
    )
    assert codes == [0, 403, 429, 502]


async def test_get_updates_traced_only_when_asked(
    telemetry: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    bot_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTELBOT_TRACE_GET_UPDATES", "true")
    parts = [PtbInstrumentor(), HttpxClientInstrumentor()]
    for p in parts:
        p.instrument(**telemetry.providers)
    try:
        application = build(fake_bot_api, bot_token)
        async with application:
            await application.bot.get_updates(timeout=0)
    finally:
        for p in parts:
            p.uninstrument()
    assert "telegram.api getUpdates" in telemetry.span_names()


async def test_cancelled_update_passes_through(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    app: App,
) -> None:
    fake_bot_api.script("sendMessage", [Fault.slow(5)])
    task = asyncio.ensure_future(app.process_update(update(fake_bot_api, "hello", app)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = by_name(instrumented, "telegram.update message")
    assert span.attributes["error.type"].endswith("CancelledError")
    (api,) = by_name(instrumented, "telegram.api sendMessage")
    assert api.attributes["error.type"].endswith("CancelledError")
    assert trace.get_current_span() is trace.INVALID_SPAN  # context restored


async def test_the_token_is_redacted_from_everything_exported(
    wire: WireTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    wire.capture_logs("telegram")
    wire.capture_logs("httpx")
    parts = [PtbInstrumentor(), HttpxClientInstrumentor()]
    for p in parts:
        p.instrument(**wire.providers)
    try:
        application = build(fake_bot_api, bot_token)
        secret = bot_token.split(":")[1]

        async def leaky(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            raise RuntimeError("cannot use " + secret)

        application.add_handler(MessageHandler(filters.Regex("^leak$"), leaky), group=1)
        fake_bot_api.script("sendMessage", [Fault.flood(3), Fault.broken_json()])
        async with application:
            for text in ("hello", "flood", "leak", "hello"):
                await application.process_update(update(fake_bot_api, text, application))
            file = await application.bot.get_file("f1")
            del file
    except Exception:
        pass
    finally:
        for p in parts:
            p.uninstrument()
    exported = wire.exported()
    assert b"telegram.api sendMessage" in exported
    assert b"REDACTED" in exported
    assert token_leaks(exported, bot_token) == []


async def test_uninstrument_restores_ptb(telemetry: MemoryTelemetry) -> None:
    from telegram.ext import BaseHandler
    from telegram.request import BaseRequest, HTTPXRequest

    originals = (
        Application.process_update,
        BaseHandler.handle_update,
        BaseRequest._request_wrapper,
        HTTPXRequest.do_request,
    )
    PtbInstrumentor().instrument(**telemetry.providers)
    assert Application.process_update is not originals[0]
    PtbInstrumentor().uninstrument()
    assert (
        Application.process_update,
        BaseHandler.handle_update,
        BaseRequest._request_wrapper,
        HTTPXRequest.do_request,
    ) == originals


async def test_each_job_run_is_a_trace_of_its_own(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    bot_token: str,
) -> None:
    ran: list[str] = []
    errors: list[object] = []

    async def remind(context: ContextTypes.DEFAULT_TYPE) -> None:
        ran.append("remind")
        await context.bot.send_message(1, "reminder")

    async def broken_job(context: ContextTypes.DEFAULT_TYPE) -> None:
        ran.append("broken")
        raise _Boom("job failed")

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    application = build(fake_bot_api, bot_token)
    application.add_error_handler(on_error)
    async with application:
        await application.start()
        try:
            assert application.job_queue is not None
            application.job_queue.run_once(remind, 0, name="remind-chat-1")
            application.job_queue.run_once(broken_job, 0, name="broken-chat-1")
            for _ in range(100):
                if len([s for s in instrumented.span_names() if s.startswith("telegram.job")]) == 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await application.stop()
    assert sorted(ran) == ["broken", "remind"]
    assert [type(e) for e in errors] == [_Boom]  # the error handler still gets it
    (job,) = by_name(
        instrumented,
        f"telegram.job {__name__}.test_each_job_run_is_a_trace_of_its_own.<locals>.remind",
    )
    assert job.parent is None
    (send,) = by_name(instrumented, "telegram.api sendMessage")
    assert send.parent.span_id == job.context.span_id
    (failed,) = [s for s in instrumented.spans() if s.name.endswith("<locals>.broken_job")]
    assert failed.parent is None and failed.context.trace_id != job.context.trace_id
    assert failed.attributes["error.type"].endswith("_Boom")
    assert [e.name for e in failed.events] == ["exception"]
    assert failed.status.status_code is StatusCode.ERROR
    # the job's name (here with a chat id in it) is not recorded
    recorded = repr([(s.name, dict(s.attributes)) for s in instrumented.spans()])
    assert "chat-1" not in recorded


async def test_conversation_names_the_handler_it_picks(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    app: App,
) -> None:
    from telegram.ext import ConversationHandler

    async def ask(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        return 1

    async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        return ConversationHandler.END

    app.add_handler(
        ConversationHandler(
            entry_points=[CommandHandler("talk", ask)],
            states={1: [MessageHandler(filters.TEXT, answer)]},
            fallbacks=[],
        ),
        group=-1,
    )
    await app.process_update(update(fake_bot_api, "/talk", app))
    await app.process_update(update(fake_bot_api, "fine", app))
    first, second = by_name(instrumented, "telegram.update message")
    assert first.attributes["telegram.handler"].endswith("<locals>.ask")
    assert second.attributes["telegram.handler"].endswith("<locals>.answer")
