"""otelbot.scripts: which packages an extra brings, read from the installed metadata (the
dev venv has every extra; tests/e2e/test_wheel.py checks a venv without them)."""

from __future__ import annotations

import pytest

from otelbot import scripts


def test_an_extra_lists_its_packages_and_those_of_the_extras_it_includes() -> None:
    demo = scripts.extra_packages("demo")
    assert demo is not None
    assert {"rich", "aiohttp", "aiogram"} <= set(demo)  # the demo's own
    assert {"PyYAML", "psutil", "pydantic"} <= set(demo)  # through otelbot[agent]
    assert len(demo) == len(set(demo))
    assert scripts.extra_packages("no-such-extra") == []


def test_nothing_is_missing_in_the_dev_venv() -> None:
    assert scripts.missing_packages("demo") == []
    assert scripts.missing_packages("agent") == []


def test_a_missing_otelbot_module_is_a_bug_not_a_missing_extra() -> None:
    exc = ModuleNotFoundError("No module named 'otelbot.gone'", name="otelbot.gone")
    with pytest.raises(ModuleNotFoundError):
        scripts.report_missing_module("otelbot-agent", "the agent", "agent", exc)


def test_the_line_names_the_command_the_missing_packages_and_the_extra() -> None:
    line = scripts.needs_extra_line("otelbot-agent", "the agent", "agent", ["PyYAML"])
    assert line == (
        "otelbot-agent: the agent needs extra packages (missing: PyYAML): "
        "pip install 'otelbot[agent]'"
    )
