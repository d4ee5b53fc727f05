"""The finding record: its log record, span event, counter and rate limit; the detector
host's switch and error containment."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from otelbot import semconv
from otelbot.diagnosis import engine
from otelbot.diagnosis.notes import SQL, CodeLocation, UpdateNotes, current, note
from otelbot.diagnosis.report import Finding, Reporter
from otelbot.testing.memory import MemoryTelemetry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _logs() -> tuple[LoggerProvider, InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider, exporter


def _finding(obj: str = "SELECT 1", handler: str | None = "bot.list") -> Finding:
    return Finding(
        semconv.EVENT_N_PLUS_ONE,
        handler,
        obj,
        "bot.list runs one statement per row:",
        "10 x `SELECT 1` in one update",
        "fetch the rows in one query",
        code=CodeLocation("list", "/srv/bot.py", 42),
        attributes={semconv.DB_QUERY_TEXT: obj, semconv.DB_COLLECTION_NAME: None},
    )


def test_a_finding_is_a_warn_log_record_on_the_example_update_and_a_span_event(
    telemetry: MemoryTelemetry,
) -> None:
    provider, exporter = _logs()
    meter = telemetry.meter_provider.get_meter("t")
    reporter = Reporter(meter, provider, interval=60, clock=Clock())
    tracer = telemetry.tracer_provider.get_tracer("t")
    span = tracer.start_span("telegram.update message")
    assert reporter.report(_finding(), span)
    span.end()
    (record,) = [r.log_record for r in exporter.get_finished_logs()]
    assert record.event_name == semconv.EVENT_N_PLUS_ONE
    assert record.severity_text == "WARN"
    assert record.trace_id == span.get_span_context().trace_id
    assert record.span_id == span.get_span_context().span_id
    assert str(record.body).startswith("bot.list runs one statement per row: 10 x")
    assert str(record.body).endswith("Suggested: fetch the rows in one query")
    attrs = dict(record.attributes or {})
    assert attrs[semconv.TELEGRAM_HANDLER] == "bot.list"
    assert attrs[semconv.FINDING_OBJECT] == "SELECT 1"
    assert attrs[semconv.CODE_FILE_PATH] == "/srv/bot.py"
    assert attrs[semconv.CODE_LINE_NUMBER] == 42
    assert attrs[semconv.DB_QUERY_TEXT] == "SELECT 1"
    assert semconv.DB_COLLECTION_NAME not in attrs  # None values are left out
    (ended,) = telemetry.spans()
    (event,) = ended.events
    assert event.name == semconv.SPAN_EVENT_FINDING
    assert event.attributes[semconv.FINDING_KIND] == semconv.EVENT_N_PLUS_ONE
    (point,) = telemetry.points(semconv.OTELBOT_FINDINGS.name)
    assert point.value == 1
    assert point.attributes == {
        semconv.FINDING_KIND: semconv.EVENT_N_PLUS_ONE,
        semconv.TELEGRAM_HANDLER: "bot.list",
    }


def test_the_same_finding_goes_out_once_per_interval(telemetry: MemoryTelemetry) -> None:
    provider, exporter = _logs()
    clock = Clock()
    reporter = Reporter(telemetry.meter_provider.get_meter("t"), provider, 60, clock)
    assert reporter.report(_finding())
    clock.now += 59
    assert not reporter.report(_finding())
    assert reporter.report(_finding("SELECT 2"))  # another object: its own key
    assert reporter.report(_finding(handler="bot.other"))  # another handler too
    clock.now += 2
    assert reporter.report(_finding())
    assert len(exporter.get_finished_logs()) == 4
    counts = {
        p.attributes.get(semconv.TELEGRAM_HANDLER): p.value
        for p in telemetry.points(semconv.OTELBOT_FINDINGS.name)
    }
    assert counts == {"bot.list": 3, "bot.other": 1}


def test_without_an_update_span_the_record_has_no_trace(telemetry: MemoryTelemetry) -> None:
    provider, exporter = _logs()
    reporter = Reporter(telemetry.meter_provider.get_meter("t"), provider, 60, Clock())
    assert reporter.report(_finding(handler=None))
    (record,) = [r.log_record for r in exporter.get_finished_logs()]
    assert not record.trace_id
    assert semconv.TELEGRAM_HANDLER not in dict(record.attributes or {})


class Boom(engine.Detector):
    event = "otelbot.bot.boom"

    def on_update(self, update: UpdateNotes, found: Any) -> None:
        raise RuntimeError("a bug in a detector")


class Count(engine.Detector):
    event = semconv.EVENT_N_PLUS_ONE

    def on_update(self, update: UpdateNotes, found: Any) -> None:
        shapes = [op.shape for op in update.ops]
        if shapes.count("SELECT 1") >= 2:
            found(_finding(handler=update.handler))


def test_the_host_runs_detectors_on_sampled_updates_only_and_contains_their_errors(
    telemetry: MemoryTelemetry,
) -> None:
    provider, exporter = _logs()
    meter = telemetry.meter_provider.get_meter("t")
    host = engine.Diagnosis(meter, [Boom(), Count()], Reporter(meter, provider, 60, Clock()))
    tracer = telemetry.tracer_provider.get_tracer("t")
    span = tracer.start_span("telegram.update message")
    notes = host.begin(span, "message")
    assert notes is not None and current.get() is notes
    note(SQL, "SELECT 1", 0.0, 0.1)
    note(SQL, "SELECT 1", 0.2, 0.3)
    host.end(notes, "bot.list", "handled")
    span.end()
    assert current.get() is None
    assert [op.shape for op in notes.ops] == ["SELECT 1", "SELECT 1"]
    assert len(exporter.get_finished_logs()) == 1  # Boom's error did not stop Count
    note(SQL, "SELECT 1", 0.0, 0.1)  # outside an update: nowhere to go, no error
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    assert host.begin(NonRecordingSpan(SpanContext(1, 1, False)), "message") is None


def test_findings_off_means_no_detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    engine.reset()
    monkeypatch.setenv("OTELBOT_FINDINGS", "off")
    try:
        assert engine.diagnosis(None) is None
    finally:
        engine.reset()


def test_a_bad_setting_is_one_warning_and_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from otelbot.core import config

    monkeypatch.setenv("OTELBOT_TEST_SETTING", "lots")
    with caplog.at_level("WARNING", logger="otelbot"):
        assert config.number("OTELBOT_TEST_SETTING", 5, minimum=1) == 5
        assert config.number("OTELBOT_TEST_SETTING", 5, minimum=1) == 5
    assert [r.getMessage() for r in caplog.records] == [
        "OTELBOT_TEST_SETTING='lots' is not a number >= 1; using 5"
    ]
    monkeypatch.setenv("OTELBOT_TEST_SETTING", "7.5")
    assert config.number("OTELBOT_TEST_SETTING", 5, minimum=1) == 7.5
