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


def caller(stop: threading.Event) -> None:
    spin(stop)


SPIN_LINE = spin.__code__.co_firstlineno + 4
NAP_LINE = nap.__code__.co_firstlineno + 2


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


def sample(profile: Profile, thread: int, handler: str | None, n: int = 20) -> list[str]:
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
    assert f"hottest lines: spin (test_profiler.py:{SPIN_LINE}) " in hot.evidence
    assert "75 ms of own time on the loop per update, 94% of its update time" in hot.evidence
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
