"""The trace export path by the CPUs the process may use: cgroup quota parsing on cgroup
file trees written here, and the distro's choice under the real ``opentelemetry-instrument``
with the process pinned to one CPU or two."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from otelbot.export import cpus
from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.processes import Child, instrument_command
from tests.e2e._run import ROOT, otel_env

#: Starts a command with the affinity mask given first (as ``taskset -c`` does).
PIN = (
    "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(tmp_path: Path, own: str, parent: str = "max") -> Path:
    root = tmp_path / "sys"
    write(root / "cgroup.controllers", "cpu memory\n")
    write(root / "kubepods" / "cpu.max", f"{parent}\n")
    write(root / "kubepods" / "pod1" / "cpu.max", f"{own}\n")
    write(tmp_path / "cgroup", "0::/kubepods/pod1\n")
    return root


def test_v2_quota_is_read_in_cpus(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "150000 100000")
    assert cpus.cgroup_cpus(tmp_path / "cgroup", root) == 1.5


def test_v2_no_quota_is_none(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "max 100000")
    assert cpus.cgroup_cpus(tmp_path / "cgroup", root) is None


def test_v2_an_ancestors_lower_quota_applies(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "400000 100000", parent="50000 50000")
    assert cpus.cgroup_cpus(tmp_path / "cgroup", root) == 1.0


def test_v2_path_not_visible_reads_the_mount(tmp_path: Path) -> None:
    # A container without its own cgroup namespace sees the host's path.
    root = tmp_path / "sys"
    write(root / "cgroup.controllers", "cpu\n")
    write(root / "cpu.max", "100000 100000\n")
    write(tmp_path / "cgroup", "0::/system.slice/docker-abc.scope\n")
    assert cpus.cgroup_cpus(tmp_path / "cgroup", root) == 1.0


def test_v2_under_a_hybrid_layout(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    write(root / "unified" / "cgroup.controllers", "cpu\n")
    write(root / "unified" / "app" / "cpu.max", "300000 100000\n")
    write(tmp_path / "cgroup", "1:name=systemd:/\n0::/app\n")
    assert cpus.cgroup_cpus(tmp_path / "cgroup", root) == 3.0


def test_v1_quota_and_period(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    mount = root / "cpu,cpuacct"
    write(mount / "cpu.cfs_quota_us", "-1\n")
    write(mount / "cpu.cfs_period_us", "100000\n")
    write(mount / "docker" / "abc" / "cpu.cfs_quota_us", "50000\n")
    write(mount / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    write(tmp_path / "cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cpus.cgroup_cpus(tmp_path / "cgroup", root) == 0.5


def test_v1_unlimited_is_none(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    write(tmp_path / "cgroup", "2:cpu:/\n")
    assert cpus.cgroup_cpus(tmp_path / "cgroup", root) is None


def test_no_cgroup_files_is_none(tmp_path: Path) -> None:
    assert cpus.cgroup_cpus(tmp_path / "missing", tmp_path) is None
    write(tmp_path / "cgroup", "0::/\n")  # v2 named, but no cgroup file system mounted
    assert cpus.cgroup_cpus(tmp_path / "cgroup", tmp_path / "nothing") is None


def test_budget_is_the_lower_limit_and_the_helper_needs_two() -> None:
    assert cpus.CpuBudget(8, 1.5).cpus == 1.5
    assert cpus.CpuBudget(1, 4.0).cpus == 1
    assert cpus.CpuBudget(2, None).cpus == 2
    assert "affinity 8, cgroup CPU quota 1.5" in cpus.CpuBudget(8, 1.5).describe()
    assert not cpus.helper_pays(1.0)
    assert not cpus.helper_pays(1.99)
    assert cpus.helper_pays(2.0)
    assert cpus.budget().affinity == len(os.sched_getaffinity(0))


SCRIPT = (
    "from opentelemetry import trace\n"
    "from otelbot.export import distro\n"
    "provider = trace.get_tracer_provider()\n"
    "print('processors', [type(p).__name__ for p in"
    " provider._active_span_processor._span_processors])\n"
    "print('exporter', [type(getattr(getattr(p, 'span_exporter', None), 'inner', None)).__name__"
    " for p in provider._active_span_processor._span_processors])\n"
    "print('reason', distro.trace_exporter_reason)\n"
    "with trace.get_tracer('cpus').start_as_current_span('one span'):\n"
    "    pass\n"
)


HTTP = "http/protobuf"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("pinned", "chosen", "processor", "reason", "protocol"),
    [
        (
            "0",
            None,
            "BatchSpanProcessor",
            "OTEL_TRACES_EXPORTER=otelbot_otlp (the SDK's OTLP/HTTP exporter with otelbot's",
            HTTP,
        ),
        # Over gRPC on one CPU: the SDK's own exporter.
        ("0", None, "BatchSpanProcessor", "OTEL_TRACES_EXPORTER=otlp (the SDK's OTLP", "grpc"),
        (
            "0,1",
            None,
            "OffloadSpanProcessor",
            "OTEL_TRACES_EXPORTER=otelbot_offload (the export",
            HTTP,
        ),
        # An explicit choice wins over the CPU count, either way.
        ("0", "otelbot_offload", "OffloadSpanProcessor", "(set in the environment)", HTTP),
        ("0,1", "otlp", "BatchSpanProcessor", "(set in the environment)", HTTP),
    ],
)
def test_trace_exporter_by_usable_cpus(
    otlp_receiver: OtlpReceiver,
    tmp_path: Path,
    pinned: str,
    chosen: str | None,
    processor: str,
    reason: str,
    protocol: str,
) -> None:
    wanted = {int(c) for c in pinned.split(",")}
    if not wanted <= os.sched_getaffinity(0):
        pytest.skip(f"needs CPUs {pinned}")
    script = tmp_path / "which.py"
    script.write_text(SCRIPT)
    extra = {"OTEL_TRACES_EXPORTER": chosen} if chosen else {}
    env = otel_env(otlp_receiver, "cpus-test", protocol, **extra)
    cmd = [sys.executable, "-c", PIN, pinned, instrument_command(), sys.executable, str(script)]
    with Child(cmd, env=env, cwd=ROOT, name="which.py") as proc:
        proc.wait(30)  # exited, and so has the export helper
    assert proc.proc.returncode == 0, proc.output
    assert f"processors ['{processor}']" in proc.output
    assert reason in proc.output
    if chosen is None:  # the decision names the CPUs it counted
        assert f"affinity {len(wanted)}" in proc.output
    if chosen is None and len(wanted) == 1:  # the SDK's HTTP exporter with our encoder
        http = protocol == HTTP
        assert f"exporter ['{'OtlpHttpSpanExporter' if http else 'OTLPSpanExporter'}']" in (
            proc.output
        )
    spans = otlp_receiver.wait_for(lambda r: r.spans(), 10)
    assert [s.name for s in spans] == ["one span"]
