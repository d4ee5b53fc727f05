"""The OTLP endpoint down, then back, under the real ``opentelemetry-instrument``: one
otelbot line per signal when it goes down and one when it is back, instead of the SDK's
"Transient error … retrying" / "Failed to export" lines at every export."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otelbot.export import endpoint
from otelbot.export.offload import export_processor
from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.processes import Child, free_port, instrument_command

# A bot that makes a span, a data point and a log record every 0.1 s until SIGTERM. Its
# logging goes to stderr (as most bots' does); otelbot's at DEBUG, to see every failure.
BOT = """
import logging, signal, sys, time
from opentelemetry import metrics, trace

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("otelbot").setLevel(logging.DEBUG)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
tracer = trace.get_tracer("endpoint-test")
ticks = metrics.get_meter("endpoint-test").create_counter("endpoint.test.ticks")
root_handlers = logging.getLogger().handlers
quiet = logging.getLogger("endpoint.test")
quiet.propagate = False  # exported by OTel's logging handler, not printed
quiet.handlers = [h for h in root_handlers if type(h).__name__ == "LoggingHandler"]
print("ready", flush=True)
while True:
    with tracer.start_as_current_span("tick"):
        ticks.add(1)
        quiet.warning("tick")
    time.sleep(0.1)
"""

SDK_LINES = ("Transient error", "Failed to export", "Queue full", "Traceback")
ITEMS = {"traces": "spans", "metrics": "data points", "logs": "log records"}


def down_line(items: str) -> str:
    return f"otelbot: cannot export {items} to "


def back_line(items: str) -> str:
    return f" takes {items} again; "


def still_down_line(items: str) -> str:
    return f" still does not take {items}: "


def bot_env(port: int, protocol: str, traces_exporter: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME="endpoint-test",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",  # a failed export gives up after one retry
        OTEL_TRACES_EXPORTER=traces_exporter,
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_BLRP_SCHEDULE_DELAY="200",
        OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true",
        PYTHONUNBUFFERED="1",
    )
    return env


def check_one_down_and_one_back(out: Child, port: int, reason: str) -> None:
    """Per signal: one line down (naming the endpoint and why), at least one failure after
    it (so the SDK would have printed again), one line back that counts what was lost; and
    none of the SDK's own lines."""
    for items in ITEMS.values():
        down = out.matching(down_line(items))
        back = out.matching(back_line(items))
        assert len(down) == 1 and len(back) == 1, out.output
        assert f"127.0.0.1:{port}" in down[0] and f"({reason})" in down[0]
        assert out.output.index(down[0]) < out.output.index(back[0])
        counts = re.search(r"(\d+) exports had failed, (\d+) ", back[0])
        assert counts and int(counts.group(1)) >= 2 and int(counts.group(2)) > 0, back[0]
    for sdk_line in SDK_LINES:
        assert out.matching(sdk_line) == [], out.output


@pytest.mark.parametrize(
    ("traces_exporter", "protocol", "reason"),
    [
        ("otelbot_offload", "http/protobuf", "Connection refused"),  # spans from the helper
        ("otlp", "http/protobuf", "Connection refused"),  # the SDK's exporter in the bot
        ("otelbot_otlp", "http/protobuf", "Connection refused"),  # ours, in the bot
        ("otelbot_offload", "grpc", "UNAVAILABLE"),
    ],
)
def test_bot_says_once_when_the_endpoint_is_down_and_once_when_it_is_back(
    tmp_path: Path, traces_exporter: str, protocol: str, reason: str
) -> None:
    script = tmp_path / "bot.py"
    script.write_text(BOT)
    port = free_port()  # nothing listens there yet
    out = Child(
        [instrument_command(), sys.executable, str(script)],
        env=bot_env(port, protocol, traces_exporter),
    )
    receiver = OtlpReceiver(
        http_port=0 if protocol == "grpc" else port,
        grpc_port=port if protocol == "grpc" else None,
    )
    try:
        # Down: a line per signal, then failures that only log at DEBUG (as otelbot is here).
        for items in ITEMS.values():
            out.wait_for_line(still_down_line(items), 60)
        receiver.start()
        for items in ITEMS.values():
            out.wait_for_line(back_line(items), 60)
        receiver.wait_for(lambda r: r.spans("tick") and r.points() and r.logs(), 30)
    finally:
        code = out.stop(30)  # SIGTERM, as a supervisor would
        receiver.stop()
    assert code == 0, out.output
    check_one_down_and_one_back(out, port, reason)


def test_the_filter_hides_the_failure_lines_of_watched_signals_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint.install()
    endpoint.WatchedMetricExporter(OTLPMetricExporter(endpoint=f"http://127.0.0.1:{free_port()}"))
    sdk = logging.getLogger("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    with caplog.at_level(logging.INFO):
        sdk.warning("Exporter already shutdown, ignoring batch")
        sdk.error("Failed to export %s batch code: %s, reason: %s", "metrics", 404, "Not Found")
    assert [r.getMessage() for r in caplog.records] == ["Exporter already shutdown, ignoring batch"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            "Transient error HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded "
            'with url: /v1/traces (Caused by NewConnectionError("HTTPConnection(host='
            "'127.0.0.1', port=1): Failed to establish a new connection: [Errno 111] "
            'Connection refused")) encountered while exporting spans batch, retrying in 1.02s.',
            "Connection refused",
        ),
        ("Failed to export spans batch code: 404, reason: Not Found", "HTTP 404 Not Found"),
        (
            "Transient error StatusCode.UNAVAILABLE encountered while exporting traces to "
            "127.0.0.1:1, retrying in 0.93s. Error details: failed to connect to all addresses",
            "UNAVAILABLE",
        ),
        ("Failed to export spans batch due to timeout, max retries or shutdown.", None),
    ],
)
def test_the_reason_in_the_down_line_is_short(line: str, reason: str | None) -> None:
    assert endpoint.short_reason(line) == reason


def test_the_sdk_exporter_is_watched_behind_its_batch_processor() -> None:
    provider = TracerProvider()
    processor = export_processor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{free_port()}"))
    provider.add_span_processor(processor)
    exporter = processor.span_exporter  # type: ignore[attr-defined]
    assert isinstance(exporter, endpoint.WatchedSpanExporter)
    assert isinstance(exporter.inner, OTLPSpanExporter)
    provider.shutdown()


class StuckExporter(SpanExporter):
    """An exporter whose endpoint hangs until ``release`` is set, then refuses."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._endpoint = "http://stuck.invalid:4318/v1/traces"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        return SpanExportResult.FAILURE


def test_a_full_queue_is_said_once_not_for_every_span(caplog: pytest.LogCaptureFixture) -> None:
    endpoint.install()
    stuck = StuckExporter()
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(
            endpoint.WatchedSpanExporter(stuck), max_queue_size=4, max_export_batch_size=4
        )
    )
    with caplog.at_level(logging.INFO):
        for _ in range(50):  # at most 4 queued and 4 being exported: the rest is dropped
            provider.get_tracer("t").start_span("x").end()
        stuck.release.set()
        provider.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith("Queue full")], messages
    assert len([m for m in messages if "the export queue of spans is full" in m]) == 1, messages
    assert len([m for m in messages if "cannot export spans to http://stuck" in m]) == 1
