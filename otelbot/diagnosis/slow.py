"""Slow handlers, and where their time goes.

A handler is slow when the p95 of its last sampled updates reaches
``OTELBOT_SLOW_HANDLER_MS`` (over at least ``OTELBOT_SLOW_HANDLER_MIN_UPDATES``). An
update's duration is judged less the time other updates' long steps held the event loop
during it (``otelbot.diagnosis.steps``): a handler slow only because another one blocked
the loop is not blamed (that one gets ``otelbot.bot.blocked_loop``). Nor is one slow only
because the loop was busy with other updates' short steps (the process at its CPU limit):
on selector loops, where ``otelbot.runtime.loop.busy_clock`` measures the loop's busy time
and iterations, each of the update's steps is taken to have waited about one mean loop
iteration for the loop, or, when the loop ran other code for 80% of the time the update
was not running (saturated), all its untraced waits are; that time is left out too.

Each slow update's time is split into causes. Operations overlap (a pool wait inside a
query's time, two queries gathered): each cause counts the union of its operations'
intervals, less what a cause before it already took, in this order: stalled by other
handlers, pool wait, SQL, Redis, Bot API, other HTTP. The handler's own time on the loop
(from the step timer) takes what is left, up to its measure; then the wait for the busy
loop (steps times the mean iteration, at most the loop's busy time less the update's own
steps and the stalls); the rest is
waiting on something otelbot doesn't trace (``asyncio.sleep``, locks, queues, other
clients). Within a cause, the statement, command, method or host with the most time is
named.

Per update: a subtraction and a deque append; the split and the p95 are computed only
for an update over the threshold.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from otelbot import semconv
from otelbot.core import config
from otelbot.diagnosis import memory, steps
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import API, HTTP, POOL_WAIT, REDIS, SQL, UpdateNotes
from otelbot.diagnosis.report import Finding

_THRESHOLD_SETTING = "OTELBOT_SLOW_HANDLER_MS"
_MIN_SETTING = "OTELBOT_SLOW_HANDLER_MIN_UPDATES"
_WINDOW = 100
_MAX_HANDLERS = 1000

# Causes, in the order they claim overlapping time.
STALLED = "stalled"
BUSY = "busy"  # the loop ran other updates' (or anything else's) code meanwhile
OWN = "own"
WAITING = "waiting"
UNTIMED = "untimed"
_OP_CAUSES = (POOL_WAIT, SQL, REDIS, API, HTTP)
#: The loop's share of busy time (running other code) while an update was not running
#: from which the loop counts as saturated (every wait then partly a wait for the loop).
_SATURATED = 0.8
#: Causes not the handler's: left out of its judged duration and of the ranking.
_NOT_COUNTED = (STALLED, BUSY)

_SAID = {
    POOL_WAIT: "waiting for a pool connection",
    SQL: "SQL",
    REDIS: "Redis",
    API: "the Bot API",
    HTTP: "other HTTP",
    OWN: "its own code on the event loop",
    WAITING: "untraced waits (asyncio.sleep, locks, queues, untraced clients)",
    UNTIMED: "its own code or untraced waits (not step-timed: a sync handler)",
}

_UPLOADS = frozenset(
    (
        "sendDocument",
        "sendPhoto",
        "sendVideo",
        "sendAudio",
        "sendAnimation",
        "sendVoice",
        "sendVideoNote",
        "sendSticker",
        "sendMediaGroup",
    )
)

Interval = tuple[float, float]


class _Split:
    """Where one slow update's time went: seconds per cause, per (cause, object)."""

    __slots__ = ("causes", "objects", "stalled_by")

    def __init__(self) -> None:
        self.causes: dict[str, float] = {}
        self.objects: dict[tuple[str, str], float] = {}
        self.stalled_by: dict[str, float] = {}


class SlowHandlers(Detector):
    event = semconv.EVENT_SLOW_HANDLER

    def __init__(self) -> None:
        self.threshold = config.number(_THRESHOLD_SETTING, 1000.0, minimum=1.0) / 1000.0
        self.minimum = int(config.number(_MIN_SETTING, 20, minimum=1))
        # handler -> its last updates: (judged duration, split of a slow one or None)
        self.handlers: dict[str, deque[tuple[float, _Split | None]]] = {}

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        if update.outcome == "unhandled":
            return
        if memory.distorted(update.started, update.ended):
            return  # allocations were being traced: everything ran slower
        window = self.handlers.get(update.handler)
        if window is None:
            if len(self.handlers) >= _MAX_HANDLERS:
                return
            window = self.handlers[update.handler] = deque(maxlen=_WINDOW)
        start, end = update.started, update.ended
        held = steps.stalls(update, start, end)
        stalled = _union(_clip(((s.start, s.end) for s in held), start, end))
        judged = end - start - _length(stalled)
        if judged < self.threshold:
            window.append((judged, None))
            return
        parts = split(update, stalled, held)
        judged -= parts.causes.get(BUSY, 0.0)
        if judged < self.threshold:
            window.append((judged, None))
            return
        window.append((judged, parts))
        if len(window) < self.minimum:
            return
        durations = sorted(d for d, _ in window)
        p95 = durations[math.ceil(0.95 * len(durations)) - 1]
        if p95 < self.threshold:
            return
        found(self._finding(update, window, p95))

    def _finding(
        self, update: UpdateNotes, window: deque[tuple[float, _Split | None]], p95: float
    ) -> Finding:
        causes: dict[str, float] = {}
        objects: dict[tuple[str, str], float] = {}
        stalled_by: dict[str, float] = {}
        slow = 0
        total = 0.0
        for judged, parts in window:
            if parts is None:
                continue
            slow += 1
            total += judged
            for cause, seconds in parts.causes.items():
                causes[cause] = causes.get(cause, 0.0) + seconds
            for key, seconds in parts.objects.items():
                objects[key] = objects.get(key, 0.0) + seconds
            for handler, seconds in parts.stalled_by.items():
                stalled_by[handler] = stalled_by.get(handler, 0.0) + seconds
        ranked = sorted(
            ((c, s) for c, s in causes.items() if c not in _NOT_COUNTED and s >= 0.005),
            key=lambda cs: -cs[1],
        )
        dominant = ranked[0][0] if ranked else WAITING
        top = _top(objects, dominant)
        named = f"{_SAID[dominant]} ({top})" if top else _SAID[dominant]
        share = causes.get(dominant, 0.0) / total if total else 0.0
        handler = update.handler
        shares = ", ".join(
            f"{_SAID[c]} {s:.2f} s ({s / total:.0%}{_mostly(objects, c)})" for c, s in ranked
        )
        evidence = (
            f"p95 {p95:.2f} s over the last {len(window)} sampled updates (threshold "
            f"{self.threshold:g} s); the {slow} slow one(s) took {total:.2f} s: {shares}"
        )
        if causes.get(STALLED, 0.0) >= 0.1 * total:
            who = ", ".join(sorted(stalled_by, key=stalled_by.__getitem__, reverse=True)[:3])
            evidence += (
                f"; another {causes[STALLED]:.2f} s they waited while {who} held the event "
                "loop is not counted"
            )
        if causes.get(BUSY, 0.0) >= 0.1 * total:
            evidence += (
                f"; another {causes[BUSY]:.2f} s they waited while the event loop ran other "
                "updates is not counted"
            )
        attributes: dict[str, str] = {}
        if dominant == SQL and top:
            attributes[semconv.DB_QUERY_TEXT] = top
        elif dominant == API and top:
            attributes[semconv.TELEGRAM_API_METHOD] = top
        return Finding(
            self.event,
            handler,
            dominant if not top else f"{dominant}: {top}",
            f"{handler} is slow (p95 {p95:.2f} s); most of its time, {share:.0%}, goes to {named}:",
            evidence,
            _suggestion(dominant, top),
            code=update.handler_code,
            attributes=attributes,
        )


def split(update: UpdateNotes, stalled: list[Interval], held: list[steps.LongStep]) -> _Split:
    """Where ``update``'s time went (see the module docstring for the order)."""
    parts = _Split()
    start, end = update.started, update.ended
    claimed = list(stalled)
    parts.causes[STALLED] = _length(stalled)
    for step in held:
        overlap = min(step.end, end) - max(step.start, start)
        parts.stalled_by[step.handler] = parts.stalled_by.get(step.handler, 0.0) + overlap
    for cause in _OP_CAUSES:
        ops = [op for op in update.ops if op.kind == cause]
        if not ops:
            continue
        mine = _union(_clip(((op.start, op.end) for op in ops), start, end))
        parts.causes[cause] = _length(_subtract(mine, claimed))
        claimed = _union(claimed + mine)
        shapes: dict[str, list[Interval]] = {}
        for op in ops:
            shapes.setdefault(op.shape, []).append((op.start, op.end))
        for shape, intervals in shapes.items():
            alone = _subtract(_union(_clip(intervals, start, end)), stalled)
            parts.objects[(cause, shape)] = _length(alone)
    rest = max(0.0, end - start - _length(claimed))
    if update.running is None:
        parts.causes[UNTIMED] = rest
    else:
        own = min(update.running, rest)
        parts.causes[OWN] = own
        waiting = rest - own
        loop_wait = _waited_for_loop(update, _length(stalled), waiting)
        if loop_wait > 0.0:
            parts.causes[BUSY] = loop_wait
            waiting -= loop_wait
        parts.causes[WAITING] = waiting
    return parts


def _waited_for_loop(update: UpdateNotes, stalled: float, waiting: float) -> float:
    """About how long ``update`` waited for the event loop, ready to run while the loop ran
    other code. From the loop's busy clock: ``others``, its busy time meanwhile less the
    update's own steps and the stalls (others' long steps, counted apart). When the loop
    ran others for at least ``_SATURATED`` of the time the update was not running, the loop
    was saturated and its waits cannot be told apart: all of them, up to ``others``.
    Otherwise each step (a resumption) waited about one loop iteration: its steps times the
    loop's mean iteration, at most ``others``. 0.0 when the busy time is not measured."""
    begin, end = update.busy_start, update.busy_end
    if begin is None or end is None or update.running is None:
        return 0.0
    busy, iterations = end[0] - begin[0], end[1] - begin[1]
    others = busy - update.running - stalled
    if others <= 0.0 or iterations <= 0:
        return 0.0
    not_running = update.ended - update.started - update.running - stalled
    if not_running > 0.0 and others >= _SATURATED * not_running:
        return min(others, waiting)
    return min(others, waiting, update.steps * busy / iterations)


def _top(objects: dict[tuple[str, str], float], cause: str) -> str:
    best, most = "", 0.0
    for (c, shape), seconds in objects.items():
        if c == cause and seconds > most:
            best, most = shape, seconds
    return best


def _mostly(objects: dict[tuple[str, str], float], cause: str) -> str:
    top = _top(objects, cause)
    if not top:
        return ""
    return f", mostly {top} {objects[(cause, top)]:.2f} s"


def _suggestion(cause: str, top: str) -> str:
    if cause == SQL:
        return (
            f"run EXPLAIN ANALYZE on `{top}`: add the index it needs or rewrite it, and cache "
            "its result if it rarely changes"
        )
    if cause == REDIS:
        return (
            f"look at `{top}`: avoid slow commands (KEYS, large ranges, big values), "
            "pipeline round trips, and check the latency to the Redis server"
        )
    if cause == API and top in _UPLOADS:
        return (
            f"{top} uploads the file each time: send the file_id Telegram returned the "
            "first time instead, and send from a background task or queue so the handler "
            "does not wait for Telegram"
        )
    if cause == API:
        return (
            f"Telegram answers {top} slowly: don't make the handler wait for it (send from a "
            "background task or a queue), and make fewer calls"
        )
    if cause == POOL_WAIT:
        return (
            "the connection pool is too small for the load or connections are held too "
            "long: hold one only for the queries, or raise max_size (see the pool "
            "starvation finding)"
        )
    if cause == HTTP:
        return (
            f"the service behind {top} answers slowly: set a timeout, cache its answers, or "
            "call it from a background task"
        )
    if cause == OWN:
        return (
            "profile the handler (py-spy, cProfile) and move CPU-heavy or blocking work to "
            "`asyncio.to_thread` or an executor"
        )
    return (
        "the handler waits on something otelbot does not trace: check its awaits "
        "(asyncio.sleep, locks, queues, other clients) and add timeouts"
    )


# ---------------------------------------------------------------------------- intervals


def _clip(intervals: Iterable[Interval], start: float, end: float) -> list[Interval]:
    out = []
    for a, b in intervals:
        a, b = max(a, start), min(b, end)
        if b > a:
            out.append((a, b))
    return out


def _union(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _subtract(intervals: list[Interval], taken: list[Interval]) -> list[Interval]:
    """``intervals`` less ``taken`` (both sorted and disjoint)."""
    out = []
    for a, b in intervals:
        for c, d in taken:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if b > a:
            out.append((a, b))
    return out


def _length(intervals: Iterable[Interval]) -> float:
    return sum(b - a for a, b in intervals)
