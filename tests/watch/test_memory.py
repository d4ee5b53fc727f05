"""watch's memory stays bounded: what is older than the retention goes, and past the span cap
the oldest traces go first."""

from __future__ import annotations

from otelbot.testing.otlp_receiver import decode_logs, decode_spans
from otelbot.watch.options import WatchOptions
from otelbot.watch.store import WatchStore
from tests.watch._bodies import updates
from tests.watch._running import RunningWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_fed_for_hours_the_store_keeps_only_the_retention() -> None:
    clock = Clock()
    store = WatchStore(retention=1800.0, max_spans=1_000_000, clock=clock)
    for _ in range(4 * 60):  # 4 hours, one export of 20 updates a minute
        store.add_spans(decode_spans(updates(20)))
        clock.now += 60.0
    store.trim()
    # 30 minutes of exports are kept: 30 x 20 updates, 2 spans each.
    assert store.update_count == 30 * 20
    assert store.span_count == 30 * 20 * 2
    assert store.trace_count == 30 * 20
    assert store.received["spans"] == 4 * 60 * 20 * 2
    assert store.dropped_spans == (4 * 60 - 30) * 20 * 2


def test_past_the_span_cap_whole_traces_go_oldest_first() -> None:
    running = RunningWatch(
        WatchOptions(otlp_http=("127.0.0.1", 0), otlp_grpc=None, ui=("127.0.0.1", 0), max_spans=500)
    ).start()
    try:
        for i in range(50):
            assert running.post("traces", updates(20, handler=f"__main__.h{i % 5}")) == 200
        health = running.get("/api/health")["watch"]
        assert health["spans_kept"] == 500
        assert health["traces_kept"] == 250
        assert health["dropped_spans"] == 50 * 40 - 500
        newest = running.get("/api/traces?limit=1000")
        assert len(newest) == 500  # update summaries are capped at max_spans too
        kept = [t for t in newest if t["spans"]]
        assert len(kept) == 250 and kept == newest[:250]  # the newest traces are the kept ones
    finally:
        running.stop()


def test_findings_and_series_are_capped() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    clock = Clock()
    store = WatchStore(retention=1800.0, max_findings=50, clock=clock)
    records = [LogRecord(event_name=f"otelbot.bot.kind{i}") for i in range(200)]
    body = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()
    store.add_logs(decode_logs(body))
    assert [f.event for f in store.findings][-1] == "otelbot.bot.kind199"
    assert len(store.findings) == 50
