"""What a test needs that a machine may lack (a tool, a server feature, an optional package):
on a developer's machine the test skips and says why (`make test` shows skip reasons); under
CI (CI=true) it fails, because there scripts/install-tools and scripts/services must have
provided it, and a check that silently stops running proves nothing."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under CI."""
    if on_ci():
        pytest.fail(f"{reason}\n(CI=true: this must be there, so the test fails)", pytrace=False)
    pytest.skip(reason)


def module(name: str, install: str) -> ModuleType:
    """Import ``name``, or ``missing()`` saying what to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not installed ({install})")
