"""Slow handlers: /upload spends its time in one slow sendDocument (the test scripts the
fake Bot API to answer it late), /report in one slow query; /fast replies at once (the
control)."""

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


@router.message(Command("fast"))
async def fast(message: Message) -> None:
    await _common.pool.fetchval("SELECT 1 AS slow_fast")
    await message.answer("fast")


if __name__ == "__main__":
    run(router)
