"""Running a bot under the real ``opentelemetry-instrument`` command for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.processes import instrument_command, stop_process

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BotProcess:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited early ({self.proc.returncode}):\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"bot did not print {needle!r} within {timeout}s:\n{self.output}")


def otel_env(
    receiver: OtlpReceiver, service: str, protocol: str = "http/protobuf", **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint
            if protocol.startswith("http")
            else "http://" + receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
            "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@contextmanager
def run_instrumented(
    script: Path | str, env: dict[str, str], *args: str, instrumented: bool = True
) -> Iterator[BotProcess]:
    """Start ``opentelemetry-instrument python script``; SIGTERM and wait on exit."""
    cmd = [sys.executable, str(script), *args]
    if instrumented:
        cmd = [instrument_command(), *cmd]
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    bot = BotProcess(proc)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            bot.lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield bot
    finally:
        stop_process(proc, 20)
        reader.join(5)
