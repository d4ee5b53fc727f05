"""Every finding of the updates sent so far, as counted by the bot: waits for a metric
export taken after the bot counted all of them, so a test can also say what was NOT found."""

from __future__ import annotations

from collections import Counter

from otelbot import semconv
from tests.diagnosis._harness import BotRun


def _latest(run: BotRun, name: str) -> tuple[int, float]:
    points = run.receiver.points(name)
    if not points:
        return 0, 0.0
    last = max(p.time_ns for p in points)
    return last, sum(p.value or 0 for p in points if p.time_ns == last)


def findings_counted(run: BotRun, timeout: float = 30.0) -> Counter[tuple[str, str]]:
    """(kind, handler) -> findings counted by the bot, from a metric export taken after
    every update sent was counted (a finding is counted right after its update). Needs at
    least one finding: the counter has no points before the first."""
    updates = semconv.TELEGRAM_UPDATES.name
    found = semconv.OTELBOT_FINDINGS.name
    run.receiver.wait_for(lambda r: _latest(run, updates)[1] >= run.sent, timeout)
    counted_at = _latest(run, updates)[0]
    run.receiver.wait_for(lambda r: _latest(run, found)[0] > counted_at, timeout)
    last = _latest(run, found)[0]
    out: Counter[tuple[str, str]] = Counter()
    for p in run.receiver.points(found):
        if p.time_ns == last:
            kind = str(p.attributes.get(semconv.FINDING_KIND, ""))
            handler = str(p.attributes.get(semconv.TELEGRAM_HANDLER, ""))
            out[(kind, handler)] += int(p.value or 0)
    return out
