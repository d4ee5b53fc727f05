"""Blocked event loop findings from a real aiogram bot under opentelemetry-instrument."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.diagnosis._harness import BOTS, findings_bot
from tests.diagnosis._settle import findings_counted

pytestmark = pytest.mark.e2e


def test_a_handler_sleeping_on_the_loop_is_named_with_its_line_and_its_victims_are_not(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "blocking_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url
    ) as run:
        run.send(*["/ok"] * 6)
        run.wait_handled()
        # Six /block updates, each holding the loop 0.3 s, handled concurrently with six
        # /victim updates (a victim waits up to 1.8 s for the loop) and six /sync updates
        # sleeping as long in a thread.
        run.send(*["/block", "/victim", "/sync"] * 6)
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: run.findings(semconv.EVENT_BLOCKED_LOOP), 20)
        counted = findings_counted(run)

    def updates(handler: str) -> list[ReceivedSpan]:
        return [
            s
            for s in otlp_receiver.spans("telegram.update message")
            if s.attributes.get("telegram.handler") == handler
        ]

    victims = updates("__main__.victim")
    assert len(victims) == 6
    assert len(updates("__main__.sync_sleep")) == 6
    # The victims were stalled past the slow-handler threshold: without the stall
    # accounting they would be judged slow.
    assert max(s.duration for s in victims) > 1.0
    # The one finding of any kind: the stalled victims are neither slow nor starving the
    # pool (their waits and holds during another update's step do not count).
    assert list(counted) == [(semconv.EVENT_BLOCKED_LOOP, "__main__.block")]
    found = run.findings(semconv.EVENT_BLOCKED_LOOP)
    assert len(found) == 1, [f.body for f in found]
    a = found[0].attributes
    assert a["telegram.handler"] == "__main__.block"
    assert a[semconv.CODE_FUNCTION_NAME] == "block"
    assert a[semconv.CODE_FILE_PATH].endswith("blocking_bot.py")
    line = (BOTS / "blocking_bot.py").read_text().splitlines()[a[semconv.CODE_LINE_NUMBER] - 1]
    assert "time.sleep(0.3)" in line
    assert "longest step" in a[semconv.FINDING_EVIDENCE]
    # The line and the call it was making when the watcher read the loop's stack.
    held = f"held at block (blocking_bot.py:{a[semconv.CODE_LINE_NUMBER]}) → time.sleep"
    assert held in a[semconv.FINDING_EVIDENCE]
    assert "asyncio.to_thread" in a[semconv.FINDING_SUGGESTION]
    for handler in ("victim", "ok", "sync_sleep"):
        assert not run.findings(handler=handler)
