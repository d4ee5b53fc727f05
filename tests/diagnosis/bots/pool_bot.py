"""Pool starvation: /hold keeps a pool connection across a slow await, so with POOL_MAX=2
and many /hold updates at once the others wait for a connection; /quick runs one query
straight on the pool (the control)."""

import asyncio

import _common
from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()


@router.message(Command("hold"))
async def hold(message: Message) -> None:
    async with _common.pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
        await asyncio.sleep(0.5)  # stands for a slow call made while the connection is held


@router.message(Command("quick"))
async def quick(message: Message) -> None:
    await _common.pool.fetchval("SELECT 1")


if __name__ == "__main__":
    run(router)
