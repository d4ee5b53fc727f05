"""Pool starvation: the detector on hand-built notes, on a real instrumented asyncpg pool,
and end to end from a real aiogram bot under opentelemetry-instrument."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from otelbot import semconv
from otelbot.diagnosis import notes, pool
from otelbot.diagnosis.notes import Op, UpdateNotes
from otelbot.diagnosis.pool import PoolStarvation, PoolUse
from otelbot.diagnosis.report import Finding
from otelbot.instrumentation.asyncpg import AsyncpgInstrumentor
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.diagnosis._harness import BOTS, UPDATE_SPAN, findings_bot

POOL = "127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def no_holds() -> Iterator[None]:
    pool.holds.clear()
    yield
    pool.holds.clear()


def _update(handler: str, t: float, waited: float, held: float | None, size: int = 4) -> Any:
    """An ended update of ``handler`` that waited ``waited`` s for a connection at ``t`` and
    held it ``held`` s (None: still held when the update ended)."""
    update = UpdateNotes(None, "message", t - waited)
    use = PoolUse(POOL, size, t)
    if held is not None:
        use.released = t + held
    update.ops.append(Op(notes.POOL_WAIT, POOL, t - waited, t, use))
    update.ended = t + (held or 0.0)
    update.handler = handler
    return update


def _run(detector: PoolStarvation, *updates: Any) -> list[Finding]:
    found: list[Finding] = []
    for update in updates:
        detector.on_update(update, found.append)
    return found


def test_the_p95_of_the_pool_waits_fires_once_enough_acquires_waited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTELBOT_POOL_WAIT_MIN", "10")
    detector = PoolStarvation()
    # Control: many acquires, each well under 100 ms.
    healthy = [_update("bot.quick", 100 + i * 0.01, 0.05, 0.002) for i in range(30)]
    assert _run(detector, *healthy) == []
    # Nine slow waits are not yet enough acquires to judge (the healthy ones left the
    # window); the tenth is.
    slow = [_update("bot.report", 200 + i, 0.3, 0.4) for i in range(10)]
    assert _run(detector, *slow[:9]) == []
    found = _run(detector, slow[9])
    assert len(found) == 1
    f = found[0]
    assert f.event == semconv.EVENT_POOL_STARVATION
    assert f.object == POOL
    assert f.handler == "bot.report"
    assert f.attributes[semconv.DB_CLIENT_CONNECTION_POOL_NAME] == POOL
    assert "10 of them 100 ms or more" in f.evidence
    assert "the last 10 sampled acquires (within 60 s) waited p95 300 ms" in f.evidence
    assert "max_size 4" in f.evidence
    assert "bot.report: 10 hold(s), 400 ms on average, longest 400 ms" in f.evidence


def test_one_long_wait_fires_and_names_the_handler_holding_longest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    detector = PoolStarvation()
    assert (
        _run(
            detector,
            _update("bot.quick", 10.0, 0.0, 0.003),
            _update("bot.export", 10.1, 0.0, 2.0),
            _update("bot.quick", 10.2, 0.9, 0.003),  # slow, but under 1 s and few acquires
        )
        == []
    )
    found = _run(detector, _update("bot.quick", 12.2, 1.5, 0.003))
    assert len(found) == 1
    f = found[0]
    assert f.handler == "bot.export"
    assert "this update waited 1500 ms" in f.evidence
    assert "longest 1500 ms" in f.evidence
    held = f.evidence.split("held most by ", 1)[1]
    assert held.index("bot.export: 1 hold(s), 2000 ms") < held.index("bot.quick: ")


def test_a_hold_given_back_after_its_update_ended_counts_for_its_handler() -> None:
    detector = PoolStarvation()
    open_hold = _update("bot.background", 10.0, 0.0, None)
    assert _run(detector, open_hold) == []
    assert list(pool.holds) == []
    open_hold.ops[0].extra.release(13.0)
    assert [(handler, seconds) for _, _, handler, seconds, _ in pool.holds] == [
        ("bot.background", 3.0)
    ]
    found = _run(detector, _update("bot.quick", 13.0, 1.2, 0.001))
    assert [f.handler for f in found] == ["bot.background"]


# ------------------------------------------------------------ a real instrumented pool


@pytest.fixture
def instrumented(telemetry: MemoryTelemetry) -> Iterator[None]:
    instrumentor = AsyncpgInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    yield
    instrumentor.uninstrument()


async def _in_update(handler: str, work: Callable[[], Awaitable[None]]) -> UpdateNotes:
    """Run ``work`` as a sampled update of ``handler`` would (its own notes current)."""
    update = UpdateNotes(None, "message", 0.0)
    notes.current.set(update)  # this task's context only
    await work()
    update.handler = handler
    update.ended = update.started + 1.0
    return update


async def _two_updates(
    pg_dsn: str, first: Callable[[Any, asyncio.Event], Awaitable[None]]
) -> tuple[UpdateNotes, UpdateNotes]:
    """``first`` takes the only connection of a one-connection pool and sets the event;
    then a second update runs one query on the pool."""
    async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=1) as db:
        taken = asyncio.Event()

        async def second() -> None:
            await taken.wait()
            await db.fetchval("SELECT 1")

        one, two = await asyncio.gather(
            _in_update("bot.first", lambda: first(db, taken)),
            _in_update("bot.second", second),
        )
    return one, two


async def test_a_connection_held_across_a_slow_await_starves_the_next_update(
    instrumented: None, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTELBOT_POOL_WAIT_MAX_MS", "200")

    async def quick(db: Any, taken: asyncio.Event) -> None:
        taken.set()
        await db.fetchval("SELECT 1")

    async def hold(db: Any, taken: asyncio.Event) -> None:
        async with db.acquire() as conn:
            taken.set()
            await conn.fetchval("SELECT 1")
            await asyncio.sleep(0.3)

    # Control: the same two updates on the same pool, nothing held across an await.
    assert _run(PoolStarvation(), *await _two_updates(pg_dsn, quick)) == []
    pool.holds.clear()

    first, second = await _two_updates(pg_dsn, hold)
    [use] = [op.extra for op in first.ops if op.kind == notes.POOL_WAIT]
    assert use.released is not None and use.released - use.acquired >= 0.3
    found = _run(PoolStarvation(), first, second)
    assert len(found) == 1
    f = found[0]
    name = f.object
    assert [op.shape for op in second.ops if op.kind == notes.POOL_WAIT] == [name]
    assert f.handler == "bot.first"
    assert "max_size 1" in f.evidence
    assert "bot.first: 1 hold(s)" in f.evidence
    # The line that gave the long-held connection back: the end of the `async with`.
    assert f.code is not None
    assert f.code.file == __file__
    assert f.code.function.endswith("hold")
    assert f.code.line == hold.__code__.co_firstlineno + 1  # its `async with`


# ------------------------------------------------------------ end to end


@pytest.mark.e2e
def test_connections_held_across_slow_awaits_are_named_with_the_pool_and_holder(
    fake_bot_api: FakeBotApi,
    otlp_receiver: OtlpReceiver,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    with findings_bot(
        "pool_bot", fake_bot_api, otlp_receiver, bot_token, pg_dsn, redis_url, POOL_MAX="2"
    ) as run:
        # Control: ten quick queries at once on the two connections.
        run.send(*["/quick"] * 10)
        run.wait_handled()
        # Ten updates at once, each holding a connection for half a second: the last ones
        # wait two seconds.
        run.send(*["/hold"] * 10)
        run.wait_handled()
        otlp_receiver.wait_for(lambda r: run.findings(semconv.EVENT_POOL_STARVATION), 20)
        otlp_receiver.wait_for(lambda r: r.points(semconv.OTELBOT_FINDINGS.name), 20)
    found = run.findings(semconv.EVENT_POOL_STARVATION)
    assert len(found) == 1, [f.body for f in found]
    record = found[0]
    a = record.attributes
    pool_names = {
        p.attributes.get(semconv.DB_CLIENT_CONNECTION_POOL_NAME)
        for p in otlp_receiver.points(semconv.DB_CLIENT_CONNECTION_MAX.name)
        if p.value == 2
    }
    assert a[semconv.FINDING_OBJECT] in pool_names
    assert a[semconv.DB_CLIENT_CONNECTION_POOL_NAME] == a[semconv.FINDING_OBJECT]
    assert a["telegram.handler"].endswith(".hold")
    evidence = a[semconv.FINDING_EVIDENCE]
    assert "pool max_size 2" in evidence
    held = evidence.split("held most by ", 1)[1]
    assert held.startswith("__main__.hold: ")
    assert a[semconv.CODE_FILE_PATH].endswith("pool_bot.py")
    assert a[semconv.CODE_FUNCTION_NAME] == "hold"
    source = (BOTS / "pool_bot.py").read_text().splitlines()
    assert "async with _common.pool.acquire()" in source[a[semconv.CODE_LINE_NUMBER] - 1]
    assert record.severity == "WARN"
    # The example update is one of the /hold updates that waited.
    holds = [
        s
        for s in otlp_receiver.spans(UPDATE_SPAN)
        if str(s.attributes.get("telegram.handler", "")).endswith(".hold")
    ]
    example = [s for s in holds if (s.trace_id, s.span_id) == (record.trace_id, record.span_id)]
    assert len(example) == 1
    assert [e for e in example[0].events if e["name"] == semconv.SPAN_EVENT_FINDING]
    # The control handler: no finding.
    assert not run.findings(semconv.EVENT_POOL_STARVATION, handler="quick")
