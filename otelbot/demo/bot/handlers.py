"""The demo bot's handlers. Seven have a typical performance problem built in, one problem per
handler, for otelbot's detectors and agent to name in their findings; start, show_profile
and chat are healthy (no finding may name them, tests/demo/test_demo.py):

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

import asyncpg
import redis.asyncio as redis
from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramRetryAfter
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

router = Router(name="demo")
db: asyncpg.Pool
cache: redis.Redis

#: The announcements group /broadcast posts into.
ANNOUNCEMENTS_CHAT = -1001234567890
BROADCAST_PARTS = 12
#: Every page /visit ever rendered, kept "for the history view". Never trimmed: the leak.
_rendered_pages: list[bytes] = []
#: Visits per (user, page): bounded by users x pages, not a leak.
_visit_counts: dict[tuple[int, str], int] = {}


def setup(pool: asyncpg.Pool, redis_client: redis.Redis) -> None:
    global db, cache
    db, cache = pool, redis_client


def _user(message: Message) -> int:
    return message.from_user.id if message.from_user else 0


# ----------------------------------------------------------------------------- healthy


@router.message(CommandStart())
async def start(message: Message) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text="Buy product 7", callback_data="buy:7"),
            ]
        ]
    )
    await message.answer("Welcome to the demo shop!", reply_markup=keyboard)


@router.message(Command("profile"))
async def show_profile(message: Message) -> None:
    """Cache-aside done right: most reads are hits."""
    key = f"otelbot_demo:profile:{_user(message)}"
    raw = await cache.get(key)
    if raw is None:
        row = await db.fetchrow(
            "SELECT name, city FROM otelbot_demo.customers WHERE id = $1", _user(message)
        )
        profile = dict(row) if row else {}
        await cache.set(key, json.dumps(profile), ex=300)
    else:
        profile = json.loads(raw)
    await message.answer(f"{profile.get('name', '?')} from {profile.get('city', '?')}")


@router.message(Command("orders"))
async def list_orders(message: Message) -> None:
    """Problem: N+1. One query for the orders, then one more per order."""
    orders = await db.fetch(
        "SELECT id, created_at FROM otelbot_demo.orders WHERE customer_id = $1 "
        "ORDER BY id DESC LIMIT 20",
        _user(message),
    )
    lines = []
    for order in orders:
        items = await db.fetch(
            "SELECT product_id, quantity FROM otelbot_demo.order_items WHERE order_id = $1",
            order["id"],
        )
        lines.append(f"#{order['id']}: {sum(i['quantity'] for i in items)} items")
    await message.answer("\n".join(lines) or "no orders yet")


@router.message(Command("promo"))
async def redeem_promo(message: Message, command: CommandObject) -> None:
    """Problem: looks a code up by a column that has no index: a full scan every time."""
    code = (command.args or "").strip().upper()
    discount = await db.fetchval(
        "SELECT discount_percent FROM otelbot_demo.promo_codes WHERE code = $1", code
    )
    await message.answer(f"{discount}% off!" if discount else "unknown code")


@router.callback_query(F.data.startswith("buy:"))
async def buy_product(query: CallbackQuery) -> None:
    """Problem (in the schema): orders carries orders_note_idx, which no query ever uses,
    and this INSERT pays for maintaining it."""
    product = int((query.data or "buy:1").split(":", 1)[1])
    await db.execute(
        "INSERT INTO otelbot_demo.orders (customer_id, product_id) VALUES ($1, $2)",
        query.from_user.id,
        product,
    )
    await query.answer("Ordered!")


@router.message(Command("report"))
async def build_report(message: Message) -> None:
    """Problem: a synchronous call (think requests.get or a heavy computation) inside an
    async handler. Every other update waits while it runs."""
    time.sleep(0.3)
    await message.answer("Your report is ready.")


@router.message(Command("price"))
async def get_price(message: Message, command: CommandObject) -> None:
    """Problem: a cache that always misses: it meant to keep prices for 300 seconds, but
    ``px`` is milliseconds, so every entry is gone before the next read of it."""
    product = int(command.args or 1)
    key = f"otelbot_demo:price:{product}"
    cached = await cache.get(key)
    if cached is None:
        cents = await db.fetchval(
            "SELECT price_cents FROM otelbot_demo.products WHERE id = $1", product
        )
        await cache.set(key, cents or 0, px=300)
    else:
        cents = int(cached)
    await message.answer(f"{(cents or 0) / 100:.2f} EUR")


@router.message(Command("broadcast"))
async def broadcast(message: Message, bot: Bot) -> None:
    """Problem: posts a burst of messages into one chat at once; Telegram answers 429 with
    retry_after, and the handler waits that long before retrying."""

    async def send(part: int) -> None:
        for _ in range(10):
            try:
                await bot.send_message(ANNOUNCEMENTS_CHAT, f"Announcement, part {part}")
                return
            except TelegramRetryAfter as exc:
                await asyncio.sleep(exc.retry_after)

    await asyncio.gather(*(send(part) for part in range(1, BROADCAST_PARTS + 1)))
    await message.answer("Announcement posted.")


@router.message(Command("visit"))
async def remember_visit(message: Message, command: CommandObject) -> None:
    """Problem: keeps every page it renders (about 512 kB each) in a module-level list that
    is never trimmed, so the bot's memory grows with every visit."""
    user, page = _user(message), (command.args or "home")
    _rendered_pages.append(b"<html>" + page.encode() * 128 * 1024)
    seen = _visit_counts[(user, page)] = _visit_counts.get((user, page), 0) + 1
    await message.answer(f"You have been on {page} {seen} time(s).")


@router.message(F.text)
async def chat(message: Message) -> None:
    """Any other text: count it in Redis and reply."""
    count = await cache.incr(f"otelbot_demo:messages:{_user(message)}")
    await message.answer(f"Message #{count} received.")
