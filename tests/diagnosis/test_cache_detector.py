"""The cache detector's rules on updates' notes: the thresholds and their settings, what
counts as a cache, and its bounds."""

from __future__ import annotations

import pytest

from otelbot import semconv
from otelbot.diagnosis.cache import CacheRarelyHits
from otelbot.diagnosis.notes import REDIS, SQL, Op, UpdateNotes
from otelbot.diagnosis.report import Finding

HANDLER = "bot.price"


def _update(*ops: Op, handler: str = HANDLER) -> UpdateNotes:
    update = UpdateNotes(None, "message", 0.0)
    update.handler = handler
    update.ops.extend(ops)
    return update


def _read(shape: str, result: str) -> Op:
    return Op(REDIS, "GET ?", 0.0, 0.0, ((shape, result, None),))


def _write(shape: str, ttl: float | None = None) -> Op:
    return Op(REDIS, "SET ? ? ? ?", 0.0, 0.0, ((shape, None, ttl),))


def _sql() -> Op:
    return Op(SQL, "SELECT ?", 0.0, 0.0, (1, "SELECT", None))


def _cache_aside(shape: str, hit: bool, ttl: float | None = 60.0) -> UpdateNotes:
    if hit:
        return _update(_read(shape, "hit"))
    return _update(_read(shape, "miss"), _sql(), _write(shape, ttl))


def _feed(detector: CacheRarelyHits, updates: list[UpdateNotes]) -> list[Finding]:
    found: list[Finding] = []
    for update in updates:
        detector.on_update(update, found.append)
    return found


def test_judged_from_the_50th_read_by_default() -> None:
    detector = CacheRarelyHits()
    assert _feed(detector, [_cache_aside("price:?", False) for _ in range(49)]) == []
    [finding] = _feed(detector, [_cache_aside("price:?", False)])
    assert finding.event == semconv.EVENT_CACHE_RARELY_HITS
    assert finding.handler == HANDLER
    assert finding.object == "price:?"
    assert finding.attributes[semconv.CACHE_KEY_SHAPE] == "price:?"
    assert finding.evidence.startswith("50 reads of keys shaped price:?, 0 hit(s) (0%)")
    assert "wrote a key of the same shape 50 times and ran SQL 50 times" in finding.evidence
    assert "TTL of 60 s" in finding.evidence


def test_a_tenth_of_hits_is_enough_by_default() -> None:
    hits_5 = [_cache_aside("a:?", i % 10 == 0) for i in range(50)]
    assert _feed(CacheRarelyHits(), hits_5) == []  # 5 of 50: 10%, not under it
    hits_4 = [_cache_aside("a:?", i % 10 == 0 and i < 40) for i in range(50)]
    [finding] = _feed(CacheRarelyHits(), hits_4)
    assert "4 hit(s) (8%)" in finding.evidence


def test_settings_change_the_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELBOT_CACHE_MIN_READS", "10")
    monkeypatch.setenv("OTELBOT_CACHE_MIN_HIT_RATIO", "0.5")
    updates = [_cache_aside("a:?", i % 3 == 0) for i in range(10)]  # 4 hits of 10
    [finding] = _feed(CacheRarelyHits(), updates)
    assert finding.evidence.startswith("10 reads of keys shaped a:?, 4 hit(s) (40%)")


def test_keys_only_read_or_fsm_state_are_not_caches() -> None:
    read_only = [_update(_read("lock:?", "miss"), _sql()) for _ in range(60)]
    fsm = [_cache_aside("fsm:?:?:?:default:state", False) for _ in range(60)]
    # Refilled after fewer than a quarter of the misses: not used as a cache.
    rarely_refilled = [_cache_aside("flag:?", False) for _ in range(12)] + [
        _update(_read("flag:?", "miss")) for _ in range(48)
    ]
    assert _feed(CacheRarelyHits(), read_only + fsm + rarely_refilled) == []


def test_evidence_compares_the_handlers_other_shapes_and_the_bot() -> None:
    detector = CacheRarelyHits()
    _feed(detector, [_cache_aside("menu:?", True) for _ in range(30)])
    _feed(detector, [_cache_aside("other:?", True, None) for _ in range(10)])
    _feed(detector, [_update(_read("menu:?", "hit"), handler="bot.menu") for _ in range(20)])
    [finding] = _feed(detector, [_cache_aside("price:?:?", False, None) for _ in range(50)])
    assert "the handler's other key shapes hit 100% of 40 reads" in finding.evidence
    assert "the bot's cache reads overall hit 55%" in finding.evidence  # 60 of 110
    assert "TTL" not in finding.evidence


def test_multi_key_reads_count_per_key() -> None:
    shape = "item:?"
    mget = Op(REDIS, "MGET ? ?", 0.0, 0.0, ((shape, "miss", None), (shape, "miss", None)))
    updates = [_update(mget, _write(shape), _write(shape)) for _ in range(25)]
    [finding] = _feed(CacheRarelyHits(), updates)
    assert finding.evidence.startswith("50 reads of keys shaped item:?, 0 hit(s)")


def test_pairs_are_bounded_and_the_rest_is_other_without_a_finding() -> None:
    detector = CacheRarelyHits()
    for i in range(1000):
        detector.on_update(_cache_aside(f"k{chr(97 + i % 26)}:{i}", True), lambda f: None)
    assert len(detector.counts) == 1000
    found = _feed(detector, [_cache_aside("late:?", False) for _ in range(60)])
    assert found == []
    assert len(detector.counts) == 1001
    assert detector.counts[(HANDLER, "(other)")].reads == 60
