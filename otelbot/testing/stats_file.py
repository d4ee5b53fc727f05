"""A reference reader of the runtime stats file, for tests and debugging.

    from otelbot.testing.stats_file import read_stats
    print(read_stats("/run/otelbot/1234.stats")["updates_total"])

The agent has its own reader (``otelbot.agent.collectors.runtime``), which imports nothing
of the bot's side; this one reads the file with the writer's own layout constants, so a
test can check the two against each other.
"""

from __future__ import annotations

import mmap
import time
from typing import Any

from otelbot.runtime.stats_file import (
    _GENERATION_FIELDS,
    _SEQ,
    _SEQ_OFFSET,
    FILE_SIZE,
    GENERATIONS,
    LAYOUT,
    LAYOUT_VERSION,
    MAGIC,
)


def read_stats(path: str, attempts: int = 1000) -> dict[str, Any]:
    """Read one consistent snapshot of a stats file (for tests and debugging).

    Follows the seqlock protocol: read seq, the fields, seq again; retry while they
    differ or seq is odd. Raises ``ValueError`` for a file that is not a version-1
    stats file.
    """
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if len(mapping) < FILE_SIZE:
            raise ValueError(f"{path}: {len(mapping)} bytes, expected {FILE_SIZE}")
        for _ in range(attempts):
            before = _SEQ.unpack_from(mapping, _SEQ_OFFSET)[0]
            values = LAYOUT.unpack_from(mapping, 0)
            after = _SEQ.unpack_from(mapping, _SEQ_OFFSET)[0]
            if before == after and before % 2 == 0:
                break
            time.sleep(0)
        else:
            raise ValueError(f"{path}: no stable snapshot after {attempts} attempts")
    finally:
        mapping.close()
    magic, version, flags, pid, _reserved, seq, start, heartbeat, interval = values[:9]
    if magic != MAGIC:
        raise ValueError(f"{path}: bad magic {magic!r}")
    if version != LAYOUT_VERSION:
        raise ValueError(f"{path}: layout version {version}, this reader knows 1")
    generations = []
    for g in range(GENERATIONS):
        row = values[9 + 5 * g : 14 + 5 * g]
        generations.append(dict(zip(_GENERATION_FIELDS, row, strict=True)))
    lag, lag_max, tasks, in_flight, total = values[24:]
    return {
        "magic": magic,
        "version": version,
        "flags": flags,
        "pid": pid,
        "seq": seq,
        "start_time": start,
        "heartbeat": heartbeat,
        "interval": interval,
        "gc": generations,
        "loop_lag": lag,
        "loop_lag_max": lag_max,
        "tasks": tasks,
        "updates_in_flight": in_flight,
        "updates_total": total,
    }
