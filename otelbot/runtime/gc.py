"""Garbage-collector pauses and totals, kept by a ``gc.callbacks`` hook."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import Observation

from otelbot import semconv
from otelbot.core.errors import internal_error
from otelbot.runtime.stats_file import GENERATIONS

#: Pauses waiting to be recorded into the histogram (normally emptied every tick).
_PENDING_LIMIT = 4096

GENERATION_ATTRIBUTES = tuple({semconv.CPYTHON_GC_GENERATION: g} for g in range(GENERATIONS))


class GcStats:
    """Per-generation totals kept by the ``gc.callbacks`` hook, since ``instrument()``.

    The hook runs inside every collection, on whatever thread triggered it, possibly
    while that thread holds a lock of the metrics SDK; so it only updates these lists
    and queues the pause, and ``flush()`` records the queued pauses later, from the
    event loop tick or the metric reader's collection.
    """

    __slots__ = (
        "_flushing",
        "collected",
        "collections",
        "pause_max",
        "pause_total",
        "pending",
        "uncollectable",
    )

    def __init__(self) -> None:
        self.collections = [0] * GENERATIONS
        self.collected = [0] * GENERATIONS
        self.uncollectable = [0] * GENERATIONS
        self.pause_total = [0.0] * GENERATIONS
        self.pause_max = [0.0] * GENERATIONS
        self.pending: list[list[float]] = [[] for _ in range(GENERATIONS)]
        self._flushing = threading.Lock()

    def make_callback(self) -> Callable[[str, dict[str, int]], None]:
        """The ``gc.callbacks`` entry: two clock reads and a few list stores per collection."""
        collections = self.collections
        collected = self.collected
        uncollectable = self.uncollectable
        pause_total = self.pause_total
        pause_max = self.pause_max
        pending = self.pending
        clock = time.perf_counter
        last = GENERATIONS - 1
        started = clock()

        def on_gc(phase: str, info: dict[str, int]) -> None:
            nonlocal started
            if phase == "start":
                started = clock()
                return
            try:
                pause = clock() - started
                gen = info["generation"]
                if gen > last:
                    gen = last
                collections[gen] += 1
                collected[gen] += info["collected"]
                uncollectable[gen] += info["uncollectable"]
                pause_total[gen] += pause
                if pause > pause_max[gen]:
                    pause_max[gen] = pause
                queue = pending[gen]
                if len(queue) < _PENDING_LIMIT:
                    queue.append(pause)
            except Exception as exc:
                internal_error("runtime.gc_callback", exc)

        return on_gc

    def flush(self, histogram: Any) -> None:
        """Record the queued pauses into ``otelbot.gc.pause.duration``."""
        if not self._flushing.acquire(blocking=False):
            return  # another thread is flushing
        try:
            for gen in range(GENERATIONS):
                queue = self.pending[gen]
                if not queue:
                    continue
                self.pending[gen] = []
                attributes = GENERATION_ATTRIBUTES[gen]
                for pause in queue:
                    histogram.record(pause, attributes)
        finally:
            self._flushing.release()


def per_generation(values: list[int]) -> list[Observation]:
    return [Observation(values[g], GENERATION_ATTRIBUTES[g]) for g in range(GENERATIONS)]
