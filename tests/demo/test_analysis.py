"""The demo report's growing-memory rule on update spans as the receiver decodes them."""

from __future__ import annotations

import itertools

from otelbot import semconv
from otelbot.demo.analysis import MemoryTrend, Traces, _memory_problem
from otelbot.testing.otlp_receiver import ReceivedSpan

MB = 2**20
_ids = itertools.count(1)


def _updates(handler: str, own_ms: list[float]) -> list[ReceivedSpan]:
    """One update span per value, no children: the handler's own time is the whole span."""
    spans = []
    for i, ms in enumerate(own_ms):
        start = i * 100_000_000
        n = next(_ids)  # every update its own trace
        spans.append(
            ReceivedSpan(
                name="telegram.update message",
                kind="SERVER",
                trace_id=f"{n:032x}",
                span_id=f"{n:016x}",
                parent_span_id="",
                start_ns=start,
                end_ns=start + int(ms * 1e6),
                attributes={semconv.TELEGRAM_HANDLER: "handlers." + handler},
                events=[],
                status_code=0,
                status_message="",
                resource={},
                scope="otelbot",
            )
        )
    return spans


def _memory(first_mb: float, last_mb: float) -> MemoryTrend:
    return MemoryTrend([(0.0, first_mb * MB), (10.0, last_mb * MB)])


# A 10 s demo run on a fast machine: the leaking handler's own time doubles, by < 1 ms.
FAST_LEAK = [
    0.5,
    0.9,
    0.7,
    1.1,
    1.0,
    1.2,
    1.3,
    1.0,
    0.8,
    1.2,
    1.0,
    0.9,
    1.2,
    1.0,
    1.1,
    1.0,
    1.1,
    1.1,
    1.2,
    1.4,
    1.4,
    1.7,
    1.4,
    1.8,
    1.6,
    1.7,
    1.6,
    1.7,
    1.8,
    1.6,
    1.8,
    1.7,
    1.9,
    2.2,
    1.8,
    2.0,
    2.3,
    2.0,
    2.1,
    2.2,
    2.3,
]
STEADY = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 0.9, 1.1, 1.0, 1.0, 1.1, 0.9, 1.0, 1.2, 1.0]


def test_leaking_handler_named_when_its_time_doubles_by_under_a_millisecond() -> None:
    traces = Traces(_updates("remember_visit", FAST_LEAK) + _updates("chat", STEADY))
    problem = _memory_problem(traces, _memory(194, 210))
    assert problem.found
    assert problem.handler == "remember_visit"


def test_slow_machine_rise_of_a_quarter_counts_only_with_memory_growing() -> None:
    # Early own time ~4 ms, rising by ~1.2 ms (x1.3): a slow machine's short run.
    slow = [4.0 + 0.06 * i for i in range(30)]
    assert _memory_problem(Traces(_updates("remember_visit", slow)), _memory(190, 260)).found
    assert not _memory_problem(Traces(_updates("remember_visit", slow)), _memory(190, 191)).found


def test_steady_handlers_are_not_named() -> None:
    traces = Traces(_updates("chat", STEADY * 3))
    assert not _memory_problem(traces, _memory(194, 260)).found
