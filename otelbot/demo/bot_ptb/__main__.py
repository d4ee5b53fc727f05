"""The `otelbot demo --framework ptb` bot: the demo shop bot (otelbot/demo/bot) written with
python-telegram-bot (v20+) instead of aiogram, on the same PostgreSQL schema and Redis keys,
with the same handlers and the same problems built in (see handlers.py). It has no otelbot
code in it:

    BOT_TOKEN=... BOT_API_BASE=http://127.0.0.1:8081 PG_DSN=postgresql://... \
    REDIS_URL=redis://... opentelemetry-instrument python path/to/bot_ptb

`otelbot demo --framework ptb` loads the schema (otelbot/demo/bot/schema.sql), copies this
directory into its work directory and runs it there like this against the fake Bot API.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import asyncpg
import handlers
import redis.asyncio as redis
from telegram.ext import Application

App = Application[Any, Any, Any, Any, Any, Any]


async def connect(application: App) -> None:
    pool = await asyncpg.create_pool(os.environ["PG_DSN"], min_size=2, max_size=10)
    handlers.setup(pool, redis.Redis.from_url(os.environ["REDIS_URL"]))
    print("demo bot polling", flush=True)


async def disconnect(application: App) -> None:
    await handlers.cache.aclose()
    await handlers.db.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Updates run concurrently, as aiogram runs them: one slow handler holds up no other
    # update unless it blocks the event loop. At most 32 at once, not PTB's 256 for True:
    # httpx's connection pool scans all its connections for every request, so hundreds of
    # requests in flight cost the bot more CPU than they gain (on two busy CPUs the demo's
    # healthy handlers got slow with 256, and not with 32).
    builder = Application.builder().token(os.environ["BOT_TOKEN"]).concurrent_updates(32)
    base = os.environ.get("BOT_API_BASE")
    if base:
        builder = builder.base_url(base + "/bot")
    application = builder.post_init(connect).post_shutdown(disconnect).build()
    application.add_handlers(handlers.HANDLERS)
    application.run_polling(poll_interval=0, timeout=1)


if __name__ == "__main__":
    main()
