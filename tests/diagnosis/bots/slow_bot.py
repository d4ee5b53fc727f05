"""Slow handlers: /upload spends its time in one slow sendDocument (the test scripts the
fake Bot API to answer it late), /report in one slow query, /nap in an untraced wait;
/fast replies at once (the control). /crowd is healthy too: ~1 ms of work in each of 40
short steps, which only makes it slow when many run at once and the loop is busy with all
of them (the process at its CPU limit, not the handler's fault)."""

import asyncio
import time

import _common
from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, Message

router = Router()


@router.message(Command("upload"))
async def upload(message: Message) -> None:
    await message.answer_document(BufferedInputFile(b"slow report\n" * 100, "report.txt"))


@router.message(Command("report"))
async def report(message: Message) -> None:
    await _common.pool.fetchval("SELECT pg_sleep(1.1) AS slow_report")
    await message.answer("report ready")


@router.message(Command("nap"))
async def nap(message: Message) -> None:
    await asyncio.sleep(1.5)  # something otelbot does not trace
    await message.answer("rested")


@router.message(Command("crowd"))
async def crowd(message: Message) -> None:
    for _ in range(40):
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)
    await message.answer("done")


@router.message(Command("fast"))
async def fast(message: Message) -> None:
    await _common.pool.fetchval("SELECT 1 AS slow_fast")
    await message.answer("fast")


if __name__ == "__main__":
    run(router)
