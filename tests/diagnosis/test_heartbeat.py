"""Blocks of the event loop outside any timed handler step (a background task, an update
head sampling left out), found by the loop heartbeat in a real aiogram bot under
opentelemetry-instrument, on asyncio and on uvloop."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedLog
from tests import _require
from tests.diagnosis._harness import BOTS, BotRun, findings_bot
from tests.diagnosis._settle import findings_counted

pytestmark = pytest.mark.e2e

BOT = "heartbeat_bot"


def _line(log: ReceivedLog) -> str:
    number = log.attributes[semconv.CODE_LINE_NUMBER]
    return (BOTS / f"{BOT}.py").read_text().splitlines()[number - 1]


def _blocked(run: BotRun, handler: str) -> list[ReceivedLog]:
    return [
        f
        for f in run.findings(semconv.EVENT_BLOCKED_LOOP)
        if f.attributes.get("telegram.handler") == handler
    ]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_background_task_blocking_the_loop_is_named_and_the_handlers_running_meanwhile_are_not(
    loop: str,
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with findings_bot(
        BOT,
        fake_bot_api,
        otlp_receiver,
        bot_token,
        pg_dsn,
        redis_url,
        BACKGROUND="block",
        LOOP=loop,
    ) as run:
        # /ok updates while the task blocks the loop every 0.7 s: they are stalled, but
        # their own steps are short.
        for _ in range(3):
            run.send(*["/ok"] * 4)
            run.wait_handled()
        otlp_receiver.wait_for(lambda r: _blocked(run, "__main__.ticker"), 20)
        counted = findings_counted(run)

    assert list(counted) == [(semconv.EVENT_BLOCKED_LOOP, "__main__.ticker")]
    found = run.findings(semconv.EVENT_BLOCKED_LOOP)
    assert len(found) == 1, [f.body for f in found]  # one per interval, however often
    finding = found[0]
    a = finding.attributes
    assert a[semconv.CODE_FUNCTION_NAME] == "render_report"
    assert a[semconv.CODE_FILE_PATH].endswith(f"{BOT}.py")
    assert "time.sleep(0.3)" in _line(finding)
    held = f"held at render_report ({BOT}.py:{a[semconv.CODE_LINE_NUMBER]}) → time.sleep"
    assert held in a[semconv.FINDING_EVIDENCE]
    assert "in task ticker" in a[semconv.FINDING_EVIDENCE]
    assert "asyncio.to_thread" in a[semconv.FINDING_SUGGESTION]
    # No update owns the block: no trace to open.
    assert not finding.trace_id.strip("0")
    assert not run.findings(handler="ok")


def test_a_block_in_an_update_head_sampling_left_out_is_found_by_the_heartbeat(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        BOT,
        fake_bot_api,
        otlp_receiver,
        bot_token,
        pg_dsn,
        redis_url,
        OTEL_TRACES_SAMPLER="always_off",
    ) as run:
        run.send("/ok", "/lookup", "/ok")
        otlp_receiver.wait_for(lambda r: _blocked(run, "__main__.lookup"), 20)
        counted = findings_counted(run)

    assert not otlp_receiver.spans("telegram.update message")  # none sampled
    assert list(counted) == [(semconv.EVENT_BLOCKED_LOOP, "__main__.lookup")]
    (finding,) = run.findings(semconv.EVENT_BLOCKED_LOOP)
    a = finding.attributes
    assert a[semconv.CODE_FUNCTION_NAME] == "slow_lookup"
    assert "time.sleep(0.3)" in _line(finding)
    held = f"held at slow_lookup ({BOT}.py:{a[semconv.CODE_LINE_NUMBER]}) → time.sleep"
    assert held in a[semconv.FINDING_EVIDENCE]
    assert not finding.trace_id.strip("0")


def test_garbage_collection_and_a_timed_step_are_not_reported_by_the_heartbeat(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    # The control: a task making cyclic garbage in short chunks (the collector runs all
    # the time, the loop is never held long) beside quick handlers; and one sampled /lookup
    # whose block the step timer reports, with its trace, and the heartbeat not again.
    with findings_bot(
        BOT, fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url, BACKGROUND="gc"
    ) as run:
        for _ in range(3):
            run.send(*["/ok"] * 4)
            run.wait_handled()
        run.send("/lookup")
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: _blocked(run, "__main__.lookup"), 20)
        run.send(*["/ok"] * 4)
        run.wait_handled()
        counted = findings_counted(run)

    found = run.findings(semconv.EVENT_BLOCKED_LOOP)
    assert list(counted) == [(semconv.EVENT_BLOCKED_LOOP, "__main__.lookup")], [
        f.attributes[semconv.FINDING_EVIDENCE] for f in found
    ]
    (finding,) = found
    assert "longest step" in finding.attributes[semconv.FINDING_EVIDENCE]  # the step timer's
    assert finding.trace_id.strip("0")


def test_a_python_telegram_bot_job_blocking_the_loop_is_named_by_its_callback(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    _require.module("telegram", "pip install 'python-telegram-bot[job-queue]>=20'")
    with findings_bot(
        "heartbeat_ptb_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url
    ) as run:
        for _ in range(3):
            run.send(*["/ok"] * 4)
            run.wait_handled()
        otlp_receiver.wait_for(lambda r: _blocked(run, "__main__.nightly_digest"), 20)
        counted = findings_counted(run)

    assert list(counted) == [(semconv.EVENT_BLOCKED_LOOP, "__main__.nightly_digest")]
    (finding,) = run.findings(semconv.EVENT_BLOCKED_LOOP)
    a = finding.attributes
    assert a[semconv.CODE_FUNCTION_NAME] == "build_digest"
    line = (BOTS / "heartbeat_ptb_bot.py").read_text().splitlines()[a[semconv.CODE_LINE_NUMBER] - 1]
    assert "time.sleep(0.3)" in line
    held = f"held at build_digest (heartbeat_ptb_bot.py:{a[semconv.CODE_LINE_NUMBER]}) → time.sleep"
    assert held in a[semconv.FINDING_EVIDENCE]
    assert not run.findings(handler="ok")


def test_an_async_telebot_handler_blocking_the_loop_is_found_by_the_heartbeat(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    """telebot's handlers are not step-timed: the heartbeat, started by AsyncTeleBot's first
    update, finds /export's block and names its line; /ok gets nothing."""
    _require.module("telebot", "pip install pyTelegramBotAPI")
    with findings_bot(
        "heartbeat_telebot_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url
    ) as run:
        run.send(*["/ok"] * 4)
        run.wait_handled()
        for _ in range(3):
            run.send("/export", "/ok")
            run.wait_handled()
        otlp_receiver.wait_for(lambda r: run.findings(semconv.EVENT_BLOCKED_LOOP), 20)
        counted = findings_counted(run)
    assert list(counted) == [(semconv.EVENT_BLOCKED_LOOP, "__main__.export")]
    finding = run.findings(semconv.EVENT_BLOCKED_LOOP)[0]
    a = finding.attributes
    assert a[semconv.CODE_FUNCTION_NAME] == "build_export"
    bot_file = (BOTS / "heartbeat_telebot_bot.py").read_text().splitlines()
    assert "time.sleep(0.3)" in bot_file[a[semconv.CODE_LINE_NUMBER] - 1]
    held = f"build_export (heartbeat_telebot_bot.py:{a[semconv.CODE_LINE_NUMBER]}) → time.sleep"
    assert held in a[semconv.FINDING_EVIDENCE]
    assert not run.findings(handler="ok")
