"""The bot's runtime stats files (``$OTELBOT_RUNTIME_DIR/<pid>.stats``), turned into metrics.

Layout version 1 (the contract with otelbot.runtime.stats_file, which this module does
not import): 4096 bytes, little-endian; bytes 0..208 are ``<4sHHIIQddd`` + ``QQQdd`` * 3 +
``ddQqQ``. ``seq`` is odd while the bot writes; a reader reads seq, the fields, seq again and
retries when they differ or are odd. A heartbeat older than ``frozen_after`` is a frozen bot.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from otelbot import semconv
from otelbot.agent.collectors.base import (
    CheckError,
    Collection,
    Collector,
    Failure,
    Finding,
    Tier,
)
from otelbot.agent.config import AgentConfig

log = logging.getLogger("otelbot.agent.runtime")

NAME = "runtime"

MAGIC = b"OTBS"
VERSION = 1
FILE_SIZE = 4096
LAYOUT = struct.Struct("<4sHHIIQddd" + "QQQdd" * 3 + "ddQqQ")
SEQ = struct.Struct("<Q")
SEQ_OFFSET = 16
READ_ATTEMPTS = 50


@dataclass(frozen=True)
class GenerationStats:
    collections: int
    collected: int
    uncollectable: int
    pause_total: float
    pause_max: float


@dataclass(frozen=True)
class RuntimeStats:
    pid: int
    seq: int
    start_time: float
    heartbeat: float
    tick_interval: float
    generations: tuple[GenerationStats, GenerationStats, GenerationStats]
    loop_lag_last: float
    loop_lag_max: float
    tasks: int
    updates_in_flight: int
    updates_total: int


class StatsFileError(Exception):
    pass


def parse_stats(data: bytes) -> RuntimeStats:
    """Decode one consistent snapshot of the first 208 bytes. Raises StatsFileError."""
    if len(data) < LAYOUT.size:
        raise StatsFileError(f"file is {len(data)} bytes, expected {FILE_SIZE}")
    fields = LAYOUT.unpack_from(data)
    magic, version, _flags, pid, _reserved, seq, start, heartbeat, tick = fields[:9]
    if magic != MAGIC:
        raise StatsFileError("not an otelbot stats file (bad magic)")
    if version != VERSION:
        raise StatsFileError(f"layout version {version}, this agent reads version {VERSION}")
    gens = tuple(GenerationStats(*fields[9 + 5 * g : 14 + 5 * g]) for g in range(3))
    lag_last, lag_max, tasks, in_flight, total = fields[24:29]
    return RuntimeStats(
        pid=pid,
        seq=seq,
        start_time=start,
        heartbeat=heartbeat,
        tick_interval=tick,
        generations=gens,  # type: ignore[arg-type]
        loop_lag_last=lag_last,
        loop_lag_max=lag_max,
        tasks=tasks,
        updates_in_flight=in_flight,
        updates_total=total,
    )


def read_stats(path: str | os.PathLike[str]) -> RuntimeStats:
    """Read a stats file with the seqlock protocol; retries while the bot is mid-write."""
    with open(path, "rb") as f:
        for _ in range(READ_ATTEMPTS):
            f.seek(0)
            data = f.read(LAYOUT.size)
            if len(data) < LAYOUT.size:
                raise StatsFileError(f"file is {len(data)} bytes, expected {FILE_SIZE}")
            first = SEQ.unpack_from(data, SEQ_OFFSET)[0]
            f.seek(SEQ_OFFSET)
            again = SEQ.unpack(f.read(SEQ.size))[0]
            if first == again and first % 2 == 0:
                return parse_stats(data)
            time.sleep(0.0002)
    raise StatsFileError("the bot kept writing while the agent read (seq never stable)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RuntimeCollector(Collector):
    kind = NAME

    def __init__(self, directory: str, frozen_after: float) -> None:
        self._dir = Path(directory)
        self._frozen_after = frozen_after
        self._bad_files: set[str] = set()

    @property
    def target(self) -> str:
        return f"runtime stats in {self._dir}"

    def _files(self) -> list[Path]:
        try:
            return sorted(self._dir.glob("*.stats"))
        except OSError:
            return []

    async def collect(self, tiers: frozenset[Tier]) -> Collection:
        out = Collection()
        if Tier.FAST not in tiers:
            return out
        started = time.perf_counter()
        now = time.time()
        for path in self._files():
            try:
                stats = read_stats(path)
            except (OSError, StatsFileError) as exc:
                if isinstance(exc, FileNotFoundError):
                    continue  # the bot exited cleanly between glob and open
                if str(path) not in self._bad_files:
                    log.warning("cannot read runtime stats file %s: %s", path, exc)
                    self._bad_files.add(str(path))
                out.failures.append(Failure(NAME, type(exc).__name__, f"{path}: {exc}"))
                continue
            if not _pid_alive(stats.pid):
                continue  # left behind by a crashed bot; the process collector sees the crash
            self._emit(out, stats, now)
        out.durations[NAME] = time.perf_counter() - started
        return out

    def _emit(self, out: Collection, s: RuntimeStats, now: float) -> None:
        pid = {semconv.PROCESS_PID: s.pid}
        for g, gen in enumerate(s.generations):
            attrs = {semconv.CPYTHON_GC_GENERATION: g, semconv.PROCESS_PID: s.pid}
            out.add_with(semconv.CPYTHON_GC_COLLECTIONS, gen.collections, attrs)
            out.add_with(semconv.CPYTHON_GC_COLLECTED_OBJECTS, gen.collected, attrs)
            out.add_with(semconv.CPYTHON_GC_UNCOLLECTABLE_OBJECTS, gen.uncollectable, attrs)
            out.add_with(semconv.OTELBOT_GC_PAUSE_TIME, gen.pause_total, attrs)
            out.add_with(semconv.OTELBOT_GC_PAUSE_MAX, gen.pause_max, attrs)
        age = max(0.0, now - s.heartbeat)
        out.add_with(semconv.OTELBOT_ASYNCIO_LOOP_LAG_LAST, s.loop_lag_last, pid)
        out.add_with(semconv.OTELBOT_ASYNCIO_LOOP_LAG_MAX, s.loop_lag_max, pid)
        out.add_with(semconv.OTELBOT_ASYNCIO_TASKS, s.tasks, pid)
        out.add_with(semconv.TELEGRAM_UPDATES_ACTIVE, s.updates_in_flight, pid)
        out.add_with(semconv.OTELBOT_BOT_UPDATES_HANDLED, s.updates_total, pid)
        out.add_with(semconv.OTELBOT_BOT_HEARTBEAT_AGE, age, pid)
        if age > self._frozen_after:
            out.findings.append(
                Finding(
                    semconv.EVENT_BOT_FROZEN,
                    f"pid {s.pid}",
                    f"no heartbeat for {age:.1f} s (tick interval {s.tick_interval:g} s, "
                    f"threshold {self._frozen_after:g} s); {s.updates_in_flight} updates in "
                    f"flight, last loop lag {s.loop_lag_last:.3f} s",
                    f"py-spy dump --pid {s.pid}  # see where the event loop is blocked; "
                    "restart the bot if it does not recover",
                    {semconv.PROCESS_PID: s.pid},
                )
            )

    async def check(self) -> str:
        if not self._dir.is_dir():
            raise CheckError(
                f"runtime dir {self._dir} does not exist; set the same OTELBOT_RUNTIME_DIR for "
                "the bot and the agent (a shared emptyDir in Kubernetes)"
            )
        files = self._files()
        for path in files:
            try:
                read_stats(path)
            except (OSError, StatsFileError) as exc:
                raise CheckError(f"{path}: {exc}") from None
        return f"{len(files)} stats file(s) in {self._dir}"


def build(config: AgentConfig) -> list[Collector]:
    c = config.runtime
    directory = c.resolved_dir()
    if not c.enabled or directory is None:
        return []
    return [RuntimeCollector(directory, c.frozen_after)]
