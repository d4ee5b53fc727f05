"""``python -m otelbot.testing.otlp_receiver`` as a user runs it: a subprocess receiving
real OTLP from the SDK's exporters (HTTP and gRPC), printing one line per span, metric point
and log record (or JSON), and ending quietly on Ctrl+C."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

LISTENING = re.compile(
    r"otlp_receiver: listening on http://127\.0\.0\.1:(\d+) \(HTTP\) and 127\.0\.0\.1:(\d+) "
    r"\(gRPC\); Ctrl\+C to stop"
)
RESOURCE = Resource.create({"service.name": "cli-test"})


@dataclass
class Receiver:
    proc: subprocess.Popen[str]
    http: str
    grpc: str
    lines: list[str] = field(default_factory=list)

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(list(self.lines)):
                return list(self.lines)
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.05)
        raise AssertionError("not printed in time:\n" + "\n".join(self.lines))

    def interrupt(self) -> tuple[int, str]:
        """Ctrl+C; the exit code and what it wrote to stderr after the first line."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=15)
        return self.proc.returncode, err


@contextmanager
def receiver_process(*args: str) -> Iterator[Receiver]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otelbot.testing.otlp_receiver",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        first = proc.stderr.readline().strip()
        match = LISTENING.fullmatch(first)
        assert match, first + proc.stderr.read()
        receiver = Receiver(
            proc, f"http://127.0.0.1:{match.group(1)}", f"127.0.0.1:{match.group(2)}"
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                receiver.lines.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        yield receiver
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@dataclass
class Sent:
    trace_id: str
    checkout_span_id: str
    query_span_id: str


def send_telemetry(receiver: Receiver) -> Sent:
    """Two spans over HTTP (a parent and its failed child), one over gRPC, a counter and a
    histogram, and one log record, with the SDK's own OTLP exporters."""
    tracer_provider = TracerProvider(resource=RESOURCE)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.http}/v1/traces"))
    )
    tracer = tracer_provider.get_tracer("cli-test")
    with tracer.start_as_current_span("checkout", attributes={"order.id": 42}) as checkout:
        with tracer.start_as_current_span(
            "SELECT orders", kind=SpanKind.CLIENT, attributes={"db.system.name": "postgresql"}
        ) as query:
            query.set_status(Status(StatusCode.ERROR, "no rows"))
    tracer_provider.shutdown()

    grpc_provider = TracerProvider(resource=RESOURCE)
    grpc_provider.add_span_processor(
        SimpleSpanProcessor(GrpcSpanExporter(endpoint=receiver.grpc, insecure=True))
    )
    grpc_provider.get_tracer("cli-test").start_span("over grpc").end()
    grpc_provider.shutdown()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{receiver.http}/v1/metrics"),
        export_interval_millis=3_600_000,
    )
    meter_provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = meter_provider.get_meter("cli-test")
    meter.create_counter("orders.placed", unit="{order}").add(3, {"kind": "book"})
    histogram = meter.create_histogram("checkout.duration", unit="s")
    histogram.record(0.1)
    histogram.record(0.2)
    meter_provider.shutdown()  # exports once

    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{receiver.http}/v1/logs"))
    )
    logger_provider.get_logger("cli-test").emit(
        event_name="otelbot.test.disk_full",
        body="disk sda full",
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        attributes={"disk": "sda"},
    )
    logger_provider.shutdown()

    ctx, qctx = checkout.get_span_context(), query.get_span_context()
    return Sent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{qctx.span_id:016x}")


def test_prints_one_line_per_span_point_and_log_record_and_ends_quietly_on_ctrl_c() -> None:
    with receiver_process() as receiver:
        sent = send_telemetry(receiver)
        lines = receiver.wait_for(
            lambda ls: sum(line.startswith(("span ", "metric ", "log ")) for line in ls) >= 6
        )
        code, err = receiver.interrupt()

    assert len(lines) == 6, "\n".join(lines)  # nothing else on stdout
    spans = {line.split()[2]: line for line in lines if line.startswith("span ")}
    assert set(spans) == {"checkout", '"SELECT', '"over'}, lines

    checkout = spans["checkout"]
    assert checkout.startswith("span cli-test checkout INTERNAL "), checkout
    assert re.search(r" \d+\.\d{3}ms ", checkout), checkout
    assert f" trace={sent.trace_id} span={sent.checkout_span_id}" in checkout
    assert "parent=" not in checkout and checkout.endswith(" order.id=42"), checkout

    query = spans['"SELECT']
    assert query.startswith('span cli-test "SELECT orders" CLIENT '), query
    assert f" span={sent.query_span_id} parent={sent.checkout_span_id}" in query
    assert ' status=ERROR status.message="no rows" db.system.name=postgresql' in query
    assert spans['"over'].startswith('span cli-test "over grpc" INTERNAL '), spans['"over']

    assert "metric cli-test orders.placed sum value=3 unit={order} kind=book" in lines
    assert (
        "metric cli-test checkout.duration histogram count=2 sum=0.3 min=0.1 max=0.2 unit=s"
        in lines
    )
    assert 'log cli-test WARN "disk sda full" event=otelbot.test.disk_full disk=sda' in lines

    assert code == 0
    assert err == "", err  # no traceback, no goodbye


def test_json_lines_carry_every_field() -> None:
    with receiver_process("--json") as receiver:
        sent = send_telemetry(receiver)
        lines = receiver.wait_for(lambda ls: len(ls) >= 6)
        code, err = receiver.interrupt()
    assert (code, err) == (0, "")

    records = [json.loads(line) for line in lines]
    assert len(records) == 6
    by_signal: dict[str, list[dict[str, object]]] = {}
    for record in records:
        by_signal.setdefault(str(record["signal"]), []).append(record)
    assert {k: len(v) for k, v in by_signal.items()} == {"span": 3, "metric": 2, "log": 1}

    checkout = next(s for s in by_signal["span"] if s["name"] == "checkout")
    assert checkout["attributes"] == {"order.id": 42}
    assert checkout["trace_id"] == sent.trace_id and checkout["span_id"] == sent.checkout_span_id
    assert checkout["resource"]["service.name"] == "cli-test"  # type: ignore[index]
    query = next(s for s in by_signal["span"] if s["name"] == "SELECT orders")
    assert (query["kind"], query["status_code"], query["status_message"]) == (
        "CLIENT",
        2,
        "no rows",
    )
    assert query["parent_span_id"] == sent.checkout_span_id

    counter = next(p for p in by_signal["metric"] if p["name"] == "orders.placed")
    assert (counter["value"], counter["unit"], counter["attributes"]) == (
        3,
        "{order}",
        {"kind": "book"},
    )
    histogram = next(p for p in by_signal["metric"] if p["name"] == "checkout.duration")
    assert (histogram["count"], histogram["min"], histogram["max"]) == (2, 0.1, 0.2)

    (log,) = by_signal["log"]
    assert (log["body"], log["severity"], log["event_name"], log["attributes"]) == (
        "disk sda full",
        "WARN",
        "otelbot.test.disk_full",
        {"disk": "sda"},
    )


def test_an_address_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "otelbot.testing.otlp_receiver",
                "--http",
                f"127.0.0.1:{port}",
                "--no-grpc",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("otlp_receiver: cannot listen: "), proc.stderr


@pytest.mark.parametrize("bad", ["4318", "localhost:", ":4318", "host:99999"])
def test_a_bad_address_is_a_usage_error(bad: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "otelbot.testing.otlp_receiver", "--http", bad],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "expected HOST:PORT" in proc.stderr.splitlines()[-1]
