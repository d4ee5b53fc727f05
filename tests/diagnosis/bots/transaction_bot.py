"""Transactions: /held answers inside ``conn.transaction()`` (the Bot API call holds it
open), /idle sleeps inside one; the controls /commit_first commits and then answers,
/quick runs several quick statements in one transaction and answers after it."""

import asyncio

import _common
from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()
DEBIT = "UPDATE diag_tx_accounts SET balance = balance - 1 WHERE id = $1"
CREDIT = "UPDATE diag_tx_accounts SET balance = balance + 1 WHERE id = $1"


async def setup(pool, cache) -> None:
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS diag_tx_accounts (id int PRIMARY KEY, balance int NOT NULL)"
    )
    await pool.execute(
        "INSERT INTO diag_tx_accounts VALUES (1, 100), (2, 100) ON CONFLICT DO NOTHING"
    )


@router.message(Command("held"))
async def held(message: Message) -> None:
    async with _common.pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(DEBIT, 1)
            await message.answer("debited")  # inside the transaction
            await conn.execute(CREDIT, 2)


@router.message(Command("idle"))
async def idle(message: Message) -> None:
    async with _common.pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(DEBIT, 1)
            await asyncio.sleep(0.5)  # stands in for slow non-database work
            await conn.execute(CREDIT, 2)
    await message.answer("moved")


@router.message(Command("commit_first"))
async def commit_first(message: Message) -> None:
    async with _common.pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(DEBIT, 1)
            await conn.execute(CREDIT, 2)
    await message.answer("moved")


@router.message(Command("quick"))
async def quick(message: Message) -> None:
    async with _common.pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(DEBIT, 1)
            await conn.execute(CREDIT, 2)
            balance = await conn.fetchval("SELECT balance FROM diag_tx_accounts WHERE id = $1", 2)
            await conn.execute("UPDATE diag_tx_accounts SET balance = $2 WHERE id = $1", 2, balance)
    await message.answer(f"balance {balance}")


if __name__ == "__main__":
    run(router, setup)
