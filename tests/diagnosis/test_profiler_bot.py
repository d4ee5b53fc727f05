"""Hot code findings and the profile metric from a real aiogram bot under
opentelemetry-instrument."""

from __future__ import annotations

import time

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import BOTS, findings_bot

pytestmark = pytest.mark.e2e

FAST = {"OTELBOT_PROFILE_INTERVAL": "1"}


def test_a_cpu_heavy_handler_is_named_with_its_hot_line_and_a_waiting_one_and_the_controls_are_not(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "profile_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url, **FAST
    ) as run:
        for _ in range(3):
            run.send(*["/crunch", "/nap", "/rest", "/ok"] * 4)
            run.wait_handled()
        otlp_receiver.wait_for(lambda r: run.findings(semconv.EVENT_HOT_CODE), 30)
        # More updates and windows after the first finding: the controls are judged too.
        run.send(*["/nap", "/rest", "/ok"] * 6)
        run.wait_handled()
        time.sleep(3)
        otlp_receiver.wait_for(
            lambda r: any(
                p.attributes.get(semconv.CODE_FUNCTION_NAME) == "checksum"
                for p in r.points(semconv.OTELBOT_PROFILE_SAMPLES.name)
            ),
            20,
        )
    found = run.findings(semconv.EVENT_HOT_CODE)
    assert len(found) == 1, [(f.body, f.attributes) for f in found]
    record = found[0]
    a = record.attributes
    assert a["telegram.handler"] == "__main__.crunch"
    assert a[semconv.CODE_FUNCTION_NAME] == "checksum"
    assert a[semconv.CODE_FILE_PATH].endswith("profile_bot.py")
    line = (BOTS / "profile_bot.py").read_text().splitlines()[a[semconv.CODE_LINE_NUMBER] - 1]
    assert "the hot line" in line
    assert f"checksum (profile_bot.py:{a[semconv.CODE_LINE_NUMBER]})" in a[semconv.FINDING_EVIDENCE]
    assert "ms of own CPU time on the loop per update" in a[semconv.FINDING_EVIDENCE]
    assert " on CPU and " in a[semconv.FINDING_EVIDENCE]
    stacks = a[semconv.PROFILE_STACKS].splitlines()
    source = (BOTS / "profile_bot.py").read_text().splitlines()
    calls = [i + 1 for i, text in enumerate(source) if "checksum(350_000)" in text]
    # Collapsed stacks of the bot's frames, outermost first, under the handler's name.
    assert stacks and all(s.startswith("__main__.crunch;") for s in stacks)
    assert any(
        f";crunch (profile_bot.py:{calls[0]});checksum (profile_bot.py:" in s for s in stacks
    )
    # The example trace is one of the /crunch updates.
    crunches = {
        s.trace_id
        for s in otlp_receiver.spans("telegram.update message")
        if s.attributes.get("telegram.handler") == "__main__.crunch"
    }
    assert record.trace_id in crunches
    # /nap holds the loop as long as /crunch, but sleeping: its samples are waiting ones.
    for handler in ("nap", "rest", "ok"):
        assert not run.findings(semconv.EVENT_HOT_CODE, handler=handler)
    # The metric: the handler's own samples by function, checksum on top.
    samples: dict[tuple[str, str], float] = {}
    for p in otlp_receiver.points(semconv.OTELBOT_PROFILE_SAMPLES.name):
        key = (
            str(p.attributes.get(semconv.TELEGRAM_HANDLER)),
            str(p.attributes.get(semconv.CODE_FUNCTION_NAME)),
        )
        samples[key] = max(samples.get(key, 0.0), float(p.value or 0))
    crunch = {f: v for (h, f), v in samples.items() if h == "__main__.crunch"}
    assert max(crunch, key=crunch.__getitem__) == "checksum", crunch
    assert samples.get(("idle", "(idle)"), 0) > 0, sorted(samples.items())
