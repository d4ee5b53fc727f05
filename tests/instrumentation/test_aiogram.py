"""aiogram instrumentation in-process: a real Dispatcher and Bot against the fake Bot API,
the real Redis, checked with the in-memory SDK."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.exceptions import TelegramForbiddenError, TelegramNetworkError
from aiogram.methods import SendMessage
from aiogram.types import Message, Update
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otelbot.instrumentation.aiogram import AiogramInstrumentor
from otelbot.instrumentation.aiohttp_client import AiohttpClientInstrumentor
from otelbot.instrumentation.asyncpg import AsyncpgInstrumentor
from otelbot.instrumentation.redis import RedisInstrumentor
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.scan import token_leaks
from tests.instrumentation.conftest import WireTelemetry


@pytest.fixture
def instrumented(telemetry: MemoryTelemetry) -> Iterator[MemoryTelemetry]:
    parts = [AiogramInstrumentor(), AiohttpClientInstrumentor(), RedisInstrumentor()]
    for p in parts:
        p.instrument(**telemetry.providers)
    yield telemetry
    for p in parts:
        p.uninstrument()


@pytest.fixture
async def bot(fake_bot_api: FakeBotApi, bot_token: str) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake_bot_api.base_url))
    b = Bot(bot_token, session=session)
    yield b
    await b.session.close()


def update(api: FakeBotApi, text: str, bot: Bot) -> Update:
    return Update.model_validate(api.message_update(text), context={"bot": bot})


def make_dispatcher(redis_url: str) -> Dispatcher:
    router = Router()
    sync_redis = redis.Redis.from_url(redis_url)

    @router.message(F.text == "sync")
    def sync_handler(message: Message) -> None:  # aiogram runs it in a thread
        sync_redis.get("otb_aiogram_test:sync")

    @router.message(F.text == "reply")
    async def webhook_reply(message: Message) -> SendMessage:
        return message.answer("replied in the webhook response")

    @router.message(F.text == "blocked")
    async def blocked(message: Message) -> None:
        await message.answer("you blocked me")

    @router.message(F.text == "broken")
    async def broken(message: Message) -> None:
        await message.answer("the answer will not parse")

    @router.message(F.text == "hello")
    async def hello(message: Message) -> None:
        await message.answer("hi")

    dp = Dispatcher()
    dp.include_router(router)
    return dp


def by_name(t: MemoryTelemetry, name: str) -> list[Any]:
    return [s for s in t.spans() if s.name == name]


async def test_direct_feed_update_with_bot_api_child(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot, redis_url: str
) -> None:
    dp = make_dispatcher(redis_url)
    tracer = instrumented.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("outer") as outer:
        await dp.feed_update(bot, update(fake_bot_api, "hello", bot))
    (span,) = by_name(instrumented, "telegram.update message")
    assert span.parent.span_id == outer.get_span_context().span_id  # direct: under the caller
    assert span.attributes["telegram.ingress"] == "direct"
    assert span.attributes["telegram.handler"].endswith("hello")
    assert span.attributes["telegram.update.outcome"] == "handled"
    (api,) = by_name(instrumented, "telegram.api sendMessage")
    assert api.parent.span_id == span.context.span_id
    assert api.attributes["http.response.status_code"] == 200
    assert api.attributes["url.template"] == "/bot{token}/{method}"
    # one span per Bot API call: nothing else from the aiohttp layer
    assert [s.name for s in instrumented.spans()] == [
        "telegram.api sendMessage",
        "telegram.update message",
        "outer",
    ]


async def test_sync_handler_in_a_thread_keeps_the_trace(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot, redis_url: str
) -> None:
    dp = make_dispatcher(redis_url)
    await dp.feed_raw_update(bot, fake_bot_api.message_update("sync"))
    (span,) = by_name(instrumented, "telegram.update message")
    (get,) = by_name(instrumented, "GET")
    assert get.parent.span_id == span.context.span_id
    assert span.attributes["telegram.handler"].endswith("sync_handler")


async def test_unhandled_update(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot, redis_url: str
) -> None:
    dp = make_dispatcher(redis_url)
    result = await dp.feed_update(bot, update(fake_bot_api, "nobody handles this", bot))
    assert result is UNHANDLED
    (span,) = by_name(instrumented, "telegram.update message")
    assert span.attributes["telegram.update.outcome"] == "unhandled"
    assert span.attributes["telegram.handler"] == "unhandled"
    counts = instrumented.points("telegram.updates")
    assert counts[0].attributes["telegram.update.outcome"] == "unhandled"


class _Boom(Exception):
    pass


@pytest.mark.parametrize(
    "where", ["handler, no errors router", "handler, errors router", "middleware, errors router"]
)
async def test_failures_are_recorded_once_and_reach_the_bot(
    instrumented: MemoryTelemetry,
    fake_bot_api: FakeBotApi,
    bot: Bot,
    redis_url: str,
    where: str,
) -> None:
    dp = make_dispatcher(redis_url)
    router = Router()
    seen: list[BaseException] = []

    @router.message(F.text == "boom")
    async def boom(message: Message) -> None:
        raise _Boom("handler failed")

    if where.startswith("middleware"):

        @dp.update.outer_middleware()
        async def failing(handler: Any, event: Any, data: dict[str, Any]) -> Any:
            raise _Boom("middleware failed")

    swallowed = where.endswith(", errors router")
    if swallowed:

        @dp.errors()
        async def on_error(event: Any) -> bool:
            seen.append(event.exception)
            return True

    dp.include_router(router)
    if not swallowed:
        with pytest.raises(_Boom):
            await dp.feed_update(bot, update(fake_bot_api, "boom", bot))
    else:
        await dp.feed_update(bot, update(fake_bot_api, "boom", bot))
        assert [type(e) for e in seen] == [_Boom]  # the errors handler got it unchanged
    (span,) = by_name(instrumented, "telegram.update message")
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"].endswith("_Boom")
    assert span.attributes["telegram.update.outcome"] == "error"
    assert span.attributes["error.type"].endswith("_Boom")
    assert span.status.status_code is StatusCode.ERROR
    # the errors handler is not the update's handler
    expected = "unhandled" if where.startswith("middleware") else "boom"
    assert span.attributes["telegram.handler"].endswith(expected)


async def test_errors_reaching_the_update_span_carry_no_redis_or_sql_data(
    wire: WireTelemetry, fake_bot_api: FakeBotApi, bot: Bot, redis_url: str, pg_dsn: str
) -> None:
    """A handler's Redis or SQL error that nobody catches is recorded on the update span
    too, with its message and stack: the data the library put in them must not follow."""
    import asyncpg
    import redis.asyncio

    key = "otb_aiogram_test:" + uuid.uuid4().hex + ":PiiKey"
    cache = redis.asyncio.Redis.from_url(redis_url)
    db = await asyncpg.connect(pg_dsn)
    await db.execute("CREATE TEMP TABLE otb_people (id int PRIMARY KEY, phone text)")
    await db.execute("INSERT INTO otb_people VALUES (7, '+15550001')")
    router = Router()

    @router.message(F.text == "cache")
    async def cache_handler(message: Message) -> None:
        await cache.pipeline(transaction=True).set(key, "PiiValueInSource").incr(key).execute()

    @router.message(F.text == "sql")
    async def sql_handler(message: Message) -> None:
        await db.execute("INSERT INTO otb_people VALUES ($1, $2)", 7, "+15550002")

    dp = Dispatcher()
    dp.include_router(router)
    parts = [AiogramInstrumentor(), RedisInstrumentor(), AsyncpgInstrumentor()]
    for p in parts:
        p.instrument(**wire.providers)
    try:
        with pytest.raises(redis.ResponseError, match="PiiKey"):
            await dp.feed_update(bot, update(fake_bot_api, "cache", bot))
        with pytest.raises(asyncpg.UniqueViolationError, match=r"Key \(id\)=\(7\)"):
            await dp.feed_update(bot, update(fake_bot_api, "sql", bot))
    finally:
        for p in parts:
            p.uninstrument()
        await cache.delete(key)
        await cache.aclose()
        await db.close()
    raw = wire.exported()
    assert raw.count(b"telegram.update message") == 2
    assert raw.count(b"exception.stacktrace") == 4, "each error on its own span and the update"
    leaked = [
        word
        for word in ("PiiKey", "PiiValueInSource", "+15550001", "+15550002", "(id)=(7)")
        if word.encode() in raw
    ]
    assert leaked == []
    assert b"duplicate key value violates unique constraint" in raw


async def test_the_token_secret_alone_is_redacted_in_exceptions_and_logs(
    wire: WireTelemetry, fake_bot_api: FakeBotApi, bot: Bot, bot_token: str
) -> None:
    secret = bot_token.split(":", 1)[1]
    router = Router()

    @router.message(F.text == "leak")
    async def leaky(message: Message) -> None:
        logging.getLogger("otb_test_bot").warning("logging in with %s", secret)
        raise RuntimeError("login failed for secret " + secret)

    dp = Dispatcher()
    dp.include_router(router)
    wire.capture_logs("otb_test_bot")
    parts = [AiogramInstrumentor(), AiohttpClientInstrumentor()]
    for p in parts:
        p.instrument(**wire.providers)
    try:
        await bot.get_me()  # otelbot sees the token on the way to the Bot API
        with pytest.raises(RuntimeError, match=secret):
            await dp.feed_update(bot, update(fake_bot_api, "leak", bot))
    finally:
        for p in parts:
            p.uninstrument()
    raw = wire.exported()
    assert b"login failed for secret" in raw and b"logging in with" in raw
    assert token_leaks(raw, bot_token) == []


async def test_webhook_reply_method_is_recorded(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot, redis_url: str
) -> None:
    dp = make_dispatcher(redis_url)
    result = await dp.feed_webhook_update(bot, fake_bot_api.message_update("reply"))
    assert isinstance(result, SendMessage)
    (span,) = by_name(instrumented, "telegram.update message")
    assert span.attributes["telegram.ingress"] == "webhook"
    assert span.attributes["telegram.webhook.reply_method"] == "sendMessage"


async def test_bot_api_errors_and_broken_json_reach_the_bot_unchanged(
    telemetry: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot, bot_token: str
) -> None:
    async def calls() -> list[tuple[str, str]]:
        fake_bot_api.script("sendMessage", [Fault.forbidden(), Fault.broken_json(), Fault.hang(2)])
        seen = []
        for timeout in (None, None, 1):
            try:
                await bot.send_message(1, "x", request_timeout=timeout)
            except Exception as exc:
                seen.append((type(exc).__name__, str(exc)))
        return seen

    bare = await calls()
    parts = [AiogramInstrumentor(), AiohttpClientInstrumentor()]
    for p in parts:
        p.instrument(**telemetry.providers)
    try:
        instrumented = await calls()
    finally:
        for p in parts:
            p.uninstrument()
    assert [name for name, _ in bare] == [
        "TelegramForbiddenError",
        "ClientDecodeError",
        "TelegramNetworkError",
    ]
    assert instrumented == bare
    spans = by_name(telemetry, "telegram.api sendMessage")
    assert len(spans) == 3 and len(telemetry.spans()) == 3
    forbidden, broken, timeout = spans
    assert forbidden.attributes["telegram.api.error_code"] == 403
    assert forbidden.attributes["error.type"] == (
        TelegramForbiddenError.__module__ + ".TelegramForbiddenError"
    )
    assert broken.attributes["error.type"].endswith("ClientDecodeError")
    assert timeout.attributes["error.type"] == (
        TelegramNetworkError.__module__ + ".TelegramNetworkError"
    )
    assert all(s.status.status_code == StatusCode.ERROR for s in spans)
    text = repr([(dict(s.attributes), [dict(e.attributes) for e in s.events]) for s in spans])
    assert token_leaks(text, bot_token) == []


async def test_bot_api_http_request_is_timed_by_aiogram_once(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot, bot_token: str
) -> None:
    import aiohttp

    from otelbot.instrumentation.botapi import ApiCall, current_api_call

    fake_bot_api.script("sendMessage", [Fault.ok(), Fault.forbidden(), Fault.hang(2), Fault.drop()])
    seen = []
    for timeout in (None, None, 1, None):
        try:
            await bot.send_message(1, "x", request_timeout=timeout)
            seen.append("ok")
        except Exception as exc:
            seen.append(type(exc).__name__)
    assert seen == ["ok", "TelegramForbiddenError", "TelegramNetworkError", "TelegramNetworkError"]
    points = [p for p in instrumented.points("http.client.request.duration") if p.value.count]
    # One point per request, each in its own series (no second recording of any call).
    assert sorted(p.value.count for p in points) == [1, 1, 1, 1]
    by_error = {p.attributes.get("error.type"): p.attributes for p in points}
    assert by_error[None]["http.response.status_code"] == 200
    assert by_error["403"]["http.response.status_code"] == 403
    assert all(
        a["http.request.method"] == "POST" and a["url.template"] == "/bot{token}/{method}"
        for a in by_error.values()
    )
    # The failures carry the HTTP client's own error (aiogram's wraps it).
    network = sorted(e for e in by_error if e not in (None, "403"))
    assert len(network) == 2 and not any("aiogram" in e for e in network), network
    spans = by_name(instrumented, "telegram.api sendMessage")
    assert [s.attributes.get("http.response.status_code") for s in spans] == [200, 403, None, None]
    assert all(s.attributes["server.address"] == "127.0.0.1" for s in spans)

    # Inside aiogram's call, aiohttp's own coroutine comes back: no layer of ours.
    original = aiohttp.ClientSession.__dict__["_request"].__otelbot_original__
    token = current_api_call.set(ApiCall(None))
    try:
        async with aiohttp.ClientSession() as session:
            coro = session._request("POST", f"{fake_bot_api.base_url}/bot{bot_token}/getMe")
            assert coro.cr_code is original.__code__
            (await coro).release()
    finally:
        current_api_call.reset(token)


async def test_get_updates_traced_only_when_asked(
    telemetry: MemoryTelemetry, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [AiogramInstrumentor(), AiohttpClientInstrumentor()]
    for p in parts:
        p.instrument(**telemetry.providers)
    try:
        await bot.get_updates(timeout=0)
        assert telemetry.spans() == []
    finally:
        for p in parts:
            p.uninstrument()
    monkeypatch.setenv("OTELBOT_TRACE_GET_UPDATES", "true")
    for p in parts:
        p.instrument(**telemetry.providers)
    try:
        await bot.get_updates(timeout=0)
    finally:
        for p in parts:
            p.uninstrument()
    assert [s.name for s in telemetry.spans()] == ["telegram.api getUpdates"]
    methods = [
        p.attributes["telegram.api.method"] for p in telemetry.points("telegram.api.duration")
    ]
    assert methods == ["getUpdates"]


async def test_cancelled_update_passes_through(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot, redis_url: str
) -> None:
    dp = make_dispatcher(redis_url)
    fake_bot_api.script("sendMessage", [Fault.slow(5)])
    task = asyncio.ensure_future(dp.feed_update(bot, update(fake_bot_api, "hello", bot)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = by_name(instrumented, "telegram.update message")
    assert span.attributes["error.type"].endswith("CancelledError")
    assert trace.get_current_span() is trace.INVALID_SPAN  # context restored


async def test_uninstrument_restores_aiogram(telemetry: MemoryTelemetry) -> None:
    from aiogram.dispatcher.event.handler import HandlerObject

    originals = (Dispatcher.feed_update, AiohttpSession.make_request, HandlerObject.call)
    AiogramInstrumentor().instrument(**telemetry.providers)
    assert Dispatcher.feed_update is not originals[0]
    assert "call" in HandlerObject.__dict__
    AiogramInstrumentor().uninstrument()
    assert (Dispatcher.feed_update, AiohttpSession.make_request, HandlerObject.call) == originals
    assert "call" not in HandlerObject.__dict__


async def test_response_classes_stay_alive_across_garbage_collections(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot
) -> None:
    import gc
    import weakref

    from aiogram.methods import GetMe
    from aiogram.methods.base import Response

    # Without a reference, pydantic's generic class is freed by a collection (and rebuilt
    # on the next Bot API call): the control case.
    unpinned = weakref.ref(Response[GetMe.__returning__])
    gc.collect()
    assert unpinned() is None

    await bot.send_message(1, "hi")
    pinned = weakref.ref(Response[SendMessage.__returning__])
    gc.collect()
    assert pinned() is not None, "otelbot keeps aiogram's response class for sendMessage"


async def test_one_context_variable_carries_the_update_and_its_notes(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot: Bot
) -> None:
    """An update sets one otelbot context variable (besides OpenTelemetry's context): the
    update state, whose ``notes`` the findings' note() reads. A second one would be a
    second token and context mapping alive across each of the update's awaits."""
    from otelbot.diagnosis import notes
    from otelbot.instrumentation.updates import UpdateState

    seen: dict[str, Any] = {}
    router = Router()

    @router.message(F.text == "look")
    async def look(message: Message) -> None:
        held = contextvars.copy_context().items()
        seen["ours"] = [
            v.name for v, value in held if isinstance(value, UpdateState | notes.UpdateNotes)
        ]
        seen["state"] = notes.current.get()
        seen["noting"] = notes.noting()
        await message.answer("ok")

    dp = Dispatcher()
    dp.include_router(router)
    await dp.feed_update(bot, update(fake_bot_api, "look", bot))
    assert seen["ours"] == ["otelbot_update"]
    state = seen["state"]
    assert isinstance(state, UpdateState) and seen["noting"]
    assert [op.shape for op in state.notes.ops] == ["sendMessage"]  # noted through it
    assert notes.current.get() is None and not notes.noting()
