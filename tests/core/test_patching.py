"""Instrumentors patch their library when the bot imports it (otelbot.core.patching)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otelbot.core import patching
from otelbot.testing.processes import instrument_command


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A library no test has imported yet: ``lazylib_<n>`` with a class ``Client``."""
    name = f"lazylib_{tmp_path.name.replace('-', '_')}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text(
        "class Client:\n    def call(self):\n        return 'called'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(patching.LIBRARY_MODULES, "lazylib-dist", name)
    yield name
    sys.modules.pop(name, None)


def _instrumentor(module: str, fail: bool = False) -> Any:
    class LazyInstrumentor(patching.OtelbotInstrumentor):
        _instruments = ("lazylib-dist >= 1",)
        calls: list[str] = []

        def _instrument(self, **kwargs: Any) -> None:
            self.calls.append("instrument")
            if fail:
                raise RuntimeError("broken instrumentation")
            client = sys.modules[module].Client
            self.patches.wrap(client, "call", lambda f: lambda s: "patched " + f(s))

        def _uninstrument(self, **kwargs: Any) -> None:
            self.calls.append("uninstrument")
            super()._uninstrument(**kwargs)

    return LazyInstrumentor()


def test_the_library_is_patched_when_imported_not_before(library: str) -> None:
    instrumentor = _instrumentor(library)
    instrumentor.instrument(skip_dep_check=True)
    try:
        assert library not in sys.modules  # instrumenting did not import it
        assert instrumentor.calls == []
        module = __import__(library)
        assert instrumentor.calls == ["instrument"]
        assert module.Client().call() == "patched called"
    finally:
        instrumentor.uninstrument()
    assert module.Client().call() == "called"
    assert instrumentor.calls == ["instrument", "uninstrument"]
    assert not any(isinstance(f, patching._ImportWatcher) for f in sys.meta_path) or (
        library not in patching._watcher.pending
    )


def test_an_already_imported_library_is_patched_at_once(library: str) -> None:
    module = __import__(library)
    instrumentor = _instrumentor(library)
    instrumentor.instrument(skip_dep_check=True)
    try:
        assert module.Client().call() == "patched called"
    finally:
        instrumentor.uninstrument()


def test_uninstrumented_before_the_import_patches_nothing(library: str) -> None:
    instrumentor = _instrumentor(library)
    instrumentor.instrument(skip_dep_check=True)
    instrumentor.uninstrument()  # its _uninstrument must not run: nothing was patched
    module = __import__(library)
    assert module.Client().call() == "called"
    assert instrumentor.calls == []
    assert library not in patching._watcher.pending


def test_a_failing_instrumentation_never_breaks_the_import(
    library: str, caplog: pytest.LogCaptureFixture
) -> None:
    instrumentor = _instrumentor(library, fail=True)
    instrumentor.instrument(skip_dep_check=True)
    try:
        module = __import__(library)
        assert module.Client().call() == "called"
        assert instrumentor.calls == ["instrument"]
        assert "broken instrumentation" in caplog.text
    finally:
        instrumentor.uninstrument()


def test_an_aiogram_bot_under_opentelemetry_instrument_imports_no_other_bot_library(
    tmp_path: Path,
) -> None:
    """The real command: every installed bot library has an instrumentor, and only the one
    the bot imports is imported and patched."""
    script = tmp_path / "bot.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            libraries = ("aiogram", "telegram", "telebot")
            print("before", [m for m in libraries if m in sys.modules])
            from aiogram import Dispatcher
            print("after", [m for m in libraries if m in sys.modules])
            print("patched", hasattr(Dispatcher.feed_update, "__otelbot_original__"))
            """
        )
    )
    env = {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "PATH": str(Path(sys.executable).parent),
    }
    done = subprocess.run(
        [instrument_command(), sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["before []", "after ['aiogram']", "patched True"], done.stdout
