"""Deployment checks: the tools are installed by scripts/install-tools (`make test` runs it,
and once more per session here, so `pytest tests/deploy` works alone). A test that needs a
tool the script could not install skips and says which, or fails under CI (CI=true)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._require import missing

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install-tools"


def _which(name: str) -> str | None:
    # helm comes from a wheel, so it sits next to the test's Python.
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


@pytest.fixture(scope="session")
def installed_tools() -> str:
    """Runs scripts/install-tools once; returns its output (quoted in skip messages)."""
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OTELBOT_PYTHON": sys.executable},
    )
    return (result.stdout + result.stderr).strip()


def _tool(name: str, installed_tools: str) -> str:
    path = _which(name)
    if path is None:
        missing(
            f"{name} is not installed and scripts/install-tools could not install it:\n"
            f"{installed_tools}"
        )
    return path


@pytest.fixture(scope="session")
def helm(installed_tools: str) -> str:
    return _tool("helm", installed_tools)


@pytest.fixture(scope="session")
def promtool(installed_tools: str) -> str:
    return _tool("promtool", installed_tools)


@pytest.fixture(scope="session")
def prometheus_bin(installed_tools: str) -> str:
    return _tool("prometheus", installed_tools)
