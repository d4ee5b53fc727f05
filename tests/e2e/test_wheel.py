"""The wheel as someone who never cloned the repository gets it: built from this tree,
installed into a fresh venv (real dependencies from the package index, nothing from the dev
venv), and run from a directory outside the repository.

- bare ``pip install otelbot``: each console script that needs an extra says which, in one
  line, and exits 2;
- ``pip install 'otelbot[demo]'``: ``otelbot demo --duration 15`` runs and prints the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.demo.test_demo import assert_report_names_every_problem

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEV_BIN = str(Path(sys.executable).parent)


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once from a copy of the tree (a build in place could pick up stale
    files from build/ and would race with another build in the same checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "otelbot", src / "otelbot", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    out = base / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("otelbot-*.whl")
    return built


def _user_env(venv: Path) -> dict[str, str]:
    """The environment of a user who activated ``venv``: nothing of the checkout or of the
    dev venv in PATH or PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        and not k.startswith("OTEL_")
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != DEV_BIN]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _fresh_venv(where: Path, requirement: str) -> Path:
    """``python -m venv where && where/bin/pip install requirement``."""
    proc = subprocess.run(
        [sys.executable, "-m", "venv", str(where)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run(
        [str(where / "bin" / "pip"), "install", "-q", requirement],
        cwd=where,
        env=_user_env(where),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return where


def _assert_installed_copy(venv: Path, cwd: Path) -> None:
    """otelbot is imported from the venv's site-packages, not from the checkout."""
    proc = _run(
        [str(venv / "bin" / "python"), "-c", "import otelbot; print(otelbot.__file__)"],
        cwd=cwd,
        env=_user_env(venv),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    where = Path(proc.stdout.strip())
    assert where.is_relative_to(venv) and "site-packages" in where.parts, where
    assert not where.is_relative_to(ROOT), where


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bare_wheel_names_the_extra_each_command_needs(wheel: Path, tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path / "venv", str(wheel))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    _assert_installed_copy(venv, cwd)
    env = _user_env(venv)

    demo = _one_line(_run(["otelbot", "demo", "--duration", "15"], cwd, env, 60))
    print(demo)
    assert demo.startswith("otelbot demo: the demo needs extra packages (missing: "), demo
    assert demo.endswith(": pip install 'otelbot[demo]'"), demo
    for package in ("rich", "aiogram", "PyYAML"):  # the demo's own, the bot's, the agent's
        assert package in demo, demo

    agent = _one_line(_run(["otelbot-agent", "--help"], cwd, env, 60))
    print(agent)
    assert agent.startswith("otelbot-agent: the agent needs extra packages (missing: "), agent
    assert agent.endswith(": pip install 'otelbot[agent]'"), agent
    assert "PyYAML" in agent and "rich" not in agent, agent

    # What needs no extra still works: the command's own help.
    usage = _run(["otelbot", "demo", "--help"], cwd, env, 60)
    assert usage.returncode == 0 and "--duration" in usage.stdout, usage.stderr


@pytest.mark.timeout(300)
def test_demo_extra_runs_the_demo_outside_the_repository(
    wheel: Path, tmp_path: Path, pg_dsn: str, redis_url: str
) -> None:
    venv = _fresh_venv(tmp_path / "venv", f"otelbot[demo] @ {wheel.as_uri()}")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    _assert_installed_copy(venv, cwd)
    env = _user_env(venv)
    # The services the user has (on 127.0.0.1 here), through the documented variables.
    env["OTELBOT_TEST_PG_DSN"] = pg_dsn
    env["OTELBOT_TEST_REDIS_URL"] = redis_url

    proc = _run(["otelbot", "demo", "--duration", "15"], cwd, env, 150)
    out = proc.stdout
    print(out)
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in out + proc.stderr
    assert_report_names_every_problem(out)
    assert "✓ the bot token appeared nowhere in the telemetry" in out
    report = cwd / "out" / "demo-report.html"
    assert f"HTML report: {report}" in out
    assert "Problems found" in report.read_text()
