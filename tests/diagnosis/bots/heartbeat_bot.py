"""Blocks outside any timed handler step, for the loop heartbeat. BACKGROUND picks the
background task started with the bot: ``block`` calls a sync helper that sleeps 0.3 s on
the loop every 0.7 s; ``gc`` makes cyclic garbage in chunks of a few milliseconds with an
await between them (the garbage collector runs often, the loop is never held long: the
control); unset, none. LOOP=uvloop runs the bot on uvloop. /ok only replies (the healthy
handler); /lookup calls a sync helper that sleeps 0.3 s on the loop (found by the step
timer when the update is sampled, by the heartbeat when it is not)."""

import asyncio
import os
import time
from typing import Any

import _common
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()
_tasks: set[asyncio.Task[None]] = set()


def render_report() -> None:
    time.sleep(0.3)  # blocks the event loop


def slow_lookup() -> None:
    time.sleep(0.3)  # blocks the event loop


async def ticker() -> None:
    while True:
        await asyncio.sleep(0.7)
        render_report()


class Node:
    def __init__(self) -> None:
        self.other: Any = self


async def churn() -> None:
    while True:
        for _ in range(20):
            [Node() for _ in range(2000)]  # cycles: only the garbage collector frees them
        await asyncio.sleep(0.005)


@router.message(Command("ok"))
async def ok(message: Message) -> None:
    await message.answer("ok")


@router.message(Command("lookup"))
async def lookup(message: Message) -> None:
    slow_lookup()
    await message.answer("found")


async def setup(pool: Any, cache: Any) -> None:
    background = {"block": ticker, "gc": churn}.get(os.environ.get("BACKGROUND", ""))
    if background is not None:
        task = asyncio.create_task(background())
        _tasks.add(task)


if __name__ == "__main__":
    if os.environ.get("LOOP") == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_common._main(router, setup))
    else:
        _common.run(router, setup)
