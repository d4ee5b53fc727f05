"""How many CPUs this process may use, and which trace export path that makes cheapest.

Two limits apply on Linux: the affinity mask (``taskset``, ``docker --cpuset-cpus``,
``os.sched_getaffinity``) and the CPU quota of the process's cgroup and its ancestors
(``docker --cpus``, Kubernetes CPU limits): ``cpu.max`` in cgroup v2,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1. The usable count is the smaller one.

The export helper process (``otelbot_offload``) moves OTLP encoding off the bot's GIL onto
another CPU, but costs more CPU in total than encoding in the bot (rows are marshalled,
piped and decoded again). It pays only when a second CPU is there to run it: with fewer
than two usable CPUs, encoding in the bot's process is cheaper (docs/performance.md), by
``otelbot_otlp`` (the SDK's OTLP/HTTP exporter with otelbot's encoder,
``otelbot.export.otlp_http``) or, when the OTLP protocol is gRPC, the SDK's ``otlp``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

#: The helper is used from this many usable CPUs on.
HELPER_MIN_CPUS = 2.0


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_limit(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    if not text:
        return None
    parts = text.split()
    try:
        if parts[0] == "max":
            return None
        period = float(parts[1]) if len(parts) > 1 else 100000.0
        return float(parts[0]) / period if period > 0 else None
    except (ValueError, IndexError):
        return None


def _v1_limit(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = float(quota or "-1"), float(period or "0")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _chain(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory under ``mount`` and its ancestors up to ``mount``.

    Where the path is not visible (a container without a cgroup namespace shows the
    host's path), the mount itself is the container's own cgroup.
    """
    relative = Path(path.lstrip("/"))
    here = mount / relative
    if not here.is_dir():
        return [mount]
    dirs = [here]
    while here != mount:
        here = here.parent
        dirs.append(here)
    return dirs


def cgroup_cpus(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The CPU quota of this process's cgroup (the lowest along its ancestors), in CPUs;
    None when there is none (or no cgroup file system to read)."""
    text = _read(proc_cgroup)
    if not text:
        return None
    limits: list[float] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2 (unified)
            for mount in (root, root / "unified"):
                if (mount / "cgroup.controllers").is_file():
                    limits += [v for d in _chain(mount, path) if (v := _v2_limit(d)) is not None]
                    break
        elif "cpu" in controllers.split(","):  # cgroup v1, the cpu controller's hierarchy
            for name in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                mount = root / name
                if mount.is_dir():
                    limits += [v for d in _chain(mount, path) if (v := _v1_limit(d)) is not None]
                    break
    return min(limits) if limits else None


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use and where the limit comes from."""

    affinity: int
    quota: float | None

    @property
    def cpus(self) -> float:
        return self.affinity if self.quota is None else min(float(self.affinity), self.quota)

    def describe(self) -> str:
        quota = "no cgroup CPU quota" if self.quota is None else f"cgroup CPU quota {self.quota:g}"
        return f"{self.cpus:g} usable CPU(s): affinity {self.affinity}, {quota}"


def budget() -> CpuBudget:
    return CpuBudget(affinity_cpus(), cgroup_cpus())


def helper_pays(cpus: float) -> bool:
    """Whether the export helper process is the cheaper trace export path."""
    return not math.isnan(cpus) and cpus >= HELPER_MIN_CPUS
