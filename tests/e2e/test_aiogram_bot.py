"""End to end: the real aiogram example bot under the real ``opentelemetry-instrument``
command, polling (and webhook) against the fake Bot API, exporting OTLP to the receiver."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from otelbot.testing.processes import free_port
from tests.e2e._run import ROOT, otel_env, run_instrumented
from tests.e2e._scan import assert_token_nowhere

BOT = ROOT / "examples" / "aiogram_bot.py"
pytestmark = pytest.mark.e2e


def kids(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


def test_polling_bot_one_trace_per_update(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    env = otel_env(
        otlp_receiver,
        "aiogram-example",
        BOT_TOKEN=bot_token,
        BOT_API_BASE=fake_bot_api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
    )
    api = fake_bot_api
    with run_instrumented(BOT, env) as bot:
        bot.wait_for_line("polling")
        api.push_updates([api.message_update("hello", user_id=7001)])
        otlp_receiver.wait_for(lambda r: r.spans("telegram.update message"), 20)
        api.script("sendMessage", [Fault.flood(3)])
        api.push_updates(
            [
                api.message_update("flood me", user_id=7002),
                api.message_update("/start", user_id=7003),
                api.callback_update("count", user_id=7003),
                api.message_update("/fail", user_id=7004),
                api.message_update("/block", user_id=7005),
                api.message_update("/gc", user_id=7006),
            ]
        )
        otlp_receiver.wait_for(lambda r: len(r.spans("telegram.update message")) >= 6, 30)
        otlp_receiver.wait_for(lambda r: r.points("otelbot.asyncio.loop.lag"), 10)
    spans = otlp_receiver.spans()
    updates = otlp_receiver.spans("telegram.update message")
    by_handler = {u.attributes.get("telegram.handler", "").rsplit(".", 1)[-1]: u for u in updates}

    # A plain message: the root of its own trace, SQL, Redis and Bot API under it.
    echo = next(
        u
        for u in updates
        if u.attributes["telegram.handler"].endswith("echo")
        and u.attributes.get("telegram.update.outcome") == "handled"
        and not [k for k in kids(spans, u) if "telegram.api.retry_after" in k.attributes]
    )
    assert echo.parent_span_id == "" and echo.kind == "SERVER"
    assert echo.attributes["telegram.ingress"] == "polling"
    assert echo.attributes["telegram.update.type"] == "message"
    assert echo.attributes["telegram.bot.id"] == "123456789"
    assert echo.attributes["telegram.chat.type"] == "private"
    assert "telegram.user.id" not in echo.attributes  # ids are opt-in
    names = sorted(k.name for k in kids(spans, echo))
    assert names == ["INCRBY", "SELECT pg_class", "telegram.api sendMessage"], names
    send = next(k for k in kids(spans, echo) if k.name == "telegram.api sendMessage")
    assert send.attributes["http.response.status_code"] == 200
    assert send.attributes["url.full"].endswith("/bot123456789:REDACTED/sendMessage")
    # exactly one span per Bot API call, and getUpdates is not traced
    assert not [
        s
        for s in spans
        if s.scope.endswith("aiohttp_client") and not s.name.startswith("telegram.api ")
    ]
    assert not [s for s in spans if s.name == "telegram.api getUpdates"]

    # Flood wait: 429 with retry_after, on the span and in the metrics.
    flooded = [s for s in spans if s.attributes.get("telegram.api.retry_after") == 3]
    assert len(flooded) == 1
    assert flooded[0].attributes["telegram.api.error_code"] == 429
    assert [e["name"] for e in flooded[0].events].count("telegram.flood_wait") == 1
    assert otlp_receiver.points("telegram.api.flood_waits")
    retry = otlp_receiver.points("telegram.api.retry_after")
    assert retry and max(p.max or 0 for p in retry) == 3

    # The errors router swallowed /fail's exception; the update span still has it.
    failed = by_handler["fail"]
    assert failed.attributes["telegram.update.outcome"] == "error"
    assert failed.attributes["error.type"] == "RuntimeError"
    assert any(e["name"] == "exception" for e in failed.events)

    # A callback query is its own update type, answered under its span.
    cb = otlp_receiver.spans("telegram.update callback_query")
    assert cb and sorted(k.name for k in kids(spans, cb[0])) == [
        "GET",
        "telegram.api answerCallbackQuery",
    ]

    # Runtime: the blocking handler shows in loop lag, /gc in the GC pause histogram.
    lag = otlp_receiver.points("otelbot.asyncio.loop.lag")
    assert max(p.max or 0 for p in lag) >= 0.2
    pauses = otlp_receiver.points("otelbot.gc.pause.duration")
    assert sum(p.count for p in pauses) > 0

    names_received = otlp_receiver.metric_names()
    for metric in [
        "telegram.updates",
        "telegram.update.duration",
        "telegram.updates.active",
        "telegram.api.duration",
        "telegram.users.active",
        "db.client.operation.duration",
        "cpython.gc.collections",
        "process.memory.usage",
    ]:
        assert metric in names_received, (metric, sorted(names_received))
    outcomes = {
        p.attributes.get("telegram.update.outcome")
        for p in otlp_receiver.points("telegram.updates")
    }
    assert {"handled", "error"} <= outcomes
    ingress = {
        p.attributes.get("telegram.ingress") for p in otlp_receiver.points("telegram.updates")
    }
    assert ingress == {"polling"}
    users = [
        p
        for p in otlp_receiver.points("telegram.users.active")
        if p.attributes.get("telegram.users.window") == "5m"
    ]
    assert users and 5 <= users[-1].value <= 7
    api_methods = {
        p.attributes["telegram.api.method"] for p in otlp_receiver.points("telegram.api.duration")
    }
    assert {"getUpdates", "sendMessage", "answerCallbackQuery"} <= api_methods
    # The bot's own log lines are exported (OTel logging is on), so the scan reads them too.
    bodies = [str(r.body) for r in otlp_receiver.logs()]
    assert "update failed: RuntimeError" in bodies, bodies
    assert_token_nowhere(otlp_receiver, bot.output, bot_token)


def post(
    port: int, update: dict[str, object], secret: str, traceparent: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret}
    if traceparent:
        headers["traceparent"] = traceparent
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhook", data=json.dumps(update).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_webhook_bot_update_is_child_of_server_span(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    port = free_port()
    env = otel_env(
        otlp_receiver,
        "aiogram-webhook",
        BOT_TOKEN=bot_token,
        BOT_API_BASE=fake_bot_api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
        BOT_MODE="webhook",
        WEBHOOK_PORT=str(port),
        WEBHOOK_SECRET="s3cret",
    )
    api = fake_bot_api
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with run_instrumented(BOT, env) as bot:
        bot.wait_for_line("webhook listening")
        status, _ = post(
            port, api.message_update("hello"), "s3cret", f"00-{trace_id}-00f067aa0ba902b7-01"
        )
        assert status == 200
        status, _ = post(port, api.message_update("/start"), "wrong")
        assert status == 401
        otlp_receiver.wait_for(lambda r: r.spans("telegram.update message"), 20)
        # aiogram's webhook path is a secret: its server span says /{webhook}.
        otlp_receiver.wait_for(lambda r: r.spans("POST /{webhook}"), 20)
    spans = otlp_receiver.spans()
    servers = otlp_receiver.spans("POST /{webhook}")
    update = otlp_receiver.spans("telegram.update message")
    assert len(update) == 1, "the update with the wrong secret must not be handled"
    server = next(s for s in servers if s.trace_id == trace_id)
    assert update[0].parent_span_id == server.span_id
    assert update[0].attributes["telegram.ingress"] == "webhook"
    assert update[0].kind == "INTERNAL"
    names = sorted(k.name for k in kids(spans, update[0]))
    assert names == ["INCRBY", "SELECT pg_class", "telegram.api sendMessage"], names
    statuses = sorted(s.attributes["http.response.status_code"] for s in servers)
    assert statuses == [200, 401]
    assert_token_nowhere(otlp_receiver, bot.output, bot_token)
