"""What one update did, as the detectors see it: one tuple per operation.

Recording costs a context-variable lookup, a list append and a dict increment per
operation, and happens only for sampled updates while findings are on
(``OTELBOT_FINDINGS``).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple

# Operation kinds
SQL = "sql"  # shape: sanitized statement text; extra: (id(connection), operation, table)
# REDIS extra: per key a cache read or write used, (key shape, "hit"/"miss" or None for a
# write, TTL in seconds the write set or None); None for other commands.
REDIS = "redis"  # shape: command text ("GET ?"); extra: tuple of (shape, result, ttl) or None
API = "api"  # shape: method; extra: (error code or 0, retry_after or None, CodeLocation or None)
HTTP = "http"  # shape: "GET host"; extra: None
POOL_WAIT = "pool_wait"  # shape: pool name; extra: diagnosis.pool.PoolUse (max size, hold)

#: When a shape has been noted this many times in one update, the line of the bot's code
#: that issued it is looked up once (UpdateNotes.repeated_at); set by the N+1 detector.
repeat_threshold = 5


class Op(NamedTuple):
    kind: str
    shape: str
    start: float  # time.perf_counter()
    end: float
    extra: Any


class CodeLocation(NamedTuple):
    function: str
    file: str
    line: int


class UpdateNotes:
    """One sampled update, from its start to its end."""

    __slots__ = (
        "busy_end",
        "busy_start",
        "ended",
        "gc_in_steps",
        "handler",
        "handler_code",
        "longest_step",
        "longest_step_at",
        "longest_step_call",
        "ops",
        "outcome",
        "repeated_at",
        "running",
        "shapes",
        "span",
        "started",
        "steps",
        "token",
        "update_type",
    )

    def __init__(self, span: Any, update_type: str, started: float) -> None:
        self.span = span
        self.update_type = update_type
        self.started = started
        self.ended = started
        self.handler = ""
        self.handler_code: CodeLocation | None = None
        self.outcome = ""
        self.ops: list[Op] = []
        self.shapes: dict[str, int] = {}  # shape -> times noted
        # shape -> where it repeated; a dict of its own only once a shape repeats (the
        # usual update has none, and each object it holds counts towards a collection)
        self.repeated_at: Mapping[str, CodeLocation | None] = _NONE_REPEATED
        # Set when the handler's coroutine is driven by otelbot.diagnosis.steps: time the
        # update's own code held the event loop, in total and in its longest step.
        self.running: float | None = None
        self.steps = 0
        self.longest_step = 0.0
        self.longest_step_at: CodeLocation | None = None
        self.longest_step_call: str | None = None  # the call it was making there (a library's)
        # Garbage-collector pauses inside its long steps, taken off longest_step.
        self.gc_in_steps = 0.0
        # The event loop's busy clock (otelbot.runtime.loop.busy_clock: seconds running
        # callbacks, iterations) at the start and the end; None off selector loops.
        self.busy_start: tuple[float, int] | None = None
        self.busy_end: tuple[float, int] | None = None
        self.token: Any = None

    @property
    def duration(self) -> float:
        return self.ended - self.started

    @property
    def notes(self) -> UpdateNotes:
        """Itself: made current alone (``current.set(notes)``), it reads as the update state
        of a bot library whose update is sampled."""
        return self


_NONE_REPEATED: Mapping[str, CodeLocation | None] = MappingProxyType({})

#: The update being handled: the bot library's update state (its ``notes`` attribute holds
#: the notes of a sampled update, None otherwise), or an ``UpdateNotes`` alone (its
#: ``notes`` is itself). One context variable for both, set once per update: each set
#: makes a token and a new context mapping that stay alive across the update's awaits,
#: and the garbage collector meets them in every collection meanwhile.
current: ContextVar[Any] = ContextVar("otelbot_update", default=None)


def noting() -> bool:
    """True inside a sampled update, where ``note`` records."""
    state = current.get()
    return state is not None and state.notes is not None


def note(kind: str, shape: str, start: float, end: float, extra: Any = None) -> None:
    """Record one operation on the current update (nothing outside a sampled update)."""
    state = current.get()
    notes = None if state is None else state.notes
    if notes is not None:
        notes.ops.append(Op(kind, shape, start, end, extra))
        shapes = notes.shapes
        count = shapes[shape] = shapes.get(shape, 0) + 1
        if count == repeat_threshold:
            repeated = notes.repeated_at
            if not isinstance(repeated, dict):
                repeated = notes.repeated_at = {}
            repeated[shape] = bot_code_location(2)


# ---------------------------------------------------------------------------- code


def _library_roots() -> tuple[str, ...]:
    roots = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # otelbot/
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.abspath(path))
    for path in sys.path:
        if path.endswith(("site-packages", "dist-packages")):
            roots.add(os.path.abspath(path))
    return tuple(sorted(r + os.sep for r in roots))


_LIBRARY_ROOTS = _library_roots()
_own_file: dict[str, bool] = {}


def is_bot_code(filename: str) -> bool:
    """True for a file of the bot's own code (not otelbot's, a library's or Python's)."""
    own = _own_file.get(filename)
    if own is None:
        path = os.path.abspath(filename)
        own = not filename.startswith("<") and not path.startswith(_LIBRARY_ROOTS)
        _own_file[filename] = own
    return own


def bot_code_location(skip: int = 1) -> CodeLocation | None:
    """The innermost frame of the bot's own code on the current stack (a coroutine's
    awaiting frames are on it while it runs), or None."""
    try:
        frame: Any = sys._getframe(skip)
    except ValueError:
        return None
    while frame is not None:
        code = frame.f_code
        if is_bot_code(code.co_filename):
            return CodeLocation(code.co_qualname, code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None


def code_of(function: Any) -> CodeLocation | None:
    """Where a handler function is defined."""
    target = getattr(function, "callback", function)
    target = getattr(target, "__func__", target)
    code = getattr(target, "__code__", None)
    if code is None and callable(target):
        code = getattr(type(target).__call__, "__code__", None)
    if code is None:
        return None
    return CodeLocation(code.co_qualname, code.co_filename, code.co_firstlineno)
