"""Distinct active users per window, counted with fixed-size HyperLogLog sketches.

    users = ActiveUsers()
    users.add(user_id)              # per update: a hash and three register updates
    users.estimates()               # {"5m": 812.0, "1h": 4051.2, "24h": 20113.9}

No id is kept: each id is hashed and only the longest run of leading zero bits per
register survives. Each window is a ring of sub-window sketches (5 minutes: 5 x 1 min,
1 hour: 4 x 15 min, 24 hours: 8 x 3 h); the estimate merges the ring, so the window
slides in steps of one sub-window. With 2**10 registers per sketch the standard error is
about 3 %, and memory is 17 KiB whatever the number of users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

PRECISION = 10
REGISTERS = 1 << PRECISION
_MASK64 = (1 << 64) - 1
_VALUE_BITS = 64 - PRECISION
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)

#: window name -> (sub-window seconds, number of sub-windows)
WINDOWS: dict[str, tuple[int, int]] = {"5m": (60, 5), "1h": (900, 4), "24h": (10800, 8)}


def mix64(value: int) -> int:
    """A 64-bit finalizer (splitmix64): ids that differ by one land far apart."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class HyperLogLog:
    """A HyperLogLog sketch with 2**PRECISION one-byte registers."""

    __slots__ = ("registers",)

    def __init__(self) -> None:
        self.registers = bytearray(REGISTERS)

    def add_hash(self, h: int) -> None:
        index = h >> _VALUE_BITS
        rest = h & ((1 << _VALUE_BITS) - 1)
        rank = _VALUE_BITS - rest.bit_length() + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def add(self, value: int) -> None:
        self.add_hash(mix64(value))

    def merge(self, other: HyperLogLog) -> None:
        self.registers = bytearray(map(max, self.registers, other.registers))

    def estimate(self) -> float:
        return estimate(self.registers)


def estimate(registers: bytes | bytearray) -> float:
    m = len(registers)
    total = 0.0
    zeros = 0
    for r in registers:
        total += 2.0**-r
        if r == 0:
            zeros += 1
    raw = _ALPHA * m * m / total
    if raw <= 2.5 * m and zeros:
        return m * math.log(m / zeros)  # linear counting for small cardinalities
    return raw


class _Window:
    __slots__ = ("current", "epoch", "ring", "size", "step")

    def __init__(self, step: int, size: int) -> None:
        self.step = step
        self.size = size
        self.ring: list[HyperLogLog] = [HyperLogLog() for _ in range(size)]
        self.epoch = -1
        self.current = self.ring[0]

    def rotate(self, now: float) -> None:
        epoch = int(now // self.step)
        if epoch == self.epoch:
            return
        if self.epoch < 0 or epoch - self.epoch >= self.size:
            for sketch in self.ring:
                sketch.registers = bytearray(REGISTERS)
        else:
            for e in range(self.epoch + 1, epoch + 1):
                self.ring[e % self.size].registers = bytearray(REGISTERS)
        self.epoch = epoch
        self.current = self.ring[epoch % self.size]

    def estimate(self) -> float:
        merged = bytearray(REGISTERS)
        for sketch in self.ring:
            merged = bytearray(map(max, merged, sketch.registers))
        return estimate(merged)


class ActiveUsers:
    """Distinct users over the 5-minute, 1-hour and 24-hour windows."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows = {name: _Window(step, size) for name, (step, size) in WINDOWS.items()}
        self._list = list(self._windows.values())
        self._next_rotation = 0.0
        #: Whether any user was added: an instrumentation whose library handled no
        #: update reports nothing, rather than zeros beside the one that did.
        self.seen = False

    def add(self, user_id: int) -> None:
        self.seen = True
        now = self._clock()
        if now >= self._next_rotation:
            self._rotate(now)
        h = mix64(user_id)
        index = h >> _VALUE_BITS
        rank = _VALUE_BITS - (h & ((1 << _VALUE_BITS) - 1)).bit_length() + 1
        for window in self._list:
            registers = window.current.registers
            if rank > registers[index]:
                registers[index] = rank

    def _rotate(self, now: float) -> None:
        for window in self._list:
            window.rotate(now)
        # the next sub-window boundary of the finest window
        step = min(w.step for w in self._list)
        self._next_rotation = (int(now // step) + 1) * step

    def estimates(self) -> dict[str, float]:
        self._rotate(self._clock())
        return {name: window.estimate() for name, window in self._windows.items()}

    @property
    def memory_bytes(self) -> int:
        return sum(len(s.registers) for w in self._list for s in w.ring)


def observations(users: ActiveUsers, window_attribute: str) -> list[Any]:
    """The ``telegram.users.active`` gauge's observations: one per window, none before the
    first user (several bot libraries may be instrumented in one process; only the one
    that handles updates speaks)."""
    from opentelemetry.metrics import Observation

    try:
        if not users.seen:
            return []
        return [
            Observation(value, {window_attribute: window})
            for window, value in users.estimates().items()
        ]
    except Exception as exc:
        from otelbot.core.errors import internal_error

        internal_error("active users gauge", exc)
        return []
