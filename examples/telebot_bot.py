"""An ordinary pyTelegramBotAPI (telebot) bot on Redis, with no otelbot code in it.

Run it instrumented:

    OTEL_SERVICE_NAME=example-telebot opentelemetry-instrument python examples/telebot_bot.py

Environment: BOT_TOKEN; BOT_API_BASE (a Bot API server other than api.telegram.org, e.g.
the fake one the tests and demo use); REDIS_URL. The bot long-polls with telebot's worker
threads. Commands: /start, any text (one Redis command, one reply), /fail (a handler
error, swallowed by the exception handler), /burst (five replies at once: Telegram's flood
control refuses some with 429).
"""

from __future__ import annotations

import logging
import os
import signal

import redis
from telebot import ExceptionHandler, TeleBot, apihelper, types

base = os.environ.get("BOT_API_BASE")
if base:
    apihelper.API_URL = base + "/bot{0}/{1}"


class LogErrors(ExceptionHandler):  # type: ignore[misc]
    def handle(self, exception: BaseException) -> bool:
        logging.error("update failed: %s", type(exception).__name__)
        return True


bot = TeleBot(os.environ["BOT_TOKEN"], exception_handler=LogErrors(), num_threads=4)
cache = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@bot.message_handler(commands=["start"])
def start(message: types.Message) -> None:
    bot.reply_to(message, "Hello!")


@bot.message_handler(commands=["fail"])
def fail(message: types.Message) -> None:
    raise RuntimeError("the handler failed on purpose")


@bot.message_handler(commands=["burst"])
def burst(message: types.Message) -> None:
    for i in range(5):
        try:
            bot.send_message(message.chat.id, f"part {i}")
        except apihelper.ApiTelegramException as exc:
            if exc.error_code != 429:
                raise


@bot.message_handler(func=lambda message: True)
def echo(message: types.Message) -> None:
    user = message.from_user.id if message.from_user else 0
    hits = cache.incr(f"otelbot:example:telebot:hits:{user}")
    bot.send_message(message.chat.id, f"{message.text} (hit {hits})")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda signum, frame: bot.stop_polling())
    print("polling", flush=True)
    bot.infinity_polling(timeout=1, long_polling_timeout=1)
    cache.close()


if __name__ == "__main__":
    main()
