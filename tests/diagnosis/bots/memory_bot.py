"""Memory growth: /leak keeps 100 kB of every update in a module-level list (the leak,
appended by a helper the handler calls). The controls: /garbage allocates 2 MB of
short-lived objects and frees them; /warm fills a 30 MB cache on its first call and only
reads it afterwards; /recent keeps the last 10 updates' 100 kB in a bounded deque."""

from collections import deque

from _common import run
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router()

history: list[bytes] = []
cache: dict[int, bytes] = {}
recent: deque[bytes] = deque(maxlen=10)


def remember(message: Message) -> None:
    history.append(bytes(100_000))


@router.message(Command("leak"))
async def leak(message: Message) -> None:
    remember(message)


@router.message(Command("garbage"))
async def garbage(message: Message) -> None:
    chunks = [bytes(10_000) for _ in range(200)]
    del chunks


@router.message(Command("warm"))
async def warm(message: Message) -> None:
    if not cache:
        for i in range(300):
            cache[i] = bytes(100_000)
    assert len(cache[299]) == 100_000


@router.message(Command("recent"))
async def keep_recent(message: Message) -> None:
    recent.append(bytes(100_000))


if __name__ == "__main__":
    run(router)
