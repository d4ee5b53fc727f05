"""Processes the benchmarks start: the fake Bot API, the OTLP receiver, the bot."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from otelbot.testing.defaults import BOT_TOKEN
from otelbot.testing.processes import Child, free_port

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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

    def __init__(self, updates: int) -> None:
        self.port = free_port()
        super().__init__(
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

    def __init__(self) -> None:
        super().__init__(
            [sys.executable, "-m", "bench.receiver"], cwd=ROOT, stdin=True, name="bench receiver"
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
