"""The benchmark's workload: a plain aiogram 3 bot with no otelbot code in it.

Per update: one ``SELECT`` through an asyncpg pool, one Redis ``INCR``, one
``sendMessage`` and ~1 ms of Python work (``BENCH_WORK_MS``); at most
``BENCH_CONCURRENCY`` (32) updates in flight. It long-polls the Bot API
at ``BOT_API_BASE`` (the fake one, in another process) and runs until SIGTERM.
With ``BENCH_GC_FILE`` set it keeps the CPU time spent in garbage collection in that file
(``bench.parts`` reads it; see ``gc_probe``); with ``BENCH_GC_FREEZE=1`` it moves every
object alive 2 s after it starts polling out of the collector's reach (``gc.freeze()``), to
measure what full collections of the start-up heap cost.

    BOT_TOKEN=123:abc BOT_API_BASE=http://127.0.0.1:8081 python -m bench.workload_bot
"""

from __future__ import annotations

import asyncio
import gc
import mmap
import os
import struct
import time

import asyncpg
import redis.asyncio as redis
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

router = Router(name="bench")
pool: asyncpg.Pool | None = None
cache: redis.Redis | None = None
WORK_S = float(os.environ.get("BENCH_WORK_MS", "1.0")) / 1000.0
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))


def work(seconds: float) -> int:
    """Ordinary Python work (what a handler does between its I/O calls)."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += sum(range(50))
    return n


#: The probe file's layout: per generation (0, 1, 2), collections so far and the CPU
#: seconds spent in them so far.
GC_FILE_LAYOUT = struct.Struct("<qdqdqd")


def gc_probe(path: str) -> None:
    """Keep the count of garbage collections per generation and the thread CPU time spent
    in them in the file at ``path``, written through an mmap (no system call per
    collection), so a benchmark can read them over a window of its own."""
    with open(path, "wb") as f:
        f.write(bytes(GC_FILE_LAYOUT.size))
    with open(path, "r+b") as f:
        view = mmap.mmap(f.fileno(), GC_FILE_LAYOUT.size)
    started = [0.0]
    totals: list[float] = [0, 0.0, 0, 0.0, 0, 0.0]

    def probe(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        at = 2 * info["generation"]
        totals[at] += 1
        totals[at + 1] += time.thread_time() - started[0]
        GC_FILE_LAYOUT.pack_into(view, 0, *totals)

    gc.callbacks.append(probe)


@router.message(F.text)
async def handle(message: Message) -> None:
    assert pool is not None and cache is not None
    user = message.from_user.id if message.from_user else 0
    relations = await pool.fetchval("SELECT count(*) FROM pg_class WHERE relpages >= $1", 0)
    hits = await cache.incr("bench:hits:" + str(user))
    work(WORK_S)
    await message.answer(f"{relations} relations, hit {hits}")


async def freeze_later(seconds: float) -> None:
    await asyncio.sleep(seconds)
    gc.collect()
    gc.freeze()


async def main() -> None:
    global pool, cache
    if os.environ.get("BENCH_GC_FILE"):
        gc_probe(os.environ["BENCH_GC_FILE"])
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        frozen = asyncio.get_running_loop().create_task(freeze_later(2.0))
    pool = await asyncpg.create_pool(os.environ["PG_DSN"], min_size=4, max_size=8)
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    session = AiohttpSession(api=TelegramAPIServer.from_base(os.environ["BOT_API_BASE"]))
    bot = Bot(os.environ["BOT_TOKEN"], session=session)
    dp = Dispatcher()
    dp.include_router(router)
    print("polling", flush=True)
    # A bounded number of updates in flight, as a production bot is configured.
    await dp.start_polling(
        bot,
        polling_timeout=1,
        handle_signals=True,
        close_bot_session=True,
        tasks_concurrency_limit=CONCURRENCY,
    )
    await cache.aclose()
    await pool.close()
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        frozen.cancel()


if __name__ == "__main__":
    asyncio.run(main())
