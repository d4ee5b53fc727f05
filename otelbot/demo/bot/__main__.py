"""The `otelbot demo` bot: an ordinary aiogram 3 shop bot on PostgreSQL and Redis, with
typical performance problems built in (see handlers.py). It has no otelbot code in it:

    BOT_TOKEN=... BOT_API_BASE=http://127.0.0.1:8081 PG_DSN=postgresql://... \
    REDIS_URL=redis://... opentelemetry-instrument python path/to/demo_bot

`otelbot demo` loads its schema (schema.sql), copies this directory into its work directory,
starts it from there like this against the fake Bot API, and drives updates at it. It ships
inside the otelbot package (otelbot/demo/bot) so that a wheel install can run the demo.
"""

from __future__ import annotations

import asyncio
import logging
import os

import asyncpg
import handlers
import redis.asyncio as redis
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    pool = await asyncpg.create_pool(os.environ["PG_DSN"], min_size=2, max_size=10)
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    handlers.setup(pool, cache)
    base = os.environ.get("BOT_API_BASE")
    session = AiohttpSession(api=TelegramAPIServer.from_base(base)) if base else AiohttpSession()
    bot = Bot(os.environ["BOT_TOKEN"], session=session)
    dp = Dispatcher()
    dp.include_router(handlers.router)
    print("demo bot polling", flush=True)
    try:
        await dp.start_polling(bot, polling_timeout=1, handle_signals=True)
    finally:
        await bot.session.close()
        await cache.aclose()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
