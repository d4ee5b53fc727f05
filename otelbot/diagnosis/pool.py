"""Pool starvation: updates wait for an asyncpg pool connection because other handlers
hold every one of them.

What is judged: each pool's recent acquire waits (the POOL_WAIT ops of sampled updates,
up to 512 within a minute), only when an update itself waited at least
``OTELBOT_POOL_WAIT_MS``, so a bot whose pool keeps up never sorts anything.

Who is blamed: the handlers holding connections the most, by total time from acquire to
release. A :class:`PoolUse` is the POOL_WAIT op's extra and the asyncpg instrumentation
marks it released; a hold given back after its update ended counts when it ends. Both
windows are bounded. Time during which another update's step held the event loop
(``otelbot.diagnosis.steps``) is taken off waits and holds: while the loop is blocked no
one can give a connection back, and the handler that blocked it gets its own finding.
"""

from __future__ import annotations

import math
from collections import deque

from otelbot import semconv
from otelbot.core import config
from otelbot.diagnosis import memory, steps
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import POOL_WAIT, CodeLocation, UpdateNotes, bot_code_location
from otelbot.diagnosis.report import Finding

_WAIT_SETTING = "OTELBOT_POOL_WAIT_MS"
_WAIT_MAX_SETTING = "OTELBOT_POOL_WAIT_MAX_MS"
_WAIT_MIN_SETTING = "OTELBOT_POOL_WAIT_MIN"

#: Seconds of acquires and holds judged together.
WINDOW = 60.0
_WAITS_KEPT = 512  # per pool
_HOLDS_KEPT = 2048  # all pools
_POOLS_KEPT = 32
_HOLDERS_SHOWN = 3
_JUDGE_EVERY = 1.0  # seconds

#: A hold at least this long records the line of the bot's code that gave the connection
#: back (set from ``OTELBOT_POOL_WAIT_MS`` by the detector): shorter ones cost nothing.
long_hold = 0.1


#: One hold: (released at (perf_counter), pool, handler, seconds held, the line that gave
#: it back, or True for "its handler's code", or None). A plain tuple of plain values, not
#: a class: the garbage collector stops tracking such a tuple, so the holds kept (each
#: lives for ~2,048 acquires) never reach the oldest generation, where every object kept
#: adds to the cost of each full collection.
Hold = tuple[float, str, str, float, "CodeLocation | bool | None"]

#: Recent holds of every pool, oldest first.
holds: deque[Hold] = deque(maxlen=_HOLDS_KEPT)
#: handler -> its code, for the holds marked True
_handler_code: dict[str, CodeLocation] = {}


class PoolUse:
    """One connection taken from a pool during a sampled update (the POOL_WAIT op's
    extra). The asyncpg instrumentation calls :meth:`release` when it goes back."""

    __slots__ = ("acquired", "code", "handler", "max_size", "owner", "pool", "released")

    def __init__(self, pool: str, max_size: int | None, acquired: float) -> None:
        self.pool = pool
        self.max_size = max_size
        self.acquired = acquired
        self.released: float | None = None
        self.code: CodeLocation | None = None
        self.handler: str | None = None  # set when its update ended before the release
        self.owner = 0  # id() of its update's notes, set with handler

    def release(self, now: float) -> None:
        self.released = now
        if now - self.acquired >= long_hold:
            self.code = bot_code_location(2)
        if self.handler is not None:
            _held(self, self.handler, None, self.owner)


def stalled(owner: int, start: float, end: float) -> float:
    """Seconds of ``start``..``end`` during which another update's step held the event
    loop (otelbot.diagnosis.steps): a wait or a hold that only grew because the loop was
    blocked by someone else is not this update's doing."""
    total = 0.0
    for step in reversed(steps.recent):  # appended as they end
        if step.end <= start:
            break
        if step.start < end and step.owner != owner:
            total += min(end, step.end) - max(start, step.start)
    return min(total, end - start)


def _held(use: PoolUse, handler: str, handler_code: CodeLocation | None, owner: int) -> None:
    released = use.released or use.acquired
    seconds = released - use.acquired
    seconds -= stalled(owner, use.acquired, released)
    code: CodeLocation | bool | None = use.code
    if code is None and handler_code is not None:
        code = True
        if len(_handler_code) < _HOLDS_KEPT or handler in _handler_code:
            _handler_code[handler] = handler_code
    holds.append((released, use.pool, handler, seconds, code))


class _Holder:
    __slots__ = ("code", "count", "longest", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.longest = 0.0
        self.code: CodeLocation | None = None


def holders(pool: str, since: float) -> list[tuple[str, _Holder]]:
    """Handlers by connection time held from ``pool`` since ``since``, most first."""
    by_handler: dict[str, _Holder] = {}
    for released, hold_pool, handler, seconds, code in holds:
        if released < since or hold_pool != pool:
            continue
        holder = by_handler.get(handler)
        if holder is None:
            holder = by_handler[handler] = _Holder()
        holder.count += 1
        holder.total += seconds
        if seconds >= holder.longest:
            holder.longest = seconds
            if code is True:
                code = _handler_code.get(handler)
            holder.code = code or holder.code
    return sorted(by_handler.items(), key=lambda item: item[1].total, reverse=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class PoolStarvation(Detector):
    event = semconv.EVENT_POOL_STARVATION

    def __init__(self) -> None:
        global long_hold
        self.wait = config.number(_WAIT_SETTING, 100.0, minimum=1.0) / 1000
        self.wait_max = config.number(_WAIT_MAX_SETTING, 1000.0, minimum=1.0) / 1000
        self.minimum = int(config.number(_WAIT_MIN_SETTING, 20, minimum=1))
        long_hold = self.wait
        # pool name -> recent (acquired at, waited seconds), oldest first
        self.waits: dict[str, deque[tuple[float, float]]] = {}
        self.judged: dict[str, float] = {}  # pool -> perf_counter of its last judging

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        starved: dict[str, tuple[float, PoolUse]] = {}  # pool -> longest wait here
        # While allocations are traced everything runs slower: no waits judged from it.
        traced = memory.distorted(update.started, update.ended)
        for op in update.ops:
            if op.kind != POOL_WAIT:
                continue
            use = op.extra
            if not isinstance(use, PoolUse):
                continue
            if use.released is not None:
                _held(use, update.handler, update.handler_code, id(update))
            else:
                use.owner = id(update)
                use.handler = update.handler
            if traced:
                continue
            waited = op.end - op.start - stalled(id(update), op.start, op.end)
            window = self.waits.get(op.shape)
            if window is None:
                if len(self.waits) >= _POOLS_KEPT:
                    continue
                window = self.waits[op.shape] = deque(maxlen=_WAITS_KEPT)
            window.append((op.end, waited))
            if waited >= self.wait and waited > starved.get(op.shape, (0.0, use))[0]:
                starved[op.shape] = (waited, use)
        for pool, (waited, use) in starved.items():
            self._judge(update, pool, waited, use, found)

    def _judge(
        self, update: UpdateNotes, pool: str, waited: float, use: PoolUse, found: Found
    ) -> None:
        # A starving pool makes most updates wait: judge it at most once a second (the
        # window of waits is sorted and the holds ranked each time).
        if update.ended - self.judged.get(pool, -_JUDGE_EVERY) < _JUDGE_EVERY:
            return
        self.judged[pool] = update.ended
        since = update.ended - WINDOW
        window = self.waits[pool]
        while window and window[0][0] < since:
            window.popleft()
        waits = sorted(w for _, w in window)
        count = len(waits)
        p95 = waits[math.ceil(count * 0.95) - 1]
        if waited < self.wait_max and (count < self.minimum or p95 < self.wait):
            return
        slow = sum(1 for w in waits if w >= self.wait)
        ranked = holders(pool, since)
        top = ranked[0] if ranked else None
        size = "unknown" if use.max_size is None else str(use.max_size)
        held = "; ".join(
            f"{name}: {h.count} hold(s), {_ms(h.total / h.count)} on average, "
            f"longest {_ms(h.longest)}"
            for name, h in ranked[:_HOLDERS_SHOWN]
        )
        found(
            Finding(
                self.event,
                top[0] if top else None,
                pool,
                f"Updates waited for a connection of pool {pool}: every connection was "
                "held by other updates.",
                f"the last {count} sampled acquires (within {WINDOW:g} s) waited p95 "
                f"{_ms(p95)}, longest {_ms(waits[-1])}, {slow} of them {_ms(self.wait)} or "
                "more; "
                f"this update waited {_ms(waited)}; pool max_size {size}; connections "
                f"held most by {held or 'no sampled update'}",
                "hold a connection only for the queries: no Bot API or HTTP calls and no "
                "long transactions while it is held, and use pool.fetch*/execute directly "
                "instead of keeping acquire() across other awaits; or raise max_size, "
                "within the server's max_connections",
                code=top[1].code if top else None,
                attributes={semconv.DB_CLIENT_CONNECTION_POOL_NAME: pool},
            )
        )
