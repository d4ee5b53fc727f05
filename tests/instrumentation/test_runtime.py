"""Runtime metrics on real event loops, real collections and real processes."""

from __future__ import annotations

import asyncio
import asyncio.base_events
import gc
import logging
import os
import selectors
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from otelbot.instrumentation.runtime import RuntimeInstrumentor
from otelbot.runtime.process import ProcessProbe, PsutilProbe
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.stats_file import read_stats

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_METRICS = {
    "cpython.gc.collections",
    "cpython.gc.collected_objects",
    "cpython.gc.uncollectable_objects",
    "otelbot.asyncio.loop.lag",
    "otelbot.asyncio.tasks",
    "process.memory.usage",
    "process.memory.virtual",
    "process.cpu.time",
    "process.thread.count",
    "process.unix.file_descriptor.count",
}


@pytest.fixture
def runtime(
    telemetry: MemoryTelemetry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MemoryTelemetry]:
    monkeypatch.delenv("OTELBOT_RUNTIME_DIR", raising=False)
    RuntimeInstrumentor().instrument(**telemetry.providers)
    yield telemetry
    RuntimeInstrumentor().uninstrument()


def _one(telemetry: MemoryTelemetry, name: str, **attributes: Any) -> Any:
    points = [p for p in telemetry.points(name) if p.attributes == attributes]
    assert len(points) == 1, (name, attributes, telemetry.points(name))
    return points[0].value


def _cycles(n: int) -> None:
    class Node:
        pass

    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]


def test_blocking_handler_shows_in_loop_lag(runtime: MemoryTelemetry) -> None:
    async def handler() -> None:
        time.sleep(0.25)  # a sync call in a handler: the loop can do nothing else

    async def main() -> None:
        await asyncio.sleep(0.2)
        await asyncio.create_task(handler())
        await asyncio.sleep(0.8)

    asyncio.run(main())
    lag = _one(runtime, "otelbot.asyncio.loop.lag")
    assert lag.count >= 2
    assert lag.max >= 0.2
    boundaries = list(lag.explicit_bounds)
    at_least_quarter = sum(lag.bucket_counts[boundaries.index(0.1) + 1 :])
    assert at_least_quarter >= 1  # the sample landed in a bucket above 0.1 s


class VirtualClock:
    """Time that moves only when the loop waits for its next timer or a test says so, so
    that what the lag monitor reports does not depend on how busy the machine is."""

    def __init__(self) -> None:
        self.now = 1024.0  # binary fractions from here on add up exactly

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _NoWaitSelector(selectors.DefaultSelector):
    """Polls the real selector without blocking; a wait for a timer advances the clock."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> Any:
        if timeout is None:  # no timer pending: wait for I/O for real
            return super().select(None)
        events = super().select(0)
        if not events and timeout > 0:
            self.clock.advance(timeout)
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A stock selector loop whose time is a ``VirtualClock``."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_NoWaitSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock()


@pytest.fixture
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    clock = VirtualClock()
    # The monitor times loop iterations with time.perf_counter (read when it starts).
    monkeypatch.setattr(time, "perf_counter", clock)
    return clock


def _run_on_virtual_time(clock: VirtualClock, main: Any) -> None:
    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(clock)) as runner:
        runner.run(main())


def test_idle_loop_shows_no_lag(runtime: MemoryTelemetry, virtual_clock: VirtualClock) -> None:
    # Two seconds of a loop that only waits: the waits are not lag, however long.
    _run_on_virtual_time(virtual_clock, lambda: asyncio.sleep(2.0))
    lag = _one(runtime, "otelbot.asyncio.loop.lag")
    assert lag.count >= 3  # a sample every 0.5 s
    assert lag.max == 0 and lag.sum == 0


def test_lag_is_the_time_a_handler_held_the_loop(
    runtime: MemoryTelemetry, virtual_clock: VirtualClock
) -> None:
    async def handler() -> None:
        virtual_clock.advance(0.25)  # a sync call in a handler: 250 ms the loop can't run

    async def main() -> None:
        await asyncio.sleep(0.125)
        await asyncio.create_task(handler())
        await asyncio.sleep(2.0)

    _run_on_virtual_time(virtual_clock, main)
    lag = _one(runtime, "otelbot.asyncio.loop.lag")
    assert lag.count >= 4
    # One sample holds the 250 ms (the handler ended before the timer was due: the
    # iteration's length, not the timer's lateness, finds it), every other sample is 0.
    assert lag.max == pytest.approx(0.25) and lag.sum == pytest.approx(0.25)


def test_tasks_gauge_counts_live_tasks(runtime: MemoryTelemetry) -> None:
    async def main() -> None:
        sleepers = [asyncio.create_task(asyncio.sleep(2)) for _ in range(5)]
        await asyncio.sleep(0.7)
        for task in sleepers:
            task.cancel()

    asyncio.run(main())
    assert _one(runtime, "otelbot.asyncio.tasks") >= 6  # five sleepers and main


def test_instrument_inside_a_running_loop(
    telemetry: MemoryTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTELBOT_RUNTIME_DIR", raising=False)

    async def main() -> None:
        RuntimeInstrumentor().instrument(**telemetry.providers)
        try:
            await asyncio.sleep(0.1)
            time.sleep(0.25)
            await asyncio.sleep(0.6)
        finally:
            RuntimeInstrumentor().uninstrument()

    asyncio.run(main())
    assert _one(telemetry, "otelbot.asyncio.loop.lag").max >= 0.2


def test_gc_pauses_and_collections_per_generation(runtime: MemoryTelemetry) -> None:
    before = {
        g: _one(runtime, "cpython.gc.collections", **{"cpython.gc.generation": g}) for g in range(3)
    }
    _cycles(20000)
    for generation in range(3):
        gc.collect(generation)
    for g in range(3):
        after = _one(runtime, "cpython.gc.collections", **{"cpython.gc.generation": g})
        assert after >= before[g] + 1
        pause = _one(runtime, "otelbot.gc.pause.duration", **{"cpython.gc.generation": g})
        assert pause.count >= 1
        assert 0 < pause.max < 5
    collected = sum(
        _one(runtime, "cpython.gc.collected_objects", **{"cpython.gc.generation": g})
        for g in range(3)
    )
    assert collected >= 40000  # every node of every cycle
    assert _one(runtime, "cpython.gc.uncollectable_objects", **{"cpython.gc.generation": 2}) == 0


def test_process_metrics_are_sane(runtime: MemoryTelemetry) -> None:
    me = psutil.Process()
    ready, done = threading.Event(), threading.Event()

    def work() -> None:
        ready.set()
        done.wait()

    worker = threading.Thread(target=work)
    worker.start()
    ready.wait()
    try:
        rss = _one(runtime, "process.memory.usage")
        virtual = _one(runtime, "process.memory.virtual")
        threads = _one(runtime, "process.thread.count")
        fds = _one(runtime, "process.unix.file_descriptor.count")
    finally:
        done.set()
        worker.join()
    real_rss = me.memory_info().rss
    assert 0.5 * real_rss < rss < 2 * real_rss
    assert virtual > rss
    assert threads >= 2
    assert fds >= 3
    user = _one(runtime, "process.cpu.time", **{"cpu.mode": "user"})
    system = _one(runtime, "process.cpu.time", **{"cpu.mode": "system"})
    assert user > 0 and system >= 0
    assert user + system <= sum(me.cpu_times()[:2]) + 0.1


def test_psutil_fallback_agrees_with_proc() -> None:
    proc, fallback = ProcessProbe(), PsutilProbe()
    (rss, virtual), (rss2, virtual2) = proc.memory(), fallback.memory()
    assert abs(rss - rss2) < 0.2 * rss
    assert abs(virtual - virtual2) < 0.2 * virtual
    # Threads of earlier tests (exporters, servers) may end between the two reads: the
    # two probes must agree on some pair of back-to-back reads.
    pairs = [(proc.threads(), fallback.threads()) for _ in range(20)]
    assert any(a == b for a, b in pairs), pairs
    assert abs(proc.file_descriptors() - fallback.file_descriptors()) <= 1


def test_uninstrument_restores_everything(
    telemetry: MemoryTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTELBOT_RUNTIME_DIR", raising=False)
    run_forever = asyncio.base_events.BaseEventLoop.run_forever
    runner_run = asyncio.Runner.run
    callbacks = list(gc.callbacks)

    RuntimeInstrumentor().instrument(**telemetry.providers)
    assert asyncio.base_events.BaseEventLoop.run_forever is not run_forever
    assert len(gc.callbacks) == len(callbacks) + 1
    RuntimeInstrumentor().uninstrument()

    assert asyncio.base_events.BaseEventLoop.run_forever is run_forever
    assert asyncio.Runner.run is runner_run
    assert gc.callbacks == callbacks
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0.6))
        assert "select" not in vars(loop._selector)  # type: ignore[attr-defined]
        assert not loop._scheduled  # type: ignore[attr-defined]  # no tick left behind
    finally:
        loop.close()
    gc.collect()
    for point in telemetry.points():
        # Observable callbacks are silent once uninstrumented; nothing was recorded.
        assert point.name in ("otelbot.asyncio.loop.lag", "otelbot.gc.pause.duration"), point
    assert not telemetry.points("otelbot.asyncio.loop.lag")


def test_monitor_stops_with_its_loop(runtime: MemoryTelemetry) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0.1))
        assert all(h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
        assert "select" not in vars(loop._selector)  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_stats_file_mode_leaves_runtime_metrics_to_the_agent(
    telemetry: MemoryTelemetry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from otelbot.runtime import stats_file

    monkeypatch.setenv("OTELBOT_RUNTIME_DIR", str(tmp_path))
    RuntimeInstrumentor().instrument(**telemetry.providers, stats_interval=0.2)
    path = tmp_path / f"{os.getpid()}.stats"
    try:
        assert path.exists()
        stats_file.update_started()
        stats_file.update_started()
        stats_file.update_ended()
        _cycles(1000)
        gc.collect()
        asyncio.run(asyncio.sleep(0.5))
        snapshot = read_stats(str(path))
        assert snapshot["interval"] == 0.2
        assert snapshot["updates_in_flight"] == 1
        assert snapshot["updates_total"] == 1
        assert snapshot["gc"][2]["collections"] >= 1
        assert snapshot["tasks"] >= 1
        names = {p.name for p in telemetry.points()}
        assert names == {"otelbot.gc.pause.duration"}
    finally:
        RuntimeInstrumentor().uninstrument()
    assert not path.exists()


STATS_SCRIPT = textwrap.dedent("""
    import asyncio, gc, sys, time
    from otelbot.instrumentation.runtime import RuntimeInstrumentor
    from otelbot.runtime.process import ProcessProbe, PsutilProbe

    RuntimeInstrumentor().instrument()

    class Node:
        pass

    async def main():
        print("running", flush=True)
        await asyncio.sleep(1.2)
        for _ in range(20):
            for _ in range(5000):
                a, b = Node(), Node()
                a.b, b.a = b, a
            gc.collect()
        time.sleep(0.3)  # a blocking step
        print("blocked", flush=True)
        await asyncio.sleep(1.5)

    asyncio.run(main())
    print("done", flush=True)
""")


def test_stats_file_from_a_real_bot_process(tmp_path: Path) -> None:
    env = dict(os.environ, OTELBOT_RUNTIME_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    bot = subprocess.Popen(
        [sys.executable, "-c", STATS_SCRIPT],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert bot.stdout is not None
        assert bot.stdout.readline() == "running\n"
        path = tmp_path / f"{bot.pid}.stats"
        assert path.exists()
        first = read_stats(str(path))
        assert (first["magic"], first["version"], first["pid"]) == (b"OTBS", 1, bot.pid)
        assert first["interval"] == 1.0
        assert bot.stdout.readline() == "blocked\n"
        deadline = time.monotonic() + 5
        last = read_stats(str(path))
        while last["loop_lag_max"] < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
            last = read_stats(str(path))
        assert last["heartbeat"] > first["heartbeat"]
        assert last["seq"] > first["seq"]
        assert last["loop_lag_max"] >= 0.3  # the whole blocked step
        assert sum(g["collections"] for g in last["gc"]) >= 20
        assert sum(g["collected"] for g in last["gc"]) >= 20 * 10000 - 2  # last pair lives
        assert last["gc"][2]["pause_max"] > 0
        assert last["gc"][2]["pause_total"] >= last["gc"][2]["pause_max"]
        assert last["tasks"] >= 1
        out, err = bot.communicate(timeout=10)
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
    assert bot.returncode == 0, err
    assert out == "done\n"
    assert err == ""
    assert list(tmp_path.iterdir()) == []  # removed at exit


@pytest.fixture
def unwritable_dir() -> Iterator[str]:
    if os.geteuid() == 0:
        yield "/sys/kernel"  # root writes through file modes, but sysfs refuses new files
        return
    path = tempfile.mkdtemp()
    os.chmod(path, 0o555)
    yield path
    os.chmod(path, 0o755)
    os.rmdir(path)


@pytest.mark.parametrize("kind", ["missing", "unwritable"])
def test_unusable_runtime_dir_falls_back_with_one_log_line(
    kind: str,
    tmp_path: Path,
    unwritable_dir: str,
    telemetry: MemoryTelemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = str(tmp_path / "missing") if kind == "missing" else unwritable_dir
    monkeypatch.setenv("OTELBOT_RUNTIME_DIR", directory)
    caplog.set_level(logging.DEBUG, logger="otelbot")
    RuntimeInstrumentor().instrument(**telemetry.providers)
    try:
        asyncio.run(asyncio.sleep(0.6))
        names = {p.name for p in telemetry.points()}
    finally:
        RuntimeInstrumentor().uninstrument()
    lines = [r.getMessage() for r in caplog.records if r.name == "otelbot"]
    assert len(lines) == 1, lines
    assert directory in lines[0] and "OTELBOT_RUNTIME_DIR" in lines[0]
    assert caplog.records[0].levelno == logging.WARNING
    assert names >= RUNTIME_METRICS  # the bot exports them itself
    assert not os.path.exists(os.path.join(directory, f"{os.getpid()}.stats"))
