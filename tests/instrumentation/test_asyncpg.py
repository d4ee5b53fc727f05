"""asyncpg instrumentation against a real PostgreSQL: spans, metrics, safety."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

import otelbot.instrumentation.asyncpg as otelbot_asyncpg
from otelbot.instrumentation.asyncpg import AsyncpgInstrumentor
from otelbot.testing.memory import MemoryTelemetry

SECRET = "sekrit-param-4711"
LITERAL = "sekrit-literal-0815"

PATCHED = (
    [
        (asyncpg.connection.Connection, name)
        for name in (
            "execute",
            "executemany",
            "fetch",
            "fetchrow",
            "fetchval",
            "fetchmany",
            "reset",
        )
    ]
    + [
        (asyncpg.prepared_stmt.PreparedStatement, name)
        for name in ("fetch", "fetchrow", "fetchval", "fetchmany", "executemany")
    ]
    + [(asyncpg.cursor.BaseCursor, name) for name in ("_bind_exec", "_bind", "_exec")]
    + [(asyncpg.pool.Pool, name) for name in ("_async__init__", "_acquire", "release")]
)


@pytest.fixture
def instrumented(telemetry: MemoryTelemetry, table: str) -> Iterator[MemoryTelemetry]:
    """Instrumented after ``table`` is set up, so its setup leaves no telemetry."""
    instrumentor = AsyncpgInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    yield telemetry
    instrumentor.uninstrument()


@pytest.fixture
async def table(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh table with five rows, dropped afterwards (other tests share the database)."""
    name = "otb_apg_" + uuid.uuid4().hex[:10]
    con = await asyncpg.connect(pg_dsn)
    try:
        await con.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, name text)")
        await con.executemany(
            f"INSERT INTO {name} VALUES ($1, $2)", [(i, f"n{i}") for i in range(1, 6)]
        )
        yield name
    finally:
        await con.execute(f"DROP TABLE IF EXISTS {name}")
        await con.close()


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    con = await asyncpg.connect(pg_dsn)
    yield con
    await con.close()


def db_spans(telemetry: MemoryTelemetry, table: str | None = None) -> list[ReadableSpan]:
    spans = [s for s in telemetry.spans() if s.attributes and "db.system.name" in s.attributes]
    if table is not None:
        spans = [s for s in spans if table in s.name]
    return spans


def attrs(item: Any) -> dict[str, Any]:
    """A span's or event's attributes as a plain dict."""
    return dict(item.attributes or {})


def everything_recorded(telemetry: MemoryTelemetry) -> str:
    """All span names, attributes, events and metric attributes as one string."""
    parts: list[str] = []
    for span in telemetry.spans():
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        parts.append(repr(span.status.description))
        for event in span.events:
            parts.append(repr(dict(event.attributes or {})))
    for point in telemetry.points():
        parts.append(repr(point.attributes))
    return "\n".join(parts)


async def test_connection_methods(instrumented: MemoryTelemetry, conn: Any, table: str) -> None:
    assert await conn.fetchval(f"SELECT name FROM {table} WHERE id = $1", 2) == "n2"
    assert len(await conn.fetch(f"SELECT * FROM {table}")) == 5
    assert (await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1", 3))["name"] == "n3"
    assert await conn.execute(f"UPDATE {table} SET name = $1 WHERE id = $2", "x", 1) == "UPDATE 1"
    await conn.execute(f"DELETE FROM {table} WHERE id = 5")
    await conn.executemany(
        f"INSERT INTO {table} VALUES ($1, $2)", [(10, "a"), (11, "b"), (12, "c")]
    )
    rows = await conn.fetchmany(
        f"INSERT INTO {table} VALUES ($1, $2) RETURNING id", [(20, "a"), (21, "b")]
    )
    assert [r["id"] for r in rows] == [20, 21]

    spans = db_spans(instrumented, table)
    assert [s.name for s in spans] == [f"SELECT {table}"] * 3 + [
        f"UPDATE {table}",
        f"DELETE {table}",
        f"INSERT {table}",
        f"INSERT {table}",
    ]
    first = spans[0]
    assert first.kind is SpanKind.CLIENT
    assert dict(first.attributes or {}) == {
        "db.system.name": "postgresql",
        "db.namespace": "test",
        "db.operation.name": "SELECT",
        "db.collection.name": table,
        "db.query.text": f"SELECT name FROM {table} WHERE id = $1",
        "server.address": "127.0.0.1",
        "server.port": 5432,
    }
    assert attrs(spans[4])["db.query.text"] == f"DELETE FROM {table} WHERE id = ?"
    assert attrs(spans[5])["db.operation.batch.size"] == 3
    assert attrs(spans[6])["db.operation.batch.size"] == 2
    assert "db.operation.batch.size" not in attrs(spans[0])

    durations = [
        p
        for p in instrumented.points("db.client.operation.duration")
        if p.attributes.get("db.collection.name") == table
    ]
    by_op = {attrs(p)["db.operation.name"]: p.value.count for p in durations}
    assert by_op == {"SELECT": 3, "UPDATE": 1, "DELETE": 1, "INSERT": 2}
    assert durations[0].unit == "s"
    assert attrs(durations[0])["server.port"] == 5432
    assert "db.query.text" not in durations[0].attributes


async def test_keyword_arguments(instrumented: MemoryTelemetry, conn: Any, table: str) -> None:
    assert len(await conn.fetch(query=f"SELECT * FROM {table}")) == 5
    assert await conn.fetchval(query=f"SELECT count(*) FROM {table}") == 5
    assert await conn.fetchrow(query=f"SELECT * FROM {table} WHERE id = 1") is not None
    await conn.execute(query=f"UPDATE {table} SET name = 'z'")
    await conn.executemany(command=f"DELETE FROM {table} WHERE id = $1", args=[(1,), (2,)])
    spans = db_spans(instrumented, table)
    assert [s.name for s in spans] == [f"SELECT {table}"] * 3 + [
        f"UPDATE {table}",
        f"DELETE {table}",
    ]
    assert attrs(spans[3])["db.query.text"] == f"UPDATE {table} SET name = ?"
    assert attrs(spans[4])["db.operation.batch.size"] == 2


async def test_values_never_recorded(instrumented: MemoryTelemetry, conn: Any, table: str) -> None:
    await conn.execute(f"INSERT INTO {table} VALUES (100, $1)", SECRET)
    await conn.fetch(f"SELECT * FROM {table} WHERE name = $1 OR name = '{LITERAL}'", SECRET)
    await conn.executemany(f"UPDATE {table} SET name = $1 WHERE id = $2", [(SECRET, 100)] * 2)
    await conn.execute(f"SELECT $tag${LITERAL}$tag$, 424242 /* {LITERAL} */")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(f"INSERT INTO {table} VALUES (100, '{LITERAL}')")
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        await conn.fetchval("SELECT $1::text::int", SECRET)
    with pytest.raises(asyncpg.DataError):
        await conn.fetchval("SELECT $1::int", SECRET)

    recorded = everything_recorded(instrumented)
    assert f"SELECT * FROM {table} WHERE name = $1 OR name = ?" in recorded
    assert SECRET not in recorded
    assert LITERAL not in recorded
    assert "424242" not in recorded
    assert "(100)" not in recorded  # the unique violation's DETAIL: Key (id)=(100)


async def test_failing_query(telemetry: MemoryTelemetry, conn: Any, table: str) -> None:
    async def failure() -> BaseException:
        try:
            await conn.fetch(f"SELECT * FROM {table} WHERE id = $1::text::int", "abc")
        except Exception as exc:
            return exc
        raise AssertionError("query did not fail")

    bare = await failure()
    instrumentor = AsyncpgInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        traced = await failure()
    finally:
        instrumentor.uninstrument()

    assert type(traced) is type(bare) is asyncpg.InvalidTextRepresentationError
    assert str(traced) == str(bare)
    assert traced.args == bare.args

    (span,) = db_spans(telemetry, table)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["db.response.status_code"] == "22P02"
    assert attrs(span)["error.type"] == "asyncpg.exceptions.InvalidTextRepresentationError"
    (event,) = span.events
    assert event.name == "exception"
    assert attrs(event)["exception.message"] == "invalid input syntax for type integer: ?"
    assert "abc" not in str(attrs(event)["exception.stacktrace"])

    (point,) = [
        p
        for p in telemetry.points("db.client.operation.duration")
        if p.attributes.get("db.collection.name") == table
    ]
    assert attrs(point)["error.type"] == "asyncpg.exceptions.InvalidTextRepresentationError"
    assert attrs(point)["db.response.status_code"] == "22P02"


async def test_cancellation_passes_through(instrumented: MemoryTelemetry, conn: Any) -> None:
    task = asyncio.ensure_future(conn.execute("SELECT pg_sleep(10)"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await conn.fetchval("SELECT 7") == 7  # the connection is still usable

    cancelled = [s for s in db_spans(instrumented) if "pg_sleep" in str(attrs(s)["db.query.text"])]
    (span,) = cancelled
    assert span.end_time is not None
    assert attrs(span)["error.type"] == "asyncio.exceptions.CancelledError"


async def test_results_identical(telemetry: MemoryTelemetry, conn: Any, table: str) -> None:
    async def run() -> list[Any]:
        stmt = await conn.prepare(f"SELECT * FROM {table} WHERE id > $1 ORDER BY id")
        async with conn.transaction():
            cursor_rows = [r async for r in conn.cursor(f"SELECT * FROM {table}", prefetch=2)]
        return [
            await conn.fetch(f"SELECT * FROM {table} ORDER BY id"),
            await conn.fetchrow(f"SELECT * FROM {table} WHERE id = 2"),
            await conn.fetchval(f"SELECT count(*) FROM {table}"),
            await conn.fetchval(f"SELECT name FROM {table} WHERE id = 99"),
            await conn.execute(f"UPDATE {table} SET name = name"),
            await conn.execute("SELECT 1; SELECT 2"),
            await stmt.fetch(2),
            await stmt.fetchval(3, column=1),
            cursor_rows,
        ]

    bare = await run()
    instrumentor = AsyncpgInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        traced = await run()
    finally:
        instrumentor.uninstrument()
    assert traced == bare
    assert db_spans(telemetry, table)


def test_uninstrument_restores_originals(telemetry: MemoryTelemetry) -> None:
    originals = {(owner, name): owner.__dict__.get(name) for owner, name in PATCHED}
    instrumentor = AsyncpgInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        changed = [key for key, fn in originals.items() if key[0].__dict__.get(key[1]) is not fn]
        expected = [key for key, fn in originals.items() if fn is not None]
        assert changed == expected
    finally:
        instrumentor.uninstrument()
    assert {key: key[0].__dict__.get(key[1]) for key in originals} == originals


async def test_uninstrumented_queries_record_nothing(telemetry: MemoryTelemetry, conn: Any) -> None:
    instrumentor = AsyncpgInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    instrumentor.uninstrument()
    await conn.fetchval("SELECT 1")
    assert telemetry.spans() == []


async def test_pool_queries_traced_once(
    instrumented: MemoryTelemetry, pg_dsn: str, table: str
) -> None:
    async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=2) as pool:
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 5
        assert len(await pool.fetch(f"SELECT * FROM {table}")) == 5
        await pool.execute(f"UPDATE {table} SET name = $1 WHERE id = 1", "q")
        await pool.executemany(f"DELETE FROM {table} WHERE id = $1", [(4,), (5,)])
        async with pool.acquire() as con:
            assert (await con.fetchrow(f"SELECT * FROM {table} WHERE id = 2"))["id"] == 2
    names = [s.name for s in db_spans(instrumented)]
    # No span for the queries asyncpg runs itself when a connection goes back to the pool.
    assert names == [
        f"SELECT {table}",
        f"SELECT {table}",
        f"UPDATE {table}",
        f"DELETE {table}",
        f"SELECT {table}",
    ]


async def test_prepared_statements(instrumented: MemoryTelemetry, conn: Any, table: str) -> None:
    select = await conn.prepare(f"SELECT * FROM {table} WHERE id >= $1 ORDER BY id")
    assert len(await select.fetch(2)) == 4
    assert (await select.fetchrow(3))["id"] == 3
    assert await select.fetchval(4) == 4
    plan = await select.explain(1)
    assert plan[0]["Plan"]
    insert = await conn.prepare(f"INSERT INTO {table} VALUES ($1, $2) RETURNING id")
    await insert.executemany([(30, "a"), (31, "b"), (32, "c")])
    if hasattr(insert, "fetchmany"):
        assert len(await insert.fetchmany(args=[(40, "a"), (41, "b")])) == 2

    spans = db_spans(instrumented, table)
    names = [s.name for s in spans]
    expected = [f"SELECT {table}"] * 3 + [f"EXPLAIN {table}", f"INSERT {table}"]
    if hasattr(insert, "fetchmany"):
        expected.append(f"INSERT {table}")
    assert names == expected
    assert attrs(spans[0])["db.query.text"] == (f"SELECT * FROM {table} WHERE id >= $1 ORDER BY id")
    assert attrs(spans[4])["db.operation.batch.size"] == 3
    if hasattr(insert, "fetchmany"):
        assert attrs(spans[5])["db.operation.batch.size"] == 2


async def test_cursors(instrumented: MemoryTelemetry, conn: Any, table: str) -> None:
    query = f"SELECT * FROM {table} WHERE id > $1 ORDER BY id"
    async with conn.transaction():
        ids = [r["id"] async for r in conn.cursor(query, 0, prefetch=2)]
    assert ids == [1, 2, 3, 4, 5]
    iterated = db_spans(instrumented, table)
    # Three round trips of two rows, the last one short.
    assert [s.name for s in iterated] == [f"SELECT {table}"] * 3
    assert attrs(iterated[0])["db.query.text"] == query
    instrumented.clear()

    async with conn.transaction():
        cursor = await conn.cursor(query, 1)
        assert [r["id"] for r in await cursor.fetch(2)] == [2, 3]
        assert (await cursor.fetchrow())["id"] == 4
    spans = db_spans(instrumented, table)
    assert [s.name for s in spans] == [f"SELECT {table}"] * 3  # bind, fetch, fetchrow


async def test_spans_are_children_of_the_current_span(
    instrumented: MemoryTelemetry, conn: Any
) -> None:
    tracer = instrumented.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("telegram.update message") as parent:
        await conn.fetchval("SELECT 1")
        await conn.fetchval("SELECT 2")
    db = db_spans(instrumented)
    assert len(db) == 2
    for span in db:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id


async def test_sampled_out_still_measures(pg_dsn: str, telemetry: MemoryTelemetry) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = AsyncpgInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=telemetry.meter_provider)
    try:
        con = await asyncpg.connect(pg_dsn)
        try:
            assert await con.executemany("SELECT $1::int", [(1,), (2,)]) is None
            assert await con.fetchval("SELECT 3") == 3
        finally:
            await con.close()
    finally:
        instrumentor.uninstrument()
    assert exporter.get_finished_spans() == ()
    assert telemetry.points("db.client.operation.duration")


async def test_internal_error_does_not_break_queries(
    instrumented: MemoryTelemetry, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("otelbot bug")

    monkeypatch.setattr(otelbot_asyncpg, "_build_statement", broken)
    marker = uuid.uuid4().hex[:8]  # a query string the cache has never seen
    assert await conn.fetchval(f"SELECT '{marker}'::text") == marker
    assert await conn.fetch(f"SELECT 1 AS x, '{marker}' AS y") == [(1, marker)]
    assert db_spans(instrumented) == []


async def test_pool_metrics(instrumented: MemoryTelemetry, pg_dsn: str) -> None:
    def value(name: str, **attributes: str) -> Any:
        points = [
            p
            for p in instrumented.points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        ]
        assert len(points) == 1, points
        return points[0].value

    pool_name = "127.0.0.1:5432/test"
    attr = {"db.client.connection.pool.name": pool_name}
    async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=1) as pool:
        assert value("db.client.connection.max", **attr) == 1
        assert (
            value("db.client.connection.count", **attr, **{"db.client.connection.state": "idle"})
            == 1
        )
        assert (
            value("db.client.connection.count", **attr, **{"db.client.connection.state": "used"})
            == 0
        )

        held = await pool.acquire()
        assert (
            value("db.client.connection.count", **attr, **{"db.client.connection.state": "used"})
            == 1
        )
        assert (
            value("db.client.connection.count", **attr, **{"db.client.connection.state": "idle"})
            == 0
        )

        waiter = asyncio.ensure_future(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        assert value("db.client.connection.pending_requests", **attr) == 1
        await pool.release(held)
        assert await waiter == 1

        assert value("db.client.connection.pending_requests", **attr) == 0
        wait = value("db.client.connection.wait_time", **attr)
        assert wait.count == 2
        assert 0.15 < wait.sum < 5
    # A closed pool is no longer reported.
    assert [
        p for p in instrumented.points("db.client.connection.max") if p.attributes == attr
    ] == []
