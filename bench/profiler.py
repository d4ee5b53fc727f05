"""The sampling profiler's cost (otelbot.diagnosis.profiler), per sample and per second.

python -m bench.profiler [--samples N] [--seconds S] [--rounds R]
python -m bench.run --only profiler          # the same, in make bench's results

Per sample: ``Profile.add`` on the stack of this thread, 20, 50 and 100 frames deep, most
of them a library's and 5-10 the bot's (an aiogram update's stack is 40-60 frames, a few
of them the bot's), and 50 frames all the bot's (the worst case), ``sys._current_frames()``
included, as the watcher thread does it; median of R rounds of N samples, in µs. With the
thread's CPU clock read (on CPU or waiting, as shipped on Linux) and without (the profile
not told the thread, as where the clock cannot be read).

Per second: a child process drives a CPU-bound handler (a pure-Python loop, 50 frames
deep, awaiting ``asyncio.sleep(0)`` between chunks) through the step timer on an asyncio
loop for S seconds, with ``OTELBOT_PROFILE_HZ=67`` and with ``0``, interleaved for R
rounds; prints the medians of the work done per second and the difference (the
profiler's share of the loop thread), and the process's CPU seconds per wall second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from typing import Any

from otelbot.diagnosis.profiler import Profile


def _nested(depth: int, then: Any) -> Any:
    if depth <= 1:
        return then()
    return _nested(depth - 1, then)


# The same nesting as library code: compiled under a name in site-packages, so the
# profiler sees its frames as a library's (as aiogram's and aiohttp's in an update).
_LIBRARY: dict[str, Any] = {}
exec(
    compile(
        "def nested(depth, then):\n"
        "    if depth <= 1:\n"
        "        return then()\n"
        "    return nested(depth - 1, then)\n",
        os.path.join(sysconfig.get_paths()["purelib"], "benchlib", "nest.py"),
        "exec",
    ),
    _LIBRARY,
)


def per_sample(depth: int, library: int, samples: int, clock: bool = True) -> float:
    """Seconds one sample of this thread's stack costs: ``depth`` frames deep, the
    ``library`` outer ones a library's, the inner ones the bot's; with ``clock``, the
    thread's CPU clock read too."""
    ident = threading.get_ident()
    profile = Profile()
    if clock:
        profile.follow(ident)

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(samples):
            profile.add(sys._current_frames().get(ident), "bench.handler", 0.015)
        return (time.perf_counter() - start) / samples

    result: float = _LIBRARY["nested"](library, lambda: _nested(depth - library, measure))
    return result


def _chunk() -> int:
    total = 0
    for i in range(2_000):
        total += i * i % 7
    return total


async def _deep(depth: int, until: float, done: list[int]) -> None:
    if depth > 1:
        await _deep(depth - 1, until, done)
        return
    while time.perf_counter() < until:
        _chunk()
        done[0] += 1
        await asyncio.sleep(0)


def child(seconds: float) -> dict[str, float]:
    """Run the CPU-bound handler for ``seconds`` (the profiler per the environment)."""
    from otelbot.diagnosis import steps
    from otelbot.diagnosis.notes import UpdateNotes

    async def main() -> dict[str, float]:
        done = [0]
        warm = time.perf_counter() + 0.3
        await steps.timed(_deep(50, warm, [0]), UpdateNotes(None, "message", 0.0), "b.h")
        cpu = time.process_time()
        start = time.perf_counter()
        notes = UpdateNotes(None, "message", 0.0)
        await steps.timed(_deep(50, start + seconds, done), notes, "bench.handler")
        wall = time.perf_counter() - start
        return {"chunks_per_s": done[0] / wall, "cpu_per_s": (time.process_time() - cpu) / wall}

    return asyncio.run(main())


def _run_child(hz: str, seconds: float) -> dict[str, float]:
    env = dict(os.environ, OTELBOT_PROFILE_HZ=hz)
    out = subprocess.run(
        [sys.executable, "-m", "bench.profiler", "--child", str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    parsed: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return parsed


#: (frames deep, of them a library's) per sample row
STACKS = ((20, 15), (50, 45), (50, 0), (100, 90))


def run(samples: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Per sample (with and without the CPU clock) and per second (profiler on and off)."""
    rows = []
    for depth, library in STACKS:
        timed: list[float] = []
        bare: list[float] = []
        for _ in range(rounds):  # interleaved
            timed.append(per_sample(depth, library, samples, clock=True))
            bare.append(per_sample(depth, library, samples, clock=False))
        rows.append(
            {
                "depth": depth,
                "bot_frames": depth - library,
                "us": statistics.median(timed) * 1e6,
                "us_without_clock": statistics.median(bare) * 1e6,
            }
        )
    on: list[dict[str, float]] = []
    off: list[dict[str, float]] = []
    for _ in range(rounds):
        off.append(_run_child("0", seconds))
        on.append(_run_child("67", seconds))

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "samples": samples,
        "rounds": rounds,
        "seconds": seconds,
        "per_sample": rows,
        "chunks_per_s_off": median(off, "chunks_per_s"),
        "chunks_per_s_on": median(on, "chunks_per_s"),
        "cpu_per_s_off": median(off, "cpu_per_s"),
        "cpu_per_s_on": median(on, "cpu_per_s"),
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        "| stack sampled | µs per sample | not reading its CPU time | at 67 Hz, ms per s |",
        "|---|---:|---:|---:|",
    ]
    for r in result["per_sample"]:
        rows.append(
            f"| {r['depth']} frames, {r['bot_frames']} of the bot's | {r['us']:.1f} | "
            f"{r['us_without_clock']:.1f} | {r['us'] * 67 / 1000:.2f} |"
        )
    off, on = result["chunks_per_s_off"], result["chunks_per_s_on"]
    rows += [
        "",
        "| CPU-bound handler | profiler off | 67 Hz | difference |",
        "|---|---:|---:|---:|",
        f"| work done, chunks per second | {off:,.0f} | {on:,.0f} | {(on - off) / off:+.1%} |",
        f"| process CPU seconds per second | {result['cpu_per_s_off']:.3f} | "
        f"{result['cpu_per_s_on']:.3f} | |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    print(table(run(args.samples, args.seconds, args.rounds)))


if __name__ == "__main__":
    main()
