"""``otelbot watch`` as a command: plain log lines, the live table on a terminal, a clear line
when it cannot listen, and --forward teeing exports unchanged to a collector."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.processes import Child, free_port
from tests.watch._bodies import updates

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _command(http: int, grpc: int, ui: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "otelbot.cli", "watch",
        "--otlp-http", f"127.0.0.1:{http}", "--otlp-grpc", f"127.0.0.1:{grpc}",
        "--ui", f"127.0.0.1:{ui}", *extra,
    ]  # fmt: skip


def _post(http: int, body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{http}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_without_a_terminal_it_logs_a_status_line_and_stops_on_sigterm() -> None:
    http, grpc, ui = free_port(), free_port(), free_port()
    cmd = _command(http, grpc, ui, "--log-interval", "0.5s")
    with Child(cmd, cwd=ROOT, name="otelbot-watch") as watch:
        line = watch.wait_for_line("listening", 30)
        assert f"page http://127.0.0.1:{ui}/" in line
        assert f"OTLP/HTTP http://127.0.0.1:{http}" in line
        assert f"OTLP/gRPC 127.0.0.1:{grpc}" in line
        assert _post(http, updates(3, handler="__main__.start")) == 200
        status = watch.wait_for_line("__main__.start p95", 30)
        assert "1 service(s)" in status and "6 spans kept" in status
        watch.proc.send_signal(signal.SIGTERM)
        assert watch.proc.wait(20) == 0
        watch.wait_for_line("otelbot watch: stopped", 10)


def test_on_a_terminal_it_shows_the_live_table_with_the_page_url() -> None:
    http, grpc, ui = free_port(), free_port(), free_port()
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        _command(http, grpc, ui), cwd=ROOT, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        posted = False
        while time.monotonic() < deadline and b"__main__.tui" not in seen:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
            if not posted and b"listening" in seen:
                posted = _post(http, updates(2, handler="__main__.tui")) == 200
        text = seen.decode(errors="replace")
        assert f"http://127.0.0.1:{ui}/" in text
        assert "__main__.tui" in text, text[-2000:]
        assert "p95 ms" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        os.close(master)
    assert proc.returncode == 0


def test_an_address_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            _command(free_port(), free_port(), port, "--no-tui"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.startswith("otelbot watch: cannot listen:"), done.stderr
    assert "Traceback" not in done.stderr


def test_forward_tees_each_export_unchanged_to_a_collector() -> None:
    http, grpc, ui = free_port(), free_port(), free_port()
    with OtlpReceiver(grpc_port=None) as collector:
        cmd = _command(http, grpc, ui, "--no-tui", "--forward", collector.http_endpoint)
        with Child(cmd, cwd=ROOT, name="otelbot-watch") as watch:
            watch.wait_for_line("listening", 30)
            bodies = [updates(2, handler="__main__.forwarded") for _ in range(3)]
            for body in bodies:
                assert _post(http, body) == 200
            collector.wait_for(lambda r: len(r.raw) >= 3, timeout=30)
        assert sorted(collector.raw) == sorted(bodies)
        assert len(collector.spans("telegram.update message")) == 6


def test_with_no_flags_it_receives_what_the_sdk_sends_with_no_endpoint_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK's default endpoints (OTLP/HTTP localhost:4318, OTLP/gRPC localhost:4317) are
    watch's defaults. Skips when something else on this machine holds those ports."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    for name in list(os.environ):
        if name.startswith("OTEL_EXPORTER_OTLP"):
            monkeypatch.delenv(name)
    with Child(
        [sys.executable, "-m", "otelbot.cli", "watch", "--no-tui"], cwd=ROOT, name="watch"
    ) as watch:
        try:
            watch.wait_for_line("listening", 30)
        except Exception:
            if "cannot listen" in watch.output:
                pytest.skip(f"the default ports are in use here: {watch.tail(2)}")
            raise
        for exporter, service in (
            (OTLPSpanExporter(), "default-http"),
            (GrpcSpanExporter(insecure=True), "default-grpc"),
        ):
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            attributes = {"telegram.handler": "__main__.start"}
            provider.get_tracer("t").start_span(
                "telegram.update message", attributes=attributes
            ).end()
            provider.shutdown()
        with urllib.request.urlopen("http://127.0.0.1:4320/api/handlers", timeout=10) as r:
            rows = json.loads(r.read())
    assert sorted((row["service"], row["count"]) for row in rows) == [
        ("default-grpc", 1),
        ("default-http", 1),
    ]
