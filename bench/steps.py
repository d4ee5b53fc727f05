"""The step timer's cost per update (otelbot.diagnosis.steps), on a real asyncio loop.

python -m bench.steps [--updates N] [--rounds R] [--suspensions K]

A handler coroutine that suspends K times (default 3: one query, one Redis command, one
``sendMessage``, so K + 1 steps) is awaited N times, bare and through the step timer,
interleaved for R rounds; prints the medians in microseconds per update and the
difference. The timed side also makes the update's notes, as a sampled update does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from otelbot.diagnosis import steps
from otelbot.diagnosis.notes import UpdateNotes


async def _handler(suspensions: int) -> int:
    for _ in range(suspensions):
        await asyncio.sleep(0)
    return suspensions


async def _bare(updates: int, suspensions: int) -> float:
    start = time.perf_counter()
    for _ in range(updates):
        UpdateNotes(None, "message", 0.0)
        await _handler(suspensions)
    return (time.perf_counter() - start) / updates


async def _timed(updates: int, suspensions: int) -> float:
    start = time.perf_counter()
    for _ in range(updates):
        notes = UpdateNotes(None, "message", 0.0)
        await steps.timed(_handler(suspensions), notes, "bench.handler")
    return (time.perf_counter() - start) / updates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--suspensions", type=int, default=3)
    args = parser.parse_args(argv)
    bare: list[float] = []
    timed: list[float] = []
    for _ in range(args.rounds):
        bare.append(asyncio.run(_bare(args.updates, args.suspensions)))
        timed.append(asyncio.run(_timed(args.updates, args.suspensions)))
    b, t = statistics.median(bare) * 1e6, statistics.median(timed) * 1e6
    steps_per_update = args.suspensions + 1
    print(f"bare      {b:8.2f} us/update")
    print(f"timed     {t:8.2f} us/update")
    print(
        f"step timer {t - b:7.2f} us/update ({steps_per_update} steps, "
        f"{(t - b) / steps_per_update:.2f} us/step)"
    )


if __name__ == "__main__":
    main()
