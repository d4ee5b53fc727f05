"""Flood control: /burst sends five messages into one chat at once (the fake Bot API
refuses some with 429); /reply sends one (the control)."""

from _common import run
from aiogram import Router
from aiogram.exceptions import TelegramRetryAfter
from aiogram.filters import Command
from aiogram.types import Message

router = Router()


@router.message(Command("burst"))
async def burst(message: Message) -> None:
    for i in range(5):
        try:
            await message.answer(f"part {i}")
        except TelegramRetryAfter:
            pass


@router.message(Command("reply"))
async def reply(message: Message) -> None:
    await message.answer("one reply")


if __name__ == "__main__":
    run(router)
