"""Hot code: a handler whose own code on the event loop takes most of its update time,
named with its hottest lines from the low-rate profiler (``otelbot.diagnosis.profiler``).

The detector adds up each handler's timed (sampled) update time as updates end; every
``OTELBOT_PROFILE_INTERVAL`` seconds the step watcher thread hands it the profiler's
window, which it exports as the ``otelbot.profile.samples`` counter and judges: a handler
with at least 5 updates and 10 samples since it was last judged is hot when its on-CPU
samples' time reaches ``OTELBOT_HOT_CODE_SHARE`` of its update time (less the time other
updates' long steps stalled it, as for slow handlers) and ``OTELBOT_HOT_CODE_MS`` per
update. Samples taken while the loop thread was waiting (``time.sleep``, blocking I/O, a
lock: its CPU clock hardly advanced, see the profiler) are not hot code, and lines that
were mostly waiting are not named; such a handler is the blocked-loop detector's. Where
the thread's CPU clock cannot be read, every sample counts as on CPU and the evidence
says so. The detector tells the profiler which thread is the loop's (its own, at each
update's end). Updates that overlap a traced memory window (everything runs slower then) are left
out. The finding carries the handler's collapsed stacks (``otelbot.profile.stacks``) and
the example trace of its latest update; it is sent from the bot's event loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from opentelemetry import metrics
from opentelemetry.trace import NonRecordingSpan

from otelbot import __version__, semconv
from otelbot.core import config
from otelbot.diagnosis import engine, memory, profiler, steps
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import CodeLocation, UpdateNotes
from otelbot.diagnosis.profile_metric import ProfileMetric
from otelbot.diagnosis.profiler import OwnerProfile, Window
from otelbot.diagnosis.report import SCOPE, Finding

SHARE_SETTING = "OTELBOT_HOT_CODE_SHARE"
MS_SETTING = "OTELBOT_HOT_CODE_MS"
MIN_UPDATES = 5
MIN_SAMPLES = 10
TOP_LINES = 3
STACKS_LIMIT = 8192
_HANDLERS = 1000
_NOT_HANDLERS = frozenset((profiler.IDLE, profiler.OTELBOT, profiler.LOOP, profiler.OTHER))


class _Pending:
    """One handler's updates and samples since it was last judged."""

    __slots__ = ("profile", "seconds", "updates")

    def __init__(self) -> None:
        self.updates = 0
        self.seconds = 0.0
        self.profile = OwnerProfile()


class HotCode(Detector):
    event = semconv.EVENT_HOT_CODE

    def __init__(self) -> None:
        self.share = config.number(SHARE_SETTING, 0.5, minimum=0.0)
        self.floor = config.number(MS_SETTING, 20.0, minimum=0.0) / 1000.0
        self.on = profiler.profile_hz() > 0
        self.lock = threading.Lock()
        self.pending: dict[str, _Pending] = {}
        self.codes: dict[str, CodeLocation | None] = {}  # handler -> where it is defined
        self.examples: dict[str, Any] = {}  # handler -> span context of its latest update
        self.loop: asyncio.AbstractEventLoop | None = None
        self.metric: ProfileMetric | None = None

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        if not self.on or update.running is None:
            return
        if self.metric is None:
            self.metric = ProfileMetric(metrics.get_meter(SCOPE, __version__))
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                self.loop = None
            profiler.profile.consumer = self.on_window
        thread = threading.get_ident()  # the loop's: detectors run where updates end
        if profiler.profile.thread != thread:
            profiler.profile.follow(thread)
        if memory.distorted(update.started, update.ended):
            return
        handler = update.handler
        with self.lock:
            pending = self.pending.get(handler)
            if pending is None:
                if len(self.pending) >= _HANDLERS:
                    return
                pending = self.pending[handler] = _Pending()
            pending.updates += 1
            pending.seconds += update.duration - _stalled(update)
        self.codes[handler] = update.handler_code
        self.examples[handler] = update.span.get_span_context()

    def on_window(self, window: Window) -> None:
        """A profiler window (on the watcher thread): export it, then judge."""
        running = engine.running()
        if running is None or self not in running.detectors:
            return
        if self.metric is not None:
            self.metric.record(window)
        for finding in self.judge(window):
            self.report(finding)

    def judge(self, window: Window) -> list[Finding]:
        out = []
        with self.lock:
            for owner, profile in window.owners.items():
                if owner in _NOT_HANDLERS:
                    continue
                pending = self.pending.get(owner)
                if pending is None:
                    if len(self.pending) >= _HANDLERS:
                        continue
                    pending = self.pending[owner] = _Pending()
                pending.profile.absorb(profile)
            ready = {
                handler: pending
                for handler, pending in self.pending.items()
                if pending.updates >= MIN_UPDATES
                and (pending.profile.samples >= MIN_SAMPLES or pending.updates >= 100)
            }
            for handler in ready:
                del self.pending[handler]
        for handler, pending in ready.items():
            finding = self.finding(handler, pending)
            if finding is not None:
                out.append(finding)
        return out

    def finding(self, handler: str, pending: _Pending) -> Finding | None:
        profile = pending.profile
        if profile.samples < MIN_SAMPLES or pending.seconds <= 0:
            return None
        # Samples x interval is an estimate: sampling jitter can put it above the time
        # the updates took, which no share may exceed.
        own = min(profile.cpu_seconds, pending.seconds)
        share = own / pending.seconds
        per_update = own / pending.updates
        if share < self.share or per_update < self.floor:
            return None
        lines = profile.top_lines(TOP_LINES, on_cpu=True)
        hottest = lines[0] if lines else None
        code = (
            CodeLocation(hottest.function, hottest.file, hottest.line)
            if hottest is not None
            else self.codes.get(handler)
        )
        at = f", hottest at {os.path.basename(code.file)}:{code.line}" if code else ""
        listed = ", ".join(f"{line.label()} {line.on_cpu / profile.samples:.0%}" for line in lines)
        if profile.timed:
            split = (
                f"{profile.samples} profiler samples, {profile.on_cpu} on CPU and "
                f"{profile.waiting} waiting"
            )
            if profile.timed < profile.samples:
                split += f" ({profile.samples - profile.timed} not told apart)"
        else:
            split = (
                f"{profile.samples} profiler samples, not split into on CPU and waiting: the "
                "thread's CPU clock is not readable here"
            )
        return Finding(
            self.event,
            handler,
            handler,
            f"{handler} spends most of its time in its own code on the event loop{at}:",
            f"{per_update * 1000:.0f} ms of own CPU time on the loop per update, {share:.0%} "
            f"of its update time ({pending.updates} sampled updates, mean "
            f"{pending.seconds / pending.updates * 1000:.0f} ms; {split}); hottest lines "
            f"(their samples on CPU): {listed or 'none in the bot code'}",
            "make the named lines cheaper (a better algorithm, caching or precomputing the "
            "result), move the work off the loop (`asyncio.to_thread` for code that releases "
            "the GIL, a ProcessPoolExecutor for pure-Python CPU work), or cut it into chunks "
            "with `await asyncio.sleep(0)` between them",
            code=code,
            attributes={semconv.PROFILE_STACKS: profile.collapsed(handler, STACKS_LIMIT)},
        )

    def report(self, finding: Finding) -> None:
        """Send from the bot's event loop (where the reporter runs); directly when it is
        not running."""
        context = self.examples.get(finding.handler or "")
        span = NonRecordingSpan(context) if context is not None else None
        engine.report_on_loop(self.loop, finding, span, lambda d: d is self)


def _stalled(update: UpdateNotes) -> float:
    """Seconds of the update other updates' long steps held the loop (overlaps once)."""
    start, end = update.started, update.ended
    spans = sorted((max(s.start, start), min(s.end, end)) for s in steps.stalls(update, start, end))
    total = 0.0
    reached = start
    for begin, finish in spans:
        begin = max(begin, reached)
        if finish > begin:
            total += finish - begin
            reached = finish
    return total
