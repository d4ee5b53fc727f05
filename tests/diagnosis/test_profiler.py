"""The profiler's attribution, aggregation and bounds on real stacks of another thread, the
call named at a line, the bounded metric and the hot code judgement."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan

from otelbot import semconv
from otelbot.diagnosis import profiler
from otelbot.diagnosis.callsite import called
from otelbot.diagnosis.hot_code import HotCode
from otelbot.diagnosis.notes import UpdateNotes
from otelbot.diagnosis.profile_metric import TOP, ProfileMetric
from otelbot.diagnosis.profiler import IDLE, LOOP, OTHER, OwnerProfile, Profile


def spin(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i * i  # the spin line


def nap(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.005)


def doze(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.1)  # as a blocking call does: a woken thread may wait for a CPU


def caller(stop: threading.Event) -> None:
    spin(stop)


SPIN_LINE = spin.__code__.co_firstlineno + 4
NAP_LINE = nap.__code__.co_firstlineno + 2
DOZE_LINE = doze.__code__.co_firstlineno + 2


@contextmanager
def running(target: Callable[[threading.Event], Any]) -> Iterator[int]:
    """``target`` running in a thread; yields the thread's id."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.05)
    try:
        assert thread.ident is not None
        yield thread.ident
    finally:
        stop.set()
        thread.join()


def sample(
    profile: Profile, thread: int, handler: str | None, n: int = 20, follow: bool = False
) -> list[str]:
    if follow:
        profile.follow(thread)
    owners = []
    for _ in range(n):
        time.sleep(0.002)
        owners.append(profile.add(sys._current_frames()[thread], handler, 0.015))
    return owners


def test_samples_of_a_step_go_to_its_handler_with_the_bot_line_and_its_callers() -> None:
    profile = Profile()
    with running(caller) as thread:
        assert set(sample(profile, thread, "bot.crunch")) == {"bot.crunch"}
    window = profile.take()
    crunch = window.owners["bot.crunch"]
    assert crunch.samples == window.samples == 20
    assert crunch.seconds == pytest.approx(0.3)
    assert crunch.own["spin"] == 20
    assert crunch.cumulative["spin"] == crunch.cumulative["caller"] == 20
    lines = crunch.top_lines(3)
    # The GIL changes hands at the loop's jump too: a few samples may be on the for line.
    assert {line.function for line in lines} == {"spin"}
    assert sum(line.samples for line in lines) == 20
    line = lines[0]
    assert (line.line, line.call) == (SPIN_LINE, None) and line.samples >= 10
    assert line.label() == f"spin (test_profiler.py:{SPIN_LINE})"
    stacks = crunch.collapsed("bot.crunch").splitlines()
    assert stacks and all(s.startswith("bot.crunch;") for s in stacks)
    assert sum(int(s.rsplit(" ", 1)[1]) for s in stacks) == 20
    assert f";caller (test_profiler.py:{caller.__code__.co_firstlineno + 1});spin " in stacks[0]
    # The next window starts empty.
    assert profile.take().samples == 0


def test_a_line_waiting_in_a_builtin_call_names_the_call() -> None:
    profile = Profile()
    with running(nap) as thread:
        sample(profile, thread, "bot.nap")
    nap_profile = profile.take().owners["bot.nap"]
    top = nap_profile.top_lines(1)[0]
    assert (top.line, top.call) == (NAP_LINE, "time.sleep")
    assert top.label() == f"nap (test_profiler.py:{NAP_LINE}) → time.sleep"
    assert any(
        s.endswith(f"→ time.sleep {top.samples}") for s in nap_profile.collapsed("h").splitlines()
    )


def test_a_sample_is_on_cpu_when_the_thread_computes_and_waiting_when_it_sleeps() -> None:
    profile = Profile()
    with running(caller) as thread:
        sample(profile, thread, "bot.crunch", follow=True)
    with running(doze) as thread:
        sample(profile, thread, "bot.nap", follow=True)
    window = profile.take()
    crunch, napping = window.owners["bot.crunch"], window.owners["bot.nap"]
    # The thread's CPU clock was read at every sample, on Linux.
    assert crunch.timed == napping.timed == 20
    # Mostly (a loaded machine can blur a few 2 ms intervals: a woken sleeper waiting for
    # a CPU, a spinner waiting for the GIL).
    assert crunch.on_cpu > crunch.waiting, (crunch.on_cpu, crunch.waiting)
    assert napping.waiting > napping.on_cpu, (napping.on_cpu, napping.waiting)
    assert napping.waiting_seconds == pytest.approx(0.015 * napping.waiting)
    assert crunch.cpu_seconds == pytest.approx(0.015 * crunch.on_cpu)
    # Per line too: the spin line is hot, the sleeping line is not offered as hot at all.
    spin_line = crunch.top_lines(1, on_cpu=True)[0]
    assert spin_line.line == SPIN_LINE and spin_line.on_cpu > spin_line.waiting
    slept = napping.top_lines(1)[0]
    assert (slept.line, slept.samples) == (DOZE_LINE, 20)
    assert (slept.on_cpu, slept.waiting) == (napping.on_cpu, napping.waiting)
    assert napping.top_lines(3, on_cpu=True) == []
    # Absorbed into a handler's pending profile, the counts add up.
    both = OwnerProfile()
    both.absorb(napping)
    both.absorb(napping)
    assert (both.timed, both.waiting) == (40, 2 * napping.waiting)
    assert both.top_lines(1)[0].waiting == 2 * napping.waiting


def test_without_the_thread_every_sample_counts_as_on_cpu() -> None:
    profile = Profile()  # not told which thread it samples: nothing to read the clock of
    with running(doze) as thread:
        sample(profile, thread, "bot.nap")
        early = profile.take().owners["bot.nap"]
        assert (early.timed, early.waiting) == (0, 0)
        assert early.cpu_seconds == pytest.approx(0.3)  # as before the split
        assert early.top_lines(1, on_cpu=True)[0].line == DOZE_LINE
        # Told the thread later (the hot code detector does at the first update's end):
        # the samples taken before count as the timed ones split.
        sample(profile, thread, "bot.nap", follow=True)
    later = profile.take().owners["bot.nap"]
    mixed = OwnerProfile()
    mixed.absorb(early)
    mixed.absorb(later)
    assert (mixed.samples, mixed.timed) == (40, 20) and mixed.waiting > 10
    # 40 samples of 15 ms, as the 20 timed ones: mostly waiting.
    assert mixed.cpu_seconds == pytest.approx(0.6 * later.on_cpu / 20)
    assert mixed.cpu_seconds < 0.3
    assert mixed.top_lines(1, on_cpu=True) == []


def test_outside_a_step_the_loop_is_idle_while_it_waits_and_busy_otherwise() -> None:
    profile = Profile()

    def loop(stop: threading.Event) -> None:
        async def main() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)

        asyncio.run(main())

    with running(loop) as thread:
        owners = sample(profile, thread, None)
    assert owners.count(IDLE) >= 15, owners
    assert profile.take().owners[IDLE].own == {profiler.IDLE_FUNCTION: owners.count(IDLE)}
    with running(spin) as thread:
        assert set(sample(profile, thread, None, 5)) == {LOOP}


def test_every_table_is_bounded() -> None:
    many = OwnerProfile()
    for i in range(profiler.MAX_FUNCTIONS + 50):
        many.own[f"f{i}"] += 1
    more = OwnerProfile()
    more.own.update({f"g{i}": 2 for i in range(20)})
    more.own["f0"] = 5
    merged = OwnerProfile()
    merged.absorb(many)
    merged.absorb(more)
    assert len(merged.own) == profiler.MAX_FUNCTIONS + 1
    assert merged.own[OTHER] == 50 + 40
    assert merged.own["f0"] == 6
    assert sum(merged.own.values()) == sum(many.own.values()) + sum(more.own.values())
    profile = Profile()
    for i in range(profiler.MAX_OWNERS + 5):
        profile.add(None, f"h{i}", 0.01)
    window = profile.take()
    assert len(window.owners) == profiler.MAX_OWNERS + 1
    assert window.owners[OTHER].samples == 5


def test_collapsed_stacks_stop_at_the_limit() -> None:
    profile = Profile()
    with running(caller) as thread:
        sample(profile, thread, "h", 5)
    owner = profile.take().owners["h"]
    text = owner.collapsed("h")
    assert owner.collapsed("h", limit=len(text)) == text
    assert owner.collapsed("h", limit=len(text.splitlines()[0]) - 1) == ""


def awaiting() -> Any:
    async def inner() -> None:
        await asyncio.sleep(0)

    return inner


def test_called_names_the_call_as_written_or_nothing() -> None:
    def sleeper() -> None:
        time.sleep(0)

    code = sleeper.__code__
    offsets = [i for i in range(0, len(code.co_code), 2) if called(code, i)]
    assert [called(code, i) for i in offsets] == ["time.sleep"]
    assert called(code, -1) is None
    inner = awaiting().__code__
    names = {called(inner, i) for i in range(0, len(inner.co_code), 2)} - {None}
    assert names == {"asyncio.sleep"}  # an await over three lines


# ---------------------------------------------------------------- the metric


def _points(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    out = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == semconv.OTELBOT_PROFILE_SAMPLES.name:
                    for p in metric.data.data_points:
                        a = p.attributes or {}
                        out[
                            (str(a[semconv.TELEGRAM_HANDLER]), str(a[semconv.CODE_FUNCTION_NAME]))
                        ] = int(p.value)
    return out


def _window(owner: str, own: dict[str, int]) -> profiler.Window:
    profile = OwnerProfile()
    profile.own.update(own)
    profile.samples = sum(own.values())
    return profiler.Window({owner: profile}, profile.samples, 1.0)


def test_the_metric_names_the_top_functions_of_each_owner_and_keeps_their_names() -> None:
    reader = InMemoryMetricReader()
    metric = ProfileMetric(MeterProvider(metric_readers=[reader]).get_meter("t"))
    first = {f"f{i}": 100 - i for i in range(TOP + 5)}
    metric.record(_window("bot.h", first))
    points = _points(reader)
    assert points[("bot.h", "f0")] == 100
    assert ("bot.h", f"f{TOP - 1}") in points and ("bot.h", f"f{TOP}") not in points
    assert points[("bot.h", OTHER)] == sum(100 - i for i in range(TOP, TOP + 5))
    # Later, a function that was not named has the most samples: it stays in (other), and
    # the named ones keep their series; every count is added exactly once.
    metric.record(_window("bot.h", {f"f{TOP}": 1000, "f0": 1}))
    points = _points(reader)
    assert points[("bot.h", "f0")] == 101
    assert points[("bot.h", OTHER)] == sum(100 - i for i in range(TOP, TOP + 5)) + 1000
    assert len([k for k in points if k[0] == "bot.h"]) == TOP + 1
    assert sum(points.values()) == sum(first.values()) + 1001


# ---------------------------------------------------------------- judging hot code


def _update(handler: str, seconds: float) -> UpdateNotes:
    notes = UpdateNotes(NonRecordingSpan(INVALID_SPAN_CONTEXT), "message", 0.0)
    notes.handler = handler
    notes.ended = seconds
    notes.running = seconds / 2
    return notes


def test_a_handler_whose_samples_fill_its_update_time_is_hot_and_a_waiting_one_is_not() -> None:
    detector = HotCode()
    found: list[Any] = []
    profile = Profile()
    with running(caller) as thread:
        sample(profile, thread, "bot.crunch", 30)  # 30 x 15 ms = 450 ms on the loop
    with running(nap) as thread:
        sample(profile, thread, "bot.rest", 12)  # 180 ms
    for _ in range(6):
        detector.on_update(_update("bot.crunch", 0.08), found.append)  # 480 ms in all
        detector.on_update(_update("bot.rest", 0.5), found.append)  # 3 s in all
    findings = detector.judge(profile.take())
    assert [f.handler for f in findings] == ["bot.crunch"]
    hot = findings[0]
    assert hot.code is not None and (hot.code.function, hot.code.line) == ("spin", SPIN_LINE)
    assert f"hottest lines (their samples on CPU): spin (test_profiler.py:{SPIN_LINE}) " in (
        hot.evidence
    )
    assert "75 ms of own CPU time on the loop per update, 94% of its update time" in hot.evidence
    # This profile was not told the thread: its samples are not split, and it says so.
    assert "30 profiler samples, not split into on CPU and waiting" in hot.evidence
    assert hot.attributes[semconv.PROFILE_STACKS].startswith("bot.crunch;")
    assert not detector.pending  # both were judged; the next window starts anew
    assert not found


def test_too_few_updates_or_samples_are_not_judged_yet() -> None:
    detector = HotCode()
    profile = Profile()
    with running(caller) as thread:
        sample(profile, thread, "bot.crunch", 30)
    for _ in range(4):
        detector.on_update(_update("bot.crunch", 0.08), lambda f: None)
    assert detector.judge(profile.take()) == []
    assert detector.pending["bot.crunch"].profile.samples == 30  # kept for the next window
    detector.on_update(_update("bot.crunch", 0.08), lambda f: None)
    assert [f.handler for f in detector.judge(profile.take())] == ["bot.crunch"]


def test_a_handler_holding_the_loop_while_it_sleeps_is_not_hot_code() -> None:
    detector = HotCode()
    found: list[Any] = []
    profile = Profile()
    with running(caller) as thread:
        sample(profile, thread, "bot.crunch", 30, follow=True)  # 450 ms, on CPU
    with running(doze) as thread:
        sample(profile, thread, "bot.nap", 30, follow=True)  # 450 ms, asleep
    for _ in range(6):
        # Both held the loop for all their update time: one computing, one in time.sleep.
        detector.on_update(_update("bot.crunch", 0.08), found.append)
        detector.on_update(_update("bot.nap", 0.08), found.append)
    findings = detector.judge(profile.take())
    assert [f.handler for f in findings] == ["bot.crunch"]
    hot = findings[0]
    assert hot.code is not None and hot.code.line == SPIN_LINE
    assert "ms of own CPU time on the loop per update" in hot.evidence
    assert "30 profiler samples, " in hot.evidence and " on CPU and " in hot.evidence
    assert "nap" not in hot.evidence
    assert not found
