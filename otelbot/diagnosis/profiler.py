"""Low-rate sampling profiler of the event loop's thread, attributed to handlers.

The step timer's watcher thread (``otelbot.diagnosis.steps``) reads the loop thread's
stack ``OTELBOT_PROFILE_HZ`` times a second (default 67, off with ``0``) and hands it
here with the handler whose step is running (the step timer writes it on the watcher when
a step starts)::

    profile.add(sys._current_frames()[loop_thread], "__main__.report", 0.015)
    window = profile.take()        # what was sampled since the last take, per handler

Each sample goes to one owner: the handler of the step running (a sampled update's own
async handler), ``otelbot`` (the innermost frame outside the standard library is otelbot's
or OpenTelemetry's: the telemetry's own cost), ``idle`` (no step, the loop waiting for
I/O) or ``(loop)`` (no step: the framework's polling and dispatch, unsampled updates,
background tasks). Per owner and window it counts samples and their seconds (the wall time
since the previous sample), own samples per function (the innermost frame of the bot's
own code; a library's frames count for the bot's function that called them; without a
bot frame, the library's package, e.g. ``(aiogram)``), cumulative samples per bot
function (each function on the stack once), own samples per line (with the call the line
was making, resolved when the window is taken) and the bot frames' stacks, for a flame
graph. Every table is bounded; what does not fit is counted under ``(other)``.

On CPU or waiting: a stack says where the loop thread is, not whether it is computing
there or waiting (in ``time.sleep``, a blocking read, a lock). Given the loop thread
(``profile.follow(thread_id)``, which the hot code detector calls from the loop), each
sample also reads that thread's CPU time: on Linux from ``/proc/self/task/<tid>/schedstat``
(one ``pread`` of a file kept open: its CPU time and its time ready to run but kept off
the CPU by the machine's load), elsewhere from its CPU clock
(``time.pthread_getcpuclockid``). When the thread ran (or was ready to) for less than
``CPU_SHARE`` of the wall time since the previous sample, the sample is a waiting one,
else an on-CPU one. Both counts are kept per owner and per line; the hot code detector
judges on-CPU samples only. Waiting for the GIL another thread holds counts as waiting;
with only the CPU clock, so does a CPU-bound thread the machine's load keeps off the CPU
most of the interval. Where neither can be read (macOS, Windows), every sample counts as
on CPU, as without the split, and ``OwnerProfile.timed`` stays 0; samples taken before
the thread is known count as the known ones split.

Cost: one stack walk and one read of the thread's CPU time per sample under the GIL
(``python -m bench.profiler``: ~25-30 µs for a stack 20-50 frames deep with a few of the
bot's frames, ~40-50 µs for 100 frames or 50 of the bot's; reading the CPU time is 3-5 µs
of it), so 2-3 ms of the loop thread's time per second at 67 Hz. A loop thread busy with
CPU work also waits to get the GIL back after each sample; that depends on the machine's
load (a CPU-bound handler did from ~1% to ~24% less work at 67 Hz on a loaded machine;
docs/performance.md). Only counts and code locations are kept, never values.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, NamedTuple

from otelbot.core import config
from otelbot.diagnosis.callsite import call_offsets, called
from otelbot.diagnosis.notes import is_bot_code

HZ_SETTING = "OTELBOT_PROFILE_HZ"
HZ_DEFAULT = 67.0  # not a multiple of the usual timer rates (10, 50, 100 Hz)
INTERVAL_SETTING = "OTELBOT_PROFILE_INTERVAL"
INTERVAL_DEFAULT = 60.0

IDLE = "idle"
OTELBOT = "otelbot"
LOOP = "(loop)"
OTHER = "(other)"
IDLE_FUNCTION = "(idle)"

#: A sample is an on-CPU one when the loop thread ran (or was ready to run) for at least
#: this share of the wall time since the previous sample (sleeping, blocking I/O and
#: waiting for a lock: ~0; computing: ~1, less the GIL handed to other threads).
CPU_SHARE = 0.25

MAX_OWNERS = 100
MAX_FUNCTIONS = 100
MAX_LINES = 200
MAX_STACKS = 200
_MAX_DEPTH = 256


def profile_hz() -> float:
    """Samples a second (0: the profiler is off)."""
    return config.number(HZ_SETTING, HZ_DEFAULT, minimum=0.0)


def flush_interval() -> float:
    """Seconds between two windows handed to the profile's consumer."""
    return config.number(INTERVAL_SETTING, INTERVAL_DEFAULT, minimum=0.1)


# ---------------------------------------------------------------- what a file is

_BOT, _OTEL, _STDLIB, _LIBRARY = 0, 1, 2, 3
_OTELBOT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_STDLIB_ROOTS = tuple(
    os.path.abspath(p) + os.sep
    for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")}
    if p
)
_LOOP_FILES = (
    os.sep + "selectors.py",
    os.sep + os.path.join("asyncio", "runners.py"),
    os.sep + os.path.join("asyncio", "base_events.py"),
)
_kinds: dict[str, tuple[int, str, bool]] = {}  # file -> (kind, package label, loop's own)


def _kind(filename: str) -> tuple[int, str, bool]:
    known = _kinds.get(filename)
    if known is not None:
        return known
    path = os.path.abspath(filename)
    package = ""
    if is_bot_code(filename):
        kind = _BOT
    elif path.startswith(_OTELBOT_ROOT) or f"{os.sep}opentelemetry{os.sep}" in path:
        kind = _OTEL
    elif filename.startswith("<") or (
        path.startswith(_STDLIB_ROOTS) and "-packages" + os.sep not in path
    ):
        kind = _STDLIB
        package = "(python)"
    else:
        kind = _LIBRARY
        tail = path.split("-packages" + os.sep, 1)[-1]
        package = "(" + tail.split(os.sep, 1)[0].removesuffix(".py") + ")"
    known = (kind, package, kind == _STDLIB and path.endswith(_LOOP_FILES))
    if len(_kinds) < 10_000:
        _kinds[filename] = known
    return known


# ---------------------------------------------------------------- tallies

# Code objects by id(): the tables key lines and stacks by id, as hashing a code object
# hashes its bytecode and constants. A registered code object is kept alive, so its id
# can't be reused; past the bound, new code gets 0 and its lines are not kept.
_codes: dict[int, CodeType] = {}
_MAX_CODES = 20_000
_MAX_STACK = 32  # bot frames kept per stack, innermost first


def _code_id(code: CodeType) -> int:
    key = id(code)
    if key in _codes:
        return key
    if len(_codes) >= _MAX_CODES:
        return 0
    _codes[key] = code
    return key


def code_of(key: int) -> CodeType:
    """The code object registered under ``key``."""
    return _codes[key]


class LineKey(NamedTuple):
    code: int  # id of the code object (see code_of)
    line: int
    call: int  # byte offset of the call the line was making, or -1


class Line(NamedTuple):
    """One line of the bot's code with its own samples, resolved for a report."""

    function: str
    file: str
    line: int
    call: str | None  # the library or built-in function it was calling
    samples: int
    on_cpu: int  # of them, samples known to be on the CPU (all when none was timed)
    waiting: int  # and known to be waiting, off the CPU

    def label(self) -> str:
        where = f"{self.function} ({os.path.basename(self.file)}:{self.line})"
        return f"{where} → {self.call}" if self.call else where


StackKey = tuple[tuple[tuple[int, int], ...], int]  # (code id, line) innermost first, call


@dataclass
class OwnerProfile:
    """One owner's samples in a window (an owner: a handler, idle, otelbot, (loop))."""

    samples: int = 0
    seconds: float = 0.0
    timed: int = 0  # samples whose thread's CPU clock was read (on CPU or waiting known)
    timed_seconds: float = 0.0
    waiting: int = 0  # of them, samples while the thread was waiting, off the CPU
    waiting_seconds: float = 0.0
    own: Counter[str] = field(default_factory=Counter)  # function -> own samples
    cumulative: Counter[str] = field(default_factory=Counter)  # bot function -> samples
    lines: Counter[LineKey | None] = field(default_factory=Counter)  # None: (other)
    stacks: Counter[StackKey | None] = field(default_factory=Counter)
    # Of the lines' samples, the timed ones on CPU and waiting (None: (other)).
    cpu_lines: Counter[LineKey | None] = field(default_factory=Counter)
    waiting_lines: Counter[LineKey | None] = field(default_factory=Counter)

    @property
    def on_cpu(self) -> int:
        """Samples known to be on CPU."""
        return self.timed - self.waiting

    @property
    def cpu_seconds(self) -> float:
        """The samples' seconds on CPU: all of them when none was timed; else split as the
        timed ones were (samples taken before the loop thread was known are not told apart)."""
        if not self.timed_seconds:
            return self.seconds
        return self.seconds * (1.0 - self.waiting_seconds / self.timed_seconds)

    def absorb(self, other: OwnerProfile) -> None:
        """Add ``other``'s counts to this one's, keeping the bounds."""
        self.samples += other.samples
        self.seconds += other.seconds
        self.timed += other.timed
        self.timed_seconds += other.timed_seconds
        self.waiting += other.waiting
        self.waiting_seconds += other.waiting_seconds
        for table, more, limit in (
            (self.own, other.own, MAX_FUNCTIONS),
            (self.cumulative, other.cumulative, MAX_FUNCTIONS),
        ):
            for key, count in more.items():
                _count(table, key, count, limit, OTHER)
        for lines, more_lines in (
            (self.lines, other.lines),
            (self.cpu_lines, other.cpu_lines),
            (self.waiting_lines, other.waiting_lines),
        ):
            for line, count in more_lines.items():
                _count(lines, line, count, MAX_LINES, None)
        for stack, count in other.stacks.items():
            _count(self.stacks, stack, count, MAX_STACKS, None)

    def top_lines(self, n: int, on_cpu: bool = False) -> list[Line]:
        """The ``n`` lines of the bot's code with the most own samples; with ``on_cpu``,
        the most on-CPU samples, lines that were mostly waiting left out (when samples
        were timed; else all samples count as on CPU)."""
        timed = self.timed > 0
        ranked = [
            (
                key,
                count,
                self.cpu_lines.get(key, 0) if timed else count,
                self.waiting_lines.get(key, 0),
            )
            for key, count in self.lines.items()
            if key is not None
        ]
        if on_cpu:
            ranked = [r for r in ranked if r[2] > r[3]]
            ranked.sort(key=lambda r: r[2], reverse=True)
        else:
            ranked.sort(key=lambda r: r[1], reverse=True)
        out = []
        for key, count, cpu, waits in ranked[:n]:
            code = _codes[key.code]
            line = Line(
                code.co_qualname,
                code.co_filename,
                key.line,
                called(code, key.call),
                count,
                cpu,
                waits,
            )
            out.append(line)
        return out

    def collapsed(self, root: str, limit: int = 8192) -> str:
        """The stacks as collapsed-stack text (``root;outer;...;inner count`` a line, the
        format flame graph tools read), most samples first, at most ``limit`` characters."""
        out: list[str] = []
        size = 0
        for key, count in self.stacks.most_common():
            if key is None:
                text = f"{root};{OTHER} {count}"
            else:
                frames, call = key
                parts = [root]
                parts += [_frame_label(_codes[code], line) for code, line in reversed(frames)]
                if call >= 0:
                    callee = called(_codes[frames[0][0]], call)
                    if callee:
                        parts.append("→ " + callee)
                text = ";".join(p.replace(";", ",") for p in parts) + f" {count}"
            size += len(text) + (1 if out else 0)
            if size > limit:
                break
            out.append(text)
        return "\n".join(out)


def _frame_label(code: CodeType, line: int) -> str:
    return f"{code.co_qualname} ({os.path.basename(code.co_filename)}:{line})"


def _count(table: Counter[Any], key: Any, count: int, limit: int, other: Any) -> None:
    if key in table or len(table) < limit:
        table[key] += count
    else:
        table[other] += count


@dataclass
class Window:
    """What was sampled between two takes."""

    owners: dict[str, OwnerProfile]
    samples: int
    seconds: float  # wall time the window lasted


class _Reading(NamedTuple):
    wall: float  # perf_counter
    cpu: float  # the thread's CPU seconds
    ready: float  # its seconds ready to run but not running (0.0 when unknown)


class _ThreadClock:
    """Reads one thread's CPU time: from ``/proc/self/task/<tid>/schedstat`` (Linux: CPU
    time and time ready to run, kept open and re-read in one ``pread``), else its CPU
    clock (``time.pthread_getcpuclockid``: CPU time only)."""

    __slots__ = ("clock", "fd", "last", "thread")

    def __init__(self, thread_id: int) -> None:
        self.thread = thread_id
        self.fd = -1
        self.clock = 0
        native = threading.get_native_id() if thread_id == threading.get_ident() else None
        if native is None:
            native = next(
                (t.native_id for t in threading.enumerate() if t.ident == thread_id), None
            )
        if native is not None:
            try:
                self.fd = os.open(f"/proc/self/task/{native}/schedstat", os.O_RDONLY)
            except OSError:
                pass
        if self.fd < 0:
            # Raises where there is no per-thread CPU clock (AttributeError) or the thread
            # is gone (OSError).
            self.clock = time.pthread_getcpuclockid(thread_id)
        try:
            self.last = self.read()
        except (OSError, ValueError):
            self.close()
            raise

    def read(self) -> _Reading:
        if self.fd >= 0:
            cpu, ready, _ = os.pread(self.fd, 96, 0).split()
            return _Reading(time.perf_counter(), int(cpu) / 1e9, int(ready) / 1e9)
        return _Reading(time.perf_counter(), time.clock_gettime(self.clock), 0.0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Profile:
    """The process's samples since the last :meth:`take` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, OwnerProfile] = {}
        self._samples = 0
        self._since = time.monotonic()
        self._clock: _ThreadClock | None = None
        #: The thread :meth:`follow` was last called with (0: none).
        self.thread = 0
        #: Called with each window on the watcher thread (set by the hot code detector).
        self.consumer: Callable[[Window], None] | None = None

    def follow(self, thread_id: int) -> None:
        """Read the CPU time of thread ``thread_id`` (the thread the samples are taken of;
        a running thread's ``threading.get_ident()``) at each sample, to tell on-CPU
        samples from waiting ones. Where it cannot be read, samples are not split."""
        self.thread = thread_id
        try:
            clock: _ThreadClock | None = _ThreadClock(thread_id)
        except (AttributeError, OSError, OverflowError, ValueError):  # not on this platform
            clock = None
        with self._lock:
            old, self._clock = self._clock, clock
        if old is not None:
            old.close()

    def add(self, frame: Any, handler: str | None, seconds: float) -> str:
        """One sample: the loop thread's innermost ``frame`` (None: the thread is gone),
        ``handler`` of the step running (None: no step), the ``seconds`` it stands for.
        Returns its owner."""
        clock = self._clock
        read: _Reading | None = None  # this sample's reading of the followed thread
        off_cpu = False
        if clock is not None:
            try:
                read = clock.read()
            except (OSError, ValueError):  # the thread is gone
                with self._lock:
                    if self._clock is clock:
                        self._clock = None
                        clock.close()
            else:
                last = clock.last
                # Running, or ready to run and kept off the CPU by the machine's load.
                busy = read.cpu - last.cpu + read.ready - last.ready
                off_cpu = busy < CPU_SHARE * (read.wall - last.wall)
                clock.last = read
        bot: list[tuple[int, int]] = []  # (code id, line), innermost first
        names: set[str] = set()
        inner_code: CodeType | None = None
        inner_lasti = -1
        first = -1  # kind of the innermost frame outside the standard library
        otel_code: CodeType | None = None
        package = "(python)"
        waiting = False  # the loop waits for I/O (its selector, maybe otelbot's wrapper)
        scanning = True
        depth = 0
        kinds = _kinds
        while frame is not None and depth < _MAX_DEPTH:
            code = frame.f_code
            known = kinds.get(code.co_filename)
            if known is None:
                known = _kind(code.co_filename)
            kind = known[0]
            if scanning:
                if known[2]:
                    if code.co_name != "select":  # the loop itself, not a callback
                        waiting = True
                        scanning = False
                elif kind != _OTEL:
                    scanning = False
            if kind == _BOT:
                if inner_code is None:
                    inner_code = code
                    inner_lasti = frame.f_lasti
                    if first < 0:
                        first = _BOT
                if len(bot) < _MAX_STACK:
                    bot.append((_code_id(code), frame.f_lineno))
                names.add(code.co_qualname)
            elif first < 0 and kind != _STDLIB:
                first = kind
                if kind == _OTEL:
                    otel_code = code
                else:
                    package = known[1]
            frame = frame.f_back
            depth += 1
        if waiting and handler is None:
            owner = IDLE
        elif otel_code is not None:
            owner = OTELBOT
        elif handler is not None:
            owner = handler
        else:
            owner = LOOP
        with self._lock:
            self._samples += 1
            profile = self._owners.get(owner)
            if profile is None:
                if len(self._owners) >= MAX_OWNERS:
                    owner = OTHER
                profile = self._owners.setdefault(owner, OwnerProfile())
            profile.samples += 1
            profile.seconds += seconds
            if read is not None:
                profile.timed += 1
                profile.timed_seconds += seconds
                if off_cpu:
                    profile.waiting += 1
                    profile.waiting_seconds += seconds
            if owner == IDLE:
                _count(profile.own, IDLE_FUNCTION, 1, MAX_FUNCTIONS, OTHER)
            elif otel_code is not None:
                _count(profile.own, otel_code.co_qualname, 1, MAX_FUNCTIONS, OTHER)
            elif inner_code is not None:
                _count(profile.own, inner_code.co_qualname, 1, MAX_FUNCTIONS, OTHER)
                for name in names:
                    _count(profile.cumulative, name, 1, MAX_FUNCTIONS, OTHER)
                call = inner_lasti if inner_lasti in call_offsets(inner_code) else -1
                if bot[0][0]:
                    key = LineKey(bot[0][0], bot[0][1], call)
                    _count(profile.lines, key, 1, MAX_LINES, None)
                    if read is not None and key in profile.lines:
                        timed = profile.waiting_lines if off_cpu else profile.cpu_lines
                        _count(timed, key, 1, MAX_LINES, None)
                    _count(profile.stacks, (tuple(bot), call), 1, MAX_STACKS, None)
            else:
                _count(profile.own, package, 1, MAX_FUNCTIONS, OTHER)
        return owner

    def take(self) -> Window:
        """The samples since the last take; the next window starts empty."""
        with self._lock:
            owners, self._owners = self._owners, {}
            samples, self._samples = self._samples, 0
            now = time.monotonic()
            since, self._since = self._since, now
        return Window(owners, samples, now - since)

    def flush(self) -> None:
        """Take a window and hand it to the consumer, if there is one."""
        window = self.take()
        consumer = self.consumer
        if consumer is not None and window.samples:
            consumer(window)


#: The process's profile, fed by the step watcher thread.
profile = Profile()


def loop_stack(thread_id: int) -> Any:
    """The innermost frame of thread ``thread_id`` (None when it is gone)."""
    return sys._current_frames().get(thread_id)
