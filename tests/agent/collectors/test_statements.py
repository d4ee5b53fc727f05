"""The PostgreSQL collector's top statements, from a server that really preloads
pg_stat_statements: the private cluster scripts/services starts (pg_statements_dsn)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from otelbot import semconv
from otelbot.agent.collectors.base import Collection, Tier
from otelbot.agent.collectors.postgres import PostgresCollector
from otelbot.agent.config import PostgresConfig, PostgresDatabase
from otelbot.agent.state import IndexUsageStore
from tests.agent.conftest import unique, values


async def collect_slow(dsn: str, **cfg: Any) -> Collection:
    config = PostgresConfig(databases=[PostgresDatabase(dsn=dsn)], **cfg)
    c = PostgresCollector(config.databases[0], config, IndexUsageStore(None))
    try:
        return await c.collect(frozenset({Tier.SLOW}))
    finally:
        await c.close()


@dataclass
class Scratch:
    conn: asyncpg.Connection
    table: str


@pytest.fixture
async def scratch(pg_statements_dsn: str) -> AsyncIterator[Scratch]:
    """A session on the statements server, its counters reset, and a table of 500 rows."""
    conn = await asyncpg.connect(pg_statements_dsn)
    table = unique("otb_stmt_")
    try:
        preload = await conn.fetchval("SHOW shared_preload_libraries")
        assert "pg_stat_statements" in preload, f"{pg_statements_dsn} does not preload it"
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, v text);"
            f"INSERT INTO {table} SELECT g, md5(g::text) FROM generate_series(1, 500) g"
        )
        await conn.execute("SELECT pg_stat_statements_reset()")
        yield Scratch(conn, table)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_top_statements_with_calls_time_and_rows(
    pg_statements_dsn: str, scratch: Scratch
) -> None:
    conn, table = scratch.conn, scratch.table
    for _ in range(7):
        assert len(await conn.fetch(f"SELECT id, v FROM {table} WHERE id <= $1", 3)) == 3

    out = await collect_slow(pg_statements_dsn, top_statements=1000)

    assert out.failures == []
    text = f"SELECT id, v FROM {table} WHERE id <= $1"
    calls = [
        s
        for s in out.samples
        if s.metric.name == "postgresql.statement.calls"
        and s.attributes[semconv.DB_QUERY_TEXT] == text
    ]
    assert len(calls) == 1, [s.attributes for s in out.samples if "statement" in s.metric.name]
    assert calls[0].value == 7
    attrs = calls[0].attributes
    dsn = urlsplit(pg_statements_dsn)
    assert attrs[semconv.SERVER_PORT] == dsn.port and attrs[semconv.DB_NAMESPACE] == "test"
    same = {semconv.POSTGRESQL_QUERY_ID: attrs[semconv.POSTGRESQL_QUERY_ID]}
    assert values(out.samples, "postgresql.statement.rows", **same) == [21]
    [total] = values(out.samples, "postgresql.statement.time", **same)
    [mean] = values(out.samples, "postgresql.statement.mean_time", **same)
    assert total > 0 and mean == pytest.approx(total / 7)


async def test_only_the_top_k_by_total_time(pg_statements_dsn: str, scratch: Scratch) -> None:
    conn, table = scratch.conn, scratch.table
    for _ in range(50):  # many fast calls ...
        await conn.fetchval(f"SELECT v FROM {table} WHERE id = $1", 1)
    for _ in range(3):  # ... and a few that take 0.2 s each
        await conn.fetchval(f"SELECT count(*) FROM {table}, pg_sleep(0.2)")

    out = await collect_slow(pg_statements_dsn, top_statements=1)

    assert out.failures == []
    texts = {
        s.attributes[semconv.DB_QUERY_TEXT]
        for s in out.samples
        if s.metric.name.startswith("postgresql.statement.")
    }
    assert texts == {f"SELECT count(*) FROM {table}, pg_sleep($1)"}
