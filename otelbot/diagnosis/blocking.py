"""Blocked event loop: an async handler's step (its code between two awaits) held the loop
longer than ``OTELBOT_BLOCKING_MS``, stalling every other update meanwhile. The evidence
names the line and, when it was in a call to a library or built-in function, that call:
``render_report (bot.py:35) → time.sleep``.

:class:`BlockedLoop` reads what the step timer (``otelbot.diagnosis.steps``) put on a
sampled update's notes; sync handlers, which aiogram runs in a thread, are not timed and so
never judged. A block outside any timed step (a background task, a middleware, a job, the
framework's code, an update head sampling left out) is found by the loop heartbeat
(``otelbot.diagnosis.heartbeat``) and told by :func:`loop_finding`: no update owns it, so
it has no trace, and its handler is the bot function the loop or the library called (the
handler of an unsampled update, a task's coroutine function, a job's callback), or
``(outside handlers)`` when the stack held no bot code; the object is the line, or the
library's package (``(aiogram)``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from otelbot import semconv
from otelbot.diagnosis import memory, steps
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import UpdateNotes
from otelbot.diagnosis.report import Finding

if TYPE_CHECKING:
    from otelbot.diagnosis.heartbeat import Block

_MAX_HANDLERS = 1000
OUTSIDE_HANDLERS = "(outside handlers)"
_SUGGESTION = (
    "move the blocking work off the loop: `await asyncio.to_thread(...)` or "
    "`loop.run_in_executor(...)` for blocking calls (time.sleep, requests, sync "
    "database or file I/O), an async client instead of a sync one, or CPU work "
    "cut into chunks with `await asyncio.sleep(0)` between them"
)


class BlockedLoop(Detector):
    event = semconv.EVENT_BLOCKED_LOOP

    def __init__(self) -> None:
        self.threshold = steps.blocking_threshold()
        # handler -> [timed updates, updates that blocked, longest step seen]
        self.handlers: dict[str, list[float]] = {}

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        if update.running is None or memory.distorted(update.started, update.ended):
            return  # not timed, or allocations were being traced (all code ran slower)
        counts = self.handlers.get(update.handler)
        if counts is None:
            if len(self.handlers) >= _MAX_HANDLERS:
                return
            counts = self.handlers[update.handler] = [0, 0, 0.0]
        counts[0] += 1
        longest = update.longest_step
        if longest < self.threshold:
            return
        counts[1] += 1
        counts[2] = max(counts[2], longest)
        where = update.longest_step_at
        at = f" at {os.path.basename(where.file)}:{where.line}" if where else ""
        held = ""
        if where is not None:
            held = f"; held at {where.function} ({os.path.basename(where.file)}:{where.line})"
            if update.longest_step_call:
                held += f" → {update.longest_step_call}"
        found(
            Finding(
                self.event,
                update.handler,
                update.handler,
                f"{update.handler} blocked the event loop for {_ms(longest)} in one step{at}; "
                "no other update could run meanwhile:",
                f"longest step {_ms(longest)} (threshold {_ms(self.threshold)}), "
                f"{_ms(update.running)} on the loop in {update.steps} step(s) of a "
                f"{_ms(update.duration)} update; {int(counts[1])} of {int(counts[0])} timed "
                f"updates of this handler blocked the loop since the bot started, the longest "
                f"step {_ms(counts[2])}"
                + held
                + (
                    f"; {_ms(update.gc_in_steps)} of garbage collection in its long steps "
                    "not counted"
                    if update.gc_in_steps >= 0.001
                    else ""
                ),
                _SUGGESTION,
                code=where or update.handler_code,
            )
        )


def loop_finding(block: Block, threshold: float) -> Finding:
    """The finding for a block the loop heartbeat found outside any timed step."""
    seen = block.seen
    handler = seen.entry or OUTSIDE_HANDLERS
    late = block.end - block.start
    held = late - block.gc - block.stepped
    where = seen.where
    if where is not None:
        place = f"{os.path.basename(where.file)}:{where.line}"
        obj = f"{handler} at {place}"
        at = f"{where.function} ({place})"
        if seen.call:
            at += f" → {seen.call}"
    else:
        obj = at = str(seen.library)
        if seen.library_at:
            at += f" {seen.library_at}"
    task = f", in task {seen.task}" if seen.task else ""
    return Finding(
        semconv.EVENT_BLOCKED_LOOP,
        handler,
        obj,
        f"{handler} blocked the event loop for {_ms(held)} or more outside a timed handler "
        f"step (a background task, a job, a middleware, the framework or an update not "
        f"sampled); no update could run meanwhile:",
        f"the loop heartbeat came back {_ms(late)} late (threshold {_ms(threshold)}); held at "
        f"{at}{task}"
        + (
            f"; {_ms(block.gc)} of garbage collection in it not counted"
            if block.gc >= 0.001
            else ""
        )
        + (f"; {_ms(block.stepped)} of timed handler steps not counted" if block.stepped else ""),
        _SUGGESTION,
        code=where,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
