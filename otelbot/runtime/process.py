"""The bot process's own memory, CPU, threads and file descriptors."""

from __future__ import annotations

import os

from opentelemetry.metrics import Observation

from otelbot import semconv

_CPU_USER = {semconv.PROCESS_CPU_MODE: "user"}
_CPU_SYSTEM = {semconv.PROCESS_CPU_MODE: "system"}


class ProcessProbe:
    """The bot's own memory, threads and file descriptors, from ``/proc/self``."""

    _page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    @classmethod
    def create(cls) -> ProcessProbe | None:
        """A probe for this platform: /proc, else psutil, else ``None``."""
        if os.path.exists("/proc/self/statm"):
            return cls()
        try:
            return PsutilProbe()
        except Exception:
            return None

    def memory(self) -> tuple[int, int]:
        """(resident, virtual) bytes."""
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * self._page, int(fields[0]) * self._page

    def threads(self) -> int:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        # Fields after the ")" that closes the command name start at field 3 (state);
        # num_threads is field 20.
        return int(data[data.rindex(b")") + 2 :].split()[17])

    def file_descriptors(self) -> int:
        return len(os.listdir("/proc/self/fd"))


class PsutilProbe(ProcessProbe):
    """The same numbers through psutil, where there is no /proc."""

    def __init__(self) -> None:
        import psutil  # optional: only needed off Linux

        self._process = psutil.Process()

    def memory(self) -> tuple[int, int]:
        info = self._process.memory_info()
        return int(info.rss), int(info.vms)

    def threads(self) -> int:
        return int(self._process.num_threads())

    def file_descriptors(self) -> int:
        return int(self._process.num_fds())


def observe_cpu() -> list[Observation]:
    times = os.times()
    return [Observation(times.user, _CPU_USER), Observation(times.system, _CPU_SYSTEM)]
