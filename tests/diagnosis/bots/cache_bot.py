"""A cache that rarely hits: /price reads a key with the time in it, so every read
misses, then queries and sets that key; /menu (the control) reads one of three stable
keys, set with a TTL long enough to be read again."""

import time

import _common
from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()

# Large ids, so a leak of one is easy to search for in what was exported.
PRICE_ITEM = 918273645
MENU_ITEM = 546372819


@router.message(Command("price"))
async def price(message: Message) -> None:
    item = PRICE_ITEM + (message.from_user.id if message.from_user else 0) % 7
    key = f"cacherare:price:{item}:{time.time_ns()}"
    cached = await _common.cache.get(key)
    if cached is None:
        cached = str(await _common.pool.fetchval("SELECT $1::bigint * 2", item))
        await _common.cache.set(key, cached, ex=60)
    await message.answer("price")


@router.message(Command("menu"))
async def menu(message: Message) -> None:
    item = MENU_ITEM + (message.from_user.id if message.from_user else 0) % 3
    key = f"cacherare:menu:{item}"
    cached = await _common.cache.get(key)
    if cached is None:
        cached = str(await _common.pool.fetchval("SELECT $1::bigint * 3", item))
        await _common.cache.set(key, cached, ex=600)
    await message.answer("menu")


async def setup(pool, cache):
    # Start cold: the control's three keys are set by its first reads.
    await cache.delete(*(f"cacherare:menu:{MENU_ITEM + i}" for i in range(3)))


if __name__ == "__main__":
    run(router, setup)
