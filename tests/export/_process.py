"""A child process whose stderr lines are collected as they come, so a test can wait for a
line (the endpoint-down lines, the helper's exit) instead of sleeping."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable


class Watched:
    """``proc``'s stderr, line by line, read by a thread (the pipe never fills)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def matching(self, needle: str) -> list[str]:
        return [line for line in self.lines if needle in line]

    def wait_for(self, check: Callable[[Watched], object], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check(self):
            if self.proc.poll() is not None:
                self._reader.join(5)
                if check(self):
                    return
                raise AssertionError(f"exited ({self.proc.returncode}) before {what}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.text}")
            time.sleep(0.05)

    def finish(self, timeout: float = 30) -> int:
        """Wait for the process to exit and for its last lines (kill it after ``timeout``)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"did not exit within {timeout:.0f} s:\n{self.text}") from None
        self._reader.join(5)
        return code
