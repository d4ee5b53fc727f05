"""The detectors' host: opens notes when an update starts, runs every detector when it
ends (before the update's span ends, so a finding can be an event on it).

One :class:`Diagnosis` per process, shared by every update instrumentation (aiogram,
...), so a handler's counters are one set whichever library feeds it. Off with
``OTELBOT_FINDINGS=off``: then no notes are opened and nothing is recorded.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from otelbot.core import config
from otelbot.core.errors import internal_error
from otelbot.diagnosis.notes import CodeLocation, UpdateNotes, current
from otelbot.diagnosis.report import Finding, Reporter
from otelbot.runtime.loop import busy_clock

Found = Callable[[Finding], None]


class Detector:
    """One kind of finding. ``on_update`` sees every sampled update once it has ended
    (``update.ended`` set, its span still open) and calls ``found`` for what it finds;
    per-handler state across updates is the detector's own and must stay bounded."""

    event = ""

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        raise NotImplementedError


#: "module:Class" of every detector, in report order.
DETECTORS: tuple[str, ...] = (
    "otelbot.diagnosis.flood:FloodWaits",
    "otelbot.diagnosis.blocking:BlockedLoop",
    "otelbot.diagnosis.slow:SlowHandlers",
    "otelbot.diagnosis.repeated:RepeatedStatements",
    "otelbot.diagnosis.transaction:TransactionsHeldOpen",
    "otelbot.diagnosis.pool:PoolStarvation",
    "otelbot.diagnosis.memory:MemoryGrowth",
    "otelbot.diagnosis.cache:CacheRarelyHits",
    "otelbot.diagnosis.hot_code:HotCode",
)


def load_detectors(names: Sequence[str] = DETECTORS) -> list[Detector]:
    out = []
    for name in names:
        module, _, cls = name.partition(":")
        out.append(getattr(importlib.import_module(module), cls)())
    return out


class Diagnosis:
    def __init__(
        self,
        meter: Any,
        detectors: Sequence[Detector] | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.detectors = list(detectors) if detectors is not None else load_detectors()
        self.reporter = reporter or Reporter(meter)

    def begin(self, span: Any, update_type: str, make_current: bool = True) -> UpdateNotes | None:
        """Notes for a sampled update, made current; None for an unsampled one. A bot
        library's instrumentation passes ``make_current=False``: its update state, already
        current (``notes.current``), carries the notes in its ``notes`` attribute."""
        if not span.is_recording():
            return None
        notes = UpdateNotes(span, update_type, time.perf_counter())
        notes.busy_start = busy_clock()
        if make_current:
            notes.token = current.set(notes)
        return notes

    def end(
        self,
        notes: UpdateNotes,
        handler: str,
        outcome: str,
        handler_code: CodeLocation | None = None,
    ) -> None:
        """The update is over: run the detectors. Call before ending its span."""
        notes.ended = time.perf_counter()
        if notes.busy_start is not None:
            notes.busy_end = busy_clock()
        if notes.token is not None:
            try:
                current.reset(notes.token)
            except ValueError:  # ended in another context than it began: leave that one be
                pass
        notes.handler = handler
        notes.outcome = outcome
        if handler_code is not None:
            notes.handler_code = handler_code
        span = notes.span

        def found(finding: Finding) -> None:
            self.reporter.report(finding, span)

        for detector in self.detectors:
            try:
                detector.on_update(notes, found)
            except Exception as exc:
                internal_error(f"findings: {detector.event or type(detector).__name__}", exc)


_instance: Diagnosis | None = None


def diagnosis(meter: Any) -> Diagnosis | None:
    """The process's detectors, made on first use with ``meter``; None when
    ``OTELBOT_FINDINGS`` is off."""
    global _instance
    if not config.findings():
        return None
    if _instance is None:
        try:
            _instance = Diagnosis(meter)
        except Exception as exc:
            internal_error("findings: start", exc)
            return None
    return _instance


def running() -> Diagnosis | None:
    """The process's detectors if they have been made (for a detector's own thread)."""
    return _instance


def report_on_loop(
    loop: Any, finding: Finding, span: Any, wanted: Callable[[Detector], bool]
) -> None:
    """Report ``finding`` from a detector's own thread: on ``loop`` (the bot's event loop,
    where the reporter runs), at once when that loop is not running (a bot on threads, or
    shutting down); only while the running diagnosis still has a detector ``wanted``
    accepts (not one an ``uninstrument()`` left behind)."""

    def send() -> None:
        diagnosis = running()
        if diagnosis is not None and any(wanted(d) for d in diagnosis.detectors):
            diagnosis.reporter.report(finding, span)

    if loop is not None and loop.is_running():
        try:
            loop.call_soon_threadsafe(send)
            return
        except RuntimeError:  # closed meanwhile
            pass
    send()


def reset() -> None:
    """Forget the process's detectors (tests; a new instrument() after uninstrument())."""
    global _instance
    _instance = None
