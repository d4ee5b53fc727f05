"""Blocked event loop: an async handler's step (its code between two awaits) held the loop
longer than ``OTELBOT_BLOCKING_MS``, stalling every other update meanwhile. The evidence
names the line and, when it was in a call to a library or built-in function, that call:
``render_report (bot.py:35) → time.sleep``.

Reads what the step timer (``otelbot.diagnosis.steps``) put on the update's notes; sync
handlers, which aiogram runs in a thread, are not timed and so never judged.
"""

from __future__ import annotations

import os

from otelbot import semconv
from otelbot.diagnosis import memory, steps
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import UpdateNotes
from otelbot.diagnosis.report import Finding

_MAX_HANDLERS = 1000


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
                "move the blocking work off the loop: `await asyncio.to_thread(...)` or "
                "`loop.run_in_executor(...)` for blocking calls (time.sleep, requests, sync "
                "database or file I/O), an async client instead of a sync one, or CPU work "
                "cut into chunks with `await asyncio.sleep(0)` between them",
                code=where or update.handler_code,
            )
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
