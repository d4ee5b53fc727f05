from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.watch._running import RunningWatch


@pytest.fixture
def watch() -> Iterator[RunningWatch]:
    """A real watch (OTLP/HTTP, OTLP/gRPC and the page) on loopback."""
    running = RunningWatch().start()
    yield running
    running.stop()
