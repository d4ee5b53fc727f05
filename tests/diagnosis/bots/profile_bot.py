"""Hot code: /crunch runs a pure-Python loop of about 50 ms on the event loop (under the
blocked-loop threshold) in a helper it calls; /rest waits 60 ms on an await and replies
(the control: as slow, but its time is not its own code's); /nap blocks the loop for 60 ms
in time.sleep in a sync helper it calls (own time on the loop, but waiting, not on the CPU:
not hot code); /ok only replies (a control too)."""

import asyncio
import time

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


def pause() -> None:
    time.sleep(0.06)  # the waiting line


@router.message(Command("nap"))
async def nap(message: Message) -> None:
    pause()
    await message.answer("napped")


@router.message(Command("rest"))
async def rest(message: Message) -> None:
    await asyncio.sleep(0.06)
    await message.answer("rested")


@router.message(Command("ok"))
async def ok(message: Message) -> None:
    await message.answer("ok")


if __name__ == "__main__":
    run(router)
