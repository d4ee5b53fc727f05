"""Memory growth: the line of the bot's own code whose objects keep piling up.

A daemon thread, started with the first sampled update, reads the process's resident
memory every ``OTELBOT_MEMORY_WINDOW / 40`` seconds (at most every 15 s; one read of
``/proc/self/statm``). When memory has grown by ``OTELBOT_MEMORY_GROWTH_MB`` over the
last ``OTELBOT_MEMORY_WINDOW`` seconds, and grew in at least three of the window's four
quarters (a one-off rise, such as a cache filled at start, does not count), it turns
``tracemalloc`` on (10 frames) for ``OTELBOT_MEMORY_TRACE_SECONDS`` (a quiet bot longer,
up to 10x, so that the traced window holds about 15 sampled updates), takes a snapshot
at a third, two thirds and the end of it, turns tracemalloc off again (unless the bot
had turned it on itself) and tallies each snapshot by the innermost frame of the bot's
own code. A line is named when, from the first snapshot to the last, it holds at least
half of the traced growth, at a quarter of the threshold's rate or more, and grew by a
quarter of that in each half (short-lived garbage alive at one snapshot, or a bounded
structure that turns over within the window, does not). The finding names the line,
its function and the handler it ran in, with the example trace of that handler's
latest update.

Cost: the check is one file read per interval on its own thread (~20 µs of CPU, so
well under a millisecond per minute). While traced, every allocation of the process
costs more (about 1 to 2 µs each here: an allocation-heavy loop ran 10 to 40x slower; a bot
that mostly waits on I/O far less), and each snapshot holds the GIL for a time in
proportion to the traced live allocations (~60 ms per 100,000); they are tallied after
tracing stops (~25 ms per 100,000). After a traced window the next one waits at least a
full window, then twice as long each time (up to an hour). Off with
``OTELBOT_MEMORY_GROWTH_MB=0`` or ``OTELBOT_FINDINGS=off``.

A bounded structure that takes longer than the traced window to turn over, and was
still filling up when the growth was seen, can be named: widen the window then.

On request: ``kill -USR2 <bot pid>`` traces one window now, whatever the growth so far
(the line is named by the same rules, at a rate floor of 10 KB/s; the outcome is also
logged on the ``otelbot.findings`` logger). The handler is installed when the watch
thread starts, only from the main thread and only when the bot has no handler of its own
for the signal; ``OTELBOT_MEMORY_SIGNAL`` names another signal, ``off`` none.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import NonRecordingSpan

from otelbot import semconv
from otelbot.core import config
from otelbot.core.errors import internal_error, log_once
from otelbot.diagnosis import engine
from otelbot.diagnosis.allocations import Allocations, Site, function_at, grown
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import CodeLocation, UpdateNotes
from otelbot.diagnosis.report import Finding
from otelbot.runtime.process import ProcessProbe

GROWTH_SETTING = "OTELBOT_MEMORY_GROWTH_MB"
WINDOW_SETTING = "OTELBOT_MEMORY_WINDOW"
TRACE_SETTING = "OTELBOT_MEMORY_TRACE_SECONDS"
SIGNAL_SETTING = "OTELBOT_MEMORY_SIGNAL"
SIGNAL_DEFAULT = "SIGUSR2"
REQUESTED_RATE = 10 * 1024.0  # bytes/s a line must grow at to be named in a requested window
GROWTH_MB = 10.0
WINDOW = 600.0
TRACE_SECONDS = 10.0
FRAMES = 10
SHARE = 0.5  # of the traced growth, for one line to be named
MAX_COOLDOWN = 3600.0
MB = 1024 * 1024
_HANDLERS = 1000

log = logging.getLogger("otelbot.findings")


class GrowthTrigger:
    """Resident-memory samples over one window: ``add`` is True once memory grew by
    ``growth`` bytes across a full window and in at least three of its quarters."""

    def __init__(self, window: float, growth: float) -> None:
        self.window = window
        self.growth = growth
        self.samples: deque[tuple[float, int, int]] = deque()  # (time, rss, updates)

    def clear(self) -> None:
        self.samples.clear()

    def add(self, now: float, rss: int, updates: int = 0) -> bool:
        samples = self.samples
        samples.append((now, rss, updates))
        start = now - self.window
        while len(samples) > 1 and samples[1][0] <= start:
            samples.popleft()
        if samples[0][0] > start:
            return False
        return self.grew() is not None

    def grew(self) -> int | None:
        """Bytes grown across the window, if enough and steady; else None."""
        samples = self.samples
        first, last = samples[0], samples[-1]
        total = last[1] - first[1]
        if total < self.growth:
            return None
        span = last[0] - first[0]
        quarters = [first[1]]
        i = 0
        for q in (1, 2, 3):
            at = first[0] + span * q / 4
            while samples[i + 1][0] <= at:
                i += 1
            quarters.append(samples[i][1])
        quarters.append(last[1])
        rising = sum(1 for a, b in itertools.pairwise(quarters) if b - a >= self.growth / 16)
        return total if rising >= 3 else None

    def update_rate(self) -> float:
        """Sampled updates per second across the samples held."""
        first, last = self.samples[0], self.samples[-1]
        span = last[0] - first[0]
        return (last[2] - first[2]) / span if span > 0 else 0.0


class MemoryGrowth(Detector):
    """Remembers which handler each function is (for naming the culprit's handler) and
    each handler's latest sampled update (the example trace); the watching happens on
    the process's :class:`MemoryWatch` thread."""

    event = semconv.EVENT_MEMORY_GROWTH

    def __init__(self) -> None:
        self.growth = config.number(GROWTH_SETTING, GROWTH_MB, minimum=0.0) * MB
        self.window = config.number(WINDOW_SETTING, WINDOW, minimum=1.0)
        self.trace_seconds = config.number(TRACE_SETTING, TRACE_SECONDS, minimum=0.1)
        self.handlers: dict[tuple[str, int], str] = {}  # (file, first line) -> handler
        self.examples: dict[str, Any] = {}  # handler -> span context of its latest update
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = False
        self.updates = 0  # sampled updates seen (the traced window's length follows them)

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        if not self.growth:
            return
        self.updates += 1
        code = update.handler_code
        if code is not None and update.handler:
            key = (code.file, code.line)
            if key in self.handlers or len(self.handlers) < _HANDLERS:
                self.handlers[key] = update.handler
                self.examples[update.handler] = update.span.get_span_context()
        if not self.started:
            self.started = True
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                self.loop = None
            if watch(self) is not None:
                install_signal()

    def handler_of(self, site: Site) -> str | None:
        """The handler whose function is on the culprit's stack (innermost first)."""
        for file, line in site.stack:
            function = function_at(file, line)
            if function is not None:
                handler = self.handlers.get((file, function.first_line))
                if handler is not None:
                    return handler
        return None

    def finding(
        self,
        site: Site,
        grew: int,
        window: float,
        traced: float,
        share: float,
        requested: bool = False,
    ) -> Finding:
        function = function_at(site.file, site.line)
        name = function.qualname if function is not None else "<module>"
        handler = self.handler_of(site)
        where = f"{os.path.basename(site.file)}:{site.line}"
        called = f" (handler {handler})" if handler else ""
        return Finding(
            self.event,
            handler,
            where,
            f"Memory keeps growing with objects allocated in {name} at {where}{called}:",
            _growth(grew, window, requested) + f"; over {traced:.1f} s of traced "
            f"allocations, memory held by objects allocated at {where} grew by "
            f"{site.size / MB:.2f} MB in {site.blocks} blocks ({share:.0%} of the traced "
            "growth)",
            "keep the structure that holds these objects bounded (collections.deque with "
            "maxlen, an LRU or TTL cache, a size check) or drop the references once they "
            "are no longer needed",
            code=CodeLocation(name, site.file, site.line),
        )

    def report(self, finding: Finding) -> None:
        """Send from the bot's event loop (where the reporter runs); directly when it is
        not running (a bot on threads, or shutting down)."""
        context = self.examples.get(finding.handler or "")
        span = NonRecordingSpan(context) if context is not None else None
        engine.report_on_loop(self.loop, finding, span, lambda d: d is self)


class MemoryWatch(threading.Thread):
    """The sampling thread: one per process, serving the current :class:`MemoryGrowth`."""

    def __init__(self, detector: MemoryGrowth, probe: ProcessProbe) -> None:
        super().__init__(name="otelbot-memory", daemon=True)
        self.detector = detector
        self.probe = probe
        self.interval = min(max(detector.window / 40, 0.1), 15.0)
        self.trigger = GrowthTrigger(detector.window, detector.growth)
        self.cooldown = detector.window
        self.next_trace = 0.0
        self.stopping = threading.Event()
        self.requested = threading.Event()  # a traced window asked for (the signal)
        self.wake = threading.Event()  # set with either of them

    def run(self) -> None:
        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stopping.is_set():
                return
            running = engine.running()
            if running is None or self.detector not in running.detectors:
                return  # uninstrumented, or findings reset: a new detector starts anew
            try:
                if self.requested.is_set():
                    self.trace_requested()
                else:
                    self.check()
            except Exception as exc:
                internal_error("findings: memory growth", exc)
                return

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def request(self) -> None:
        """Trace one window now (safe from a signal handler: it only sets two events)."""
        self.requested.set()
        self.wake.set()

    def trace_requested(self) -> None:
        """One traced window on request, whatever the growth so far; the line is named
        by the same rules, at a low rate floor (``REQUESTED_RATE``)."""
        detector = self.detector
        samples = self.trigger.samples
        grew, window = 0, 0.0
        if len(samples) > 1:
            grew = samples[-1][1] - samples[0][1]
            window = samples[-1][0] - samples[0][0]
        seconds = detector.trace_seconds
        log.info("otelbot: tracing allocations for %.0f s on request", seconds)
        found = self.trace(seconds, REQUESTED_RATE)
        self.requested.clear()  # requests that came in while tracing were served
        self.trigger.clear()
        self.next_trace = max(self.next_trace, time.monotonic() + self.cooldown)
        if found is None:
            log.info(
                "otelbot: no line of the bot's code kept growing over the %.0f s traced", seconds
            )
            return
        site, traced, share = found
        finding = detector.finding(site, grew, window, traced, share, requested=True)
        log.info("otelbot: %s", finding.body())
        detector.report(finding)

    def check(self) -> None:
        now = time.monotonic()
        detector = self.detector
        rss = self.probe.memory()[0]
        if not self.trigger.add(now, rss, detector.updates) or now < self.next_trace:
            return
        grew = self.trigger.grew() or 0
        window = self.trigger.samples[-1][0] - self.trigger.samples[0][0]
        seconds = trace_seconds(detector.trace_seconds, self.trigger.update_rate())
        log.info(
            "otelbot: resident memory grew %.1f MB in %.0f s; tracing allocations for %.0f s "
            "to find the line",
            grew / MB,
            window,
            seconds,
        )
        found = self.trace(seconds, detector.growth / detector.window / 4)
        self.trigger.clear()  # tracemalloc's own memory is not the bot's growth
        self.next_trace = time.monotonic() + self.cooldown
        self.cooldown = min(self.cooldown * 2, max(MAX_COOLDOWN, detector.window))
        if found is not None:
            site, traced, share = found
            detector.report(detector.finding(site, grew, window, traced, share))

    def trace(self, seconds: float, rate: float) -> tuple[Site, float, float] | None:
        """Trace for ``seconds``; the line that grew steadily at ``rate`` bytes/s or more
        and holds most of the growth, with the traced seconds and its share."""
        global tracing_since
        tracing_since = time.perf_counter()
        try:
            with _no_gc():
                return self._trace(seconds, rate)
        finally:
            traced_windows.append((tracing_since, time.perf_counter()))
            tracing_since = 0.0

    def _trace(self, seconds: float, rate: float) -> tuple[Site, float, float] | None:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start(FRAMES)
        snapshots = []
        try:
            for _ in range(3):
                if self.stopping.wait(seconds / 3):
                    return None
                snapshots.append((time.monotonic(), tracemalloc.take_snapshot()))
        finally:
            if started:
                # Tallied once tracing is off: under tracemalloc the tally's own
                # allocations would be traced too, making it ~50x slower.
                tracemalloc.stop()
        first, middle, last = (Allocations.of(snapshot) for _, snapshot in snapshots)
        traced = snapshots[-1][0] - snapshots[0][0]
        del snapshots
        return culprit(first, middle, last, traced, rate)


def _growth(grew: int, window: float, requested: bool) -> str:
    if not requested:
        return (
            f"resident memory grew {grew / MB:.1f} MB in {window:.0f} s "
            f"({grew / MB * 60 / window:.1f} MB/min)"
        )
    said = f"allocations traced on request ({SIGNAL_SETTING})"
    if window > 0:
        said += f"; resident memory grew {grew / MB:.1f} MB in the last {window:.0f} s"
    return said


#: perf_counter when the traced window running now began (0.0: none), and the recent
#: windows (start, end). Everything in the bot runs several times slower while allocations
#: are traced: the timing detectors leave updates that overlap a window out.
tracing_since = 0.0
traced_windows: deque[tuple[float, float]] = deque(maxlen=16)


def distorted(start: float, end: float) -> bool:
    """Whether ``start``..``end`` (perf_counter) overlapped a traced window."""
    if tracing_since and tracing_since < end:
        return True
    if not traced_windows:  # the usual case, asked by several detectors per update
        return False
    return any(begun < end and start < ended for begun, ended in traced_windows)


@contextmanager
def _no_gc() -> Iterator[None]:
    """The garbage collector off while allocations are traced and tallied: under
    tracemalloc a full collection is several times slower (every object it frees is
    looked up in the trace table), and the snapshots' hundreds of thousands of tuples (no
    cycles: reference counting frees them) would set off full collections; either stalls
    the bot's event loop for hundreds of milliseconds. Cycles made meanwhile are
    collected once it is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def trace_seconds(setting: float, update_rate: float) -> float:
    """The traced window: ``setting``, longer for a quiet bot (up to 10x) so that each
    third of it holds about five sampled updates; a quiet bot allocates little, so its
    tracing costs little."""
    wanted = 15 / update_rate if update_rate > 0 else float("inf")
    return min(max(setting, wanted), setting * 10)


def culprit(
    first: Allocations, middle: Allocations, last: Allocations, traced: float, rate: float
) -> tuple[Site, float, float] | None:
    """The line named from three tallies ``traced`` seconds apart (first to last): it
    holds at least SHARE of the net growth, grew at ``rate`` bytes/s or more, and grew by
    a quarter of that or more in each half. Returns (site, traced, share) or None.

    The halves rule keeps out short-lived objects that happen to be alive at one
    snapshot, and a bounded structure that turns over within the traced window: its new
    objects replace old ones that were allocated before tracing began (which tracemalloc
    never saw), so it seems to grow until the old ones are all gone, then stops."""
    sites = grown(first, last)
    net = last.total - first.total
    if not sites or net <= 0 or traced <= 0:
        return None
    top = sites[0]
    share = top.size / net
    if share < SHARE or top.size / traced < rate:
        return None
    key = (top.file, top.line)
    halves = (_held(middle, key) - _held(first, key), _held(last, key) - _held(middle, key))
    if min(halves) < top.size / 4:
        return None
    return top, traced, min(share, 1.0)


def _held(allocations: Allocations, key: tuple[str, int]) -> int:
    tally = allocations.sites.get(key)
    return tally[0] if tally is not None else 0


_watch: MemoryWatch | None = None
_lock = threading.Lock()


def watch(detector: MemoryGrowth) -> MemoryWatch | None:
    """Start the process's watch thread for ``detector``; one that served an earlier
    detector (findings reset, instrumented again) is stopped."""
    global _watch
    with _lock:
        if _watch is not None:
            if _watch.detector is detector and _watch.is_alive():
                return _watch
            _watch.stop()
        probe = ProcessProbe.create()
        if probe is None:
            log_once(
                "memory.no_probe",
                "otelbot: neither /proc nor psutil is available; the memory growth finding is off",
            )
            return None
        _watch = MemoryWatch(detector, probe)
        _watch.start()
        return _watch


def install_signal() -> bool:
    """Make ``OTELBOT_MEMORY_SIGNAL`` (default SIGUSR2; ``off``: none) start one traced
    window now. Installed only from the main thread, and only when the bot has no handler
    of its own for that signal (its disposition is the default); True when installed."""
    name = os.environ.get(SIGNAL_SETTING, SIGNAL_DEFAULT).strip().upper() or SIGNAL_DEFAULT
    if name in ("OFF", "0", "FALSE", "NO"):
        return False
    number = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
    if not isinstance(number, int):
        log_once(
            "memory.signal",
            f"otelbot: {SIGNAL_SETTING}={name!r} is not a signal here; no memory snapshot "
            "on request",
        )
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(number) is not signal.SIG_DFL:
            return False  # the bot's own handler (or it ignores the signal): left alone
        signal.signal(number, _on_signal)
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _on_signal(signum: int, frame: Any) -> None:
    current = _watch
    if current is not None:
        current.request()
