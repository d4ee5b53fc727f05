"""The end-to-end bench's rounds: the order rotates each round, and the per-round ratio
pairs each run with bare's run of the same round (no bot is started here)."""

from __future__ import annotations

import pytest

from bench import e2e
from bench.run import e2e_table


class _NoReceiver:
    def close(self) -> None:
        pass


def _result(config: str, rate: float) -> e2e.RunResult:
    return e2e.RunResult(config, rate, 0.0, 1000.0, 100.0)


def test_each_round_rotates_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    rates = iter(range(1, 100))

    def run_once(config: e2e.Config, *args: object) -> e2e.RunResult:
        order.append(config.name)
        return _result(config.name, float(next(rates)))

    monkeypatch.setattr(e2e, "Receiver", _NoReceiver)
    monkeypatch.setattr(e2e, "run_once", run_once)
    configs = [e2e.Config(name, name != "a") for name in ("a", "b", "c")]
    summaries = e2e.run_interleaved(configs, 4, 10, 0.0, log=lambda line: None)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    # Each summary keeps its runs in round order, whatever the order within the round.
    assert [r.updates_per_s for r in summaries[0].runs] == [1.0, 6.0, 8.0, 10.0]
    assert [r.updates_per_s for r in summaries[1].runs] == [2.0, 4.0, 9.0, 11.0]


def test_per_round_ratio_pairs_runs_of_the_same_round() -> None:
    bare = e2e.Summary(e2e.Config("bare", False), [_result("bare", r) for r in (100, 400, 200)])
    # Two rounds at 0.9 of their bare run and one slow run while the machine's speed drifts
    # 4x: the ratio of the medians says 0.5, the per-round ratio 0.9.
    bot = e2e.Summary(e2e.Config("bot", True), [_result("bot", r) for r in (90, 360, 100)])
    assert e2e.paired_ratio(bot, bare) == pytest.approx(0.9)
    assert bot.median / bare.median == pytest.approx(0.5)
    table = e2e_table([bare, bot])
    assert "| bot | 100 | 90-360 | 0.50 | 0.90 |" in table
    assert "| bare | 200 | 100-400 | 1.00 | 1.00 |" in table


def test_per_round_ratio_skips_a_bare_run_that_measured_nothing() -> None:
    bare = e2e.Summary(e2e.Config("bare", False), [_result("bare", r) for r in (0, 200)])
    bot = e2e.Summary(e2e.Config("bot", True), [_result("bot", r) for r in (50, 180)])
    assert e2e.paired_ratio(bot, bare) == pytest.approx(0.9)
    empty = e2e.Summary(e2e.Config("bot", True), [])
    assert e2e.paired_ratio(empty, bare) is None
