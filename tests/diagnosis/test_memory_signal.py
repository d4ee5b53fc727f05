"""The memory snapshot on request: the signal (SIGUSR2) traces one window now, in a real
aiogram bot under opentelemetry-instrument, and is taken only when the bot left it alone."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from otelbot import semconv
from otelbot.diagnosis.memory import install_signal
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import BOTS, findings_bot
from tests.diagnosis.test_memory import FAST, drive


@pytest.mark.e2e
def test_the_signal_traces_a_window_now_and_names_the_line(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    # Growth far below the threshold: only the request traces allocations.
    requested = dict(FAST, OTELBOT_MEMORY_GROWTH_MB="100000", OTELBOT_MEMORY_TRACE_SECONDS="3")
    with findings_bot(
        "memory_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url, **requested
    ) as run:
        for _ in range(30):  # 3 s: the watch thread is running, and nothing was traced
            run.send("/leak", "/garbage")
            time.sleep(0.1)
        assert not run.findings(semconv.EVENT_MEMORY_GROWTH)
        os.kill(run.bot.proc.pid, signal.SIGUSR2)
        assert drive(run, "/leak", "/garbage"), run.bot.tail()
    (record,) = run.findings(semconv.EVENT_MEMORY_GROWTH)
    a = record.attributes
    source = (BOTS / "memory_bot.py").read_text().splitlines()
    assert a[semconv.CODE_LINE_NUMBER] == source.index("    history.append(bytes(100_000))") + 1
    assert a["telegram.handler"].endswith(".leak")
    assert "allocations traced on request (OTELBOT_MEMORY_SIGNAL)" in a[semconv.FINDING_EVIDENCE]


def test_the_signal_is_taken_only_when_the_bot_left_it_alone_and_only_in_the_main_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def bots_own(signum: int, frame: object) -> None:
        pass

    before = signal.getsignal(signal.SIGUSR2)
    try:
        signal.signal(signal.SIGUSR2, bots_own)
        assert not install_signal()
        assert signal.getsignal(signal.SIGUSR2) is bots_own
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        monkeypatch.setenv("OTELBOT_MEMORY_SIGNAL", "off")
        assert not install_signal()
        monkeypatch.setenv("OTELBOT_MEMORY_SIGNAL", "SIGUSR2")
        in_thread: list[bool] = []
        thread = threading.Thread(target=lambda: in_thread.append(install_signal()))
        thread.start()
        thread.join()
        assert in_thread == [False]
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
        assert install_signal()
        assert signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, before)
