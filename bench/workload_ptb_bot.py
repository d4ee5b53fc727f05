"""The benchmark's workload on python-telegram-bot: the same bot as ``bench.workload_bot``
(aiogram), with no otelbot code in it.

Per update: one ``SELECT`` through an asyncpg pool, one Redis ``INCR``, one
``sendMessage`` and ~1 ms of Python work (``BENCH_WORK_MS``); at most
``BENCH_CONCURRENCY`` (32) updates in flight (PTB's ``concurrent_updates``). It long-polls
the Bot API at ``BOT_API_BASE`` (the fake one, in another process) until SIGTERM.

    BOT_TOKEN=123:abc BOT_API_BASE=http://127.0.0.1:8081 python -m bench.workload_ptb_bot
"""

from __future__ import annotations

import os
import time
from typing import Any

import asyncpg
import redis.asyncio as redis
from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

pool: asyncpg.Pool | None = None
cache: redis.Redis | None = None
WORK_S = float(os.environ.get("BENCH_WORK_MS", "1.0")) / 1000.0
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))


def work(seconds: float) -> int:
    """Ordinary Python work, as in bench.workload_bot (not imported: that imports aiogram)."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += sum(range(50))
    return n


async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert pool is not None and cache is not None
    message = update.effective_message
    assert message is not None
    user = update.effective_user.id if update.effective_user else 0
    relations = await pool.fetchval("SELECT count(*) FROM pg_class WHERE relpages >= $1", 0)
    hits = await cache.incr("bench:hits:" + str(user))
    work(WORK_S)
    await context.bot.send_message(message.chat_id, f"{relations} relations, hit {hits}")


async def connect(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    global pool, cache
    pool = await asyncpg.create_pool(os.environ["PG_DSN"], min_size=4, max_size=8)
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    print("polling", flush=True)


async def disconnect(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    if cache is not None:
        await cache.aclose()
    if pool is not None:
        await pool.close()


def main() -> None:
    application = (
        Application.builder()
        .token(os.environ["BOT_TOKEN"])
        .base_url(os.environ["BOT_API_BASE"] + "/bot")
        .concurrent_updates(CONCURRENCY)
        .post_init(connect)
        .post_shutdown(disconnect)
        .build()
    )
    application.add_handler(MessageHandler(filters.TEXT, handle))
    application.run_polling(poll_interval=0, timeout=1)


if __name__ == "__main__":
    main()
