"""What the loop heartbeat reads from the loop thread's stack during a block, on a real
asyncio or uvloop loop: a library's code with no bot frame is named by its package, and a
loop waiting for I/O is no block."""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from otelbot import semconv
from otelbot.diagnosis import heartbeat
from otelbot.diagnosis.blocking import OUTSIDE_HANDLERS, loop_finding
from otelbot.diagnosis.heartbeat import Block, Seen


def _new_loop(kind: str) -> Callable[[], Any]:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _read_during(kind: str, block: Callable[[], Any] | None) -> list[Seen | None]:
    """Run a loop (heartbeat on) in this thread; another thread reads its stack twice while
    ``block`` runs as a loop callback (or, with None, while the loop waits)."""
    readings: list[Seen | None] = []
    with asyncio.Runner(loop_factory=_new_loop(kind)) as runner:

        async def main() -> None:
            heartbeat.start()
            loop = asyncio.get_running_loop()
            thread = threading.get_ident()
            await asyncio.sleep(0.12)  # a few beats

            def reader() -> None:
                time.sleep(0.1)
                for _ in range(2):
                    got = heartbeat.read(
                        sys._current_frames().get(thread), heartbeat.beat.base, loop
                    )
                    readings.append(got[0] if got else None)
                    time.sleep(0.05)

            reading = threading.Thread(target=reader)
            reading.start()
            if block is not None:
                loop.call_soon(block)
            while reading.is_alive():
                await asyncio.sleep(0.01)
            reading.join()

        runner.run(main())
    return readings


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_a_library_holding_the_loop_is_named_by_its_package_not_by_a_bot_line(kind: str) -> None:
    yaml = pytest.importorskip("yaml")
    doc = "[" + "1, " * 20000 + "]"  # a pure-Python parse of several hundred milliseconds
    readings = _read_during(kind, lambda: yaml.safe_load(doc))
    # The callback is this test's lambda (bot code, as the test file is not a library's):
    # its line is the innermost bot frame.
    assert all(r is not None for r in readings), readings
    seen = readings[0]
    assert seen is not None and seen.where is not None
    assert seen.where.function.endswith("<lambda>") and seen.library is None

    readings = _read_during(kind, lambda: None)
    assert readings == [None, None]  # the loop waits for I/O: nothing holds it

    # With only a library on the stack (the callback is the library's own function).
    readings = _read_during(kind, _parse(yaml, doc))
    seen = readings[0]
    assert seen is not None
    assert seen.where is None and seen.entry is None
    assert seen.library == "(yaml)", seen
    finding = loop_finding(Block(1.0, 1.3, 0.0, 0.0, seen), 0.1)
    assert finding.handler == OUTSIDE_HANDLERS
    assert finding.object == "(yaml)"
    assert finding.code is None
    assert finding.event == semconv.EVENT_BLOCKED_LOOP
    assert "held at (yaml) " in finding.evidence


def _parse(yaml: Any, doc: str) -> Any:
    return functools.partial(yaml.safe_load, doc)
