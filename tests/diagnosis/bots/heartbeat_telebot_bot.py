"""An AsyncTeleBot (pyTelegramBotAPI, asyncio) bot whose /export handler calls a sync helper
that sleeps 0.3 s, blocking the event loop (telebot's handlers are not step-timed: the
loop heartbeat finds it); /ok only replies (the healthy handler). No otelbot code.
Environment: BOT_TOKEN, BOT_API_BASE."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from telebot import asyncio_helper, types
from telebot.async_telebot import AsyncTeleBot

asyncio_helper.API_URL = os.environ["BOT_API_BASE"] + "/bot{0}/{1}"
bot = AsyncTeleBot(os.environ["BOT_TOKEN"])


def build_export() -> bytes:
    time.sleep(0.3)  # blocks the event loop
    return b"export"


@bot.message_handler(commands=["export"])
async def export(message: types.Message) -> None:
    data = build_export()
    await bot.send_message(message.chat.id, f"{len(data)} bytes")


@bot.message_handler(commands=["ok"])
async def ok(message: types.Message) -> None:
    await bot.send_message(message.chat.id, "ok")


async def main() -> None:
    polling = asyncio.ensure_future(bot.infinity_polling(timeout=1, request_timeout=5))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, polling.cancel)
    print("polling", flush=True)
    try:
        await polling
    except asyncio.CancelledError:
        pass
    await bot.close_session()


if __name__ == "__main__":
    asyncio.run(main())
