"""Transactions held open across a Bot API call or an idle wait, found in a real aiogram
bot under opentelemetry-instrument; committing first, or several quick statements in one
transaction, make no finding. Also the detector on hand-built notes."""

from __future__ import annotations

import re

import pytest

from otelbot import semconv
from otelbot.diagnosis import notes
from otelbot.diagnosis.notes import Op, UpdateNotes
from otelbot.diagnosis.report import Finding
from otelbot.diagnosis.transaction import TransactionsHeldOpen
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import findings_bot


@pytest.mark.e2e
def test_a_send_or_a_long_wait_inside_a_transaction_is_found(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    event = semconv.EVENT_TRANSACTION_HELD_OPEN
    with findings_bot(
        "transaction_bot",
        fake_bot_api,
        otlp_receiver,
        bot_token,
        pg_dsn,
        redis_url,
        OTELBOT_TRANSACTION_IDLE_MS="250",  # /idle waits 500 ms
    ) as run:
        run.send("/commit_first", "/quick")
        run.wait_handled()
        run.send("/held")
        run.wait_handled()
        run.send("/idle")
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: len(run.findings(event)) >= 2, 30)
        run.send("/quick", "/commit_first")  # after the others: still healthy
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)

    held = run.findings(event, handler=".held")
    assert len(held) == 1, [f.body for f in held]
    a = held[0].attributes
    assert a[semconv.FINDING_OBJECT] == "sendMessage"
    assert a[semconv.TELEGRAM_API_METHOD] == "sendMessage"
    assert a[semconv.DB_COLLECTION_NAME] == "diag_tx_accounts"
    assert a[semconv.FINDING_EVIDENCE].startswith("a transaction was held open ")
    assert "1 Bot API call(s) sendMessage" in a[semconv.FINDING_EVIDENCE]
    assert "COMMIT" in a[semconv.FINDING_SUGGESTION]
    assert a[semconv.CODE_FILE_PATH].endswith("transaction_bot.py")
    assert a[semconv.CODE_FUNCTION_NAME] == "held"

    idle = run.findings(event, handler=".idle")
    assert len(idle) == 1, [f.body for f in idle]
    b = idle[0].attributes
    assert b[semconv.FINDING_OBJECT] == "idle"
    assert "ms without database work" in b[semconv.FINDING_EVIDENCE]
    waited = re.search(r"awaited (\d+) ms without database work", b[semconv.FINDING_EVIDENCE])
    assert waited and int(waited.group(1)) >= 490, b[semconv.FINDING_EVIDENCE]  # slept 500

    # The controls make none, and nothing else was found.
    for control in (".commit_first", ".quick"):
        assert not run.findings(event, handler=control)
    assert len(run.findings(event)) == 2, [f.body for f in run.findings(event)]

    # asyncpg's conn.transaction() sends BEGIN and COMMIT through Connection.execute: both
    # are traced in the /held update's trace, which the finding points at.
    update = next(
        s
        for s in otlp_receiver.spans("telegram.update message")
        if str(s.attributes.get("telegram.handler", "")).endswith(".held")
    )
    assert (update.trace_id, update.span_id) == (held[0].trace_id, held[0].span_id)
    names = [s.name for s in otlp_receiver.spans() if s.trace_id == update.trace_id]
    assert "BEGIN" in names and "COMMIT" in names, names


# --------------------------------------------------------- the detector on hand-built notes

A, B = 101, 202  # connection ids


def _sql(conn: int, operation: str, start: float, end: float, shape: str = "") -> Op:
    table = "diag_tx_accounts" if operation in ("UPDATE", "SELECT") else None
    return Op(notes.SQL, shape or operation, start, end, (conn, operation, table))


def _found(*ops: Op, idle_ms: str | None = None) -> list[Finding]:
    """Findings for an update of ``bot.pay`` made of ``ops`` (in the order they ended)."""
    update = UpdateNotes(None, "message", 0.0)
    update.ops.extend(ops)
    update.ended = max(op.end for op in ops) + 0.001
    update.handler = "bot.pay"
    found: list[Finding] = []
    with pytest.MonkeyPatch.context() as mp:
        if idle_ms is not None:
            mp.setenv("OTELBOT_TRANSACTION_IDLE_MS", idle_ms)
        TransactionsHeldOpen().on_update(update, found.append)
    return found


def test_an_http_call_between_two_statements_is_found() -> None:
    (finding,) = _found(
        _sql(A, "BEGIN", 0.000, 0.001),
        _sql(A, "UPDATE", 0.001, 0.002),
        Op(notes.HTTP, "GET api.example.com", 0.003, 0.050, None),
        _sql(A, "COMMIT", 0.051, 0.052),
    )
    assert finding.object == "GET api.example.com"
    assert finding.evidence == (
        "a transaction was held open 52.0 ms (BEGIN to COMMIT) while the handler awaited "
        "1 HTTP call(s) GET api.example.com (47.0 ms)"
    )
    assert finding.attributes[semconv.DB_COLLECTION_NAME] == "diag_tx_accounts"


def test_a_call_running_alongside_the_transaction_or_outside_it_is_not() -> None:
    assert not _found(  # asyncio.gather(save(), message.answer()): not awaited inside
        Op(notes.API, "sendMessage", 0.000, 0.040, (0, None, None)),
        _sql(A, "BEGIN", 0.001, 0.002),
        _sql(A, "UPDATE", 0.002, 0.003),
        _sql(A, "COMMIT", 0.003, 0.004),
    )
    assert not _found(  # on another connection, outside any transaction
        _sql(A, "BEGIN", 0.000, 0.001),
        _sql(B, "SELECT", 0.001, 0.002),
        _sql(A, "UPDATE", 0.002, 0.003),
        _sql(A, "COMMIT", 0.003, 0.004),
        Op(notes.API, "sendMessage", 0.005, 0.040, (0, None, None)),
    )


def test_rollback_to_a_savepoint_does_not_end_the_transaction() -> None:
    (finding,) = _found(
        _sql(A, "BEGIN", 0.000, 0.001),
        _sql(A, "SAVEPOINT", 0.001, 0.002, "SAVEPOINT s;"),
        _sql(A, "ROLLBACK", 0.002, 0.003, "ROLLBACK TO SAVEPOINT s;"),
        Op(notes.API, "sendMessage", 0.004, 0.020, (0, None, None)),
        _sql(A, "ROLLBACK", 0.021, 0.022, "ROLLBACK;"),
    )
    assert finding.object == "sendMessage"
    assert "(BEGIN to ROLLBACK)" in finding.evidence


def test_an_idle_gap_counts_from_the_setting() -> None:
    ops = (
        _sql(A, "BEGIN", 0.000, 0.001),
        _sql(A, "UPDATE", 0.001, 0.002),
        _sql(A, "UPDATE", 0.152, 0.153),  # 150 ms without a statement
        _sql(A, "COMMIT", 0.153, 0.154),
    )
    (finding,) = _found(*ops)  # default 100 ms
    assert finding.object == "idle"
    assert "awaited 150 ms without database work" in finding.evidence
    assert not _found(*ops, idle_ms="200")
    # Several quick statements: no gap reaches the threshold.
    quick = [_sql(A, "BEGIN", 0.0, 0.001)]
    quick += [_sql(A, "UPDATE", 0.002 * i, 0.002 * i + 0.001) for i in range(1, 20)]
    quick.append(_sql(A, "COMMIT", 0.05, 0.051))
    assert not _found(*quick)
    # Not closed within the update: not judged.
    assert not _found(_sql(A, "BEGIN", 0.0, 0.001), _sql(A, "UPDATE", 0.5, 0.501))
