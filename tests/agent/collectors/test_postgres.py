"""The PostgreSQL collector against the real server: findings, pg_monitor role, stats resets,
locks, the fixed number of queries and the series budget."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from otelbot import semconv
from otelbot.agent.collectors.base import ALL_TIERS, Tier
from otelbot.agent.collectors.postgres import PostgresCollector, _human_bytes
from otelbot.agent.config import PostgresConfig, PostgresDatabase
from otelbot.agent.state import IndexUsageStore
from tests.agent.conftest import unique, values


def collector(
    dsn: str, store: IndexUsageStore | None = None, clock: Any = None, **cfg: Any
) -> PostgresCollector:
    config = PostgresConfig(databases=[PostgresDatabase(dsn=dsn)], **cfg)
    kwargs = {"clock": clock} if clock is not None else {}
    return PostgresCollector(config.databases[0], config, store or IndexUsageStore(None), **kwargs)


@pytest.fixture
async def indexed_table(pg_admin: asyncpg.Connection) -> Any:
    """A table with a used index, an unused one, a duplicate and an invalid one."""
    t = unique()
    names = {
        "table": t,
        "used": f"{t}_used",
        "unused": f"{t}_unused",
        "dup": f"{t}_dup",
        "invalid": f"{t}_invalid",
    }
    try:
        await _create_indexed_table(pg_admin, names)
        yield names
    finally:
        await pg_admin.execute(f"DROP TABLE IF EXISTS {t}")


async def _create_indexed_table(pg_admin: asyncpg.Connection, names: dict[str, str]) -> None:
    t = names["table"]
    await pg_admin.execute(
        f"CREATE TABLE {t} (id int PRIMARY KEY, a int, b int, c text, u int);"
        f"INSERT INTO {t} SELECT g, g % 10, g, 'x', g FROM generate_series(1, 2000) g;"
        f"CREATE INDEX {names['used']} ON {t} (u);"
        f"CREATE INDEX {t}_ab ON {t} (a, b);"
        f"CREATE INDEX {names['dup']} ON {t} (a);"  # a prefix of (a, b)
        f"CREATE INDEX {names['unused']} ON {t} (c);"
        f"ANALYZE {t};"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        # fails on the duplicate values of a and leaves an invalid index behind
        await pg_admin.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {names['invalid']} ON {t} (a)")
    await use_index(pg_admin, t, names["used"])


async def use_index(conn: asyncpg.Connection, table: str, index: str) -> None:
    await conn.execute("SET enable_seqscan = off")
    await conn.fetch(f"SELECT * FROM {table} WHERE u = 5")
    await conn.execute("RESET enable_seqscan")
    try:  # PostgreSQL 15+: report this backend's statistics now, not within a few seconds
        await conn.execute("SELECT pg_stat_force_next_flush()")
    except asyncpg.UndefinedFunctionError:
        pass
    # Statistics reach the shared views when the backend reports them.
    for _ in range(100):
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        scans = await conn.fetchval(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1", index
        )
        if scans:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"index {index} never showed a scan")


def _by_event(findings: list[Any], event: str, prefix: str) -> dict[str, Any]:
    return {f.object: f for f in findings if f.event_name == event and prefix in f.object}


async def test_index_findings_with_suggested_statements(
    pg_dsn: str, pg_admin: asyncpg.Connection, indexed_table: Any
) -> None:
    t = indexed_table
    c = collector(pg_dsn, unused_index_window=0)
    try:
        out = await c.collect(frozenset({Tier.ADVICE}))
    finally:
        await c.close()
    assert out.failures == []

    unused = _by_event(out.findings, semconv.EVENT_UNUSED_INDEX, t["table"])
    assert f"public.{t['unused']}" in unused
    assert unused[f"public.{t['unused']}"].suggestion == (
        f"DROP INDEX CONCURRENTLY public.{t['unused']};"
    )
    size = await pg_admin.fetchval("SELECT pg_relation_size($1::regclass)", t["unused"])
    assert size > 0
    assert f"it costs {_human_bytes(size)} and slows" in unused[f"public.{t['unused']}"].evidence
    assert f"public.{t['used']}" not in unused  # it was scanned
    assert f"public.{t['table']}_pkey" not in unused  # backs a constraint

    dup = _by_event(out.findings, semconv.EVENT_DUPLICATE_INDEX, t["table"])
    assert list(dup) == [f"public.{t['dup']}"]
    assert dup[f"public.{t['dup']}"].suggestion == f"DROP INDEX CONCURRENTLY public.{t['dup']};"
    assert f"{t['table']}_ab" in dup[f"public.{t['dup']}"].evidence

    invalid = _by_event(out.findings, semconv.EVENT_INVALID_INDEX, t["table"])
    assert list(invalid) == [f"public.{t['invalid']}"]
    assert invalid[f"public.{t['invalid']}"].suggestion.startswith(
        f"REINDEX INDEX CONCURRENTLY public.{t['invalid']};"
    )


async def test_stats_reset_does_not_make_a_used_index_unused(
    pg_dsn: str, pg_admin: asyncpg.Connection, indexed_table: Any, tmp_path: Path
) -> None:
    t = indexed_table
    state = tmp_path / "state.json"
    now = [1_000_000.0]
    hour = 3600.0

    async def advice() -> dict[str, Any]:
        # A new collector and store each time: the agent restarting between polls.
        c = collector(pg_dsn, IndexUsageStore(state), lambda: now[0], unused_index_window=hour)
        try:
            out = await c.collect(frozenset({Tier.ADVICE}))
        finally:
            await c.close()
        assert out.failures == []
        return _by_event(out.findings, semconv.EVENT_UNUSED_INDEX, t["table"])

    assert await advice() == {}  # first sight: the window has not passed for anything
    await pg_admin.execute(  # reset the statistics of our table and its indexes only
        "SELECT pg_stat_reset_single_table_counters(oid) FROM pg_class WHERE oid = $1::regclass"
        " OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = $1::regclass)",
        t["table"],
    )
    await pg_admin.execute("SELECT pg_stat_clear_snapshot()")
    scans = await pg_admin.fetchval(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1", t["used"]
    )
    assert scans == 0  # the used index now looks unused to a naive check

    now[0] += 0.4 * hour
    assert await advice() == {}
    # used again after the reset, then more than an hour passes without scans of the others
    await use_index(pg_admin, t["table"], t["used"])
    now[0] += 0.4 * hour
    assert await advice() == {}
    now[0] += 0.5 * hour
    found = await advice()
    assert f"public.{t['unused']}" in found
    assert f"public.{t['used']}" not in found


async def test_pg_monitor_only_role(
    pg_dsn: str, pg_admin: asyncpg.Connection, indexed_table: Any, tmp_path: Path
) -> None:
    role = unique("otb_agent_mon_")
    password = "pw-" + unique("")
    await pg_admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE pg_monitor")
    try:
        secret = tmp_path / "pg-password"
        secret.write_text(password + "\n")
        host_part = pg_dsn.split("@", 1)[1]
        host, rest = host_part.split(":", 1)
        port, database = rest.split("/", 1)
        db = PostgresDatabase(
            host=host, port=int(port), user=role, database=database, password_file=str(secret)
        )
        config = PostgresConfig(databases=[db], unused_index_window=0)
        c = PostgresCollector(db, config, IndexUsageStore(None))
        try:
            out = await c.collect(ALL_TIERS)
        finally:
            await c.close()
        assert out.failures == []
        assert values(out.samples, "postgresql.up") == [1]
        sizes = values(
            out.samples,
            "postgresql.table.size",
            **{semconv.DB_COLLECTION_NAME: f"public.{indexed_table['table']}"},
        )
        assert sizes and sizes[0] > 0
        assert _by_event(out.findings, semconv.EVENT_UNUSED_INDEX, indexed_table["table"])
        assert values(out.samples, "postgresql.db_size")[0] > 0
    finally:
        await pg_admin.execute(f"DROP ROLE IF EXISTS {role}")


async def test_locked_table_does_not_stall_the_poll(
    pg_dsn: str, pg_admin: asyncpg.Connection, indexed_table: Any
) -> None:
    t = indexed_table["table"]
    holder = await asyncpg.connect(pg_dsn)
    tx = holder.transaction()
    await tx.start()
    await holder.execute(f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")
    try:
        c = collector(pg_dsn, lock_timeout=1.0, statement_timeout=5.0)
        try:
            out = await asyncio.wait_for(c.collect(ALL_TIERS), 4.0)
        finally:
            await c.close()
        assert out.failures == []
        assert values(out.samples, "postgresql.up") == [1]
        assert values(
            out.samples, "postgresql.table.size", **{semconv.DB_COLLECTION_NAME: f"public.{t}"}
        )
        assert values(out.samples, "postgresql.locks.waiting") == [0]
    finally:
        await tx.rollback()
        await holder.close()


async def test_agent_session_runs_without_jit(pg_dsn: str) -> None:
    # JIT compiling the agent's catalog queries costs more than running them.
    c = collector(pg_dsn)
    try:
        out = await c.collect(frozenset({Tier.FAST}))
        conn = await c._connect()
        jit = await conn.fetchval("SELECT current_setting('jit')")
        read_only = await conn.fetchval("SELECT current_setting('transaction_read_only')")
    finally:
        await c.close()
    assert out.failures == []
    assert jit == "off"
    assert read_only == "on"


def _count_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    for method in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
        original = getattr(asyncpg.connection.Connection, method)

        def counting(self: Any, query: str, *args: Any, _o: Any = original, **kw: Any) -> Any:
            sent.append(query)
            return _o(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.connection.Connection, method, counting)
    return sent


async def test_fixed_query_count_and_series_budget(
    scratch_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = await asyncpg.connect(scratch_db)

    async def add_tables(start: int, n: int) -> None:
        for i in range(start, start + n):
            await setup.execute(
                f"CREATE TABLE otb_agent_t{i} (id int PRIMARY KEY, v int);"
                f"CREATE INDEX otb_agent_t{i}_v ON otb_agent_t{i} (v);"
                f"INSERT INTO otb_agent_t{i} SELECT g, g FROM generate_series(1, {i * 50}) g;"
            )

    sent = _count_queries(monkeypatch)
    c = collector(scratch_db, top_tables=3, top_indexes=4)
    try:
        await add_tables(1, 4)
        await c.collect(ALL_TIERS)  # connects and detects features
        sent.clear()
        await c.collect(ALL_TIERS)
        few = len(sent)
        await add_tables(5, 20)
        sent.clear()
        out = await c.collect(ALL_TIERS)
        many = len(sent)
    finally:
        await c.close()
        await setup.close()
    assert few == many  # independent of the number of tables
    assert out.failures == []

    sizes = {
        s.attributes[semconv.DB_COLLECTION_NAME]: s.value
        for s in out.samples
        if s.metric.name == "postgresql.table.size"
    }
    assert "(other)" in sizes
    assert len(sizes) <= 2 * 3 + 1  # top 3 by size + top 3 by scans + the rest summed
    assert values(out.samples, "postgresql.table.count") == [24]
    index_series = [s for s in out.samples if s.metric.name == "postgresql.index.size"]
    assert len(index_series) <= 2 * 4 + 1
    assert values(out.samples, "postgresql.index.count") == [48]  # pkey + v per table


async def test_pg_stat_statements_not_loaded_is_skipped_with_one_line(
    scratch_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    setup = await asyncpg.connect(scratch_db)
    try:
        preloaded = "pg_stat_statements" in (
            await setup.fetchval("SELECT current_setting('shared_preload_libraries')")
        )
        if preloaded:
            pytest.skip("pg_stat_statements is preloaded on this server")
        await setup.execute("CREATE EXTENSION pg_stat_statements")
    finally:
        await setup.close()
    caplog.set_level(logging.INFO, logger="otelbot.agent.postgresql")
    c = collector(scratch_db)
    try:
        first = await c.collect(frozenset({Tier.SLOW}))
        second = await c.collect(frozenset({Tier.SLOW}))
    finally:
        await c.close()
    assert first.failures == [] and second.failures == []
    lines = [r.getMessage() for r in caplog.records if "pg_stat_statements" in r.getMessage()]
    assert len(lines) == 1
    assert "shared_preload_libraries" in lines[0]
    assert not values(first.samples + second.samples, "postgresql.statement.calls")


async def test_idle_in_transaction_session_is_a_finding(pg_dsn: str) -> None:
    app = unique("otb_agent_app_")
    holder = await asyncpg.connect(pg_dsn, server_settings={"application_name": app})
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT 1")
    try:
        await asyncio.sleep(0.3)
        c = collector(pg_dsn, idle_in_transaction_after=0.1)
        try:
            out = await c.collect(frozenset({Tier.FAST}))
        finally:
            await c.close()
        found = [
            f
            for f in out.findings
            if f.event_name == semconv.EVENT_IDLE_IN_TRANSACTION
            and f.attributes.get(semconv.POSTGRESQL_APPLICATION_NAME) == app
        ]
        assert len(found) == 1
        assert found[0].suggestion.startswith("SELECT pg_terminate_backend(")
        assert values(out.samples, "postgresql.idle_in_transaction.max_duration")[0] >= 0.3
        assert values(
            out.samples,
            "postgresql.backends",
            **{
                semconv.POSTGRESQL_APPLICATION_NAME: app,
                semconv.POSTGRESQL_BACKEND_STATE: "idle in transaction",
            },
        ) == [1]
    finally:
        await tx.rollback()
        await holder.close()


async def test_missing_index_finding(scratch_db: str) -> None:
    setup = await asyncpg.connect(scratch_db)
    try:
        await setup.execute(
            "CREATE TABLE otb_agent_big (id int, v int);"
            "INSERT INTO otb_agent_big SELECT g, g FROM generate_series(1, 3000) g;"
            "ANALYZE otb_agent_big;"
        )
        for _ in range(6):
            await setup.fetch("SELECT * FROM otb_agent_big WHERE v = 17")
    finally:
        await setup.close()
    c = collector(scratch_db, missing_index_min_seq_scans=5, missing_index_min_rows=1000)
    try:
        for _ in range(50):
            out = await c.collect(frozenset({Tier.ADVICE}))
            found = [f for f in out.findings if f.event_name == semconv.EVENT_MISSING_INDEX]
            if found:
                break
            await asyncio.sleep(0.1)
    finally:
        await c.close()
    assert [f.object for f in found] == ["public.otb_agent_big"]
    assert found[0].suggestion.startswith("CREATE INDEX CONCURRENTLY ON public.otb_agent_big (")


async def test_unreachable_and_bad_password_give_up_with_error_type(pg_dsn: str) -> None:
    from tests.agent.conftest import free_port

    c = collector(f"postgresql://postgres@127.0.0.1:{free_port()}/test", connect_timeout=2)
    out = await c.collect(ALL_TIERS)
    assert not out.target_up
    up = [s for s in out.samples if s.metric.name == "postgresql.up"]
    assert [s.value for s in up] == [0]
    assert up[0].attributes[semconv.ERROR_TYPE] == "network"
