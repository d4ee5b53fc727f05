"""Blocked event loop findings from a real python-telegram-bot bot under
opentelemetry-instrument: the PTB instrumentation drives each handler's coroutine through
the step timer, a blocking (default) handler and a block=False one (run in a task) alike."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests import _require
from tests.diagnosis._harness import BOTS, findings_bot
from tests.diagnosis._settle import findings_counted

pytestmark = pytest.mark.e2e

BOT = "blocking_ptb_bot"


def test_ptb_handlers_sleeping_on_the_loop_are_named_with_their_line(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    _require.module("telegram", "pip install 'python-telegram-bot>=20'")
    with findings_bot(BOT, fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url) as run:
        run.send(*["/ok"] * 6)
        run.wait_handled()
        run.send(*["/block", "/later", "/victim"] * 4)
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: len(run.findings(semconv.EVENT_BLOCKED_LOOP)) >= 2, 20)
        counted = findings_counted(run)

    # The only findings of any kind: the stalled victims and the control are not named.
    assert sorted(counted) == [
        (semconv.EVENT_BLOCKED_LOOP, "__main__.block"),
        (semconv.EVENT_BLOCKED_LOOP, "__main__.later"),
    ], counted

    lines = (BOTS / f"{BOT}.py").read_text().splitlines()
    named = {}
    for found in run.findings(semconv.EVENT_BLOCKED_LOOP):
        a = found.attributes
        assert a[semconv.CODE_FILE_PATH].endswith(f"{BOT}.py"), a
        named[a["telegram.handler"]] = lines[a[semconv.CODE_LINE_NUMBER] - 1]
    assert sorted(named) == ["__main__.block", "__main__.later"], named
    assert all("time.sleep(0.3)" in line for line in named.values()), named
