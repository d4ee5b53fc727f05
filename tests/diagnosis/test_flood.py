"""Flood control findings from a real aiogram bot under opentelemetry-instrument."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import findings_bot

pytestmark = pytest.mark.e2e


def test_a_burst_of_sends_refused_with_429_is_named_with_its_handler_and_line(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "flood_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url
    ) as run:
        run.send("/reply", "/reply")
        run.wait_handled()
        fake_bot_api.script("sendMessage", [Fault.ok(), Fault.flood(2), Fault.flood(2)])
        run.send("/burst")
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: run.findings(semconv.EVENT_FLOOD_WAIT), 20)
        run.send("/reply")  # after the burst: still healthy
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)
    found = run.findings(semconv.EVENT_FLOOD_WAIT)
    assert len(found) == 1, [f.body for f in found]
    record = found[0]
    a = record.attributes
    assert a["telegram.handler"].endswith(".burst")
    assert a[semconv.FINDING_OBJECT] == "sendMessage"
    assert "2 sendMessage call(s) refused" in a[semconv.FINDING_EVIDENCE]
    assert "retry_after up to 2 s" in a[semconv.FINDING_EVIDENCE]
    assert a[semconv.CODE_FILE_PATH].endswith("flood_bot.py")
    assert a[semconv.CODE_FUNCTION_NAME] == "burst"
    assert record.severity == "WARN"
    # The example update: the log record points at the /burst update's span, which
    # carries the finding as an event.
    burst = [
        s
        for s in otlp_receiver.spans("telegram.update message")
        if str(s.attributes.get("telegram.handler", "")).endswith(".burst")
    ]
    assert [(s.trace_id, s.span_id) for s in burst] == [(record.trace_id, record.span_id)]
    assert [e["name"] for e in burst[0].events if e["name"] == semconv.SPAN_EVENT_FINDING]
    # The control handler: no finding.
    assert not run.findings(handler="reply")
    counted = [
        p
        for p in otlp_receiver.points(semconv.OTELBOT_FINDINGS.name)
        if p.attributes.get(semconv.FINDING_KIND) == semconv.EVENT_FLOOD_WAIT
    ]
    assert counted and counted[-1].value == 1
    assert counted[-1].attributes["telegram.handler"].endswith(".burst")
    # Several bot libraries are instrumented in this process (aiogram, PTB, telebot): the
    # active-users gauge comes from the one that handled the updates, not zeros beside it.
    users = otlp_receiver.points("telegram.users.active")
    assert users and all(float(p.value or 0) > 0 for p in users), [
        (p.attributes, p.value) for p in users if not p.value
    ]
    assert max(float(p.value or 0) for p in users) == pytest.approx(2, abs=0.2)  # 5001, 5002
