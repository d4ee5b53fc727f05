"""The bot process seen from outside with psutil: memory, CPU, threads, fds, context switches.

The process is found by pid, pid file or a regular expression over its command line (in
Kubernetes, with ``shareProcessNamespace: true``), and found again after it restarts.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import psutil

from otelbot import semconv
from otelbot.agent.collectors.base import CheckError, Collection, Collector, Failure, Tier
from otelbot.agent.config import AgentConfig

log = logging.getLogger("otelbot.agent.process")

NAME = "process"


class ProcessNotFound(Exception):
    pass


class ProcessCollector(Collector):
    kind = NAME

    def __init__(
        self, pid: int | None = None, pid_file: str | None = None, pattern: str | None = None
    ) -> None:
        self._pid = pid
        self._pid_file = pid_file
        self._pattern = re.compile(pattern) if pattern else None
        self._process: psutil.Process | None = None
        self._missing_logged = False

    @property
    def target(self) -> str:
        if self._pid:
            return f"process pid {self._pid}"
        if self._pid_file:
            return f"process from pid file {self._pid_file}"
        return f"process matching {self._pattern.pattern if self._pattern else '?'}"

    def _find(self) -> psutil.Process:
        if self._process is not None and self._process.is_running():
            return self._process  # is_running also notices a reused pid
        self._process = None
        if self._pid:
            found = psutil.Process(self._pid)
        elif self._pid_file:
            try:
                found = psutil.Process(int(Path(self._pid_file).read_text().strip()))
            except (OSError, ValueError) as exc:
                raise ProcessNotFound(f"pid file {self._pid_file}: {exc}") from None
        else:
            assert self._pattern is not None
            found = self._search(self._pattern)
        self._process = found
        return found

    @staticmethod
    def _search(pattern: re.Pattern[str]) -> psutil.Process:
        own = os.getpid()
        best: psutil.Process | None = None
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            cmdline = proc.info.get("cmdline") or []
            if proc.info["pid"] == own or not cmdline:
                continue
            if pattern.search(" ".join(cmdline)) is None:
                continue
            # Several matches (a supervisor and its worker): prefer the oldest one.
            if best is None or proc.info["create_time"] < best.info["create_time"]:
                best = proc
        if best is None:
            raise ProcessNotFound(f"no process matches {pattern.pattern!r}")
        return best

    async def collect(self, tiers: frozenset[Tier]) -> Collection:
        out = Collection()
        if Tier.FAST not in tiers:
            return out
        started = time.perf_counter()
        try:
            proc = self._find()
            with proc.oneshot():
                mem = proc.memory_info()
                cpu = proc.cpu_times()
                threads = proc.num_threads()
                fds = proc.num_fds() if hasattr(proc, "num_fds") else None
                switches = proc.num_ctx_switches()
                created = proc.create_time()
        except (ProcessNotFound, psutil.Error) as exc:
            self._process = None
            if not self._missing_logged:
                log.warning("bot process not found (%s); will keep looking", exc)
                self._missing_logged = True
            out.failures.append(Failure(NAME, "not_found", str(exc)))
            out.target_up = False
            return out
        if self._missing_logged:
            log.info("bot process found again: pid %d", proc.pid)
            self._missing_logged = False
        out.add(semconv.PROCESS_MEMORY_USAGE, mem.rss)
        out.add(semconv.PROCESS_MEMORY_VIRTUAL, mem.vms)
        out.add(semconv.PROCESS_CPU_TIME, cpu.user, **{semconv.PROCESS_CPU_MODE: "user"})
        out.add(semconv.PROCESS_CPU_TIME, cpu.system, **{semconv.PROCESS_CPU_MODE: "system"})
        out.add(semconv.PROCESS_THREAD_COUNT, threads)
        out.add(semconv.PROCESS_OPEN_FILE_DESCRIPTOR_COUNT, fds)
        out.add(
            semconv.PROCESS_CONTEXT_SWITCHES,
            switches.voluntary,
            **{semconv.PROCESS_CONTEXT_SWITCH_TYPE: "voluntary"},
        )
        out.add(
            semconv.PROCESS_CONTEXT_SWITCHES,
            switches.involuntary,
            **{semconv.PROCESS_CONTEXT_SWITCH_TYPE: "involuntary"},
        )
        out.add(semconv.PROCESS_UPTIME, max(0.0, time.time() - created))
        out.durations[NAME] = time.perf_counter() - started
        return out

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def check(self) -> str:
        try:
            proc = self._find()
        except (ProcessNotFound, psutil.Error) as exc:
            raise CheckError(
                f"{exc}; check process.pid / pid_file / pattern, and in Kubernetes set "
                "shareProcessNamespace: true"
            ) from None
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:80]})"


def build(config: AgentConfig) -> list[Collector]:
    c = config.process
    if not c.enabled:
        return []
    return [ProcessCollector(c.pid, c.pid_file, c.pattern)]
