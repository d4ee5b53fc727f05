"""A python-telegram-bot bot whose JobQueue job blocks the loop: every 0.7 s the job calls a
sync helper that sleeps 0.3 s (no update owns that block; the loop heartbeat finds it);
/ok only replies (the healthy handler). No otelbot code.
Environment: BOT_TOKEN, BOT_API_BASE."""

from __future__ import annotations

import os
import time
from typing import Any

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes


def build_digest() -> None:
    time.sleep(0.3)  # blocks the event loop


async def nightly_digest(context: ContextTypes.DEFAULT_TYPE) -> None:
    build_digest()


async def ok(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    await update.message.reply_text("ok")


async def started(application: Any) -> None:
    application.job_queue.run_repeating(nightly_digest, interval=0.7, first=0.5)
    print("polling", flush=True)


def main() -> None:
    application = (
        Application.builder()
        .token(os.environ["BOT_TOKEN"])
        .base_url(os.environ["BOT_API_BASE"] + "/bot")
        .concurrent_updates(True)
        .post_init(started)
        .build()
    )
    application.add_handler(CommandHandler("ok", ok))
    application.run_polling(poll_interval=0, timeout=1)


if __name__ == "__main__":
    main()
