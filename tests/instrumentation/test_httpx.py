"""httpx client instrumentation: real sync and async clients against the fake Bot API and a
local HTTP server, checked with the in-memory SDK."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.trace import StatusCode

from otelbot.instrumentation.httpx_client import HttpxClientInstrumentor
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.scan import token_leaks


@pytest.fixture
def instrumented(telemetry: MemoryTelemetry) -> Iterator[MemoryTelemetry]:
    HttpxClientInstrumentor().instrument(**telemetry.providers)
    yield telemetry
    HttpxClientInstrumentor().uninstrument()


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A plain HTTP service (not Telegram) that keeps the headers it received."""
    received: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.json_response({"ok": True}, status=int(request.query.get("status", 200)))

    app = web.Application()
    app.router.add_get("/items", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


def by_name(t: MemoryTelemetry, name: str) -> list[Any]:
    return [s for s in t.spans() if s.name == name]


async def test_bot_api_request_becomes_a_telegram_api_span_with_the_token_redacted(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    fake_bot_api.script("sendMessage", [Fault.ok(), Fault.flood(4)])
    async with httpx.AsyncClient() as client:
        ok = await client.post(fake_bot_api.url("sendMessage"), data={"chat_id": 1, "text": "x"})
        flooded = await client.post(fake_bot_api.url("sendMessage"), data={"chat_id": 1})
        await client.post(fake_bot_api.url("getUpdates"), data={"timeout": 0})
    assert (ok.status_code, flooded.status_code) == (200, 429)
    first, second = by_name(instrumented, "telegram.api sendMessage")
    bot_id = bot_token.split(":")[0]
    assert first.attributes["url.full"] == (
        f"{fake_bot_api.base_url}/bot{bot_id}:REDACTED/sendMessage"
    )
    assert first.attributes["telegram.api.method"] == "sendMessage"
    assert first.attributes["http.response.status_code"] == 200
    assert second.attributes["telegram.api.error_code"] == 429
    assert second.status.status_code is StatusCode.ERROR
    # getUpdates: metrics only
    assert len(instrumented.spans()) == 2
    methods = sorted(
        p.attributes["telegram.api.method"] for p in instrumented.points("telegram.api.duration")
    )
    assert methods == ["getUpdates", "sendMessage", "sendMessage"]
    (waits,) = instrumented.points("telegram.api.flood_waits")
    assert waits.value == 1
    text = repr([dict(s.attributes) for s in instrumented.spans()])
    assert token_leaks(text, bot_token) == []


def test_sync_client_is_traced_too(
    instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    with httpx.Client() as client:
        assert client.get(fake_bot_api.url("getMe")).json()["ok"] is True
    (span,) = by_name(instrumented, "telegram.api getMe")
    assert span.attributes["http.request.method"] == "GET"
    assert token_leaks(repr(dict(span.attributes)), bot_token) == []


async def test_other_requests_carry_traceparent_and_keep_their_results(
    instrumented: MemoryTelemetry, echo_server: tuple[str, list[dict[str, str]]]
) -> None:
    base, received = echo_server
    async with httpx.AsyncClient() as client:
        ok = await client.get(base + "/items?token=s3cr3t")
        bad = await client.get(base + "/items", params={"status": "503"})
    assert (ok.status_code, bad.status_code) == (200, 503)
    assert ok.json() == {"ok": True}
    first, second = by_name(instrumented, "GET")
    trace_id = format(first.context.trace_id, "032x")
    assert received[0]["traceparent"].split("-")[1] == trace_id
    assert first.attributes["url.full"] == base + "/items?token=REDACTED"
    assert second.attributes["http.response.status_code"] == 503
    assert second.attributes["error.type"] == "503"
    statuses = sorted(
        p.attributes.get("http.response.status_code")
        for p in instrumented.points("http.client.request.duration")
    )
    assert statuses == [200, 503]


async def test_connection_errors_pass_through_unchanged(instrumented: MemoryTelemetry) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/closed")
    (span,) = by_name(instrumented, "GET")
    assert span.attributes["error.type"] == "httpx.ConnectError"
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.instrumentation.httpx") is None,
    reason="opentelemetry-instrumentation-httpx (contrib) is not installed",
)
def test_what_the_contrib_httpx_instrumentation_records(
    telemetry: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    """Why otelbot's distro skips contrib's httpx instrumentation: its span for a Bot API
    call is a plain HTTP span carrying the bot token in ``url.full``."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument(tracer_provider=telemetry.tracer_provider)
    try:
        with httpx.Client() as client:
            client.get(fake_bot_api.url("getMe"))
    finally:
        HTTPXClientInstrumentor().uninstrument()
    (span,) = telemetry.spans()
    assert span.name == "GET"
    assert token_leaks(repr(dict(span.attributes)), bot_token) == ["token", "secret part"]
