"""The demo report's problem table and gauges, from records and points as the OTLP receiver
decodes them."""

from __future__ import annotations

from typing import Any

from otelbot import semconv
from otelbot.demo.analysis import Observed, analyse
from otelbot.testing.otlp_receiver import ReceivedLog, ReceivedPoint


def _log(event: str, time_ns: int, evidence: str = "e", **attributes: Any) -> ReceivedLog:
    a = {
        semconv.FINDING_EVIDENCE: evidence,
        semconv.FINDING_SUGGESTION: "s",
        semconv.FINDING_OBJECT: attributes.pop("object", ""),
        **attributes,
    }
    return ReceivedLog(f"{event}: {evidence}", event, "WARN", a, {}, "", time_ns)


def _point(name: str, value: float, time_ns: int, **attributes: Any) -> ReceivedPoint:
    return ReceivedPoint(name, "", "gauge", attributes, value, {}, time_ns=time_ns)


def _observed(logs: list[ReceivedLog], points: list[ReceivedPoint] | None = None) -> Observed:
    return Observed(10, [], points or [], logs, b"", 0, [], 0, {}, {}, "123:abc")


def test_one_row_per_event_handler_and_object_newest_text_bot_findings_first() -> None:
    h = semconv.TELEGRAM_HANDLER
    logs = [
        _log(semconv.EVENT_UNUSED_INDEX, 1, object="otelbot_demo.orders_note_idx"),
        _log(semconv.EVENT_FLOOD_WAIT, 2, "old", object="sendMessage", **{h: "handlers.b"}),
        _log(
            semconv.EVENT_FLOOD_WAIT,
            3,
            "new",
            object="sendMessage",
            **{
                h: "handlers.b",
                semconv.CODE_FILE_PATH: "/tmp/x/demo_bot/handlers.py",
                semconv.CODE_LINE_NUMBER: 42,
            },
        ),
        _log(semconv.EVENT_FLOOD_WAIT, 4, object="sendMessage", **{h: "handlers.a"}),
        _log(semconv.EVENT_UNUSED_INDEX, 5, object="public.someone_elses_idx"),
        _log("some.other.event", 6),
    ]
    report = analyse(_observed(logs))
    rows = [
        (f.source, f.kind, f.handler, f.object, f.evidence, f.code, f.records)
        for f in report.findings
    ]
    assert rows == [
        ("bot", "flood_wait", "a", "sendMessage", "e", "", 1),
        ("bot", "flood_wait", "b", "sendMessage", "new", "handlers.py:42", 2),
        ("postgresql", "unused_index", "", "otelbot_demo.orders_note_idx", "e", "", 1),
    ]
    assert report.other_findings == 1


def test_connections_and_users_newest_and_most_per_series() -> None:
    pool = {semconv.DB_CLIENT_CONNECTION_POOL_NAME: "db:5432/test"}
    points = [
        _point(
            semconv.DB_CLIENT_CONNECTION_COUNT.name,
            3,
            1,
            **pool,
            **{semconv.DB_CLIENT_CONNECTION_STATE: "used"},
        ),
        _point(
            semconv.DB_CLIENT_CONNECTION_COUNT.name,
            1,
            2,
            **pool,
            **{semconv.DB_CLIENT_CONNECTION_STATE: "used"},
        ),
        _point(semconv.DB_CLIENT_CONNECTION_MAX.name, 10, 2, **pool),
        _point(semconv.TELEGRAM_USERS_ACTIVE.name, 4, 1, **{semconv.TELEGRAM_USERS_WINDOW: "5m"}),
        _point(semconv.TELEGRAM_USERS_ACTIVE.name, 9, 2, **{semconv.TELEGRAM_USERS_WINDOW: "5m"}),
        _point(
            semconv.POSTGRESQL_BACKENDS.name,
            2,
            1,
            **{semconv.DB_NAMESPACE: "test", semconv.POSTGRESQL_BACKEND_STATE: "idle"},
        ),
    ]
    report = analyse(_observed([], points))
    assert [(g.what, g.last, g.max) for g in report.users] == [("5m window", 9, 9)]
    assert [(g.what, g.last, g.max) for g in report.connections.pool] == [
        ("db:5432/test max", 10, 10),
        ("db:5432/test used", 1, 3),
    ]
    assert [(g.what, g.last) for g in report.connections.server] == [
        ("test backends idle, application (none)", 2)
    ]
