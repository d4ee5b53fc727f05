"""N+1 findings from a real aiogram bot under opentelemetry-instrument: a loop of SQL
queries, a loop of Redis GETs and a loop of sends, each named with its handler, statement
and line; the healthy handler (one query, one MGET, one send) makes none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otelbot import semconv
from otelbot.diagnosis import notes
from otelbot.diagnosis.notes import UpdateNotes
from otelbot.diagnosis.repeated import RepeatedStatements
from otelbot.diagnosis.report import Finding
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedLog
from tests.diagnosis._harness import BOTS, findings_bot

BOT = BOTS / "repeated_bot.py"


def _line(marker: str, path: Path = BOT) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line)


def _one(found: list[ReceivedLog]) -> ReceivedLog:
    assert len(found) == 1, [f.body for f in found]
    return found[0]


@pytest.mark.e2e
def test_loops_of_queries_commands_and_sends_are_named_with_their_line(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    event = semconv.EVENT_N_PLUS_ONE
    with findings_bot(
        "repeated_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url
    ) as run:
        run.send("/healthy", "/healthy")
        run.wait_handled()
        run.send("/sql", "/cache", "/sends")
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: len(run.findings(event)) >= 3, 30)
        run.send("/healthy")  # after the loops: still healthy
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)

    sql = _one(run.findings(event, handler=".sql")).attributes
    text = "SELECT name FROM diag_repeated_items WHERE id = $1"
    assert sql[semconv.FINDING_OBJECT] == text
    assert sql[semconv.DB_QUERY_TEXT] == text
    assert sql[semconv.DB_COLLECTION_NAME] == "diag_repeated_items"
    assert sql[semconv.FINDING_EVIDENCE].startswith("6 times in one update")
    assert "of the update's" in sql[semconv.FINDING_EVIDENCE]
    assert "ANY($1)" in sql[semconv.FINDING_SUGGESTION]
    assert sql[semconv.CODE_FILE_PATH].endswith("repeated_bot.py")
    assert sql[semconv.CODE_FUNCTION_NAME] == "sql"
    assert sql[semconv.CODE_LINE_NUMBER] == _line("# N+1 SQL")

    cached = _one(run.findings(event, handler=".cache")).attributes
    assert cached[semconv.FINDING_OBJECT] == "GET ?"
    assert cached[semconv.FINDING_EVIDENCE].startswith("6 times in one update")
    assert "MGET" in cached[semconv.FINDING_SUGGESTION]
    assert cached[semconv.CODE_FUNCTION_NAME] == "cache"
    assert cached[semconv.CODE_LINE_NUMBER] == _line("# N+1 Redis")
    assert "diag_repeated:" not in str(cached)  # no raw keys

    sends = _one(run.findings(event, handler=".sends")).attributes
    assert sends[semconv.FINDING_OBJECT] == "sendMessage"
    assert sends[semconv.TELEGRAM_API_METHOD] == "sendMessage"
    assert sends[semconv.FINDING_EVIDENCE].startswith("5 times in one update")
    assert "queue" in sends[semconv.FINDING_SUGGESTION]
    assert sends[semconv.CODE_FUNCTION_NAME] == "sends"
    assert sends[semconv.CODE_LINE_NUMBER] == _line("# N+1 sends")

    # Three findings, nothing else: the control handler makes none.
    assert not run.findings(event, handler=".healthy")
    assert len(run.findings(event)) == 3, [f.body for f in run.findings(event)]
    # Each points at its own example update's span.
    spans = {
        (s.trace_id, s.span_id): str(s.attributes.get("telegram.handler", ""))
        for s in otlp_receiver.spans("telegram.update message")
    }
    for record in run.findings(event):
        assert spans[(record.trace_id, record.span_id)] == record.attributes["telegram.handler"]


@pytest.mark.e2e
def test_the_threshold_is_a_setting(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "repeated_bot",
        fake_bot_api,
        otlp_receiver,
        bot_token,
        pg_dsn,
        redis_url,
        OTELBOT_N_PLUS_ONE_MIN="6",
    ) as run:
        run.send("/sends", "/sql")  # five sends stay under six; six queries reach it
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: run.findings(semconv.EVENT_N_PLUS_ONE), 30)
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)
    found = run.findings(semconv.EVENT_N_PLUS_ONE)
    assert [f.attributes["telegram.handler"].rsplit(".", 1)[1] for f in found] == ["sql"]


# --------------------------------------------------------- the detector on hand-built notes


def _noted(ops: list[tuple[str, str, float, Any]], duration: float = 1.0) -> UpdateNotes:
    """An ended update of ``bot.items`` whose ops went through notes.note() (kind, shape,
    seconds, extra), one after the other."""
    update = UpdateNotes(None, "message", 0.0)
    token = notes.current.set(update)
    try:
        t = 0.0
        for kind, shape, seconds, extra in ops:
            notes.note(kind, shape, t, t + seconds, extra)  # repeated here
            t += seconds
    finally:
        notes.current.reset(token)
    update.ended = duration
    update.handler = "bot.items"
    return update


def _found(update: UpdateNotes) -> list[Finding]:
    found: list[Finding] = []
    RepeatedStatements().on_update(update, found.append)
    return found


@pytest.fixture(autouse=True)
def threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notes, "repeat_threshold", notes.repeat_threshold)


INSERT = "INSERT INTO diag_repeated_log (item) VALUES ($1)"


def test_a_statement_repeated_up_to_the_threshold_is_found_with_its_share_and_line() -> None:
    update = _noted([(notes.SQL, INSERT, 0.1, (1, "INSERT", "diag_repeated_log"))] * 5)
    (finding,) = _found(update)
    assert finding.object == INSERT
    assert finding.evidence.startswith("5 times in one update, 500.0 ms in total: 50% of ")
    assert "executemany" in finding.suggestion  # a write: the suggestion fits it
    assert finding.attributes[semconv.DB_COLLECTION_NAME] == "diag_repeated_log"
    assert finding.code is not None
    assert finding.code.function == "_noted" and finding.code.file == __file__
    assert finding.code.line == _line("# repeated here", Path(__file__))


def test_under_the_threshold_or_spread_over_shapes_is_not_found() -> None:
    assert not _found(_noted([(notes.SQL, INSERT, 0.01, (1, "INSERT", "t"))] * 4))
    spread = [(notes.SQL, f"SELECT {i}", 0.01, (1, "SELECT", None)) for i in range(10)]
    assert not _found(_noted(spread))
    # Pool waits and plain HTTP calls are not statements of the bot.
    assert not _found(_noted([(notes.POOL_WAIT, "db", 0.01, 5)] * 6))


def test_transaction_control_is_not_counted() -> None:
    ops: list[tuple[str, str, float, Any]] = []
    for i in range(6):
        ops.append((notes.SQL, "BEGIN;", 0.001, (1, "BEGIN", None)))
        ops.append((notes.SQL, f"UPDATE t{i} SET x = 1", 0.001, (1, "UPDATE", f"t{i}")))
        ops.append((notes.SQL, "COMMIT;", 0.001, (1, "COMMIT", None)))
    assert not _found(_noted(ops))


def test_the_threshold_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELBOT_N_PLUS_ONE_MIN", "3")
    detector = RepeatedStatements()  # sets the threshold note() looks up the line at
    update = _noted([(notes.REDIS, "INCR ?", 0.001, None)] * 3)
    found: list[Finding] = []
    detector.on_update(update, found.append)
    assert [f.object for f in found] == ["INCR ?"]
    assert "pipeline" in found[0].suggestion
