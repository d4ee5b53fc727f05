"""The loop heartbeat's cost per beat (otelbot.diagnosis.heartbeat), on asyncio and uvloop.

python -m bench.heartbeat [--beats N] [--rounds R]

Per loop: ``schedule`` is one ``loop.call_later`` (what any timer costs), ``beat`` one call
of the heartbeat's callback (its clock read, frame lookup, attribute writes and the
``call_later`` rescheduling it), both called directly in batches of 1000 on a loop whose
timer heap is then dropped (a real loop holds a few timers, not thousands); ``dispatch``
is the loop running one self-rescheduling timer callback (taking it off the heap, calling
it, scheduling the next), the part every callback pays. A beat costs about ``beat`` plus
``dispatch`` minus ``schedule``; medians of R rounds, in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from otelbot.diagnosis import heartbeat

_BATCH = 1000


def _noop() -> None:
    pass


def _direct(new_loop: Callable[[], Any], beats: int, call: Callable[[Any], None]) -> float:
    total = 0.0
    for _ in range(max(1, beats // _BATCH)):
        loop = new_loop()
        try:
            start = time.perf_counter()
            for _ in range(_BATCH):
                call(loop)
            total += time.perf_counter() - start
        finally:
            loop.close()
    return total / (max(1, beats // _BATCH) * _BATCH)


def _schedule(loop: Any) -> None:
    loop.call_later(0.05, _noop)


def _beat(loop: Any) -> None:
    heartbeat._beat(loop)


def _dispatch(new_loop: Callable[[], Any], beats: int) -> float:
    loop = new_loop()
    done = loop.create_future()
    left = [beats]

    def tick() -> None:
        left[0] -= 1
        if left[0]:
            loop.call_later(0, tick)
        else:
            done.set_result(None)

    try:
        start = time.perf_counter()
        loop.call_later(0, tick)
        loop.run_until_complete(done)
        return (time.perf_counter() - start) / beats
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beats", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    loops: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        print("uvloop not installed: asyncio only")
    for name, new_loop in loops.items():
        schedule, beat, dispatch = [], [], []
        for _ in range(args.rounds):
            schedule.append(_direct(new_loop, args.beats, _schedule))
            beat.append(_direct(new_loop, args.beats, _with_loop(_beat)))
            dispatch.append(_dispatch(new_loop, args.beats))
        heartbeat.beat.loop = None
        s, b, d = (statistics.median(x) * 1e6 for x in (schedule, beat, dispatch))
        print(
            f"{name:8} schedule {s:5.2f} us  beat {b:5.2f} us  dispatch {d:5.2f} us  "
            f"-> about {b + d - s:5.2f} us per beat"
        )


def _with_loop(call: Callable[[Any], None]) -> Callable[[Any], None]:
    # _beat beats only on the loop heartbeat.beat.loop names
    def run(loop: Any) -> None:
        heartbeat.beat.loop = loop
        call(loop)

    return run


if __name__ == "__main__":
    main()
