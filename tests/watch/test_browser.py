"""The page in a real browser: a real aiogram bot (tests/diagnosis/bots/flood_bot.py) under
the real ``opentelemetry-instrument`` exports to a real ``otelbot watch`` process; headless
Chromium (Debian's, driven by Playwright) shows its handlers, opens its flood-wait finding and
sees that update's waterfall. The screenshot goes to the test's temporary directory, and
to docs/watch.png (the one in the docs) with OTELBOT_UPDATE_SCREENSHOT=1."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.processes import Child, free_port, instrument_command
from tests._require import missing, module

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "tests" / "diagnosis" / "bots" / "flood_bot.py"
CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = ROOT / "docs" / "watch.png"
SERVICE = "flood-bot"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _until(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


def _bot_env(watch_http: int, fake_bot_api: FakeBotApi, token: str, pg: str, redis: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME=SERVICE,
        # Only the port differs from the SDK's default (tests run beside other things).
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{watch_http}",
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_BLRP_SCHEDULE_DELAY="100",
        PYTHONUNBUFFERED="1",
        BOT_TOKEN=token,
        BOT_API_BASE=fake_bot_api.base_url,
        PG_DSN=pg,
        REDIS_URL=redis,
    )
    return env


def test_the_page_shows_handlers_and_a_finding_opens_its_trace_waterfall(
    fake_bot_api: FakeBotApi, bot_token: str, pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    screenshot = tmp_path / "watch.png"
    sync_api = module("playwright.sync_api", "pip install 'otelbot[dev]'")
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed (scripts/install-tools: apt-get install chromium)")
    http, grpc, ui = free_port(), free_port(), free_port()
    watch_cmd = [
        sys.executable, "-m", "otelbot.cli", "watch", "--no-tui",
        "--otlp-http", f"127.0.0.1:{http}", "--otlp-grpc", f"127.0.0.1:{grpc}",
        "--ui", f"127.0.0.1:{ui}",
    ]  # fmt: skip
    page_url = f"http://127.0.0.1:{ui}"
    with Child(watch_cmd, cwd=ROOT, name="otelbot-watch") as watch:
        watch.wait_for_line("listening", 30)
        env = _bot_env(http, fake_bot_api, bot_token, pg_dsn, redis_url)
        bot_cmd = [instrument_command(), sys.executable, str(BOT)]
        with Child(bot_cmd, env=env, cwd=ROOT, name="flood_bot.py") as bot:
            bot.wait_for_line("polling", 60)
            fake_bot_api.push_updates([fake_bot_api.message_update("/reply", user_id=7001)])
            fake_bot_api.push_updates([fake_bot_api.message_update("/reply", user_id=7002)])
            _until("two /reply updates", lambda: len(_get(page_url + "/api/traces")) >= 2)
            fake_bot_api.script("sendMessage", [Fault.ok(), Fault.flood(2), Fault.flood(2)])
            fake_bot_api.push_updates([fake_bot_api.message_update("/burst", user_id=7003)])
            finding = _until(
                "the flood-wait finding",
                lambda: [
                    f
                    for f in _get(page_url + "/api/findings")
                    if f["event"] == semconv.EVENT_FLOOD_WAIT and f["trace_kept"]
                ],
            )[0]
            _until(
                "the bot's metrics",
                lambda: _get(page_url + "/api/summary")["services"][SERVICE]["bot_api"],
            )

            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
                )
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(page_url + "/")
                    page.wait_for_selector("#handlers tbody tr.handler-row", timeout=30_000)
                    handlers = page.locator("#handlers tbody tr.handler-row").all_inner_texts()
                    assert any(".burst" in row for row in handlers)
                    assert any(".reply" in row for row in handlers)
                    page.wait_for_selector("#botapi tbody tr", timeout=30_000)
                    assert "sendMessage" in page.locator("#botapi").inner_text()

                    shown = page.locator(f'.finding[data-trace="{finding["trace_id"]}"]').first
                    shown.wait_for(timeout=30_000)
                    assert "Suggestion" in shown.inner_text()
                    shown.click()
                    page.wait_for_selector("#waterfall .span-row", timeout=30_000)
                    waterfall = page.locator("#waterfall").inner_text()
                    assert "telegram.update message" in waterfall
                    assert waterfall.count("telegram.api sendMessage") >= 3  # the burst's sends
                    assert finding["trace_id"] in page.locator("#trace-title").inner_text()
                    page.wait_for_timeout(500)  # the smooth scroll to the waterfall ends
                    page.evaluate("window.scrollTo(0, 0)")
                    page.screenshot(path=str(screenshot), full_page=True)
                finally:
                    browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("OTELBOT_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)
