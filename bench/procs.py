"""Processes the benchmarks start: the fake Bot API, the OTLP receiver, the bot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from otelbot.testing.processes import free_port, sibling_command, stop_process

ROOT = Path(__file__).resolve().parents[1]
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
PG_DSN = os.environ.get("OTELBOT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("OTELBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def instrument_command() -> str:
    found = sibling_command("opentelemetry-instrument")
    if not found:
        raise SystemExit(
            "bench: opentelemetry-instrument is not installed next to "
            f"{sys.executable} (pip install -e '.[bench]')"
        )
    return found


class Child:
    """A subprocess whose output lines are collected by a thread."""

    def __init__(
        self, cmd: list[str], env: dict[str, str] | None = None, stdin: bool = False
    ) -> None:
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, prefix: str, timeout: float = 30.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if line.startswith(prefix):
                        return line.strip()
                if self.proc.poll() is not None and not self._more():
                    raise RuntimeError(
                        f"{self.proc.args} exited ({self.proc.returncode}):\n" + self.output[-3000:]
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(
                        f"{self.proc.args}: no {prefix!r} within {timeout}s:\n"
                        + self.output[-3000:]
                    )
                self._cond.wait(min(left, 0.2))

    def _more(self) -> bool:
        return False

    def ask(self, command: str, timeout: float = 10.0) -> str:
        """Send one stdin command and return the next output line."""
        assert self.proc.stdin is not None
        with self._cond:
            seen = len(self.lines)
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.lines) <= seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no answer to {command!r}")
                self._cond.wait(left)
            return self.lines[seen].strip()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in bytes."""
        now = peak = 0
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    now = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        return now, peak

    def stop(self, timeout: float = 30.0) -> int:
        return stop_process(self.proc, timeout)


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
            ]
        )
        self.wait_line("fake Bot API listening")
        self.base_url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as resp:
            return json.loads(resp.read())


class Receiver(Child):
    """``python -m bench.receiver``: the OTLP endpoint of the instrumented bots."""

    def __init__(self) -> None:
        super().__init__([sys.executable, "-m", "bench.receiver"], stdin=True)
        self.port = int(self.wait_line("listening").split()[1])
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
