"""An ordinary aiogram 3 bot on PostgreSQL (asyncpg) and Redis, with no otelbot code in it.

Run it instrumented:

    OTEL_SERVICE_NAME=example-bot opentelemetry-instrument python examples/aiogram_bot.py

Environment: BOT_TOKEN; BOT_API_BASE (a Bot API server other than api.telegram.org, e.g.
the fake one the tests and demo use); PG_DSN; REDIS_URL; BOT_MODE=polling|webhook
(webhook: WEBHOOK_PORT, WEBHOOK_SECRET). Commands: /start, any text (one SQL query, one
Redis command, one reply), /fail (a handler error, swallowed by the errors router),
/block (blocks the event loop for 250 ms), /gc (makes garbage cycles), and a button
whose callback query is answered.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time

import asyncpg
import redis.asyncio as redis
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter
from aiogram.filters import Command, CommandStart
from aiogram.types import (
    CallbackQuery,
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

router = Router(name="main")
errors = Router(name="errors")
pool: asyncpg.Pool | None = None
cache: redis.Redis | None = None


@router.message(CommandStart())
async def start(message: Message) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Count", callback_data="count")]]
    )
    await message.answer("Hello!", reply_markup=keyboard)


@router.message(Command("fail"))
async def fail(message: Message) -> None:
    raise RuntimeError("the handler failed on purpose")


@router.message(Command("block"))
async def block(message: Message) -> None:
    time.sleep(0.25)  # a blocking call in async code: the loop stalls
    await message.answer("blocked the loop for 250 ms")


@router.message(Command("gc"))
async def make_garbage(message: Message) -> None:
    for _ in range(50_000):
        a: list[object] = []
        a.append(a)
    gc.collect()
    await message.answer("made garbage")


@router.message(F.text)
async def echo(message: Message) -> None:
    assert pool is not None and cache is not None
    user = message.from_user.id if message.from_user else 0
    seen = await pool.fetchval("SELECT count(*) FROM pg_class WHERE relpages >= $1", 0)
    hits = await cache.incr(f"otelbot:example:hits:{user}")
    try:
        await message.answer(f"{message.text} ({seen} relations, hit {hits})")
    except TelegramRetryAfter as exc:
        logging.warning("flood control: retry after %s s", exc.retry_after)


@router.callback_query(F.data == "count")
async def count(query: CallbackQuery) -> None:
    assert cache is not None
    total = await cache.get("otelbot:example:total")
    await query.answer(f"total {total or 0}")


@errors.errors()
async def on_error(event: ErrorEvent) -> None:
    logging.error("update failed: %s", type(event.exception).__name__)


async def main() -> None:
    global pool, cache
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pool = await asyncpg.create_pool(
        os.environ.get("PG_DSN", "postgresql://postgres@127.0.0.1/test"), min_size=1, max_size=5
    )
    cache = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    base = os.environ.get("BOT_API_BASE")
    session = AiohttpSession(api=TelegramAPIServer.from_base(base)) if base else AiohttpSession()
    bot = Bot(os.environ["BOT_TOKEN"], session=session)
    dp = Dispatcher()
    dp.include_routers(router, errors)

    if os.environ.get("BOT_MODE", "polling") == "webhook":
        from aiogram.webhook.aiohttp_server import SimpleRequestHandler
        from aiohttp import web

        app = web.Application()
        SimpleRequestHandler(
            dp, bot, secret_token=os.environ.get("WEBHOOK_SECRET"), handle_in_background=False
        ).register(app, path="/webhook")
        runner = web.AppRunner(app)
        await runner.setup()
        port = int(os.environ.get("WEBHOOK_PORT", "8080"))
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"webhook listening on {port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
    else:
        print("polling", flush=True)
        await dp.start_polling(bot, polling_timeout=1, handle_signals=True)
    await bot.session.close()
    await cache.aclose()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
