"""watch's JSON API against known traffic sent by the real SDK and its OTLP exporters (HTTP
and gRPC)."""

from __future__ import annotations

from otelbot import semconv
from tests.watch._running import RunningWatch
from tests.watch._traffic import Bot

START = "__main__.start"
BUY = "__main__.buy"


def _send_known_traffic(watch: RunningWatch) -> tuple[Bot, str, str]:
    bot = Bot("shop-bot", watch.http_endpoint)
    for i in range(10):  # start: 10, 20, ... 100 ms
        bot.update(START, i * 1000, (i + 1) * 10)
    bot.update(
        BUY,
        20_000,
        300,
        children=[("SELECT orders", 5, 200), ("telegram.api sendMessage", 210, 50)],
    )
    slow = bot.update(BUY, 21_000, 500, error=True)
    bot.finding(semconv.EVENT_FLOOD_WAIT, BUY, "buy was flood-limited", slow)
    bot.finding("otelbot.postgresql.unused_index", "", "index never used", None)
    cache = bot.meter.create_counter(semconv.OTELBOT_CACHE_REQUESTS.name)
    cache.add(3, {semconv.CACHE_RESULT: semconv.CACHE_HIT})
    cache.add(1, {semconv.CACHE_RESULT: semconv.CACHE_MISS})
    bot.meter.create_counter(semconv.TELEGRAM_UPDATES.name).add(
        12, {semconv.TELEGRAM_HANDLER: START}
    )
    pool = bot.meter.create_up_down_counter(semconv.DB_CLIENT_CONNECTION_COUNT.name)
    pool.add(2, {semconv.DB_CLIENT_CONNECTION_STATE: "used"})
    pool.add(3, {semconv.DB_CLIENT_CONNECTION_STATE: "idle"})
    floods = bot.meter.create_counter(semconv.TELEGRAM_API_FLOOD_WAITS.name)
    floods.add(2, {semconv.TELEGRAM_API_METHOD: "sendMessage"})
    api = bot.meter.create_histogram(semconv.TELEGRAM_API_DURATION.name, unit="s")
    api.record(0.1, {semconv.TELEGRAM_API_METHOD: "sendMessage"})
    api.record(0.3, {semconv.TELEGRAM_API_METHOD: "sendMessage"})
    bot.flush()

    agent = Bot("otelbot-agent", watch.http_endpoint)
    up = {
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: 5432,
        semconv.DB_NAMESPACE: "shop",
    }
    agent.meter.create_gauge(semconv.POSTGRESQL_UP.name).set(1, up)
    down = {semconv.SERVER_ADDRESS: "127.0.0.1", semconv.SERVER_PORT: 6390}
    agent.meter.create_gauge(semconv.REDIS_UP.name).set(0, down)
    agent.flush()

    other = Bot("other-bot", None, grpc_endpoint=watch.grpc_endpoint)
    other.update("__main__.echo", 0, 7)
    other.flush()
    for b in (bot, agent, other):
        b.shutdown()
    return bot, slow.get_span_context().trace_id.to_bytes(16, "big").hex(), "other-bot"


def test_handlers_traces_findings_summary_and_health_from_known_traffic(
    watch: RunningWatch,
) -> None:
    _, slow_trace, other = _send_known_traffic(watch)

    handlers = {(h["service"], h["handler"]): h for h in watch.get("/api/handlers")}
    start = handlers[("shop-bot", START)]
    assert (start["count"], start["errors"]) == (10, 0)
    assert (start["avg_ms"], start["p50_ms"], start["p95_ms"], start["p99_ms"]) == (
        55.0,
        50.0,
        100.0,
        100.0,
    )
    assert start["recent_ms"] == [10.0 * (i + 1) for i in range(10)]
    buy = handlers[("shop-bot", BUY)]
    assert (buy["count"], buy["errors"], buy["avg_ms"], buy["max_ms"]) == (2, 1, 400.0, 500.0)
    assert handlers[(other, "__main__.echo")]["count"] == 1  # arrived over gRPC

    newest = watch.get("/api/traces?service=shop-bot")
    assert [t["handler"] for t in newest[:3]] == [BUY, BUY, START]
    slowest = watch.get("/api/traces?slowest=1&limit=3")
    assert [t["duration_ms"] for t in slowest] == [500.0, 300.0, 100.0]
    errors = watch.get("/api/traces?error=1")
    assert [(t["trace_id"], t["handler"]) for t in errors] == [(slow_trace, BUY)]
    assert {t["handler"] for t in watch.get(f"/api/traces?handler={START}&limit=100")} == {START}

    waterfall = watch.get(f"/api/traces/{slowest[1]['trace_id']}")
    rows = [(s["name"], s["depth"], s["offset_ms"], s["duration_ms"]) for s in waterfall["spans"]]
    assert rows == [
        ("telegram.update message", 0, 0.0, 300.0),
        ("SELECT orders", 1, 5.0, 200.0),
        ("telegram.api sendMessage", 1, 210.0, 50.0),
    ]
    assert watch.status("/api/traces/" + "0" * 32) == 404

    findings = watch.get("/api/findings")
    assert [f["event"] for f in findings] == [
        "otelbot.postgresql.unused_index",
        semconv.EVENT_FLOOD_WAIT,
    ]
    flood = findings[1]
    assert flood["trace_id"] == slow_trace and flood["trace_kept"]
    assert (flood["handler"], flood["object"], flood["source"]) == (BUY, "sendMessage", "bot")
    assert flood["evidence"] == f"evidence for {semconv.EVENT_FLOOD_WAIT}"
    assert flood["suggestion"] == f"suggestion for {semconv.EVENT_FLOOD_WAIT}"
    assert flood["code"] == "bot.py:42 in buy"
    assert findings[0]["trace_id"] == ""
    assert [f["event"] for f in watch.get(f"/api/traces/{slow_trace}")["findings"]] == [
        semconv.EVENT_FLOOD_WAIT
    ]

    summary = watch.get("/api/summary")["services"]["shop-bot"]
    assert summary["updates_processed"] == 12  # the bot's own counter
    assert summary["updates_kept"] == 12
    assert summary["errors"] == 1
    assert summary["cache"] == {"hits": 3, "misses": 1, "hit_ratio": 0.75}
    assert (summary["db_pool"]["used"], summary["db_pool"]["idle"]) == (2.0, 3.0)
    assert summary["bot_api"] == [
        {"method": "sendMessage", "calls": 2, "errors": 0, "flood_waits": 2, "avg_ms": 200.0}
    ]
    assert summary["findings"] == 2

    health = watch.get("/api/health")
    bots = {b["service"]: b for b in health["bots"]}
    assert set(bots) == {"shop-bot", "otelbot-agent", other}
    assert all(b["status"] == "up" for b in bots.values())
    assert bots["otelbot-agent"]["last_update_age_s"] is None
    targets = {(t["system"], t["target"], t["status"]) for t in health["agent_targets"]}
    assert targets == {
        ("postgresql", "127.0.0.1:5432/shop", "up"),
        ("redis", "127.0.0.1:6390", "down"),
    }
    # shop-bot: 12 updates with one child each, the 300 ms buy one more; other-bot: 2 spans
    assert health["watch"]["spans_kept"] == 12 * 2 + 1 + 2


def test_the_page_is_served_and_links_only_local_files(watch: RunningWatch) -> None:
    import urllib.request

    with urllib.request.urlopen(watch.ui + "/", timeout=10) as response:
        html = response.read().decode()
    assert "otelbot watch" in html and "/api/handlers" in html
    assert "http://" not in html.replace('"http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
