"""Event-loop lag: a periodic tick plus, on selector loops, every iteration's duration, and
the time the loop has spent running callbacks (``busy_clock``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from otelbot.core.errors import internal_error

#: The monitor whose selector wrapper counts busy time (the last one started), or None.
watched: LoopMonitor | None = None


def busy_clock() -> tuple[float, int] | None:
    """The watched event loop's seconds outside ``select()`` (running callbacks: every
    task's steps, otelbot's included) and its iterations, since it was first watched, up
    to now. Call it on the loop's thread; None when the running loop is not a watched
    selector loop (uvloop, or no runtime instrumentation)."""
    monitor = watched
    if monitor is None or monitor.loop is not asyncio._get_running_loop():
        return None
    return monitor.busy + (time.perf_counter() - monitor.returned), monitor.iterations


class LoopMonitor:
    """Watches one event loop: a periodic ``call_later`` tick plus, on selector loops, the
    duration of every loop iteration (time from the selector returning to the next
    ``select()``), so that a blocked loop is measured in full."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        on_tick: Callable[[LoopMonitor, float], None],
    ) -> None:
        self.loop = loop
        self.interval = interval
        self._on_tick = on_tick
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = False
        #: perf_counter when the selector last returned / longest iteration since the tick
        self.returned = time.perf_counter()
        self.worst = 0.0
        #: seconds spent outside select() in completed iterations (selector loops only)
        self.busy = 0.0
        self.iterations = 0
        self._selector: Any = None
        self._select: Any = None

    def start(self) -> None:
        self._wrap_selector()
        self._schedule()

    def stop(self) -> None:
        self._stopped = True
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        selector, self._selector = self._selector, None
        if selector is not None and vars(selector).get("select") is self._select:
            del selector.select
        global watched
        if watched is self:
            watched = None

    def _schedule(self) -> None:
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        if self._stopped:
            return
        try:
            lag = self.loop.time() - self._due
            worst, self.worst = self.worst, 0.0
            if worst > lag:
                lag = worst
            self._on_tick(self, lag if lag > 0.0 else 0.0)
        except Exception as exc:
            internal_error("runtime.loop_tick", exc)
        if not self._stopped:
            self._schedule()

    def _wrap_selector(self) -> None:
        # Stock selector loops only; the wrapper is an instance attribute of this loop's
        # selector, so other loops and the selector classes are untouched.
        selector: Any = getattr(self.loop, "_selector", None)
        original = getattr(selector, "select", None)
        own = getattr(selector, "__dict__", None)
        if original is None or own is None or "select" in own:
            return
        clock = time.perf_counter
        monitor = self

        def select(timeout: float | None = None) -> Any:
            entered = clock()
            ran = entered - monitor.returned
            monitor.busy += ran
            monitor.iterations += 1
            if ran > monitor.worst:
                monitor.worst = ran
            events = original(timeout)
            monitor.returned = clock()
            return events

        selector.select = select
        self._selector = selector
        self._select = select
        global watched
        watched = self
