"""Cache-that-rarely-hits findings from a real aiogram bot under opentelemetry-instrument,
with the default thresholds (50 reads, 10%)."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import findings_bot

pytestmark = pytest.mark.e2e

# The ids cache_bot.py builds its keys from (PRICE_ITEM + 0..6, MENU_ITEM + 0..2).
PRICE_ITEM = 918273645
MENU_ITEM = 546372819
READS = 60


def test_a_key_that_changes_on_every_call_is_named_with_its_shape_never_its_ids(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "cache_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url
    ) as run:
        # The control first, a few at a time so its keys are set before they are read
        # again (concurrent first reads would all miss).
        run.send("/menu", "/menu", "/menu")
        run.wait_handled()
        for _ in range((READS - 3) // 19):
            run.send(*["/menu"] * 19)
            run.wait_handled()
        for _ in range(READS // 20):
            run.send(*["/price"] * 20)
            run.wait_handled()
        otlp_receiver.wait_for(lambda r: run.findings(semconv.EVENT_CACHE_RARELY_HITS), 20)
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)
    found = run.findings(semconv.EVENT_CACHE_RARELY_HITS)
    assert len(found) == 1, [f.body for f in found]
    record = found[0]
    a = record.attributes
    assert a["telegram.handler"].endswith(".price")
    assert a[semconv.FINDING_OBJECT] == "cacherare:price:?:?"
    assert a[semconv.CACHE_KEY_SHAPE] == "cacherare:price:?:?"
    evidence = a[semconv.FINDING_EVIDENCE]
    # Judged at the 50th read: every one a miss, each followed by SQL and a SET.
    assert "50 reads of keys shaped cacherare:price:?:?, 0 hit(s) (0%)" in evidence
    assert "after 50 misses the handler wrote a key of the same shape 50 times" in evidence
    assert "ran SQL 50 times" in evidence
    assert "TTL of 60 s" in evidence
    # The control's 57 hits of 60 reads, in the bot's overall ratio (57 of 110).
    assert "the bot's cache reads overall hit 52%" in evidence
    assert "timestamp" in a[semconv.FINDING_SUGGESTION]
    assert a[semconv.CODE_FILE_PATH].endswith("cache_bot.py")
    assert a[semconv.CODE_FUNCTION_NAME] == "price"
    # The control handler: no finding.
    assert not run.findings(semconv.EVENT_CACHE_RARELY_HITS, handler=".menu")

    # The GET spans carry the result and the key's shape.
    gets = otlp_receiver.spans("GET")
    seen = {
        (s.attributes.get(semconv.CACHE_KEY_SHAPE), s.attributes.get(semconv.CACHE_RESULT))
        for s in gets
    }
    assert seen == {
        ("cacherare:price:?:?", "miss"),
        ("cacherare:menu:?", "miss"),
        ("cacherare:menu:?", "hit"),
    }
    menu_hits = [s for s in gets if s.attributes.get(semconv.CACHE_RESULT) == "hit"]
    assert len(menu_hits) == READS - 3
    assert len(gets) == 2 * READS

    # No raw key, nor any id it was built from, anywhere in what was exported.
    exported = otlp_receiver.raw_bytes()
    assert b"cacherare:price:?:?" in exported  # the scan does see the shapes
    for item in [PRICE_ITEM + i for i in range(7)] + [MENU_ITEM + i for i in range(3)]:
        assert str(item).encode() not in exported, item
    assert b"cacherare:price:9" not in exported
    assert b"cacherare:menu:5" not in exported
