"""Hot code: /crunch runs a pure-Python loop of about 50 ms on the event loop (under the
blocked-loop threshold) in a helper it calls; /rest waits 60 ms on an await and replies
(the control: as slow, but its time is not its own code's); /ok only replies (a control
too)."""

import asyncio

from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()


def checksum(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7  # the hot line
    return total


@router.message(Command("crunch"))
async def crunch(message: Message) -> None:
    await message.answer(str(checksum(350_000)))


@router.message(Command("rest"))
async def rest(message: Message) -> None:
    await asyncio.sleep(0.06)
    await message.answer("rested")


@router.message(Command("ok"))
async def ok(message: Message) -> None:
    await message.answer("ok")


if __name__ == "__main__":
    run(router)
