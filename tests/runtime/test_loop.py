"""The loop monitor's busy clock on a real asyncio loop: time running callbacks counts,
time waiting in ``select()`` does not."""

from __future__ import annotations

import asyncio
import time

from otelbot.runtime import loop as loop_module
from otelbot.runtime.loop import LoopMonitor, busy_clock


def _spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def _work_then_idle() -> tuple[tuple[float, int], tuple[float, int], tuple[float, int]]:
    first = busy_clock()
    assert first is not None
    for _ in range(10):  # 0.2 s of callbacks, each in its own iteration
        _spin(0.02)
        await asyncio.sleep(0)
    worked = busy_clock()
    await asyncio.sleep(0.5)  # the loop waits in select()
    idled = busy_clock()
    assert worked is not None and idled is not None
    return first, worked, idled


def test_busy_clock_counts_callbacks_not_waits() -> None:
    loop = asyncio.new_event_loop()
    monitor = LoopMonitor(loop, 10.0, lambda m, lag: None)
    try:
        monitor.start()
        assert loop_module.watched is monitor
        first, worked, idled = loop.run_until_complete(_work_then_idle())
    finally:
        monitor.stop()
        loop.close()
    assert loop_module.watched is None
    assert worked[0] - first[0] >= 0.2
    assert worked[1] - first[1] >= 10  # one iteration per sleep(0)
    # the half second in select() is not busy time (the wake-up and the timer are)
    assert idled[0] - worked[0] < 0.25
    assert idled[1] - worked[1] >= 1


def test_no_busy_clock_off_the_watched_loop() -> None:
    async def read() -> tuple[float, int] | None:
        return busy_clock()

    watched = asyncio.new_event_loop()
    other = asyncio.new_event_loop()
    monitor = LoopMonitor(watched, 10.0, lambda m, lag: None)
    try:
        monitor.start()
        assert watched.run_until_complete(read()) is not None
        assert other.run_until_complete(read()) is None
    finally:
        monitor.stop()
        watched.close()
        other.close()
    assert busy_clock() is None  # no running loop
