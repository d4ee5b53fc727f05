"""What every detector test bot shares: an ordinary aiogram 3 bot on asyncpg and Redis,
pointed at the fake Bot API, long polling until SIGTERM. No otelbot code in it.

A test bot defines a ``router`` with its handlers (one with the problem, one healthy
control) and calls ``run(router, setup)``; ``setup(pool, cache)`` may create tables.
Environment: BOT_TOKEN, BOT_API_BASE, PG_DSN, REDIS_URL, and POOL_MAX (default 5).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.asyncio as redis
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

pool: Any = None
cache: Any = None


def run(router: Router, setup: Callable[[Any, Any], Awaitable[None]] | None = None) -> None:
    asyncio.run(_main(router, setup))


async def _main(router: Router, setup: Callable[[Any, Any], Awaitable[None]] | None) -> None:
    global pool, cache
    pool = await asyncpg.create_pool(
        os.environ["PG_DSN"], min_size=1, max_size=int(os.environ.get("POOL_MAX", "5"))
    )
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    if setup is not None:
        await setup(pool, cache)
    session = AiohttpSession(api=TelegramAPIServer.from_base(os.environ["BOT_API_BASE"]))
    bot = Bot(os.environ["BOT_TOKEN"], session=session)
    dp = Dispatcher()
    dp.include_router(router)
    print("polling", flush=True)
    await dp.start_polling(bot, polling_timeout=1, handle_signals=True)
    await bot.session.close()
    await cache.aclose()
    await pool.close()
