"""Loop heartbeat: a block of the event loop found wherever it happens, not only in a
timed handler step.

Usage (the aiogram and python-telegram-bot instrumentations do this on the loop as an
update or a Bot API call starts, while findings are on)::

    if heartbeat.beat.loop is None:
        heartbeat.start()      # beats on the running loop from now on

The step timer (``otelbot.diagnosis.steps``) sees the steps of sampled updates' async
handlers only. A block anywhere else holds the loop as well: a background task's sync
call, a middleware or filter, the framework's own code, an update head sampling left
out, a python-telegram-bot job. The heartbeat is a ``loop.call_later`` callback that
reschedules itself every half ``OTELBOT_BLOCKING_MS`` and writes, in plain attributes,
when it is due next and which frame runs the loop's callbacks; it is the same with
uvloop. The step watcher thread (woken every half threshold, or at the profiler's rate)
reads those attributes: when the beat is overdue by half the threshold, no timed step is
running and the loop is running a callback (not waiting for I/O), it reads the loop
thread's stack and notes the innermost frame of the bot's code there, re-reading at each
wake until two reads in a row found the same run of one callback (the same frames; the
innermost bot frame either read saw is kept). When the beat comes back at least the
threshold late,
the block is judged on the watcher thread: the garbage collector's pauses during it
(``gc.callbacks``) and the timed steps that ran in it (judged by the step timer's own
path, never twice) are taken off, and what is left, if still over the threshold, is one
``otelbot.bot.blocked_loop`` finding (``otelbot.diagnosis.blocking.loop_finding``).

A late beat counts as a block only when two stack reads during it showed the same run of
one callback: a process the system did not schedule, a loop stopped between two
``run_until_complete`` calls, a suspended machine, a thread holding the GIL in C code, or a
loop merely busy with many short callbacks leave a late beat without that, and no
finding. (With uvloop a task's steps can't be told apart this way: a task taking many
short steps while the loop is saturated can be named; asyncio calls each callback from a
frame of its own.) A block so short that the watcher wakes only once in it is missed.

The duration said is how late the beat came: the block began between the beat before and
the due time, so it is a lower bound, at most half the threshold short.

Cost per beat, measured with ``python -m bench.heartbeat`` on a loaded 2-CPU machine: about
6 µs on asyncio and 2.3 µs on uvloop, all told (the loop taking the timer off its heap and
calling it, the ``call_later`` rescheduling it, and the callback's own clock read, frame
lookup and attribute writes, ~1 µs of it), so 20 beats a second at the default threshold
cost ~0.01% of one CPU. The watcher thread reads two attributes at each wake; the stack
is read only while a beat is overdue.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections import deque
from typing import Any, NamedTuple

from otelbot.core.errors import internal_error
from otelbot.diagnosis import engine, memory, steps
from otelbot.diagnosis.callsite import called
from otelbot.diagnosis.notes import CodeLocation, is_bot_code

_perf_counter = time.perf_counter
_getframe = sys._getframe


class Seen(NamedTuple):
    """What the loop thread was running during a block, read from its stack."""

    where: CodeLocation | None  # the innermost frame of the bot's code
    call: str | None  # the call that frame was making (``time.sleep``)
    entry: str | None  # the bot function the loop or a library called: "__main__.ticker"
    library: str | None  # with no bot frame: the innermost library's package, "(aiogram)"
    library_at: str | None  # and its function and line, "Dispatcher.feed_update (x.py:3)"
    task: str | None  # the running task's coroutine, "ticker"


class Block(NamedTuple):
    """A block the beat came back from, with what the watcher read during it."""

    start: float  # perf_counter: when the beat was due
    end: float  # when it ran
    gc: float  # seconds of garbage collection in start..end
    stepped: float  # seconds of timed handler steps in start..end
    seen: Seen


class _Heart:
    __slots__ = (
        "base",
        "blocks",
        "confirmed",
        "due",
        "interval",
        "key",
        "loop",
        "seen",
        "seen_due",
        "stopped_due",
        "thread",
        "threshold",
    )

    def __init__(self) -> None:
        self.loop: Any = None  # the loop it beats on (None: not started, or that loop closed)
        self.thread = 0
        self.threshold = steps.blocking_threshold()
        self.interval = self.threshold / 2
        self.due = 0.0  # perf_counter when the next beat should run
        # The code of the frame the loop calls its callbacks from (asyncio's Handle._run;
        # with uvloop, the frame that called run_forever): what is above it on the loop
        # thread's stack is a callback running.
        self.base: Any = None
        self.blocks: deque[tuple[float, float]] = deque(maxlen=64)  # (due, ran), late beats
        self.seen: Seen | None = None  # read during the block of ``seen_due``
        self.seen_due = 0.0
        # The frames of the callback the last read saw (see read), and whether the read
        # before saw the same run of it: a callback that held the loop from one read to
        # the next, not a busy loop running many short ones.
        self.key: tuple[Any, Any] | None = None
        self.confirmed = False
        self.stopped_due = 0.0  # the loop was seen stopped while this beat was due


beat = _Heart()


def start() -> None:
    """Beat on the running loop (the caller's), and have the step watcher check it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if beat.loop is loop:
        return
    try:
        beat.thread = threading.get_ident()
        beat.blocks.clear()
        beat.seen = beat.key = None
        beat.confirmed = False
        beat.base = _callback_base(_getframe(1))
        beat.loop = loop
        beat.due = _perf_counter() + beat.interval
        loop.call_later(beat.interval, _beat, loop)
        steps.watch(beat.thread, _check)
    except Exception as exc:
        internal_error("findings: loop heartbeat", exc)


def _beat(loop: Any) -> None:
    heart = beat
    if heart.loop is not loop:  # beating on another loop now
        return
    now = _perf_counter()
    due = heart.due
    if now - due >= heart.threshold:
        heart.blocks.append((due, now))
    heart.base = _getframe(1).f_code
    heart.due = now + heart.interval
    loop.call_later(heart.interval, _beat, loop)


_COROUTINE = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE


def _callback_base(frame: Any) -> Any:
    """The code of the frame the loop runs the current task from: the caller of the
    outermost coroutine frame on the stack (until the first beat says it)."""
    base = None
    while frame is not None:
        back = frame.f_back
        if frame.f_code.co_flags & _COROUTINE and back is not None:
            base = back.f_code
        frame = back
    return base


def _check() -> None:
    """On the watcher thread, at each wake: read the stack of a block going on, judge
    the blocks the beat came back from."""
    heart = beat
    loop = heart.loop
    if loop is None:
        return
    due = heart.due
    if loop.is_closed():
        heart.loop = heart.key = None
        heart.blocks.clear()
        return
    if heart.key is not None and heart.seen_due != due and not heart.blocks:
        heart.key = None  # that beat came back on time: let the frames go
    if not loop.is_running():
        heart.stopped_due = due
    elif (
        _perf_counter() - due >= heart.interval
        and not steps.step_running()
        and (heart.seen_due != due or not heart.confirmed)
    ):
        reading = read(sys._current_frames().get(heart.thread), heart.base, loop)
        if reading is not None and heart.due == due:  # read while that block went on
            seen, key = reading
            same = (
                heart.seen_due == due
                and heart.key is not None
                and key[0] is heart.key[0]
                and key[1] is heart.key[1]
            )
            if same and heart.seen is not None and seen.where is None:
                seen = heart.seen  # keep the bot frame an earlier read saw
            heart.seen, heart.seen_due, heart.key, heart.confirmed = seen, due, key, same
    while heart.blocks:
        start, end = heart.blocks.popleft()
        held = heart.seen
        if heart.seen_due == start:
            heart.key = None  # let the frames go
        if (
            heart.seen_due != start
            or held is None
            or not heart.confirmed
            or heart.stopped_due == start
        ):
            continue  # no two stacks showed one callback running on: not one block
        if memory.distorted(start, end):
            continue  # allocations were being traced: all code ran slower
        block = Block(start, end, steps.gc_during(start, end), steps.stepped(start, end), held)
        if block.end - block.start - block.gc - block.stepped >= heart.threshold:
            _report(block)


def read(frame: Any, base: Any, loop: Any = None) -> tuple[Seen, tuple[Any, Any]] | None:
    """What the loop thread runs, from its innermost ``frame``, and the frames that tell
    one run of a callback from another (the callback's outermost frame, and the frame the
    loop called it from: with asyncio, a new one per callback run); None when it runs no
    callback (the loop waits for I/O or is in its own code)."""
    if base is None:
        return None
    frames = []
    while frame is not None and frame.f_code is not base:
        frames.append(frame)
        frame = frame.f_back
    if frame is None or not frames or frames[-1].f_code is _beat.__code__:
        return None  # no callback running, or the heartbeat's own
    where = call = entry = library = library_at = None
    for i, f in enumerate(frames):
        code = f.f_code
        if is_bot_code(code.co_filename):
            where = CodeLocation(code.co_qualname, code.co_filename, f.f_lineno)
            call = called(code, f.f_lasti)
            j = i
            while j + 1 < len(frames) and is_bot_code(frames[j + 1].f_code.co_filename):
                j += 1
            outer = frames[j]
            module = outer.f_globals.get("__name__") or ""
            name = outer.f_code.co_qualname
            entry = f"{module}.{name}" if module else name
            break
    if where is None:
        # otelbot's own frame on top is mostly the garbage collector's callback: a read
        # waiting for the GIL gets it there, right after a long collection.
        theirs = [f for f in frames if not _otelbot(f)] or frames
        chosen = next((f for f in theirs if not _stdlib(f)), theirs[0])
        module = chosen.f_globals.get("__name__") or "?"
        library = "(" + module.split(".", 1)[0] + ")"
        code = chosen.f_code
        library_at = f"{code.co_qualname} ({_base(code.co_filename)}:{chosen.f_lineno})"
    return Seen(where, call, entry, library, library_at, _task(loop)), (frames[-1], frame)


def _otelbot(frame: Any) -> bool:
    module = frame.f_globals.get("__name__") or ""
    return module == "otelbot" or module.startswith("otelbot.")


def _stdlib(frame: Any) -> bool:
    module = frame.f_globals.get("__name__") or ""
    return module.split(".", 1)[0] in sys.stdlib_module_names


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _task(loop: Any) -> str | None:
    if loop is None:
        return None
    try:
        task = asyncio.current_task(loop)
        if task is None:
            return None
        coro = task.get_coro()
        return str(getattr(coro, "__qualname__", None) or type(coro).__qualname__)
    except Exception:
        return None


def _report(block: Block) -> None:
    from otelbot.diagnosis.blocking import BlockedLoop, loop_finding

    finding = loop_finding(block, beat.threshold)
    engine.report_on_loop(beat.loop, finding, None, lambda d: isinstance(d, BlockedLoop))
