"""aiohttp client and server instrumentation against real servers (the fake Bot API and a
real aiohttp app), checked with the in-memory SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.trace import SpanKind, StatusCode
from yarl import URL

from otelbot.instrumentation.aiohttp_client import AiohttpClientInstrumentor
from otelbot.instrumentation.aiohttp_server import AiohttpServerInstrumentor
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.scan import token_leaks
from tests.instrumentation.conftest import WireTelemetry


@pytest.fixture
def client_instrumented(telemetry: MemoryTelemetry) -> Iterator[MemoryTelemetry]:
    inst = AiohttpClientInstrumentor()
    inst.instrument(**telemetry.providers)
    yield telemetry
    inst.uninstrument()


def _all_text(telemetry: MemoryTelemetry) -> str:
    parts = []
    for s in telemetry.spans():
        parts.append(s.name)
        parts.append(repr(dict(s.attributes or {})))
        parts.append(repr(s.status.description))
        for e in s.events:
            parts.append(repr(dict(e.attributes or {})))
    for p in telemetry.points():
        parts.append(repr(p.attributes))
    return "\n".join(parts)


async def test_bot_api_call_is_one_telegram_span_with_token_redacted(
    client_instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake_bot_api.url("sendMessage"), json={"chat_id": 5, "text": "hi"}) as resp,
    ):
        body = await resp.json()
    assert body["ok"] is True and body["result"]["text"] == "hi"
    spans = client_instrumented.spans()
    assert [s.name for s in spans] == ["telegram.api sendMessage"]
    span = spans[0]
    assert span.kind == SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["telegram.api.method"] == "sendMessage"
    assert attrs["telegram.bot.id"] == "123456789"
    assert attrs["url.template"] == "/bot{token}/{method}"
    assert attrs["url.full"].endswith("/bot123456789:REDACTED/sendMessage")
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "127.0.0.1"
    assert token_leaks(_all_text(client_instrumented), bot_token) == []
    api = client_instrumented.points("telegram.api.duration")
    assert api and api[0].attributes == {"telegram.api.method": "sendMessage"}
    http = client_instrumented.points("http.client.request.duration")
    assert http and http[0].attributes["url.template"] == "/bot{token}/{method}"
    # Telegram gets no traceparent: nothing of ours is sent to it.
    assert "traceparent" not in str(fake_bot_api.calls("sendMessage")[0].params)


async def test_errors_flood_waits_and_connection_failures_are_recorded_without_token(
    client_instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    fake_bot_api.script(
        "sendMessage", [Fault.flood(7), Fault.bad_request(), Fault.server_error(502)]
    )
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(fake_bot_api.url("sendMessage"), json={"chat_id": 1}) as r:
                statuses.append(r.status)
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.post(f"http://127.0.0.1:1/bot{bot_token}/getMe")
        # The token URL-encoded, as a proxy or a hand-built URL may carry it.
        encoded = URL(f"http://127.0.0.1:1/bot{quote(bot_token, safe='')}/getMe", encoded=True)
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.post(encoded)
    assert statuses == [429, 400, 502]
    spans = client_instrumented.spans()
    codes = [s.attributes.get("telegram.api.error_code") for s in spans]
    assert codes[:3] == [429, 400, 502]
    assert all(s.status.status_code == StatusCode.ERROR for s in spans[:4])
    refused = spans[3]
    assert refused.name == "telegram.api getMe"
    assert refused.attributes["error.type"].endswith("ClientConnectorError")
    assert any(e.name == "exception" for e in refused.events)
    floods = client_instrumented.points("telegram.api.flood_waits")
    assert floods and floods[0].value == 1
    assert token_leaks(_all_text(client_instrumented), bot_token) == []


async def test_get_updates_is_metrics_only_by_default(
    client_instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(fake_bot_api.url("getUpdates"), json={"timeout": 0}) as r:
            await r.json()
    assert client_instrumented.spans() == []
    points = client_instrumented.points("telegram.api.duration")
    assert [p.attributes["telegram.api.method"] for p in points] == ["getUpdates"]


async def test_other_requests_propagate_traceparent(
    client_instrumented: MemoryTelemetry, aiohttp_server_url: str
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(aiohttp_server_url + "/echo-headers", headers={"X-Mine": "1"}) as r:
            headers = await r.json()
    span = client_instrumented.spans()[0]
    assert span.name == "GET"
    assert headers["X-Mine"] == "1"
    assert headers["traceparent"].split("-")[2] == format(span.context.span_id, "016x")


@pytest.fixture
async def aiohttp_server_url() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(dict(request.headers))

    app = web.Application()
    app.router.add_get("/echo-headers", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_client_results_and_exceptions_unchanged(
    telemetry: MemoryTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    async def run() -> tuple[object, ...]:
        fake_bot_api.script("sendMessage", [Fault.bad_request("Bad Request: x")])
        async with aiohttp.ClientSession() as s:
            async with s.post(fake_bot_api.url("sendMessage"), json={"chat_id": 1}) as r:
                first = (r.status, await r.text())
            try:
                await s.get(f"http://127.0.0.1:1/bot{bot_token}/getMe")
            except aiohttp.ClientConnectorError as exc:
                second = (type(exc), str(exc))
        return first, second

    bare = await run()
    inst = AiohttpClientInstrumentor()
    inst.instrument(**telemetry.providers)
    try:
        instrumented = await run()
    finally:
        inst.uninstrument()
    assert bare == instrumented
    # uninstrument restored the original
    assert not hasattr(aiohttp.ClientSession._request, "__otelbot_original__")


async def test_cancellation_passes_through(
    client_instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi
) -> None:
    fake_bot_api.script("sendMessage", [Fault.slow(5)])
    async with aiohttp.ClientSession() as session:
        task = asyncio.ensure_future(session.post(fake_bot_api.url("sendMessage"), json={}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    span = client_instrumented.spans()[0]
    assert span.attributes["error.type"].endswith("CancelledError")


async def test_internal_error_does_not_break_the_request(
    client_instrumented: MemoryTelemetry, fake_bot_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otelbot.instrumentation import aiohttp_client

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("otelbot bug")

    monkeypatch.setattr(aiohttp_client._Telemetry, "target", broken)
    async with aiohttp.ClientSession() as session:
        async with session.post(fake_bot_api.url("getMe"), json={}) as r:
            assert (await r.json())["result"]["is_bot"] is True


# ---------------------------------------------------------------- server


@pytest.fixture
def server_instrumented(telemetry: MemoryTelemetry) -> Iterator[MemoryTelemetry]:
    inst = AiohttpServerInstrumentor()
    inst.instrument(**telemetry.providers)
    yield telemetry
    inst.uninstrument()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_server_spans_with_route_parent_and_redacted_token_path(
    server_instrumented: MemoryTelemetry, bot_token: str
) -> None:
    from aiohttp.web import Application  # imported before or after: no class swap needed

    seen_parent = {}

    async def hook(request: web.Request) -> web.Response:
        from opentelemetry import trace

        seen_parent.setdefault("span", trace.get_current_span().get_span_context().span_id)
        return web.Response(text="ok")

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError(f"failed for {request.path}")

    app = Application()
    app.router.add_post("/webhook/{secret}", hook)
    app.router.add_post(f"/tg/{bot_token}", hook)
    app.router.add_get("/boom", boom)
    runner, base = await _serve(app)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    try:
        async with aiohttp.ClientSession() as s:
            headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
            async with s.post(base + "/webhook/abc", headers=headers) as r:
                assert r.status == 200
            async with s.post(base + f"/tg/{bot_token}") as r:
                assert r.status == 200
            async with s.get(base + "/boom") as r:
                assert r.status == 500
            async with s.get(base + "/missing") as r:
                assert r.status == 404
    finally:
        await runner.cleanup()
    spans = server_instrumented.spans()
    names = [s.name for s in spans]
    assert names[0] == "POST /webhook/{secret}"
    first = spans[0]
    assert first.kind == SpanKind.SERVER
    assert format(first.context.trace_id, "032x") == trace_id
    assert first.parent is not None and first.parent.span_id == 0xB7AD6B7169203331
    assert seen_parent["span"] == first.context.span_id
    assert first.attributes["http.route"] == "/webhook/{secret}"
    assert first.attributes["http.response.status_code"] == 200
    assert names[1] == "POST /tg/123456789:REDACTED"
    assert spans[1].attributes["url.path"] == "/tg/123456789:REDACTED"
    boom_span = spans[2]
    assert boom_span.attributes["error.type"] == "RuntimeError"
    assert boom_span.status.status_code == StatusCode.ERROR
    assert spans[3].attributes["http.response.status_code"] == 404
    assert spans[3].status.status_code != StatusCode.ERROR
    assert token_leaks(_all_text(server_instrumented), bot_token) == []
    durations = server_instrumented.points("http.server.request.duration")
    routes = {p.attributes.get("http.route") for p in durations}
    assert "/webhook/{secret}" in routes
    active = server_instrumented.points("http.server.active_requests")
    assert active and all(p.value == 0 for p in active)


async def test_webhook_paths_and_the_secret_header_never_leave_the_process(
    wire: WireTelemetry, fake_bot_api: FakeBotApi, bot_token: str
) -> None:
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("cannot handle " + request.path)

    app = web.Application()
    # Webhooks written by hand: at a fixed path that looks generated, and at a short one
    # that Telegram's header shows to be a webhook.
    app.router.add_post("/hook/SuperSecretPath_q7w8e9r0", ok)
    app.router.add_post("/hook2/Sh0rtPath", ok)
    app.router.add_post("/tg/{secret}", ok)
    app.router.add_post("/fail/{secret}", boom)
    app.router.add_get("/health", ok)
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake_bot_api.base_url))
    bot = Bot(bot_token, session=session)
    SimpleRequestHandler(Dispatcher(), bot, secret_token="HeaderSecret_z9x8c7").register(
        app, path="/aiogram/HookPath_s3cr3tZ"
    )
    instrumentor = AiohttpServerInstrumentor()
    instrumentor.instrument(**wire.providers)
    runner, base = await _serve(app)
    telegram = {"X-Telegram-Bot-Api-Secret-Token": "HeaderSecret_z9x8c7"}
    update = fake_bot_api.message_update("hello")
    try:
        async with aiohttp.ClientSession() as s:
            for method, path, headers, expected in [
                ("POST", "/hook/SuperSecretPath_q7w8e9r0", {}, 200),
                ("POST", "/hook2/Sh0rtPath", telegram, 200),
                ("POST", "/tg/DynamicSecret_m4n5b6", {}, 200),
                ("POST", "/fail/FailingSecret_p0o9i8", {}, 500),
                ("GET", "/health", {}, 200),
                ("POST", "/aiogram/HookPath_s3cr3tZ", telegram, 200),
                ("POST", "/aiogram/HookPath_s3cr3tZ", {}, 401),
                # The owner opens the webhook in a browser: no route matches GET.
                ("GET", "/aiogram/HookPath_s3cr3tZ", {}, 405),
            ]:
                async with s.request(method, base + path, headers=headers, json=update) as r:
                    assert r.status == expected, (method, path)
    finally:
        await runner.cleanup()
        await bot.session.close()
        instrumentor.uninstrument()
    raw = wire.exported()
    assert raw.count(b"http.server.request.duration") >= 1
    secrets = [
        "SuperSecretPath_q7w8e9r0",
        "Sh0rtPath",
        "DynamicSecret_m4n5b6",
        "FailingSecret_p0o9i8",
        "HookPath_s3cr3tZ",
        "HeaderSecret_z9x8c7",
    ]
    assert [s for s in secrets if s.encode() in raw] == []
    # Routes that are neither a webhook nor a route's variable part stay readable.
    assert b"GET /health" in raw and b"POST /tg/{secret}" in raw
    assert b"POST /hook/{secret}" in raw and b"POST /{webhook}" in raw


async def test_server_uninstrument_restores_handle(telemetry: MemoryTelemetry) -> None:
    from aiohttp import web_app

    original = web_app.Application._handle
    inst = AiohttpServerInstrumentor()
    inst.instrument(**telemetry.providers)
    assert web_app.Application._handle is not original
    inst.uninstrument()
    assert web_app.Application._handle is original


def test_uninstrument_through_a_new_instrumentor_object_restores(
    telemetry: MemoryTelemetry,
) -> None:
    from aiohttp import web_app

    original = web_app.Application._handle
    AiohttpServerInstrumentor().instrument(**telemetry.providers)
    AiohttpServerInstrumentor().uninstrument()  # opentelemetry-instrument users do this
    assert web_app.Application._handle is original
