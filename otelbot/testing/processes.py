"""Small helpers for running the bot, the agent and servers as child processes, shared by
the tests, the demo and the benchmarks."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path


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
        raise RuntimeError("opentelemetry-instrument is not installed: pip install otelbot")
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
