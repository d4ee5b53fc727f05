"""Running the bot, the agent and servers as child processes, shared by the tests, the demo
and the benchmarks::

    from otelbot.testing.processes import Child, instrument_command

    with Child([instrument_command(), sys.executable, "bot.py"], env=env) as bot:
        bot.wait_for_line("polling", timeout=30)   # ChildError if it exits or stays silent
        ...
    print(bot.output)                              # SIGTERM on exit, then everything it printed

A thread reads the child's output (stdout and stderr together) line by line, so a chatty
child never blocks on a full pipe and a test can wait for a line.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: How long a child's output is still read after it exited, before a wait gives up.
_AFTER_EXIT = 2.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sibling_command(name: str) -> str | None:
    """A console script installed next to this Python (the venv's), else one on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def instrument_command() -> str:
    """The ``opentelemetry-instrument`` command of this Python's environment."""
    found = sibling_command("opentelemetry-instrument")
    if not found:
        raise RuntimeError(
            f"opentelemetry-instrument is not installed next to {sys.executable}: "
            "pip install otelbot"
        )
    return found


def stop_process(proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
    """SIGTERM (so exporters flush), then SIGKILL after ``timeout``; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


class ChildError(RuntimeError):
    """A child exited, or did not print what was waited for in time. The message ends
    with the last lines it printed."""


class Child:
    """A child process whose output a thread collects line by line. As a context manager
    it stops the child (SIGTERM, then SIGKILL) on exit."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        stdin: bool = False,
        name: str | None = None,
        new_session: bool = False,
    ) -> None:
        self.name = name or Path(cmd[0]).name
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            list(cmd),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            text=True,
            errors="replace",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            # Its own process group, as a shell gives a command (for a Ctrl+C to the group).
            start_new_session=new_session,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def output(self) -> str:
        """Everything the child printed so far."""
        return "".join(self.lines)

    def matching(self, needle: str) -> list[str]:
        """The lines printed so far that contain ``needle`` (without their newline)."""
        return [line.rstrip("\n") for line in self.lines if needle in line]

    def tail(self, n: int = 15) -> str:
        """The last ``n`` lines it printed."""
        return "".join(self.lines[-n:]).rstrip()

    def wait_for_line(self, needle: str, timeout: float = 30.0) -> str:
        """The first line that contains ``needle`` (without its newline), waiting up to
        ``timeout`` seconds for it; ``ChildError`` if the child exits without printing it."""
        deadline = time.monotonic() + timeout
        exited_at: float | None = None
        with self._changed:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line.rstrip("\n")
                now = time.monotonic()
                if exited_at is None and self.proc.poll() is not None:
                    exited_at = now
                # After an exit, read on until the output ends (a child of the child may
                # hold the pipe open, so not forever).
                if exited_at is not None and (
                    not self._reader.is_alive() or now - exited_at > _AFTER_EXIT
                ):
                    raise ChildError(
                        f"{self.name} exited ({self.proc.returncode}) without printing "
                        f"{needle!r}:\n{self.tail(40)}"
                    )
                if now >= deadline:
                    raise ChildError(
                        f"{self.name} did not print {needle!r} within {timeout:g} s:\n"
                        f"{self.tail(40)}"
                    )
                self._changed.wait(min(deadline - now, 0.1))

    def ask(self, command: str, timeout: float = 10.0) -> str:
        """Write one line to the child's stdin (``stdin=True``) and return the next line
        it prints."""
        assert self.proc.stdin is not None, "started without stdin=True"
        with self._changed:
            seen = len(self.lines)
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.lines) <= seen:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise ChildError(f"{self.name}: no answer to {command!r}:\n{self.tail()}")
                self._changed.wait(min(left, 0.1))
            return self.lines[seen].strip()

    def wait(self, timeout: float = 30.0) -> int:
        """Wait until the child has exited and its output has ended, which is when every
        process writing to it has exited too (its own children, such as the span export
        helper, inherit it); the exit code. ``ChildError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ChildError(
                f"{self.name} still runs after {timeout:g} s:\n{self.tail()}"
            ) from None
        self._reader.join(max(0.0, deadline - time.monotonic()))
        if self._reader.is_alive():
            raise ChildError(
                f"{self.name} exited ({code}), but a process it started still holds its "
                f"output after {timeout:g} s"
            )
        return int(code)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, SIGKILL after ``timeout``; then the rest of its output. The exit code."""
        code = stop_process(self.proc, timeout)
        self._reader.join(5)
        return code

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
