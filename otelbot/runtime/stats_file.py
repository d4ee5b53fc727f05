"""The runtime stats file: a fixed-layout binary file the bot keeps for the agent.

    import time
    from otelbot.runtime import stats_file
    stats = stats_file.StatsFile.create("/tmp", interval=1.0)   # writes /tmp/<pid>.stats
    stats_file.update_started()                                  # an update arrives ...
    stats_file.update_ended()                                    # ... and is handled
    stats.write(time.time(), [1, 0, 0], [10, 0, 0], [0, 0, 0], [0.001, 0, 0],
                [0.001, 0, 0], loop_lag=0.0, loop_lag_max=0.0, tasks=1)
    stats.close()                                                # removes the file

The layout (version 1) is documented in docs/runtime-stats-file.md; it is the only
contract between this writer and the agent's reader, which does not import this module.
The file is mapped with mmap, so a write is a few memory stores (no syscall), guarded by
a sequence counter (a seqlock) so that a reader never sees a half-written record.

``update_started()`` / ``update_ended()`` are for other instrumentations (aiogram):
they bump two in-memory integers that the next write copies into the file, and do
nothing at all while no file is open.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

MAGIC = b"OTBS"
LAYOUT_VERSION = 1
FILE_SIZE = 4096
GENERATIONS = 3

_GENERATION_FORMAT = "QQQdd"  # collections, collected, uncollectable, pause total, pause max
_TAIL_FORMAT = "ddQqQ"  # loop lag, loop lag max, tasks, updates in flight, updates total
#: Bytes 0..208 of the file, little-endian.
LAYOUT = struct.Struct("<4sHHIIQddd" + _GENERATION_FORMAT * GENERATIONS + _TAIL_FORMAT)
_SEQ = struct.Struct("<Q")
_SEQ_OFFSET = 16
#: Everything after ``seq``: what one tick rewrites.
_BODY = struct.Struct("<ddd" + _GENERATION_FORMAT * GENERATIONS + _TAIL_FORMAT)
_BODY_OFFSET = 24
assert LAYOUT.size == 208 and _BODY_OFFSET + _BODY.size == LAYOUT.size

_GENERATION_FIELDS = (
    "collections",
    "collected",
    "uncollectable",
    "pause_total",
    "pause_max",
)

# --------------------------------------------------------------------------- update counters
# Plain module globals: the cheapest thing a per-update hook can touch. Increments from
# several threads may very rarely lose one (no lock on purpose); the numbers are gauges
# for a dashboard, not accounting.
_counting = False
_updates_in_flight = 0
_updates_total = 0


def update_started() -> None:
    """An update started being handled. A no-op while no stats file is open."""
    global _updates_in_flight
    if _counting:
        _updates_in_flight += 1


def update_ended() -> None:
    """An update finished (handled, unhandled or failed). A no-op while no file is open."""
    global _updates_in_flight, _updates_total
    if _counting:
        _updates_in_flight -= 1
        _updates_total += 1


# --------------------------------------------------------------------------- writer

_open_file: StatsFile | None = None


def stats_path(directory: str, pid: int | None = None) -> str:
    """``<directory>/<pid>.stats``."""
    return os.path.join(directory, str(os.getpid() if pid is None else pid) + ".stats")


class StatsFile:
    """The writer side: one per process, created by the runtime instrumentation."""

    def __init__(
        self, path: str, mapping: mmap.mmap, pid: int, start_time: float, interval: float
    ) -> None:
        self.path = path
        self.pid = pid
        self.start_time = start_time
        self.interval = interval
        self._map: mmap.mmap | None = mapping
        self._seq = 0

    @classmethod
    def create(cls, directory: str, interval: float = 1.0) -> StatsFile:
        """Create and map ``<directory>/<pid>.stats``; raises ``OSError`` if it can't.

        The file is fully written under a temporary name and then renamed into place, so
        a reader never sees a file without its header. A leftover file of an earlier
        process with the same pid (a restarted container's pid 1) is replaced.
        """
        global _open_file, _counting, _updates_in_flight, _updates_total
        if _open_file is not None:
            raise RuntimeError("a runtime stats file is already open in this process")
        pid = os.getpid()
        path = stats_path(directory, pid)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, FILE_SIZE)
            mapping = mmap.mmap(fd, FILE_SIZE)  # MAP_SHARED: the agent sees our stores
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)  # the mapping keeps the file open
        now = time.time()
        self = cls(path, mapping, pid, now, interval)
        zeros = [0] * GENERATIONS
        LAYOUT.pack_into(
            mapping,
            0,
            MAGIC,
            LAYOUT_VERSION,
            0,
            pid,
            0,
            0,
            now,
            now,
            interval,
            *_generation_values(zeros, zeros, zeros, zeros, zeros),
            0.0,
            0.0,
            0,
            0,
            0,
        )
        try:
            os.replace(tmp, path)
        except BaseException:
            mapping.close()
            _unlink(tmp)
            raise
        _updates_in_flight = 0
        _updates_total = 0
        _counting = True
        _open_file = self
        return self

    def write(
        self,
        heartbeat: float,
        collections: Sequence[int],
        collected: Sequence[int],
        uncollectable: Sequence[int],
        pause_total: Sequence[float],
        pause_max: Sequence[float],
        loop_lag: float,
        loop_lag_max: float,
        tasks: int,
    ) -> None:
        """One tick: copy the current numbers into the map, between two seq bumps."""
        mapping = self._map
        if mapping is None:
            return
        seq = self._seq + 1
        _SEQ.pack_into(mapping, _SEQ_OFFSET, seq)  # odd: write in progress
        _BODY.pack_into(
            mapping,
            _BODY_OFFSET,
            self.start_time,
            heartbeat,
            self.interval,
            *_generation_values(collections, collected, uncollectable, pause_total, pause_max),
            loop_lag,
            loop_lag_max,
            tasks,
            _updates_in_flight,
            _updates_total,
        )
        seq += 1
        _SEQ.pack_into(mapping, _SEQ_OFFSET, seq)  # even: stable
        self._seq = seq

    @property
    def closed(self) -> bool:
        return self._map is None

    def close(self) -> None:
        """Unmap and remove the file (only from the process that created it)."""
        global _open_file, _counting
        mapping, self._map = self._map, None
        if _open_file is self:
            _open_file = None
            _counting = False
        if mapping is None:
            return
        mapping.close()
        if os.getpid() == self.pid:
            _unlink(self.path)


def _generation_values(*columns: Sequence[Any]) -> list[Any]:
    """Interleave per-generation columns into the file's row order."""
    values: list[Any] = []
    for g in range(GENERATIONS):
        for column in columns:
            values.append(column[g])
    return values


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _forget_in_child() -> None:
    """A forked child must not write into (or remove) its parent's file."""
    global _open_file, _counting
    stats = _open_file
    _open_file = None
    _counting = False
    if stats is not None and stats._map is not None:
        stats._map.close()  # unmaps the child's view only
        stats._map = None


os.register_at_fork(after_in_child=_forget_in_child)
