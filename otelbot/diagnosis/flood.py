"""Flood control: Bot API calls refused with 429, per handler and method."""

from __future__ import annotations

from collections import Counter

from otelbot import semconv
from otelbot.core import config
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import API, CodeLocation, UpdateNotes
from otelbot.diagnosis.report import Finding

_SETTING = "OTELBOT_FLOOD_MIN"


class FloodWaits(Detector):
    event = semconv.EVENT_FLOOD_WAIT

    def __init__(self) -> None:
        self.minimum = int(config.number(_SETTING, 1, minimum=1))
        self.totals: Counter[tuple[str, str]] = Counter()  # (handler, method) -> 429s

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        refused: Counter[str] | None = None  # made on the first 429: most updates have none
        retry: dict[str, float] = {}
        where: dict[str, CodeLocation] = {}
        for op in update.ops:
            if op.kind != API or not op.extra or op.extra[0] != 429:
                continue
            if refused is None:
                refused = Counter()
            refused[op.shape] += 1
            after = op.extra[1]
            if after is not None:
                retry[op.shape] = max(retry.get(op.shape, 0.0), float(after))
            if len(op.extra) > 2 and op.extra[2] is not None:
                where.setdefault(op.shape, op.extra[2])
        if refused is None:
            return
        for method, count in refused.items():
            key = (update.handler, method)
            if len(self.totals) < 1000 or key in self.totals:
                self.totals[key] += count
            if count < self.minimum:
                continue
            wait = f", retry_after up to {retry[method]:g} s" if method in retry else ""
            found(
                Finding(
                    self.event,
                    update.handler,
                    method,
                    f"{update.handler} hit Telegram's flood control on {method}:",
                    f"{count} {method} call(s) refused with 429 Too Many Requests in one "
                    f"update{wait}; {self.totals[key]} refused for this handler since the "
                    "bot started",
                    "send through a queue that keeps to Telegram's limits (about 1 message "
                    "per second per chat, 30 per second overall) instead of a burst, and "
                    "wait out retry_after before retrying",
                    code=where.get(method) or update.handler_code,
                    attributes={semconv.TELEGRAM_API_METHOD: method},
                )
            )
