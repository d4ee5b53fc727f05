"""Blocked event loop in a python-telegram-bot bot: /block sleeps 0.3 s on the loop
(time.sleep in an async handler); /later does the same in a block=False handler (PTB runs
it in a task of its own); /victim runs one quick query and replies, and is stalled whenever
a /block runs; /ok only replies (the control). Updates run concurrently. No otelbot code.
Environment: BOT_TOKEN, BOT_API_BASE, PG_DSN."""

from __future__ import annotations

import os
import time
from typing import Any

import asyncpg
from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

pool: Any = None


async def block(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    time.sleep(0.3)  # blocks the event loop
    assert update.message is not None
    await update.message.reply_text("done")


async def later(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    time.sleep(0.3)  # blocks the event loop, from the handler's own task
    assert update.message is not None
    await update.message.reply_text("done later")


async def victim(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await pool.fetchval("SELECT 1 AS blocking_ptb_victim")
    assert update.message is not None
    await update.message.reply_text("quick")


async def ok(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    await update.message.reply_text("ok")


async def connect(application: Any) -> None:
    global pool
    pool = await asyncpg.create_pool(os.environ["PG_DSN"], min_size=1, max_size=5)
    print("polling", flush=True)


async def disconnect(application: Any) -> None:
    await pool.close()


def main() -> None:
    application = (
        Application.builder()
        .token(os.environ["BOT_TOKEN"])
        .base_url(os.environ["BOT_API_BASE"] + "/bot")
        .concurrent_updates(True)
        .post_init(connect)
        .post_shutdown(disconnect)
        .build()
    )
    application.add_handler(CommandHandler("block", block))
    application.add_handler(CommandHandler("later", later, block=False))
    application.add_handler(CommandHandler("victim", victim))
    application.add_handler(CommandHandler("ok", ok))
    application.run_polling(poll_interval=0, timeout=1)


if __name__ == "__main__":
    main()
