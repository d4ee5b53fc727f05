"""Memory growth findings: the snapshot comparison on real tracemalloc data, the growth
trigger on resident-memory samples, and a real aiogram bot under opentelemetry-instrument
whose leaking handler is named at the OTLP receiver (its controls are not)."""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections import deque
from collections.abc import Iterator

import pytest
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan

from otelbot import semconv
from otelbot.diagnosis.allocations import Allocations, Site, function_at, grown
from otelbot.diagnosis.memory import (
    MB,
    GrowthTrigger,
    MemoryGrowth,
    MemoryWatch,
    culprit,
    trace_seconds,
)
from otelbot.diagnosis.notes import UpdateNotes
from otelbot.runtime.process import ProcessProbe
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import BOTS, BotRun, findings_bot

# ---------------------------------------------------------------- real tracemalloc data

kept: list[bytes] = []
recent: deque[bytes] = deque(maxlen=10)


def keep(n: int) -> None:
    for _ in range(n):
        kept.append(bytes(50_000))  # the leak line


def churn(n: int) -> None:
    for _ in range(n):
        garbage = [bytes(5_000) for _ in range(20)]
        del garbage


def keep_recent(n: int) -> None:
    for _ in range(n):
        recent.append(bytes(50_000))


def handler_that_keeps() -> None:
    keep(10)


LEAK_LINE = keep.__code__.co_firstlineno + 2


@pytest.fixture
def tracing() -> Iterator[None]:
    assert not tracemalloc.is_tracing()
    tracemalloc.start(10)
    kept.clear()
    recent.clear()
    try:
        yield
    finally:
        tracemalloc.stop()
        kept.clear()
        recent.clear()


def tally() -> Allocations:
    gc.collect()
    return Allocations.of(tracemalloc.take_snapshot())


def test_growth_is_tallied_at_the_bot_line_that_keeps_the_objects(tracing: None) -> None:
    first = tally()
    handler_that_keeps()
    churn(20)
    last = tally()
    sites = grown(first, last)
    top = sites[0]
    assert (os.path.basename(top.file), top.line) == ("test_memory.py", LEAK_LINE)
    assert 500_000 <= top.size < 600_000  # ten 50 kB objects, plus the list's growth
    assert top.blocks >= 10
    # Innermost first: the leak line, then the caller's line in handler_that_keeps.
    assert [line for _, line in top.stack[:2]] == [
        LEAK_LINE,
        handler_that_keeps.__code__.co_firstlineno + 1,
    ]
    # The garbage was freed: its line holds nothing more at the end.
    churn_line = churn.__code__.co_firstlineno + 2
    assert all(s.line != churn_line for s in sites)


def test_a_steady_leak_is_named_and_the_handler_found_through_its_caller(
    tracing: None,
) -> None:
    first = tally()
    for _ in range(5):
        handler_that_keeps()
        churn(5)
    middle = tally()
    for _ in range(5):
        handler_that_keeps()
        churn(5)
    last = tally()
    found = culprit(first, middle, last, 1.0, 100_000)
    assert found is not None
    site, _traced, share = found
    assert site.line == LEAK_LINE and share >= 0.5
    detector = MemoryGrowth()
    code = handler_that_keeps.__code__
    detector.handlers[(code.co_filename, code.co_firstlineno)] = "tests.handler_that_keeps"
    assert detector.handler_of(site) == "tests.handler_that_keeps"
    finding = detector.finding(site, 12 * MB, 600.0, 1.0, share)
    assert finding.handler == "tests.handler_that_keeps"
    assert finding.code is not None and finding.code.function == "keep"
    assert finding.code.line == LEAK_LINE
    assert finding.object == f"test_memory.py:{LEAK_LINE}"
    assert "12.0 MB in 600 s (1.2 MB/min)" in finding.evidence


def test_growth_in_one_half_only_is_not_named(tracing: None) -> None:
    first = tally()
    for _ in range(10):
        handler_that_keeps()
    middle = tally()
    churn(50)  # the second half only makes garbage
    last = tally()
    assert grown(first, last)[0].line == LEAK_LINE
    assert culprit(first, middle, last, 1.0, 100_000) is None


def test_a_bounded_structure_turning_over_is_not_named(tracing: None) -> None:
    tracemalloc.stop()
    keep_recent(10)  # filled before tracing began: its objects are untraced
    tracemalloc.start(10)
    first = tally()
    keep_recent(15)
    middle = tally()
    keep_recent(15)
    last = tally()
    # tracemalloc sees the new objects but not the old ones they replaced, so the line
    # seems to grow until every old one is gone ...
    top = grown(first, last)[0]
    assert top.line == keep_recent.__code__.co_firstlineno + 2
    assert top.size >= 500_000
    # ... and then it stops: no finding.
    assert culprit(first, middle, last, 1.0, 100_000) is None


def test_function_at_spells_qualnames_like_the_interpreter() -> None:
    def outer() -> None:
        pass

    here = function_at(__file__, outer.__code__.co_firstlineno + 1)
    assert here is not None
    assert here.qualname == outer.__code__.co_qualname
    assert here.first_line == outer.__code__.co_firstlineno
    decorated = function_at(__file__, LEAK_LINE)
    assert decorated is not None and decorated.qualname == "keep"
    assert function_at(__file__, 1) is None
    assert function_at("/nonexistent/bot.py", 3) is None


def test_grown_ignores_lines_that_shrank_and_other_code() -> None:
    before = Allocations({("bot.py", 3): [500, 5], ("bot.py", 9): [100, 1], None: [900, 9]})
    after = Allocations({("bot.py", 3): [200, 2], ("bot.py", 9): [400, 4], None: [5_000, 50]})
    assert grown(before, after) == [Site("bot.py", 9, 300, 3, (("bot.py", 9),))]


# ---------------------------------------------------------------- tracing on and off


def test_a_traced_window_turns_tracemalloc_off_unless_the_bot_had_it_on() -> None:
    assert not tracemalloc.is_tracing()
    probe = ProcessProbe.create()
    assert probe is not None
    watch = MemoryWatch(MemoryGrowth(), probe)
    watch.trace(0.3, 1.0)
    assert not tracemalloc.is_tracing()
    tracemalloc.start(3)
    try:
        watch.trace(0.3, 1.0)
        assert tracemalloc.is_tracing() and tracemalloc.get_traceback_limit() == 3
    finally:
        tracemalloc.stop()


def test_no_watch_starts_when_the_setting_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELBOT_MEMORY_GROWTH_MB", "0")
    detector = MemoryGrowth()
    notes = UpdateNotes(NonRecordingSpan(INVALID_SPAN_CONTEXT), "message", 0.0)
    notes.handler = "bot.leak"
    detector.on_update(notes, lambda finding: None)
    assert not detector.started and not detector.handlers


# ---------------------------------------------------------------- the trigger


def feed(trigger: GrowthTrigger, rss: list[float], step: float = 1.0) -> list[bool]:
    return [trigger.add(i * step, int(mb * MB)) for i, mb in enumerate(rss)]


def test_the_trigger_fires_on_steady_growth_over_a_full_window() -> None:
    trigger = GrowthTrigger(window=40, growth=10 * MB)
    fired = feed(trigger, [100 + 0.5 * i for i in range(60)])
    assert not any(fired[:40])  # the window is not full yet
    assert fired[40] and all(fired[40:])


def test_the_trigger_ignores_a_rise_that_levels_off() -> None:
    trigger = GrowthTrigger(window=40, growth=10 * MB)
    rise_then_flat = [100.0 + min(i, 8) * 5 for i in range(120)]  # +40 MB, then flat
    assert not any(feed(trigger, rise_then_flat))
    one_jump = GrowthTrigger(window=40, growth=10 * MB)
    assert not any(feed(one_jump, [100.0 if i < 30 else 150.0 for i in range(120)]))
    small = GrowthTrigger(window=40, growth=10 * MB)
    assert not any(feed(small, [100 + 0.2 * i for i in range(120)]))  # 8 MB per window


def test_a_quiet_bot_is_traced_longer_so_that_the_window_holds_its_updates() -> None:
    assert trace_seconds(10, 20.0) == 10  # busy: the setting
    assert trace_seconds(10, 0.5) == 30  # 15 updates at 0.5 a second
    assert trace_seconds(10, 0.01) == 100  # at most 10x
    assert trace_seconds(10, 0.0) == 100  # no updates: growth from background work
    trigger = GrowthTrigger(window=10, growth=MB)
    for i in range(11):
        trigger.add(float(i), 100 * MB, updates=3 * i)
    assert trigger.update_rate() == 3.0


# ---------------------------------------------------------------- end to end

#: Short windows so a test run sees the detector fire (defaults: 10 MB, 600 s, 20 s).
FAST = {
    "OTELBOT_MEMORY_GROWTH_MB": "3",
    "OTELBOT_MEMORY_WINDOW": "4",
    "OTELBOT_MEMORY_TRACE_SECONDS": "4",
}
ROUNDS = 200  # at 10 rounds per second: long enough for a window, a trace and a report


def drive(run: BotRun, *commands: str) -> bool:
    """Send ``commands`` ten times a second until a memory finding arrives; True if one did."""
    for _ in range(ROUNDS):
        run.send(*commands)
        time.sleep(0.1)
        if run.findings(semconv.EVENT_MEMORY_GROWTH):
            return True
    return False


@pytest.mark.e2e
def test_a_handler_that_keeps_every_update_is_named_with_the_line(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "memory_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url, **FAST
    ) as run:
        assert drive(run, "/leak", "/garbage"), run.bot.tail()
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)
    found = run.findings(semconv.EVENT_MEMORY_GROWTH)
    assert len(found) == 1, [f.body for f in found]
    record = found[0]
    a = record.attributes
    source = (BOTS / "memory_bot.py").read_text().splitlines()
    append = source.index("    history.append(bytes(100_000))") + 1
    assert a[semconv.CODE_FILE_PATH].endswith("memory_bot.py")
    assert a[semconv.CODE_LINE_NUMBER] == append
    assert a[semconv.CODE_FUNCTION_NAME] == "remember"
    assert a["telegram.handler"].endswith(".leak")
    assert a[semconv.FINDING_OBJECT] == f"memory_bot.py:{append}"
    assert "resident memory grew" in a[semconv.FINDING_EVIDENCE]
    assert record.severity == "WARN"
    # The example trace is one of the /leak updates.
    leaks = {
        s.trace_id
        for s in otlp_receiver.spans("telegram.update message")
        if str(s.attributes.get("telegram.handler", "")).endswith(".leak")
    }
    assert record.trace_id in leaks


@pytest.mark.e2e
def test_short_lived_garbage_a_cache_filled_once_and_a_bounded_deque_make_no_finding(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "memory_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url, **FAST
    ) as run:
        run.send("/warm")
        drive(run, "/garbage", "/recent", "/warm")
        run.wait_handled()
    assert not run.findings(semconv.EVENT_MEMORY_GROWTH), [f.body for f in run.findings()]
