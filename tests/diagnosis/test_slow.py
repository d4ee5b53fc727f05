"""Slow handler findings from a real aiogram bot under opentelemetry-instrument: each slow
handler named with the cause its time goes to."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.diagnosis import slow, steps
from otelbot.diagnosis.notes import API, POOL_WAIT, SQL, Op, UpdateNotes
from otelbot.diagnosis.report import Finding
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import UPDATE_SPAN, findings_bot
from tests.diagnosis._settle import findings_counted


@pytest.mark.e2e
def test_slow_handlers_are_named_with_the_slow_call_or_statement_and_the_fast_one_is_not(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "slow_bot",
        fake_bot_api,
        otlp_receiver,
        bot_token,
        pg_dsn,
        redis_url,
        POOL_MAX="12",
        OTELBOT_SLOW_HANDLER_MIN_UPDATES="5",  # the default (20) is tested below
    ) as run:
        run.send(*["/fast"] * 6)
        run.wait_handled()
        fake_bot_api.script("sendDocument", [Fault.ok(delay=1.2)] * 5)
        run.send(*["/upload", "/report"] * 5)
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: len(run.findings(semconv.EVENT_SLOW_HANDLER)) >= 2, 20)
        counted = findings_counted(run)
    mine = (semconv.EVENT_BLOCKED_LOOP, semconv.EVENT_SLOW_HANDLER)
    assert sorted(key for key in counted if key[0] in mine) == [
        (semconv.EVENT_SLOW_HANDLER, "__main__.report"),
        (semconv.EVENT_SLOW_HANDLER, "__main__.upload"),
    ]
    by_handler = {
        f.attributes["telegram.handler"]: f for f in run.findings(semconv.EVENT_SLOW_HANDLER)
    }
    assert sorted(by_handler) == ["__main__.report", "__main__.upload"]

    upload = by_handler["__main__.upload"]
    a = upload.attributes
    assert a[semconv.TELEGRAM_API_METHOD] == "sendDocument"
    assert a[semconv.FINDING_OBJECT] == "api: sendDocument"
    assert "goes to the Bot API (sendDocument)" in upload.body
    assert "file_id" in a[semconv.FINDING_SUGGESTION]
    assert a[semconv.CODE_FUNCTION_NAME] == "upload"
    assert a[semconv.CODE_FILE_PATH].endswith("slow_bot.py")

    report = by_handler["__main__.report"]
    a = report.attributes
    assert a[semconv.DB_QUERY_TEXT] == "SELECT pg_sleep(?) AS slow_report"
    assert "goes to SQL (SELECT pg_sleep(?) AS slow_report)" in report.body
    assert "EXPLAIN" in a[semconv.FINDING_SUGGESTION]
    assert a[semconv.CODE_FUNCTION_NAME] == "report"

    assert not [f for f in run.findings(handler=".fast") if f.event_name in mine]


@pytest.mark.e2e
def test_a_handler_slow_only_because_the_loop_is_busy_with_others_is_not_found(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    """80 /crowd updates at once keep the loop busy for seconds: each takes well over the
    threshold, waiting for the loop, with 40 ms of its own work: not found. /nap waits 1.5 s
    on something untraced, on a calm loop: found, with that cause."""
    with findings_bot(
        "slow_bot",
        fake_bot_api,
        otlp_receiver,
        bot_token,
        pg_dsn,
        redis_url,
        OTELBOT_SLOW_HANDLER_MIN_UPDATES="5",
    ) as run:
        run.send(*["/nap"] * 6)
        run.wait_handled()
        for _ in range(3):
            run.send(*["/crowd"] * 80)
            run.wait_handled()
        otlp_receiver.wait_for(lambda r: len(run.findings(semconv.EVENT_SLOW_HANDLER)) >= 1, 20)
        counted = findings_counted(run)
        durations = sorted(
            s.duration
            for s in otlp_receiver.spans(UPDATE_SPAN)
            if s.attributes.get("telegram.handler") == "__main__.crowd"
        )
    assert len(durations) == 240
    assert durations[len(durations) // 2] > 1.0, "the loop was not busy enough to test this"
    mine = (semconv.EVENT_BLOCKED_LOOP, semconv.EVENT_SLOW_HANDLER)
    assert sorted(key for key in counted if key[0] in mine) == [
        (semconv.EVENT_SLOW_HANDLER, "__main__.nap"),
    ]
    (found,) = run.findings(semconv.EVENT_SLOW_HANDLER)
    assert "goes to untraced waits" in found.body


# ---------------------------------------------------------------------------- the split


def _update(handler: str, started: float, ended: float, running: float | None) -> UpdateNotes:
    update = UpdateNotes(None, "message", started)
    update.ended = ended
    update.handler = handler
    update.outcome = "handled"
    update.running = running
    return update


def test_overlapping_operations_are_counted_once_by_precedence() -> None:
    update = _update("bot.h", 100.0, 103.0, 0.2)
    update.ops += [
        Op(POOL_WAIT, "pool", 100.0, 100.5, 5),  # waits, then two gathered queries
        Op(SQL, "SELECT a", 100.5, 102.0, None),
        Op(SQL, "SELECT b", 100.5, 101.0, None),
        Op(SQL, "SELECT a", 100.2, 100.6, None),  # inside the pool wait, mostly
        Op(API, "sendMessage", 102.0, 102.5, (0, None, None)),
    ]
    parts = slow.split(update, [], [])
    assert parts.causes[POOL_WAIT] == pytest.approx(0.5)
    assert parts.causes[SQL] == pytest.approx(1.5)  # 100.5..102.0, once
    assert parts.causes[API] == pytest.approx(0.5)
    assert parts.causes[slow.OWN] == pytest.approx(0.2)
    assert parts.causes[slow.WAITING] == pytest.approx(0.3)
    assert sum(parts.causes.values()) == pytest.approx(3.0)
    assert parts.objects[(SQL, "SELECT a")] == pytest.approx(1.8)  # 100.2..102.0
    assert parts.objects[(SQL, "SELECT b")] == pytest.approx(0.5)


def test_a_handler_slow_only_while_another_held_the_loop_is_not_found() -> None:
    detector = slow.SlowHandlers()
    found: list[Finding] = []
    base = 1_000_000.0  # far from the real steps other tests recorded
    for i in range(25):
        start = base + 10 * i
        victim = _update("bot.victim", start, start + 1.5, 0.01)
        # another update's step held the loop for 1.4 s of it
        steps.recent.append(steps.LongStep(start + 0.05, start + 1.45, id(object()), "bot.block"))
        detector.on_update(victim, found.append)
    assert found == []
    for i in range(20):
        start = base + 1000 + 10 * i
        detector.on_update(_update("bot.slow", start, start + 1.5, 1.4), found.append)
        assert bool(found) == (i == 19), "judged from the 20th update on (the default)"
    assert {f.handler for f in found} == {"bot.slow"}
    assert "goes to its own code on the event loop" in found[0].summary


def test_waiting_for_a_busy_loop_is_not_the_handlers_time() -> None:
    """The same updates: with the loop's busy clock, mostly waiting for the loop (not
    found); without it (uvloop), their untraced waits (found: what it said before)."""
    base = 1_500_000.0

    def crowded(i: int, clock: bool) -> UpdateNotes:
        start = base + 10 * i
        update = _update("bot.crowd", start, start + 1.5, 0.04)
        update.steps = 40
        if clock:  # the loop ran 1.45 s of callbacks in 30 iterations meanwhile
            update.busy_start, update.busy_end = (50.0, 1000), (51.45, 1030)
        return update

    detector, found = slow.SlowHandlers(), []
    for i in range(25):
        detector.on_update(crowded(i, clock=True), found.append)
    assert found == []
    parts = slow.split(crowded(0, clock=True), [], [])
    assert parts.causes[slow.BUSY] == pytest.approx(1.41)  # 1.45 less its own 0.04
    assert parts.causes[slow.WAITING] == pytest.approx(0.05)
    # the loop 80%+ busy with others (saturated): all its untraced waits, whatever its steps
    update = crowded(0, clock=True)
    update.steps = 2
    assert slow.split(update, [], []).causes[slow.BUSY] == pytest.approx(1.41)

    detector, found = slow.SlowHandlers(), []
    for i in range(25):
        detector.on_update(crowded(i, clock=False), found.append)
    assert found and "goes to untraced waits" in found[-1].summary

    # a handler that sleeps 1.5 s while the loop is half busy with short callbacks: its
    # 3 steps waited about 3 mean iterations (0.5 ms), it is still slow
    detector, found = slow.SlowHandlers(), []
    for i in range(25):
        start = base + 1000 + 10 * i
        update = _update("bot.nap", start, start + 1.5, 0.002)
        update.steps = 3
        update.busy_start, update.busy_end = (0.0, 0), (0.75, 1500)
        detector.on_update(update, found.append)
    assert found and "goes to untraced waits" in found[-1].summary
    parts = slow.split(update, [], [])
    assert parts.causes[slow.BUSY] == pytest.approx(0.0015)


def test_updates_while_allocations_were_traced_are_not_judged() -> None:
    from otelbot.diagnosis import blocking, memory

    detector, blocked = slow.SlowHandlers(), blocking.BlockedLoop()
    found: list[Finding] = []
    base = 2_000_000.0
    memory.traced_windows.append((base, base + 1000.0))
    try:
        for i in range(25):
            start = base + 10 * i
            update = _update("bot.traced", start, start + 1.5, 1.4)
            update.longest_step = 0.5
            detector.on_update(update, found.append)
            blocked.on_update(update, found.append)
        assert found == []
    finally:
        memory.traced_windows.clear()
    update = _update("bot.traced", base + 2000, base + 2001.5, 1.4)
    update.longest_step = 0.5
    blocked.on_update(update, found.append)  # outside the window: judged
    assert [f.event for f in found] == [semconv.EVENT_BLOCKED_LOOP]
