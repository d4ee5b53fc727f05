"""The runtime stats file reader and the process collector, with real files and processes."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from otelbot import semconv
from otelbot.agent.collectors.base import ALL_TIERS
from otelbot.agent.collectors.process import ProcessCollector
from otelbot.agent.collectors.runtime import RuntimeCollector, StatsFileError, read_stats
from tests.agent.conftest import unique, values

# Written here from the documented layout (docs/runtime-stats-file.md), independently of both
# the agent's reader and the bot's writer.
LAYOUT = struct.Struct("<4sHHIIQddd" + "QQQdd" * 3 + "ddQqQ")


def write_stats(path: Path, pid: int, heartbeat: float, seq: int = 2, tasks: int = 7) -> None:
    fields = [b"OTBS", 1, 0, pid, 0, seq, heartbeat - 100, heartbeat, 1.0]
    for g in range(3):
        fields += [10 * (g + 1), 100 * (g + 1), g, 0.01 * (g + 1), 0.002 * (g + 1)]
    fields += [0.003, 0.25, tasks, 2, 42]
    data = LAYOUT.pack(*fields).ljust(4096, b"\0")
    path.write_bytes(data)


def test_reads_the_documented_layout(tmp_path: Path) -> None:
    write_stats(tmp_path / f"{os.getpid()}.stats", os.getpid(), time.time())
    s = read_stats(tmp_path / f"{os.getpid()}.stats")
    assert s.pid == os.getpid()
    assert [g.collections for g in s.generations] == [10, 20, 30]
    assert s.generations[2].uncollectable == 2
    assert s.loop_lag_max == 0.25 and s.tasks == 7
    assert s.updates_in_flight == 2 and s.updates_total == 42


def test_a_write_in_progress_is_never_read(tmp_path: Path) -> None:
    path = tmp_path / "1.stats"
    write_stats(path, os.getpid(), time.time(), seq=3)  # odd: the writer is mid-write
    with pytest.raises(StatsFileError):
        read_stats(path)
    path.write_bytes(b"NOPE" + b"\0" * 4092)
    with pytest.raises(StatsFileError):
        read_stats(path)


async def test_metrics_and_frozen_bot_finding(tmp_path: Path) -> None:
    pid = os.getpid()  # a live process, as a real bot would be
    write_stats(tmp_path / f"{pid}.stats", pid, time.time() - 60)
    write_stats(tmp_path / "999999999.stats", 999_999_999, time.time())  # a crashed bot's file
    c = RuntimeCollector(str(tmp_path), frozen_after=10)
    out = await c.collect(ALL_TIERS)
    assert out.failures == []
    assert values(out.samples, "cpython.gc.collections", **{semconv.PROCESS_PID: pid}) == [
        10,
        20,
        30,
    ]
    assert values(out.samples, "otelbot.asyncio.tasks") == [7]
    assert values(out.samples, "otelbot.bot.heartbeat.age")[0] >= 60
    assert values(out.samples, "telegram.updates.active") == [2]
    frozen = [f for f in out.findings if f.event_name == semconv.EVENT_BOT_FROZEN]
    assert [f.object for f in frozen] == [f"pid {pid}"]

    write_stats(tmp_path / f"{pid}.stats", pid, time.time())
    out = await c.collect(ALL_TIERS)
    assert out.findings == []


async def test_reads_a_file_written_by_the_instrumented_side(tmp_path: Path) -> None:
    # The bot-side writer, in its own process, with the values it documents.
    script = textwrap.dedent(
        f"""
        import sys, time
        from otelbot.runtime import stats_file
        stats = stats_file.StatsFile.create({str(tmp_path)!r}, interval=1.0)
        stats_file.update_started(); stats_file.update_ended(); stats_file.update_started()
        stats.write(time.time(), [5, 2, 1], [50, 20, 10], [0, 0, 1], [0.01, 0.02, 0.03],
                    [0.001, 0.002, 0.003], loop_lag=0.004, loop_lag_max=0.5, tasks=9)
        print("ready", flush=True)
        sys.stdin.readline()
        stats.close()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        out = await RuntimeCollector(str(tmp_path), frozen_after=10).collect(ALL_TIERS)
        pid = {semconv.PROCESS_PID: proc.pid}
        assert out.failures == []
        assert values(out.samples, "cpython.gc.collections", **pid) == [5, 2, 1]
        assert values(out.samples, "otelbot.asyncio.tasks", **pid) == [9]
        assert values(out.samples, "otelbot.asyncio.loop.lag.max", **pid) == [0.5]
        assert values(out.samples, "telegram.updates.active", **pid) == [1]
        assert values(out.samples, "otelbot.bot.updates.handled", **pid) == [1]
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(10)


def _child(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import sys, time; x = bytearray(8 << 20); time.sleep(60)", marker]
    )


async def test_process_collector_follows_the_bot_across_restarts() -> None:
    marker = unique("otb-agent-bot-")
    first = _child(marker)
    c = ProcessCollector(pattern=marker)
    try:
        time.sleep(0.2)
        out = await c.collect(ALL_TIERS)
        assert out.target_up and c.pid == first.pid
        assert values(out.samples, "process.memory.usage")[0] > 8 << 20
        assert values(out.samples, "process.thread.count")[0] >= 1
        assert values(out.samples, "process.unix.file_descriptor.count")[0] >= 3
        assert len(values(out.samples, "process.cpu.time")) == 2

        first.kill()
        first.wait()
        out = await c.collect(ALL_TIERS)
        assert not out.target_up and out.failures[0].error_type == "not_found"

        second = _child(marker)
        try:
            time.sleep(0.2)
            out = await c.collect(ALL_TIERS)
            assert out.target_up and c.pid == second.pid
        finally:
            second.kill()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


async def test_process_by_pid_file(tmp_path: Path) -> None:
    (tmp_path / "bot.pid").write_text(f"{os.getpid()}\n")
    out = await ProcessCollector(pid_file=str(tmp_path / "bot.pid")).collect(ALL_TIERS)
    assert out.target_up and values(out.samples, "process.uptime")[0] > 0
