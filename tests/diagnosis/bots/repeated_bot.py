"""N+1: /sql reads six items one query each, /cache reads six Redis keys one GET each,
/sends answers with five messages one call each; /healthy (the control) reads the same
items with one query and one MGET and answers once."""

import _common
from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()
ITEMS = range(1, 7)
BY_ID = "SELECT name FROM diag_repeated_items WHERE id = $1"


async def setup(pool, cache) -> None:
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS diag_repeated_items (id int PRIMARY KEY, name text NOT NULL)"
    )
    await pool.execute(
        "INSERT INTO diag_repeated_items SELECT i, 'item ' || i FROM generate_series(1, 6) i "
        "ON CONFLICT DO NOTHING"
    )
    await cache.mset({f"diag_repeated:{i}": f"item {i}" for i in ITEMS})


@router.message(Command("sql"))
async def sql(message: Message) -> None:
    names = []
    for i in ITEMS:
        name = await _common.pool.fetchval(BY_ID, i)  # N+1 SQL
        names.append(name)
    await message.answer(", ".join(names))


@router.message(Command("cache"))
async def cache(message: Message) -> None:
    names = []
    for i in ITEMS:
        names.append(await _common.cache.get(f"diag_repeated:{i}"))  # N+1 Redis
    await message.answer(f"{len(names)} names")


@router.message(Command("sends"))
async def sends(message: Message) -> None:
    for i in range(5):
        await message.answer(f"part {i}")  # N+1 sends


@router.message(Command("healthy"))
async def healthy(message: Message) -> None:
    rows = await _common.pool.fetch(
        "SELECT name FROM diag_repeated_items WHERE id = ANY($1)", list(ITEMS)
    )
    cached = await _common.cache.mget([f"diag_repeated:{i}" for i in ITEMS])
    await message.answer(f"{len(rows)} rows, {len(cached)} cached")


if __name__ == "__main__":
    run(router, setup)
