"""A cache that rarely hits: per handler and key shape, reads that almost always miss.

The Redis instrumentation notes each cache read and write of a sampled update with its
key's shape (``price:?:?``, see :mod:`otelbot.core.keyshape`; raw keys never reach the
notes). A (handler, key shape) is judged once it has ``OTELBOT_CACHE_MIN_READS`` reads:
a finding when fewer than ``OTELBOT_CACHE_MIN_HIT_RATIO`` of them hit and the handler
uses the shape as a cache, that is, it writes a key of the same shape after at least a
quarter of its misses (cache-aside). A key that is only ever read (a flag, a lock, state
another process may set) misses by design and is not judged; nor are aiogram's FSM keys
(``fsm:...``) or the keys lumped into ``(other)``.

Counters are kept since the bot started, halved once a shape reaches 10,000 reads so
they follow what the bot does now, and bounded at 1,000 (handler, shape) pairs; more
are counted under ``(other)``.
"""

from __future__ import annotations

from otelbot import semconv
from otelbot.core import config
from otelbot.core.keyshape import OTHER
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import REDIS, SQL, UpdateNotes
from otelbot.diagnosis.report import Finding

_MIN_RATIO_SETTING = "OTELBOT_CACHE_MIN_HIT_RATIO"
_MIN_READS_SETTING = "OTELBOT_CACHE_MIN_READS"
_MAX_PAIRS = 1000
_HALVE_AT = 10_000
# Key prefixes of state stores that read absent keys by design.
_NOT_CACHES = ("fsm:",)


class _Counts:
    """One (handler, key shape): its reads and what followed its misses."""

    __slots__ = ("hits", "misses", "queried", "reads", "refilled", "ttl")

    def __init__(self) -> None:
        self.reads = 0
        self.hits = 0
        self.misses = 0
        self.queried = 0  # misses after which the update ran SQL
        self.refilled = 0  # misses after which the update wrote a key of the same shape
        self.ttl: float | None = None  # the TTL last written with a key of the shape

    def halve(self) -> None:
        self.reads //= 2
        self.hits //= 2
        self.misses //= 2
        self.queried //= 2
        self.refilled //= 2


class CacheRarelyHits(Detector):
    event = semconv.EVENT_CACHE_RARELY_HITS

    def __init__(self) -> None:
        self.min_ratio = config.number(_MIN_RATIO_SETTING, 0.10, minimum=0.0)
        self.min_reads = int(config.number(_MIN_READS_SETTING, 50, minimum=1))
        self.counts: dict[tuple[str, str], _Counts] = {}
        self.reads = 0  # the whole bot's, for comparison
        self.hits = 0

    def _counts(self, handler: str, shape: str) -> tuple[str, _Counts]:
        """The counters of (handler, shape), or of (handler, "(other)") once full."""
        key = (handler, shape)
        counts = self.counts.get(key)
        if counts is None:
            if len(self.counts) >= _MAX_PAIRS:
                key = (handler, OTHER)
                counts = self.counts.get(key)
            if counts is None:
                counts = self.counts[key] = _Counts()
        return key[1], counts

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        # Where the update last ran SQL and last wrote each shape (op index), so a miss
        # can be told what came after it.
        last_sql = -1
        last_write: dict[str, int] = {}
        ttls: dict[str, float] = {}
        reads = False
        for index, op in enumerate(update.ops):
            if op.kind == SQL:
                last_sql = index
            elif op.kind == REDIS and op.extra:
                for shape, result, ttl in op.extra:
                    if result is None:
                        last_write[shape] = index
                        if ttl is not None:
                            ttls[shape] = ttl
                    else:
                        reads = True
        if not reads and not ttls:
            return
        handler = update.handler
        touched: dict[str, _Counts] = {}  # by the shape noted
        judged: dict[str, _Counts] = {}  # by the shape counted as ("(other)" once full)
        for shape, ttl in ttls.items():
            self._counts(handler, shape)[1].ttl = ttl
        if not reads:
            return
        for index, op in enumerate(update.ops):
            if op.kind != REDIS or not op.extra:
                continue
            for shape, result, _ttl in op.extra:
                if result is None:
                    continue
                counts = touched.get(shape)
                if counts is None:
                    counted_as, counts = self._counts(handler, shape)
                    touched[shape] = counts
                    judged[counted_as] = counts
                counts.reads += 1
                self.reads += 1
                if result == semconv.CACHE_HIT:
                    counts.hits += 1
                    self.hits += 1
                else:
                    counts.misses += 1
                    if last_sql > index:
                        counts.queried += 1
                    if last_write.get(shape, -1) > index:
                        counts.refilled += 1
        for shape, counts in judged.items():
            if (
                counts.reads >= self.min_reads
                and counts.hits < self.min_ratio * counts.reads
                and counts.refilled * 4 >= counts.misses
                and shape != OTHER
                and not shape.startswith(_NOT_CACHES)
            ):
                found(self._finding(update, shape, counts))
            if counts.reads >= _HALVE_AT:
                counts.halve()
        if self.reads >= _HALVE_AT * 10:
            self.reads //= 2
            self.hits //= 2

    def _finding(self, update: UpdateNotes, shape: str, counts: _Counts) -> Finding:
        handler = update.handler
        parts = [
            f"{counts.reads} reads of keys shaped {shape}, {counts.hits} hit(s) "
            f"({_percent(counts.hits, counts.reads)})"
        ]
        refill = (
            f"after {counts.misses} misses the handler wrote a key of the same shape "
            f"{counts.refilled} times"
        )
        if counts.queried:
            refill += f" and ran SQL {counts.queried} times"
        parts.append(refill + ": a cache-aside whose entries are not read back")
        if counts.ttl is not None:
            parts.append(f"written with a TTL of {counts.ttl:g} s")
        other_reads = other_hits = 0
        for (other_handler, other_shape), other in self.counts.items():
            if other_handler == handler and other_shape != shape:
                other_reads += other.reads
                other_hits += other.hits
        if other_reads:
            parts.append(
                f"the handler's other key shapes hit {_percent(other_hits, other_reads)} "
                f"of {other_reads} reads"
            )
        parts.append(f"the bot's cache reads overall hit {_percent(self.hits, self.reads)}")
        ttl = f" (here {counts.ttl:g} s)" if counts.ttl is not None else ""
        return Finding(
            self.event,
            handler,
            shape,
            f"{handler}'s cache rarely hits for keys {shape}:",
            "; ".join(parts),
            "build the key only from what identifies the cached data: a part that changes "
            "on every call (a timestamp, a random id, a counter) makes every read a miss; "
            f"if the key is stable, its entries expire before they are read again{ttl}: "
            "keep them longer, or stop caching this data",
            code=update.handler_code,
            attributes={
                semconv.CACHE_KEY_SHAPE: shape,
                semconv.DB_SYSTEM_NAME: semconv.DB_SYSTEM_REDIS,
            },
        )


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "n/a"
