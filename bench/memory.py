"""What the memory-growth watch costs an allocation-heavy handler, outside and inside a
traced window (otelbot.diagnosis.memory).

    python -m bench.memory [--seconds S] [--rounds R]
    python -m bench.run --only memory            # the same, in make bench's results

One process. The workload is a handler's allocation-heavy Python (builds 200 small
dicts with a string and a list each, sorts them, joins their names), called 40 frames
deep, as a handler's code runs under the framework's frames. Per round, for S seconds
each, its CPU time per call (the calling thread's) is measured:

- bare: otelbot's detectors made, no memory watch thread, tracemalloc off;
- watch idle: otelbot's memory watch thread running (``memory.watch``: it reads the
  process's memory now and then; tracemalloc off), what runs all the time;
- in a window: the same watch asked for a traced window (``MemoryWatch.request``, what
  ``SIGUSR2`` does; ``OTELBOT_MEMORY_TRACE_SECONDS=S``): otelbot's own window code turns
  tracemalloc on with its frame depth (``memory.FRAMES``), the garbage collector off,
  takes its three snapshots and turns tracing off. The calls made while it is open are
  counted; the watch thread's own CPU (snapshots, then the tally) is given too.

Medians of R interleaved rounds; µs per call and the ratio to bare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

TRACE_SETTING = "OTELBOT_MEMORY_TRACE_SECONDS"
DEPTH = 40


def work() -> int:
    rows = [{"id": i, "name": f"user{i}", "tags": [i, i + 1, i + 2]} for i in range(200)]
    rows.sort(key=lambda row: str(row["name"]))
    return len(",".join(str(row["name"]) for row in rows))


def _nested(depth: int, then: Any) -> Any:
    if depth <= 1:
        return then()
    return _nested(depth - 1, then)


def _calls(until: Any) -> tuple[int, float]:
    """Calls to work() while ``until()`` is false: (calls, CPU seconds of this thread)."""

    def loop() -> tuple[int, float]:
        calls = 0
        cpu = time.thread_time()
        while not until():
            work()
            calls += 1
        return calls, time.thread_time() - cpu

    result: tuple[int, float] = _nested(DEPTH, loop)
    return result


def _for(seconds: float) -> tuple[int, float]:
    end = time.perf_counter() + seconds
    return _calls(lambda: time.perf_counter() >= end)


def _thread_cpu(thread: threading.Thread) -> float:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident or 0))
    except (AttributeError, OSError):
        return float("nan")


def run(seconds: float, rounds: int) -> dict[str, Any]:
    setting = os.environ.get(TRACE_SETTING)
    os.environ[TRACE_SETTING] = str(seconds)
    try:
        return _run(seconds, rounds)
    finally:
        if setting is None:
            os.environ.pop(TRACE_SETTING, None)
        else:
            os.environ[TRACE_SETTING] = setting


def _run(seconds: float, rounds: int) -> dict[str, Any]:
    from opentelemetry import metrics

    from otelbot.diagnosis import engine, memory

    engine.reset()
    diagnosis = engine.diagnosis(metrics.get_meter("bench.memory"))
    if diagnosis is None:
        raise SystemExit("findings are off (OTELBOT_FINDINGS): nothing to measure")
    detector = next(d for d in diagnosis.detectors if isinstance(d, memory.MemoryGrowth))
    per_call: dict[str, list[float]] = {"bare": [], "idle": [], "window": []}
    window_cpu: list[float] = []
    window_calls: list[int] = []
    for _ in range(rounds):
        calls, cpu = _for(seconds)
        per_call["bare"].append(cpu / calls)
        watch = memory.watch(detector)
        if watch is None:
            raise SystemExit("the memory watch could not start (no /proc, no psutil)")
        calls, cpu = _for(seconds)
        per_call["idle"].append(cpu / calls)
        before = _thread_cpu(watch)
        watch.request()
        deadline = time.perf_counter() + 5.0
        while not memory.tracing_since and time.perf_counter() < deadline:
            time.sleep(0.001)
        calls, cpu = _calls(lambda: not memory.tracing_since)
        per_call["window"].append(cpu / max(calls, 1))
        window_calls.append(calls)
        while watch.requested.is_set():  # the tally, after tracing stopped
            time.sleep(0.01)
        window_cpu.append(_thread_cpu(watch) - before)
        watch.stop()
        watch.join()
    engine.reset()
    medians = {mode: statistics.median(values) * 1e6 for mode, values in per_call.items()}
    return {
        "seconds": seconds,
        "rounds": rounds,
        "depth": DEPTH,
        "frames": memory.FRAMES,
        "us_per_call": medians,
        "window_calls": statistics.median(window_calls),
        "window_thread_cpu_ms": statistics.median(window_cpu) * 1e3,
    }


def table(result: dict[str, Any]) -> str:
    us = result["us_per_call"]
    rows = [
        "| memory watch | µs CPU per call | ratio to bare |",
        "|---|---:|---:|",
        f"| bare (no watch, tracemalloc off) | {us['bare']:.1f} | 1.00 |",
        f"| watch idle (tracemalloc off) | {us['idle']:.1f} | {us['idle'] / us['bare']:.2f} |",
        f"| in a traced window ({result['frames']} frames, GC off) | {us['window']:.1f} | "
        f"{us['window'] / us['bare']:.2f} |",
    ]
    return "\n".join(rows) + (
        f"\n\nThe watch thread's own CPU for one {result['seconds']:.0f} s window (three "
        f"snapshots, the tally): {result['window_thread_cpu_ms']:.0f} ms; "
        f"{result['window_calls']:.0f} calls in the window."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(table(run(args.seconds, args.rounds)))


if __name__ == "__main__":
    main()
