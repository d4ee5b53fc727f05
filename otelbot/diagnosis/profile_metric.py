"""The profiler's samples as the ``otelbot.profile.samples`` counter, bounded.

    metric = ProfileMetric(meter)
    metric.record(profiler.profile.take())     # adds the window's own samples per function

Per owner (a handler, ``idle``, ``otelbot``, ``(loop)``) at most :data:`TOP` functions are
named; the rest are counted as ``(other)``. A function keeps its name once it has one (a
counter's series must not move), and free names go to the functions with the most samples
in the window they first show up in.
"""

from __future__ import annotations

from typing import Any

from otelbot import semconv
from otelbot.core.fastmetrics import create_instrument
from otelbot.diagnosis.profiler import OTHER, Window

TOP = 10


class ProfileMetric:
    def __init__(self, meter: Any) -> None:
        self._counter = create_instrument(meter, semconv.OTELBOT_PROFILE_SAMPLES)
        self.named: dict[str, set[str]] = {}  # owner -> functions with their own series
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

    def record(self, window: Window) -> None:
        for owner, profile in window.owners.items():
            named = self.named.setdefault(owner, set())
            other = 0
            for function, count in profile.own.most_common():
                if function not in named and function != OTHER and len(named) < TOP:
                    named.add(function)
                if function in named:
                    self._counter.add(count, self._attrs(owner, function))
                else:
                    other += count
            if other:
                self._counter.add(other, self._attrs(owner, OTHER))

    def _attrs(self, owner: str, function: str) -> dict[str, str]:
        key = (owner, function)
        attrs = self._attributes.get(key)
        if attrs is None:
            attrs = self._attributes[key] = {
                semconv.TELEGRAM_HANDLER: owner,
                semconv.CODE_FUNCTION_NAME: function,
            }
        return attrs
