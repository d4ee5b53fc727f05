"""Running a bot under the real ``opentelemetry-instrument`` command for end-to-end tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.processes import Child, instrument_command

ROOT = Path(__file__).resolve().parents[2]


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
) -> Iterator[Child]:
    """Start ``opentelemetry-instrument python script``; SIGTERM and wait on exit."""
    cmd = [sys.executable, str(script), *args]
    if instrumented:
        cmd = [instrument_command(), *cmd]
    with Child(cmd, env=env, cwd=ROOT, name=Path(script).name) as bot:
        yield bot
