"""A lending-library bot (aiogram 3, asyncpg, Redis) with seven performance problems planted
in it, and no otelbot code. Run it instrumented and read the findings:

    OTEL_SERVICE_NAME=problem-bot opentelemetry-instrument python examples/problem_bot.py

Environment: BOT_TOKEN; BOT_API_BASE (a Bot API server other than api.telegram.org, e.g.
the fake one, see examples/README.md); PG_DSN; REDIS_URL. At start it creates the schema
``problem_bot`` (readers, titles, writers, loans) if it is missing.

| command | handler | what is wrong |
|---|---|---|
| /shelf | ``shelf`` | one query for the titles, then one query per title for its writer |
| /borrow N | ``borrow`` | keeps a transaction (and its row lock) open while it sends the reply |
| /stats | ``stats`` | caches the numbers under a key with the current time in it: it never hits |
| /export | ``export`` | derives a key with PBKDF2 in the handler: the event loop stops meanwhile |
| /remind | ``remind`` | sends eight reminders into one chat back to back: Telegram answers 429 |
| /rank | ``rank`` | recomputes the reader's score in a pure-Python loop on every call |
| /history | ``history`` | keeps every rendered history page in a module-level list, forever |
| /card | ``card`` | healthy: one primary-key read, one cached read, one reply |
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from datetime import datetime

import asyncpg
import redis.asyncio as redis
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS problem_bot;
CREATE TABLE IF NOT EXISTS problem_bot.writers (
    writer_id int PRIMARY KEY,
    full_name text NOT NULL
);
CREATE TABLE IF NOT EXISTS problem_bot.titles (
    title_id int PRIMARY KEY,
    writer_id int NOT NULL REFERENCES problem_bot.writers,
    heading text NOT NULL,
    copies int NOT NULL
);
CREATE TABLE IF NOT EXISTS problem_bot.readers (
    reader_id bigint PRIMARY KEY,
    nickname text NOT NULL
);
CREATE TABLE IF NOT EXISTS problem_bot.loans (
    loan_id bigserial PRIMARY KEY,
    reader_id bigint NOT NULL,
    title_id int NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO problem_bot.writers
SELECT w, 'Writer ' || w FROM generate_series(1, 40) AS w ON CONFLICT DO NOTHING;
INSERT INTO problem_bot.titles
SELECT t, 1 + t % 40, 'Title ' || t, 1000000 FROM generate_series(1, 300) AS t
ON CONFLICT DO NOTHING;
"""

SHELF_SIZE = 12
REMINDERS = 8
#: PBKDF2 rounds for /export: a few hundred milliseconds of CPU on a typical machine.
EXPORT_ROUNDS = 1_200_000
#: Days /rank walks for a score: some tens of milliseconds of Python, under the time that
#: counts as blocking the loop.
SCORE_DAYS = 600_000
#: Lines in a /history page (about 200 kB).
HISTORY_LINES = 8_000

router = Router(name="library")
db: asyncpg.Pool
cache: redis.Redis
#: Every /history page ever rendered: nothing trims it, so memory grows with each call.
pages: list[bytes] = []


def _reader(message: Message) -> int:
    return message.from_user.id if message.from_user else 0


@router.message(Command("card"))
async def card(message: Message) -> None:
    """Healthy: the reader's card from the cache, or one primary-key read that fills it."""
    reader = _reader(message)
    key = f"problem_bot:card:{reader}"
    nickname = await cache.get(key)
    if nickname is None:
        stored = await db.fetchval(
            "SELECT nickname FROM problem_bot.readers WHERE reader_id = $1", reader
        )
        nickname = stored or f"reader {reader}"
        await cache.set(key, nickname, ex=600)
    await message.answer(f"Library card of {nickname}")


@router.message(Command("shelf"))
async def shelf(message: Message) -> None:
    """N+1: the writer of every title is looked up one title at a time."""
    titles = await db.fetch(
        "SELECT title_id, writer_id, heading FROM problem_bot.titles ORDER BY title_id LIMIT $1",
        SHELF_SIZE,
    )
    lines = []
    for title in titles:
        writer = await db.fetchval(
            "SELECT full_name FROM problem_bot.writers WHERE writer_id = $1", title["writer_id"]
        )
        lines.append(f"{title['heading']} by {writer}")
    await message.answer("\n".join(lines))


@router.message(Command("borrow"))
async def borrow(message: Message, command: CommandObject) -> None:
    """Transaction held open: the reply goes out while the copy's row is still locked."""
    title = int(command.args or 1)
    async with db.acquire() as conn, conn.transaction():
        left = await conn.fetchval(
            "UPDATE problem_bot.titles SET copies = copies - 1 WHERE title_id = $1 "
            "RETURNING copies",
            title,
        )
        await conn.execute(
            "INSERT INTO problem_bot.loans (reader_id, title_id) VALUES ($1, $2)",
            _reader(message),
            title,
        )
        await message.answer(f"Borrowed. {left} copies left.")


@router.message(Command("stats"))
async def stats(message: Message) -> None:
    """A cache that never hits: the key carries the time it was made."""
    key = f"problem_bot:stats:{datetime.now().isoformat()}"
    loans = await cache.get(key)
    if loans is None:
        loans = str(await db.fetchval("SELECT count(*) FROM problem_bot.loans"))
        await cache.set(key, loans, ex=60)
    await message.answer(f"{loans} loans so far")


@router.message(Command("export"))
async def export(message: Message) -> None:
    """Blocking: a key derivation run in the handler instead of a thread."""
    salt = str(_reader(message)).encode()
    key = hashlib.pbkdf2_hmac("sha256", b"library-export", salt, EXPORT_ROUNDS)
    await message.answer(f"Export key {key.hex()[:12]}")


@router.message(Command("remind"))
async def remind(message: Message) -> None:
    """A burst into one chat: every reminder at once, the 429s dropped."""
    sent = 0
    for number in range(1, REMINDERS + 1):
        try:
            await message.answer(f"Reminder {number}: a book is due")
            sent += 1
        except TelegramRetryAfter:
            continue
    logging.info("reminders sent: %d of %d", sent, REMINDERS)


def reading_score(reader: int) -> int:
    score = 0
    for day in range(SCORE_DAYS):
        score += (reader + day) % 13  # the whole history, walked again on every call
    return score


@router.message(Command("rank"))
async def rank(message: Message) -> None:
    """Hot code: the score is recomputed from scratch in Python instead of kept."""
    await message.answer(f"Your reading score: {reading_score(_reader(message))}")


def render_history(reader: int) -> bytes:
    return (f"reader {reader} visited the library\n" * HISTORY_LINES).encode()


@router.message(Command("history"))
async def history(message: Message) -> None:
    """Memory growth: every rendered page is kept in ``pages``, which nothing trims."""
    page = render_history(_reader(message))
    pages.append(page)
    await message.answer(f"{HISTORY_LINES} visits, {len(pages)} pages kept")


async def main() -> None:
    global db, cache
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    db = await asyncpg.create_pool(
        os.environ.get("PG_DSN", "postgresql://postgres@127.0.0.1/test"), min_size=1, max_size=5
    )
    async with db.acquire() as conn:
        await conn.execute(SCHEMA)
    cache = redis.Redis.from_url(
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True
    )
    base = os.environ.get("BOT_API_BASE")
    session = AiohttpSession(api=TelegramAPIServer.from_base(base)) if base else AiohttpSession()
    bot = Bot(os.environ["BOT_TOKEN"], session=session)
    dp = Dispatcher()
    dp.include_router(router)
    print("polling", flush=True)
    try:
        await dp.start_polling(bot, polling_timeout=1, handle_signals=True)
    finally:
        await bot.session.close()
        await cache.aclose()
        await db.close()


if __name__ == "__main__":
    asyncio.run(main())
