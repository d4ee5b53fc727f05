"""An ordinary python-telegram-bot (v20+) bot on PostgreSQL (asyncpg) and Redis, with no
otelbot code in it.

Run it instrumented:

    OTEL_SERVICE_NAME=example-ptb-bot opentelemetry-instrument python examples/ptb_bot.py

Environment: BOT_TOKEN; BOT_API_BASE (a Bot API server other than api.telegram.org, e.g.
the fake one the tests and demo use); PG_DSN; REDIS_URL; BOT_MODE=polling|webhook
(webhook: PTB's own webhook server on WEBHOOK_PORT, secret WEBHOOK_SECRET). Commands:
/start, any text (one SQL query, one Redis command, one reply), /fail (a handler error,
swallowed by the error handler), /later (a block=False handler), /burst (five replies at
once: Telegram's flood control refuses some with 429).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import asyncpg
import redis.asyncio as redis
from telegram import Update
from telegram.error import RetryAfter
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

pool: asyncpg.Pool | None = None
cache: redis.Redis | None = None


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    await update.message.reply_text("Hello!")


async def fail(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    raise RuntimeError("the handler failed on purpose")


async def later(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    await update.message.reply_text("answered from a task of its own")


async def burst(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    for i in range(5):
        try:
            await update.message.reply_text(f"part {i}")
        except RetryAfter:
            pass


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert pool is not None and cache is not None and update.message is not None
    user = update.effective_user.id if update.effective_user else 0
    seen = await pool.fetchval("SELECT count(*) FROM pg_class WHERE relpages >= $1", 0)
    hits = await cache.incr(f"otelbot:example:ptb:hits:{user}")
    try:
        await update.message.reply_text(f"{update.message.text} ({seen} relations, hit {hits})")
    except RetryAfter:
        logging.warning("flood control: told to wait")


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    logging.error("update failed: %s", type(context.error).__name__)


async def connect(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    global pool, cache
    pool = await asyncpg.create_pool(
        os.environ.get("PG_DSN", "postgresql://postgres@127.0.0.1/test"), min_size=1, max_size=5
    )
    cache = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    print("webhook" if os.environ.get("BOT_MODE") == "webhook" else "polling", flush=True)


async def disconnect(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    if cache is not None:
        await cache.aclose()
    if pool is not None:
        await pool.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and a Bot API URL holds the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    builder = Application.builder().token(os.environ["BOT_TOKEN"])
    base = os.environ.get("BOT_API_BASE")
    if base:
        builder = builder.base_url(base + "/bot")
    application = builder.post_init(connect).post_shutdown(disconnect).build()
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CommandHandler("fail", fail))
    application.add_handler(CommandHandler("later", later, block=False))
    application.add_handler(CommandHandler("burst", burst))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    application.add_error_handler(on_error)

    if os.environ.get("BOT_MODE", "polling") == "webhook":
        port = int(os.environ.get("WEBHOOK_PORT", "8080"))
        application.run_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="webhook",
            secret_token=os.environ.get("WEBHOOK_SECRET"),
            webhook_url=f"http://127.0.0.1:{port}/webhook",
        )
    else:
        application.run_polling(poll_interval=0, timeout=1)


if __name__ == "__main__":
    main()
