"""Processes the benchmarks start (the fake Bot API, the OTLP receiver, the bot), pinning
them to CPUs, and reading the CPU time and memory of a process tree from /proc."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from otelbot.testing.defaults import BOT_TOKEN
from otelbot.testing.processes import Child, free_port

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """The live processes started by ``pid``, their children, and so on."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, its children's): the children's are the live
    descendants' plus what the children it has already waited for used (cutime, cstime).
    For the bot: (bot, export helper)."""
    fields = _stat(pid)
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    reaped = (int(fields[13]) + int(fields[14])) / CLK_TCK
    live = 0.0
    for child in descendants(pid):
        try:
            live += cpu_seconds(child)
        except OSError:
            pass
    return own, reaped + live


def tree_peak_rss_bytes(pid: int) -> tuple[int, int]:
    """(the process's peak RSS, the sum of its live descendants' peaks). The tree's peak
    is at most the sum of both (each part peaks at its own time)."""
    own = rss_bytes(pid)[1]
    others = 0
    for child in descendants(pid):
        try:
            others += rss_bytes(child)[1]
        except OSError:
            pass
    return own, others


def wait_exited(pid: int, timeout: float = 30.0) -> bool:
    """Wait until ``pid`` (our child) has exited but not been reaped, so /proc still has
    its final CPU times, its reaped children's included."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _stat(pid)[0] in ("Z", "X"):
                return True
        except OSError:
            return False
        time.sleep(0.05)
    return False


#: Runs a command with the affinity mask given first (``taskset -c`` without util-linux);
#: what the command starts inherits the mask.
_PIN = (
    "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """``cmd`` pinned to ``cpus`` ("0", "1", "0,1"); ``cmd`` itself when None."""
    return [sys.executable, "-c", _PIN, cpus, *cmd] if cpus else cmd


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in bytes (Linux /proc)."""
    now = peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, peak


class FakeApi(Child):
    """``python -m otelbot.testing.fake_bot_api`` with ``updates`` queued."""

    def __init__(self, updates: int, cpus: str | None = None) -> None:
        self.port = free_port()
        super().__init__(
            pinned(
                [
                    sys.executable,
                    "-m",
                    "otelbot.testing.fake_bot_api",
                    "--port",
                    str(self.port),
                    "--token",
                    BOT_TOKEN,
                    "--max-poll-wait",
                    "1",
                    "--updates",
                    str(updates),
                ],
                cpus,
            ),
            cwd=ROOT,
            name="fake Bot API",
        )
        self.wait_for_line("fake Bot API listening")
        self.base_url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as resp:
            return json.loads(resp.read())


class Receiver(Child):
    """``python -m bench.receiver``: the OTLP endpoint of the instrumented bots."""

    def __init__(self, cpus: str | None = None) -> None:
        super().__init__(
            pinned([sys.executable, "-m", "bench.receiver"], cpus),
            cwd=ROOT,
            stdin=True,
            name="bench receiver",
        )
        self.port = int(self.wait_for_line("listening").split()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def spans(self) -> int:
        return int(self.ask("count").split()[0])

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except Exception:
                pass
        self.stop()

    def down(self) -> None:
        self.ask("down")

    def up(self) -> None:
        self.ask("up")
