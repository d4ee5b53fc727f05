"""Blocked event loop: /block sleeps 0.3 s on the loop (time.sleep in an async handler);
/victim runs one quick query and replies, and is stalled whenever a /block runs; /ok only
replies (the control); /sync sleeps 0.3 s in a sync handler, which aiogram runs in a
thread, off the loop (a control too)."""

import time

import _common
from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()


@router.message(Command("block"))
async def block(message: Message) -> None:
    time.sleep(0.3)  # blocks the event loop
    await message.answer("done")


@router.message(Command("victim"))
async def victim(message: Message) -> None:
    await _common.pool.fetchval("SELECT 1 AS blocking_victim")
    await message.answer("quick")


@router.message(Command("sync"))
def sync_sleep(message: Message) -> None:
    time.sleep(0.3)  # in aiogram's worker thread: the loop goes on


@router.message(Command("ok"))
async def ok(message: Message) -> None:
    await message.answer("ok")


if __name__ == "__main__":
    run(router)
