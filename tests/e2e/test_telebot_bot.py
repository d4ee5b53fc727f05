"""End to end: the real pyTelegramBotAPI example bots (threaded ``TeleBot``, and
``AsyncTeleBot``) under the real ``opentelemetry-instrument`` command, long polling the fake
Bot API (telebot's ``API_URL``), exporting OTLP to the receiver."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.e2e._run import ROOT, otel_env, run_instrumented
from tests.e2e._scan import assert_token_nowhere

BOTS = {
    "TeleBot": ROOT / "examples" / "telebot_bot.py",
    "AsyncTeleBot": ROOT / "examples" / "telebot_async_bot.py",
}
UPDATE = "telegram.update message"
pytestmark = pytest.mark.e2e


def kids(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


def handler(span: ReceivedSpan) -> str:
    return str(span.attributes.get("telegram.handler", "")).rsplit(".", 1)[-1]


@pytest.mark.parametrize("kind", sorted(BOTS))
def test_polling_bot_one_trace_per_update_flood_wait_and_finding(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    redis_url: str,
    kind: str,
) -> None:
    env = otel_env(
        otlp_receiver,
        "telebot-example",
        BOT_TOKEN=bot_token,
        BOT_API_BASE=fake_bot_api.base_url,
        REDIS_URL=redis_url,
    )
    api = fake_bot_api
    with run_instrumented(BOTS[kind], env) as bot:
        bot.wait_for_line("polling", 60)
        api.push_updates(
            [
                api.message_update("hello", user_id=7201),
                api.message_update("/start", user_id=7202),
                api.message_update("/fail", user_id=7203),
            ]
        )
        otlp_receiver.wait_for(lambda r: len(r.spans(UPDATE)) >= 3, 30)
        # The planted problem: a burst of sends, two refused with 429.
        api.script("sendMessage", [Fault.ok(), Fault.flood(2), Fault.flood(2)])
        api.push_updates([api.message_update("/burst", user_id=7204)])
        otlp_receiver.wait_for(
            lambda r: [f for f in r.logs() if f.event_name == semconv.EVENT_FLOOD_WAIT], 30
        )
        # A server error on a plain message: the error handler logs it, the bot goes on.
        api.script("sendMessage", [Fault.server_error(500)])
        api.push_updates([api.message_update("after the burst", user_id=7205)])
        otlp_receiver.wait_for(lambda r: len(r.spans(UPDATE)) >= 5, 30)
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)
    spans = otlp_receiver.spans()
    updates = otlp_receiver.spans(UPDATE)
    assert len(updates) == 5
    by_handler = {handler(u): u for u in updates}
    assert len({u.trace_id for u in updates}) == 5

    echo = next(
        u
        for u in updates
        if handler(u) == "echo" and u.attributes["telegram.update.outcome"] == "handled"
    )
    assert echo.parent_span_id == "" and echo.kind == "SERVER"
    assert echo.attributes["telegram.ingress"] == "polling"
    assert echo.attributes["telegram.handler"] == "__main__.echo"
    assert echo.attributes["telegram.bot.id"] == "123456789"
    names = sorted(k.name for k in kids(spans, echo))
    assert names == ["INCRBY", "telegram.api sendMessage"], names
    assert by_handler["start"].attributes["telegram.update.outcome"] == "handled"
    assert not [s for s in spans if s.name == "telegram.api getUpdates"]

    failed = by_handler["fail"]
    assert failed.attributes["telegram.update.outcome"] == "error"
    assert failed.attributes["error.type"] == "RuntimeError"

    flooded = [s for s in spans if s.attributes.get("telegram.api.retry_after") == 2]
    assert len(flooded) == 2
    assert all(s.parent_span_id == by_handler["burst"].span_id for s in flooded)
    (finding,) = [f for f in otlp_receiver.logs() if f.event_name == semconv.EVENT_FLOOD_WAIT]
    assert finding.attributes["telegram.handler"] == "__main__.burst"
    assert finding.attributes[semconv.CODE_FUNCTION_NAME] == "burst"
    assert finding.attributes[semconv.CODE_FILE_PATH] == str(BOTS[kind])
    assert (finding.trace_id, finding.span_id) == (
        by_handler["burst"].trace_id,
        by_handler["burst"].span_id,
    )
    # The healthy handlers: no finding (the burst may show under other kinds too).
    assert not [
        f.body
        for f in otlp_receiver.logs()
        if f.event_name.startswith("otelbot.bot.")
        and f.attributes.get("telegram.handler") != "__main__.burst"
    ]

    server_error = [s for s in spans if s.attributes.get("http.response.status_code") == 500]
    assert len(server_error) == 1
    assert server_error[0].attributes["telegram.api.error_code"] == 500
    for metric in (
        "telegram.updates",
        "telegram.update.duration",
        "telegram.api.duration",
        "telegram.api.flood_waits",
    ):
        assert metric in otlp_receiver.metric_names(), metric
    api_methods = {
        p.attributes["telegram.api.method"] for p in otlp_receiver.points("telegram.api.duration")
    }
    assert {"getUpdates", "sendMessage"} <= api_methods
    bodies = [str(r.body) for r in otlp_receiver.logs()]
    if kind == "TeleBot":  # the bot's exception handler logged it
        assert "update failed: RuntimeError" in bodies, bodies
    else:  # telebot logged it and went on
        assert "the handler failed on purpose" in bodies, bodies
        # the aiohttp request joined the Bot API call: its HTTP details, no second span
        send = next(k for k in kids(spans, echo) if k.name == "telegram.api sendMessage")
        assert send.attributes["url.full"].endswith("/bot123456789:REDACTED/sendMessage")
        assert send.attributes["http.response.status_code"] == 200
        assert not [s for s in spans if s.name in ("POST", "GET")]
    assert_token_nowhere(otlp_receiver, bot.output, bot_token)
