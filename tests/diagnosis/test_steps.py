"""The step timer on a real asyncio loop: the handler's coroutine behaves the same driven
through it, and its steps are added up on the update's notes."""

from __future__ import annotations

import asyncio
import time
import traceback
import types
from collections.abc import Awaitable, Generator
from pathlib import Path
from typing import Any

import pytest

from otelbot.diagnosis import steps
from otelbot.diagnosis.notes import UpdateNotes


def _notes() -> UpdateNotes:
    return UpdateNotes(None, "message", time.perf_counter())


def _run(awaitable: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await awaitable

    return asyncio.run(main())


async def _answer(value: int) -> int:
    await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    return value * 2


def test_the_return_value_passes_through_and_each_step_is_counted() -> None:
    notes = _notes()
    assert _run(steps.timed(_answer(21), notes, "h")) == 42
    assert notes.steps == 3  # start, after sleep(0), after sleep(0.01)
    assert notes.running is not None and 0 < notes.running < 0.01
    assert 0 < notes.longest_step <= notes.running
    assert notes.longest_step_at is None  # nothing held the loop


class BotError(Exception):
    pass


async def _fails() -> None:
    await asyncio.sleep(0)
    raise BotError("no such chat")


def test_an_exception_passes_through_with_the_bots_frames_in_its_traceback() -> None:
    notes = _notes()
    with pytest.raises(BotError, match="no such chat") as caught:
        _run(steps.timed(_fails(), notes, "h"))
    names = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "_fails" in names
    assert notes.steps == 2


def test_cancellation_is_thrown_into_the_handler_and_passes_through() -> None:
    seen: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        task = asyncio.ensure_future(steps.timed(waits(), _notes(), "h"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["cancelled"]


@types.coroutine
def _suspend() -> Generator[str, Any, Any]:
    return (yield "suspended")


def test_an_exception_thrown_in_can_be_handled_by_the_handler() -> None:
    async def recovers() -> str:
        try:
            await _suspend()
        except LookupError as exc:
            return f"recovered from {exc}"
        return "went on"

    notes = _notes()
    timed = steps.timed(recovers(), notes, "h")
    assert timed.send(None) == "suspended"
    with pytest.raises(StopIteration) as stopped:
        timed.throw(LookupError("no row"))
    assert stopped.value.value == "recovered from no row"
    assert notes.steps == 2


def test_close_closes_the_handlers_coroutine() -> None:
    closed: list[bool] = []

    async def handler() -> None:
        try:
            await _suspend()
        finally:
            closed.append(True)

    timed = steps.timed(handler(), _notes(), "h")
    assert timed.send(None) == "suspended"
    timed.close()
    assert closed == [True]


def test_awaitables_other_than_coroutines_are_driven_too() -> None:
    async def main() -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, future.set_result, 7)
        return await steps.timed(future, _notes(), "h")

    assert asyncio.run(main()) == 7


def test_a_step_over_the_threshold_is_located_at_the_line_that_held_the_loop() -> None:
    notes = _notes()

    async def blocks() -> str:
        await asyncio.sleep(0)
        time.sleep(0.3)  # the blocking line
        await asyncio.sleep(0)
        return "done"

    assert _run(steps.timed(blocks(), notes, "tests.blocks")) == "done"
    assert notes.longest_step >= 0.3
    where = notes.longest_step_at
    assert where is not None
    assert where.file == __file__
    assert where.function.endswith("blocks")
    source = Path(__file__).read_text().splitlines()
    assert "the blocking line" in source[where.line - 1]
    assert [s.handler for s in steps.recent if s.end - s.start >= 0.3][-1:] == ["tests.blocks"]


def test_time_stalled_by_another_updates_long_step_is_counted_for_the_other_one_only() -> None:
    blocker, victim = _notes(), _notes()

    async def blocks() -> None:
        await asyncio.sleep(0)
        time.sleep(0.2)

    async def quick() -> None:
        await asyncio.sleep(0.05)

    async def main() -> None:
        start = time.perf_counter()
        await asyncio.gather(
            steps.timed(blocks(), blocker, "tests.blocks"),
            steps.timed(quick(), victim, "tests.quick"),
        )
        end = time.perf_counter()
        held = steps.stalls(victim, start, end)
        assert [s.handler for s in held] == ["tests.blocks"]
        assert held[0].end - held[0].start >= 0.2
        assert not steps.stalls(blocker, start, end)

    asyncio.run(main())
    assert victim.longest_step < 0.02


def test_a_garbage_collection_inside_a_step_is_not_the_handlers_blocking() -> None:
    import gc

    heap = [[i] for i in range(1_500_000)]  # a big heap: a full collection takes a while

    async def collects() -> None:
        await asyncio.sleep(0)
        gc.collect()  # stands in for a collection the interpreter starts in the step
        await asyncio.sleep(0)

    async def sleeps() -> None:
        await asyncio.sleep(0)
        time.sleep(0.12)  # the handler's own blocking call
        await asyncio.sleep(0)

    collected, slept = _notes(), _notes()
    _run(steps.timed(collects(), collected, "h"))
    _run(steps.timed(sleeps(), slept, "h"))
    del heap
    assert collected.running is not None
    assert collected.gc_in_steps >= 0.02, "the collection was too quick to tell"
    # The step lasted the collection; what is left of it is the handler's own few µs.
    assert collected.running >= collected.gc_in_steps
    assert collected.longest_step < collected.gc_in_steps / 2
    assert slept.longest_step >= 0.12 and slept.gc_in_steps == 0.0
