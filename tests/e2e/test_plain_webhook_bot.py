"""End to end: a plain aiohttp/asyncpg/redis webhook bot under the real
``opentelemetry-instrument`` command, exporting OTLP to the receiver fixture."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from otelbot.testing.processes import free_port
from tests.e2e._run import otel_env, run_instrumented
from tests.e2e._scan import assert_token_nowhere

BOT = Path(__file__).parent / "bots" / "plain_webhook_bot.py"
pytestmark = pytest.mark.e2e


def post_update(port: int, update: dict[str, object]) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhook/s3cret",
        data=json.dumps(update).encode(),
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "s3cret"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        return int(resp.status)


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_webhook_bot_traces_metrics_and_no_token_anywhere(
    protocol: str,
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    port = free_port()
    env = otel_env(
        otlp_receiver,
        "plain-webhook-bot",
        protocol,
        BOT_TOKEN=bot_token,
        BOT_API_BASE=fake_bot_api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
        PORT=str(port),
    )
    with run_instrumented(BOT, env) as bot:
        bot.wait_for_line("listening")
        assert post_update(port, fake_bot_api.message_update("hello")) == 200
        fake_bot_api.script("sendMessage", [Fault.flood(3), Fault.server_error(502), Fault.slow(2)])
        for text in ["flood", "bad gateway", "/timeout", "/refused", "/sqlerror"]:
            assert post_update(port, fake_bot_api.message_update(text)) == 200
        otlp_receiver.wait_for(lambda r: len(r.spans("POST /webhook/{secret}")) >= 6, 20)
        # Pool gauges are observed while the pool is open: wait for a periodic export.
        otlp_receiver.wait_for(lambda r: "db.client.connection.count" in r.metric_names(), 10)

    spans = otlp_receiver.spans()
    servers = otlp_receiver.spans("POST /webhook/{secret}")
    first = servers[0]
    kids = children(spans, first)
    names = sorted(s.name for s in kids)
    assert names == ["GET", "INCRBY", "SELECT", "telegram.api sendMessage"], names
    assert all(k.trace_id == first.trace_id for k in kids)
    assert first.kind == "SERVER" and first.resource["service.name"] == "plain-webhook-bot"
    api = next(k for k in kids if k.name == "telegram.api sendMessage")
    assert api.attributes["url.full"].endswith("/bot123456789:REDACTED/sendMessage")
    assert api.attributes["telegram.api.method"] == "sendMessage"
    sql = next(k for k in kids if k.name == "SELECT")
    assert sql.attributes["db.system.name"] == "postgresql"
    assert sql.attributes["db.query.text"] == "SELECT $1::int + ?"
    incr = next(k for k in kids if k.name == "INCRBY")
    assert incr.attributes["db.query.text"] == "INCRBY ? ?"
    # One span per Bot API call: never a bare HTTP span for Telegram.
    assert not [
        s
        for s in spans
        if s.name in ("POST", "GET")
        and s.kind == "CLIENT"
        and "telegram" in str(s.attributes.get("url.full", ""))
    ]
    codes = sorted(
        s.attributes.get("telegram.api.error_code", 0)
        for s in spans
        if s.name == "telegram.api sendMessage"
    )
    assert 429 in codes and 502 in codes
    errors = {s.attributes.get("error.type") for s in spans if s.name.startswith("telegram.api")}
    assert any(e and "Timeout" in e for e in errors), errors
    assert any(e and "ClientConnectorError" in e for e in errors), errors
    failed_sql = [s for s in spans if s.attributes.get("db.response.status_code") == "22012"]
    assert failed_sql and failed_sql[0].attributes["error.type"].endswith("DivisionByZeroError")

    names_received = otlp_receiver.metric_names()
    for metric in [
        "http.server.request.duration",
        "http.server.active_requests",
        "http.client.request.duration",
        "telegram.api.duration",
        "telegram.api.flood_waits",
        "db.client.operation.duration",
        "db.client.connection.count",
        "db.client.connection.max",
        "otelbot.cache.requests",
    ]:
        assert metric in names_received, (metric, sorted(names_received))
    systems = {
        p.attributes.get("db.system.name")
        for p in otlp_receiver.points("db.client.operation.duration")
    }
    assert systems == {"postgresql", "redis"}

    # The bot logged the URL of the failed calls, token and all: the records arrived, redacted.
    failed_calls = [str(r.body) for r in otlp_receiver.logs() if "answered" in str(r.body)]
    assert any("/bot123456789:REDACTED/sendMessage answered 502" in b for b in failed_calls), (
        failed_calls
    )
    # The token scan: nothing received, and nothing the process printed, holds the token.
    assert b"123456789:REDACTED" in otlp_receiver.raw_bytes()  # data that had the token
    assert_token_nowhere(otlp_receiver, bot.output, bot_token)
