"""The demo report's problem table (from the findings a watch store keeps) and gauges (from
every point received), fed records and points as the OTLP decoder gives them."""

from __future__ import annotations

from typing import Any

from otelbot import semconv
from otelbot.demo.analysis import Observed, analyse
from otelbot.testing.otlp_receiver import ReceivedLog, ReceivedPoint, ReceivedSpan
from otelbot.watch.store import WatchStore


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
    store = WatchStore()
    store.add_logs(logs)
    store.add_points(points or [])
    return Observed(10, store, points or [], b"", 0, [], 0, {}, {}, "123:abc")


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


def _span(
    name: str, trace: str, span: str, parent: str, start_ms: int, end_ms: int, **attributes: Any
) -> ReceivedSpan:
    return ReceivedSpan(
        name,
        "INTERNAL",
        trace,
        span,
        parent,
        start_ms * 1_000_000,
        end_ms * 1_000_000,
        attributes,
        [],
        2 if attributes.pop("error", False) else 0,
        "",
        {"service.name": "demo-bot"},
        "test",
    )


def test_latency_waterfall_and_statements_come_from_the_watch_store() -> None:
    h = semconv.TELEGRAM_HANDLER
    sql = {semconv.DB_SYSTEM_NAME: semconv.DB_SYSTEM_POSTGRESQL}
    spans = [
        _span("telegram.update message", "t1", "r1", "", 0, 10, **{h: "handlers.fast"}),
        _span("telegram.update message", "t2", "r2", "", 0, 30, error=True, **{h: "handlers.fast"}),
        _span("telegram.update message", "t3", "r3", "", 100, 400, **{h: "handlers.slow"}),
        # children out of start order and nested: the waterfall is drawn in tree order
        _span("telegram.api sendMessage", "t3", "c2", "r3", 300, 390),
        _span("SELECT t", "t3", "c1", "r3", 110, 200, **sql, **{semconv.DB_QUERY_TEXT: "SELECT 1"}),
        _span("pool.acquire", "t3", "g1", "c1", 120, 130),
        _span("SELECT t", "t1", "c3", "r1", 1, 5, **sql, **{semconv.DB_QUERY_TEXT: "SELECT 1"}),
    ]
    store = WatchStore()
    store.add_spans(spans)
    observed = Observed(10, store, [], b"", 0, [], 0, {}, {}, "123:abc", service="demo-bot")
    report = analyse(observed)

    assert report.updates_traced == 3 and report.spans == len(spans)
    assert [(r.handler, r.updates, r.errors, r.max) for r in report.latency] == [
        ("slow", 1, 0, 0.3),
        ("fast", 2, 1, 0.03),
    ]
    assert report.slowest_handler == "slow"
    assert [(r.depth, r.name, round(r.offset, 3)) for r in report.slowest] == [
        (0, "telegram.update message", 0.0),
        (1, "SELECT t", 0.01),
        (2, "pool.acquire", 0.02),
        (1, "telegram.api sendMessage", 0.2),
    ]
    assert report.slowest[0].detail == "handler slow, outcome ?"
    (statement,) = report.statements
    assert (statement.text, statement.calls, sorted(statement.handlers)) == (
        "SELECT 1",
        2,
        ["fast", "slow"],
    )
    assert report.summary["updates_kept"] == 3 and report.summary["errors"] == 1
