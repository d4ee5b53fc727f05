"""The python-telegram-bot demo bot's handlers: the aiogram demo bot's handlers
(otelbot/demo/bot/handlers.py) written for PTB, with the same names, the same SQL and Redis
work and the same problem built into each. Seven have a typical performance problem, one
per handler, for otelbot's detectors and agent to name in their findings; start,
show_profile and chat are healthy (no finding may name them, tests/demo/test_demo_ptb.py):

| handler | update | problem |
|---|---|---|
| list_orders | /orders | N+1 queries: one query per order instead of one join |
| redeem_promo | /promo CODE | a frequent lookup on a column without an index (seq scan) |
| buy_product | callback buy:N | writes a table that carries an index no query uses |
| build_report | /report | a blocking call in async code stalls the event loop |
| get_price | /price N | a cache that always misses (its entries expire after 300 ms, not 300 s) |
| broadcast | /broadcast | a burst of sends into one chat: flood control (429) |
| remember_visit | /visit PAGE | keeps every page it renders in a list that is never trimmed |

There is no otelbot code here: `opentelemetry-instrument` does it all.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import asyncpg
import redis.asyncio as redis
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import RetryAfter
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

db: asyncpg.Pool
cache: redis.Redis

#: The announcements group /broadcast posts into.
ANNOUNCEMENTS_CHAT = -1001234567890
BROADCAST_PARTS = 12
#: Every page /visit ever rendered, kept "for the history view". Never trimmed: the leak.
_rendered_pages: list[bytes] = []
#: Visits per (user, page): bounded by users x pages, not a leak.
_visit_counts: dict[tuple[int, str], int] = {}

Context = ContextTypes.DEFAULT_TYPE


def setup(pool: asyncpg.Pool, redis_client: redis.Redis) -> None:
    global db, cache
    db, cache = pool, redis_client


def _user(update: Update) -> int:
    return update.effective_user.id if update.effective_user else 0


async def _reply(
    update: Update, text: str, reply_markup: InlineKeyboardMarkup | None = None
) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(text, reply_markup=reply_markup)


# ----------------------------------------------------------------------------- healthy


async def start(update: Update, context: Context) -> None:
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Buy product 7", callback_data="buy:7")]]
    )
    await _reply(update, "Welcome to the demo shop!", reply_markup=keyboard)


async def show_profile(update: Update, context: Context) -> None:
    """Cache-aside done right: most reads are hits."""
    key = f"otelbot_demo:profile:{_user(update)}"
    raw = await cache.get(key)
    if raw is None:
        row = await db.fetchrow(
            "SELECT name, city FROM otelbot_demo.customers WHERE id = $1", _user(update)
        )
        profile = dict(row) if row else {}
        await cache.set(key, json.dumps(profile), ex=300)
    else:
        profile = json.loads(raw)
    await _reply(update, f"{profile.get('name', '?')} from {profile.get('city', '?')}")


async def list_orders(update: Update, context: Context) -> None:
    """Problem: N+1. One query for the orders, then one more per order."""
    orders = await db.fetch(
        "SELECT id, created_at FROM otelbot_demo.orders WHERE customer_id = $1 "
        "ORDER BY id DESC LIMIT 20",
        _user(update),
    )
    lines = []
    for order in orders:
        items = await db.fetch(
            "SELECT product_id, quantity FROM otelbot_demo.order_items WHERE order_id = $1",
            order["id"],
        )
        lines.append(f"#{order['id']}: {sum(i['quantity'] for i in items)} items")
    await _reply(update, "\n".join(lines) or "no orders yet")


async def redeem_promo(update: Update, context: Context) -> None:
    """Problem: looks a code up by a column that has no index: a full scan every time."""
    code = " ".join(context.args or []).strip().upper()
    discount = await db.fetchval(
        "SELECT discount_percent FROM otelbot_demo.promo_codes WHERE code = $1", code
    )
    await _reply(update, f"{discount}% off!" if discount else "unknown code")


async def buy_product(update: Update, context: Context) -> None:
    """Problem (in the schema): orders carries orders_note_idx, which no query ever uses,
    and this INSERT pays for maintaining it."""
    query = update.callback_query
    assert query is not None
    product = int((query.data or "buy:1").split(":", 1)[1])
    await db.execute(
        "INSERT INTO otelbot_demo.orders (customer_id, product_id) VALUES ($1, $2)",
        query.from_user.id,
        product,
    )
    await query.answer("Ordered!")


async def build_report(update: Update, context: Context) -> None:
    """Problem: a synchronous call (think requests.get or a heavy computation) inside an
    async handler. Every other update waits while it runs."""
    time.sleep(0.3)
    await _reply(update, "Your report is ready.")


async def get_price(update: Update, context: Context) -> None:
    """Problem: a cache that always misses: it meant to keep prices for 300 seconds, but
    ``px`` is milliseconds, so every entry is gone before the next read of it."""
    product = int(context.args[0]) if context.args else 1
    key = f"otelbot_demo:price:{product}"
    cached = await cache.get(key)
    if cached is None:
        cents = await db.fetchval(
            "SELECT price_cents FROM otelbot_demo.products WHERE id = $1", product
        )
        await cache.set(key, cents or 0, px=300)
    else:
        cents = int(cached)
    await _reply(update, f"{(cents or 0) / 100:.2f} EUR")


async def broadcast(update: Update, context: Context) -> None:
    """Problem: posts a burst of messages into one chat at once; Telegram answers 429 with
    retry_after, and the handler waits that long before retrying."""

    async def send(part: int) -> None:
        for _ in range(10):
            try:
                await context.bot.send_message(ANNOUNCEMENTS_CHAT, f"Announcement, part {part}")
                return
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc))

    await asyncio.gather(*(send(part) for part in range(1, BROADCAST_PARTS + 1)))
    await _reply(update, "Announcement posted.")


async def remember_visit(update: Update, context: Context) -> None:
    """Problem: keeps every page it renders (about 512 kB each) in a module-level list that
    is never trimmed, so the bot's memory grows with every visit."""
    user, page = _user(update), (" ".join(context.args or []) or "home")
    _rendered_pages.append(b"<html>" + page.encode() * 128 * 1024)
    seen = _visit_counts[(user, page)] = _visit_counts.get((user, page), 0) + 1
    await _reply(update, f"You have been on {page} {seen} time(s).")


async def chat(update: Update, context: Context) -> None:
    """Any other text: count it in Redis and reply."""
    count = await cache.incr(f"otelbot_demo:messages:{_user(update)}")
    await _reply(update, f"Message #{count} received.")


def _seconds(exc: RetryAfter) -> float:
    # PTB 22.2+ holds a timedelta (exposed as seconds until PTB_TIMEDELTA is set); 20-22.1 int.
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


#: In the order PTB tries them: the first handler whose filter matches takes the update.
HANDLERS: list[BaseHandler[Update, Context, None]] = [
    CommandHandler("start", start),
    CommandHandler("profile", show_profile),
    CommandHandler("orders", list_orders),
    CommandHandler("promo", redeem_promo),
    CallbackQueryHandler(buy_product, pattern=r"^buy:"),
    CommandHandler("report", build_report),
    CommandHandler("price", get_price),
    CommandHandler("broadcast", broadcast),
    CommandHandler("visit", remember_visit),
    MessageHandler(filters.TEXT & ~filters.COMMAND, chat),
]
