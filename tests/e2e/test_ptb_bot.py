"""End to end: the real python-telegram-bot example bot under the real
``opentelemetry-instrument`` command, polling and on PTB's own webhook server, against the
fake Bot API (PTB's ``base_url``), exporting OTLP to the receiver."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from otelbot.testing.processes import free_port
from tests.e2e._run import ROOT, otel_env, run_instrumented
from tests.e2e._scan import assert_token_nowhere

BOT = ROOT / "examples" / "ptb_bot.py"
UPDATE = "telegram.update message"
pytestmark = pytest.mark.e2e


def kids(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


def handler(span: ReceivedSpan) -> str:
    return str(span.attributes.get("telegram.handler", "")).rsplit(".", 1)[-1]


def test_polling_bot_one_trace_per_update_flood_wait_and_finding(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    env = otel_env(
        otlp_receiver,
        "ptb-example",
        BOT_TOKEN=bot_token,
        BOT_API_BASE=fake_bot_api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
    )
    api = fake_bot_api
    with run_instrumented(BOT, env) as bot:
        bot.wait_for_line("polling", 60)
        api.push_updates([api.message_update("hello", user_id=7101)])
        otlp_receiver.wait_for(lambda r: r.spans(UPDATE), 30)
        api.push_updates(
            [
                api.message_update("/start", user_id=7102),
                api.message_update("/fail", user_id=7103),
                api.message_update("/later", user_id=7104),
            ]
        )
        otlp_receiver.wait_for(lambda r: len(r.spans(UPDATE)) >= 4, 30)
        # The planted problem: a burst of replies, two refused with 429.
        api.script("sendMessage", [Fault.ok(), Fault.flood(2), Fault.flood(2)])
        api.push_updates([api.message_update("/burst", user_id=7105)])
        otlp_receiver.wait_for(
            lambda r: [f for f in r.logs() if f.event_name == semconv.EVENT_FLOOD_WAIT], 30
        )
        # A server error, then a reply that never comes (PTB gives up after its 5 s read
        # timeout): the error handler gets them, the bot goes on.
        api.script("sendMessage", [Fault.server_error(500), Fault.hang()])
        api.push_updates(
            [
                api.message_update("after the burst", user_id=7106),
                api.message_update("no answer", user_id=7107),
            ]
        )
        otlp_receiver.wait_for(lambda r: len(r.spans(UPDATE)) >= 7, 40)
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)
    spans = otlp_receiver.spans()
    updates = otlp_receiver.spans(UPDATE)
    assert len(updates) == 7
    by_handler = {handler(u): u for u in updates}

    # A plain message: the root of its own trace, SQL, Redis and the Bot API call under it.
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
    assert names == ["INCRBY", "SELECT pg_class", "telegram.api sendMessage"], names
    send = next(k for k in kids(spans, echo) if k.name == "telegram.api sendMessage")
    assert send.attributes["http.response.status_code"] == 200
    assert send.attributes["url.full"].endswith("/bot123456789:REDACTED/sendMessage")
    assert send.attributes["server.address"] == "127.0.0.1"
    # one span per Bot API call (contrib's httpx is installed: the distro skipped it)
    assert not [s for s in spans if s.name in ("POST", "GET")]
    assert not [s for s in spans if s.name == "telegram.api getUpdates"]
    assert len({u.trace_id for u in updates}) == 7
    # contrib's httpx instrumentation is installed: the distro skipped it, and said so (in
    # the exported logs, OTel logging being on)
    (skipped,) = [r for r in otlp_receiver.logs() if "skipped the contrib" in str(r.body)]
    assert "httpx" in str(skipped.body)

    # The error handler swallowed /fail's exception; the update span still has it.
    failed = by_handler["fail"]
    assert failed.attributes["telegram.update.outcome"] == "error"
    assert failed.attributes["error.type"] == "RuntimeError"
    # block=False: the handler's reply is still inside its update.
    assert [k.name for k in kids(spans, by_handler["later"])] == ["telegram.api sendMessage"]

    # Flood wait: 429 with retry_after on the spans, in the metrics, and named as a finding.
    flooded = [s for s in spans if s.attributes.get("telegram.api.retry_after") == 2]
    assert len(flooded) == 2
    assert all(s.parent_span_id == by_handler["burst"].span_id for s in flooded)
    assert otlp_receiver.points("telegram.api.flood_waits")
    (finding,) = [f for f in otlp_receiver.logs() if f.event_name == semconv.EVENT_FLOOD_WAIT]
    assert finding.attributes["telegram.handler"] == "__main__.burst"
    assert finding.attributes[semconv.CODE_FUNCTION_NAME] == "burst"
    assert finding.attributes[semconv.CODE_FILE_PATH].endswith("ptb_bot.py")
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

    # The 500: recorded on its call, the update still handled by the bot's own code.
    server_error = [s for s in spans if s.attributes.get("http.response.status_code") == 500]
    assert len(server_error) == 1
    assert server_error[0].attributes["error.type"] == "telegram.error.NetworkError"
    timed_out = [s for s in spans if s.attributes.get("error.type") == "telegram.error.TimedOut"]
    # the call, and its update (the handler let the error through to the error handler)
    assert sorted(s.name for s in timed_out) == ["telegram.api sendMessage", UPDATE]
    call = next(s for s in timed_out if s.name != UPDATE)
    assert "telegram.api.error_code" not in call.attributes
    assert call.parent_span_id == next(s for s in timed_out if s.name == UPDATE).span_id
    assert "update failed: TimedOut" in [str(r.body) for r in otlp_receiver.logs()]

    for metric in (
        "telegram.updates",
        "telegram.update.duration",
        "telegram.api.duration",
        "http.client.request.duration",
        "db.client.operation.duration",
    ):
        assert metric in otlp_receiver.metric_names(), metric
    handlers = {
        p.attributes.get("telegram.handler")
        for p in otlp_receiver.points("telegram.update.duration")
    }
    assert {"__main__.echo", "__main__.start", "__main__.fail", "__main__.burst"} <= handlers
    api_methods = {
        p.attributes["telegram.api.method"] for p in otlp_receiver.points("telegram.api.duration")
    }
    assert {"getMe", "getUpdates", "sendMessage"} <= api_methods
    bodies = [str(r.body) for r in otlp_receiver.logs()]
    assert "update failed: RuntimeError" in bodies, bodies
    assert_token_nowhere(otlp_receiver, bot.output, bot_token)


def post(port: int, update: dict[str, object], secret: str) -> int:
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhook", data=json.dumps(update).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def post_when_listening(port: int, update: dict[str, object], secret: str) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            return post(port, update, secret)
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_webhook_bot_updates_start_their_own_traces(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    port = free_port()
    env = otel_env(
        otlp_receiver,
        "ptb-webhook",
        BOT_TOKEN=bot_token,
        BOT_API_BASE=fake_bot_api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
        BOT_MODE="webhook",
        WEBHOOK_PORT=str(port),
        WEBHOOK_SECRET="s3cret",
    )
    api = fake_bot_api
    with run_instrumented(BOT, env) as bot:
        bot.wait_for_line("webhook", 60)
        assert post_when_listening(port, api.message_update("hello"), "s3cret") == 200
        assert post(port, api.message_update("/start"), "wrong") == 403
        assert post(port, api.message_update("/start"), "s3cret") == 200
        otlp_receiver.wait_for(lambda r: len(r.spans(UPDATE)) >= 2, 30)
        otlp_receiver.wait_for(lambda r: r.spans("telegram.api setWebhook"), 10)
    spans = otlp_receiver.spans()
    updates = otlp_receiver.spans(UPDATE)
    assert len(updates) == 2, "the update with the wrong secret must not be handled"
    assert {u.attributes["telegram.ingress"] for u in updates} == {"webhook"}
    assert all(u.parent_span_id == "" for u in updates)
    echo = next(u for u in updates if handler(u) == "echo")
    names = sorted(k.name for k in kids(spans, echo))
    assert names == ["INCRBY", "SELECT pg_class", "telegram.api sendMessage"], names
    (set_webhook,) = otlp_receiver.spans("telegram.api setWebhook")
    assert set_webhook.attributes["url.full"].endswith("/bot123456789:REDACTED/setWebhook")
    assert_token_nowhere(otlp_receiver, bot.output, bot_token)
