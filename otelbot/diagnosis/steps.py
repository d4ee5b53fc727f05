"""Step timer: how long a handler held the event loop, step by step.

Usage (the aiogram instrumentation does this for the bot's own async handler of a sampled
update while findings are on)::

    result = await timed(handler(event), notes, "__main__.echo")

A coroutine runs in steps: each ``send`` or ``throw`` into it runs the update's code
(the handler's and the libraries' it calls) until its next suspension, and no other
update runs meanwhile. :class:`TimedCoroutine` drives the handler's coroutine and adds up
its steps on the update's notes: ``running`` (their total), ``steps``, ``longest_step`` and
``longest_step_at``. The coroutine's results, exceptions and cancellation pass through
unchanged.

A step longer than ``OTELBOT_BLOCKING_MS`` (alias ``OTELBOT_BLOCKED_LOOP_THRESHOLD``) is
located: a watcher thread (one per process, started with the first timed update or the
loop heartbeat, woken
every half threshold, or at the profiler's rate when that is faster) reads the loop
thread's stack when the step running is over the threshold; the innermost frame of the
bot's own code there is the line holding the loop, and the call that line was making
(``time.sleep``) is named too (``longest_step_call``). The same thread samples the stack
for the profiler (``otelbot.diagnosis.profiler``): a step writes its handler on the
watcher as it starts, so each sample is attributed. When the step ends before the watcher looked,
the place where it ended (the innermost bot frame of the suspended coroutine chain)
stands in. Steps of at least a tenth of the threshold go to :data:`recent`, a bounded
process-wide record, so a detector can tell the time an update was stalled by another
update's step, and the loop heartbeat (``otelbot.diagnosis.heartbeat``, which the watcher
checks at each wake) a block that was a timed step's from one outside any.

Cost per step: two ``perf_counter`` calls and a few attribute writes, about 1-3 µs with
the proxy's Python frames (``python -m bench.steps``); the stack is read for a step
already over the threshold, and by the profiler at its own rate (``python -m
bench.profiler``).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from types import CoroutineType
from typing import Any, NamedTuple

from otelbot.core import config
from otelbot.core.errors import internal_error
from otelbot.diagnosis import profiler
from otelbot.diagnosis.callsite import called
from otelbot.diagnosis.notes import CodeLocation, UpdateNotes, is_bot_code

BLOCKING_SETTING = "OTELBOT_BLOCKING_MS"
BLOCKING_ALIAS = "OTELBOT_BLOCKED_LOOP_THRESHOLD"  # the name issue 16 gave it; same meaning
BLOCKING_DEFAULT_MS = 100.0


def blocking_threshold() -> float:
    """Seconds one step may hold the loop before it counts as blocking
    (``OTELBOT_BLOCKING_MS``; ``OTELBOT_BLOCKED_LOOP_THRESHOLD`` when that is not set)."""
    name = BLOCKING_SETTING
    if not os.environ.get(name, "").strip() and os.environ.get(BLOCKING_ALIAS, "").strip():
        name = BLOCKING_ALIAS
    return config.number(name, BLOCKING_DEFAULT_MS, minimum=1.0) / 1000.0


class LongStep(NamedTuple):
    """One step of at least a tenth of the threshold, for the stall accounting."""

    start: float  # time.perf_counter()
    end: float
    owner: int  # id() of the update's notes (unique among updates alive at ``end``)
    handler: str


#: Recent long steps of every update, oldest first (bounded).
recent: deque[LongStep] = deque(maxlen=512)

_perf_counter = time.perf_counter
_get_ident = threading.get_ident

#: Recent garbage-collector pauses (start, end) of at least ``GC_PAUSE_KEPT`` seconds,
#: oldest first: a collection that runs during a step is the interpreter's, not the
#: handler's code, and is taken off the step (and off a block the loop heartbeat found).
gc_pauses: deque[tuple[float, float]] = deque(maxlen=64)
#: A young collection takes tens of microseconds and a bot making garbage fast runs hundreds
#: of them a second: kept, they would push a long full collection out of ``gc_pauses``
#: before the block it caused is judged; together they are a small part of any block.
GC_PAUSE_KEPT = 0.0005
_gc_started = 0.0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        # Only the loop thread's collections: one in another thread while the loop thread
        # sleeps or waits without the GIL stalled nothing on the loop.
        loop = _watcher.thread
        if not loop or loop == _get_ident():
            _gc_started = _perf_counter()
    elif _gc_started:
        ended = _perf_counter()
        if ended - _gc_started >= GC_PAUSE_KEPT:
            gc_pauses.append((_gc_started, ended))
        _gc_started = 0.0


def gc_during(start: float, end: float) -> float:
    """Seconds of ``start``..``end`` the garbage collector held the interpreter."""
    total = 0.0
    for paused, resumed in reversed(gc_pauses):
        if resumed <= start:
            break
        if paused < end:
            total += min(end, resumed) - max(start, paused)
    return total


class _Watcher:
    """Reads the loop thread's stack during a step that is over the threshold, and
    samples it ``OTELBOT_PROFILE_HZ`` times a second for the profiler."""

    __slots__ = (
        "check",
        "handler",
        "hz",
        "recorded",
        "running",
        "seen",
        "started",
        "thread",
        "threshold",
    )

    def __init__(self, threshold: float, hz: float) -> None:
        self.threshold = threshold
        self.hz = hz
        self.recorded = threshold / 10  # steps kept in ``recent``
        self.started = 0.0  # perf_counter at the start of the step running now; 0.0 between
        self.handler = ""  # the handler of the step running now (of the last one between)
        self.thread = 0  # the thread running it
        # (step's start, where, the call it was making)
        self.seen: tuple[float, CodeLocation | None, str | None] = (0.0, None, None)
        self.running = False
        self.check: Callable[[], None] | None = None  # the loop heartbeat's, at each wake

    def start(self) -> None:
        self.running = True
        if _on_gc not in gc.callbacks:
            gc.callbacks.append(_on_gc)
        thread = threading.Thread(target=self._run, name="otelbot-step-watch", daemon=True)
        thread.start()

    def _run(self) -> None:
        interval = self.threshold / 2
        sampling = self.hz > 0
        if sampling:
            interval = min(interval, 1.0 / self.hz)
        flush_every = profiler.flush_interval()
        last = next_flush = _perf_counter()
        next_flush += flush_every
        while True:
            time.sleep(interval)
            check = self.check
            if check is not None:
                try:
                    check()
                except Exception as exc:
                    internal_error("findings: loop heartbeat", exc)
                    self.check = None
            started = self.started
            if sampling:
                now = _perf_counter()
                try:
                    profiler.profile.add(
                        sys._current_frames().get(self.thread),
                        self.handler if started else None,
                        min(now - last, 4 * interval),
                    )
                    if now >= next_flush:
                        next_flush = now + flush_every
                        profiler.profile.flush()
                except Exception as exc:
                    internal_error("findings: profiler", exc)
                    sampling = False
                last = now
            if not started or started == self.seen[0]:
                continue
            if _perf_counter() - started < self.threshold:
                continue
            try:
                where, call = _innermost_bot_frame(sys._current_frames().get(self.thread))
            except Exception as exc:
                internal_error("findings: step watcher", exc)
                return
            if self.started == started:
                self.seen = (started, where, call)


def _innermost_bot_frame(frame: Any) -> tuple[CodeLocation | None, str | None]:
    """The innermost frame of the bot's own code, and the call it was making."""
    while frame is not None:
        code = frame.f_code
        if is_bot_code(code.co_filename):
            where = CodeLocation(code.co_qualname, code.co_filename, frame.f_lineno)
            return where, called(code, frame.f_lasti)
        frame = frame.f_back
    return None, None


def suspended_at(awaitable: Any) -> CodeLocation | None:
    """The innermost frame of the bot's own code in a suspended coroutine's await chain."""
    where = None
    obj = awaitable
    for _ in range(100):
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        if is_bot_code(code.co_filename):
            where = CodeLocation(code.co_qualname, code.co_filename, frame.f_lineno)
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return where


_watcher = _Watcher(blocking_threshold(), profiler.profile_hz())


def watch(thread: int, check: Callable[[], None]) -> None:
    """Have the watcher (started now if it is not yet) watch the loop of ``thread`` and
    call ``check`` at each wake (the loop heartbeat's)."""
    _watcher.thread = thread
    _watcher.check = check
    if profiler.profile.thread != thread:
        profiler.profile.follow(thread)  # samples are on CPU or waiting from the first one
    if not _watcher.running:
        _watcher.start()


def step_running() -> bool:
    """Whether a timed step holds the loop now (its block is the step timer's to judge)."""
    return _watcher.started != 0.0


class TimedCoroutine:
    """Awaits ``coro`` for the bot, timing each step it runs on the loop."""

    __slots__ = ("_coro", "_handler", "_it", "_notes")

    def __init__(self, coro: Any, notes: UpdateNotes, handler: str) -> None:
        self._coro = coro
        # A coroutine is its own iterator; any other awaitable gives one.
        self._it = coro if type(coro) is CoroutineType else coro.__await__()
        self._notes = notes
        self._handler = handler
        if notes.running is None:
            notes.running = 0.0
        _watcher.thread = threading.get_ident()
        if not _watcher.running:
            _watcher.start()

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> TimedCoroutine:
        return self

    # __next__, send and throw are one step each; written out, not shared, to keep the
    # per-step cost to two clock reads and a few attribute writes.
    def __next__(self) -> Any:
        watcher = _watcher
        watcher.handler = self._handler
        watcher.started = started = _perf_counter()
        try:
            return self._it.send(None)
        finally:
            elapsed = _perf_counter() - started
            watcher.started = 0.0
            notes = self._notes
            notes.running += elapsed  # type: ignore[operator]
            notes.steps += 1
            if elapsed >= watcher.recorded:
                self._long(started, elapsed)
            elif elapsed > notes.longest_step:
                notes.longest_step = elapsed

    def send(self, value: Any) -> Any:
        watcher = _watcher
        watcher.handler = self._handler
        watcher.started = started = _perf_counter()
        try:
            return self._it.send(value)
        finally:
            elapsed = _perf_counter() - started
            watcher.started = 0.0
            notes = self._notes
            notes.running += elapsed  # type: ignore[operator]
            notes.steps += 1
            if elapsed >= watcher.recorded:
                self._long(started, elapsed)
            elif elapsed > notes.longest_step:
                notes.longest_step = elapsed

    def throw(self, *args: Any) -> Any:
        throw = getattr(self._it, "throw", None)
        if throw is None:  # a plain iterator: raise where the bot awaited
            raise _exception(args)
        watcher = _watcher
        watcher.handler = self._handler
        watcher.started = started = _perf_counter()
        try:
            return throw(*args)
        finally:
            elapsed = _perf_counter() - started
            watcher.started = 0.0
            notes = self._notes
            notes.running += elapsed  # type: ignore[operator]
            notes.steps += 1
            if elapsed >= watcher.recorded:
                self._long(started, elapsed)
            elif elapsed > notes.longest_step:
                notes.longest_step = elapsed

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def _long(self, started: float, elapsed: float) -> None:
        notes = self._notes
        recent.append(LongStep(started, started + elapsed, id(notes), self._handler))
        collecting = gc_during(started, started + elapsed)
        if collecting:
            notes.gc_in_steps += collecting
            elapsed -= collecting
        if elapsed <= notes.longest_step:
            return
        notes.longest_step = elapsed
        if elapsed >= _watcher.threshold:
            seen, where, call = _watcher.seen
            if seen != started or where is None:
                where, call = suspended_at(self._coro), None
            notes.longest_step_at = where
            notes.longest_step_call = call


def _exception(args: tuple[Any, ...]) -> BaseException:
    # throw(exc) or the old throw(type, value, traceback)
    value = args[1] if len(args) > 1 and args[1] is not None else args[0]
    if isinstance(value, type):
        value = value()
    return value


def timed(coro: Any, notes: UpdateNotes, handler: str) -> TimedCoroutine:
    """``coro`` (a coroutine or any awaitable), its steps added up on ``notes``."""
    return TimedCoroutine(coro, notes, handler)


def stepped(start: float, end: float) -> float:
    """Seconds of ``start``..``end`` timed steps held the loop (each overlap counted once)."""
    spans = []
    for step in reversed(tuple(recent)):  # appended as they end (on the loop thread)
        if step.end <= start:
            break
        if step.start < end:
            spans.append((max(step.start, start), min(step.end, end)))
    total = 0.0
    reached = start
    for begin, finish in sorted(spans):
        begin = max(begin, reached)
        if finish > begin:
            total += finish - begin
            reached = finish
    return total


def stalls(notes: UpdateNotes, start: float, end: float) -> list[LongStep]:
    """Other updates' long steps that held the loop during ``start``..``end``."""
    out = []
    owner = id(notes)
    for step in reversed(recent):  # appended as they end
        if step.end <= start:
            break
        if step.start < end and step.owner != owner:
            out.append(step)
    return out
