"""An ordinary pyTelegramBotAPI bot on ``AsyncTeleBot`` (asyncio, aiohttp) and Redis, with no
otelbot code in it: ``telebot_bot.py``'s commands, the asyncio way.

    OTEL_SERVICE_NAME=example-telebot opentelemetry-instrument python examples/telebot_async_bot.py

Environment: BOT_TOKEN; BOT_API_BASE (a Bot API server other than api.telegram.org, e.g.
the fake one the tests and demo use); REDIS_URL. Commands: /start, any text (one Redis
command, one reply), /fail (a handler error: telebot logs it and goes on), /burst (five
replies at once: Telegram's flood control refuses some with 429).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import redis.asyncio as redis
from telebot import asyncio_helper, types
from telebot.async_telebot import AsyncTeleBot
from telebot.asyncio_helper import ApiTelegramException

base = os.environ.get("BOT_API_BASE")
if base:
    asyncio_helper.API_URL = base + "/bot{0}/{1}"

bot = AsyncTeleBot(os.environ["BOT_TOKEN"])
cache = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@bot.message_handler(commands=["start"])
async def start(message: types.Message) -> None:
    await bot.reply_to(message, "Hello!")


@bot.message_handler(commands=["fail"])
async def fail(message: types.Message) -> None:
    raise RuntimeError("the handler failed on purpose")


@bot.message_handler(commands=["burst"])
async def burst(message: types.Message) -> None:
    for i in range(5):
        try:
            await bot.send_message(message.chat.id, f"part {i}")
        except ApiTelegramException as exc:
            if exc.error_code != 429:
                raise


@bot.message_handler(func=lambda message: True)
async def echo(message: types.Message) -> None:
    user = message.from_user.id if message.from_user else 0
    hits = await cache.incr(f"otelbot:example:telebot:hits:{user}")
    await bot.send_message(message.chat.id, f"{message.text} (hit {hits})")


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    polling = asyncio.ensure_future(bot.infinity_polling(timeout=1, request_timeout=5))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, polling.cancel)
    print("polling", flush=True)
    try:
        await polling
    except asyncio.CancelledError:
        pass
    await bot.close_session()
    await cache.aclose()


if __name__ == "__main__":
    asyncio.run(main())
