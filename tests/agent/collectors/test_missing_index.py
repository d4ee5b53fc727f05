"""The missing-index finding names its column, learned from the statements a real bot
session runs: from pg_stat_activity across the agent's polls, and from pg_stat_statements
(the private server that preloads it). A control table, filtered the same way but indexed,
gets no finding; the values in the statements never reach a finding."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from otelbot import semconv
from otelbot.agent.collectors import postgres
from otelbot.agent.collectors.base import Collection, Finding, Tier
from otelbot.agent.collectors.postgres import APPLICATION_NAME, PostgresCollector
from tests.agent.collectors.test_postgres import collector
from tests.agent.conftest import unique

FAST_AND_ADVICE = frozenset({Tier.FAST, Tier.ADVICE})
BOT_APP = "otb_mi_bot"
POOL_RESET = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;"


async def make_table(conn: asyncpg.Connection, name: str, index_on: str | None = None) -> None:
    await conn.execute(
        f"CREATE TABLE {name} (id int, chat_ref text, kind int, created_at timestamptz, "
        "note text);"
        f"INSERT INTO {name} SELECT g, 'c' || (g % 500), g % 4, now() - g * interval '1 min', "
        "'n' FROM generate_series(1, 3000) g;"
    )
    if index_on:
        await conn.execute(f"CREATE INDEX ON {name} ({index_on})")
    await conn.execute(f"ANALYZE {name}")


async def flush_stats(conn: asyncpg.Connection) -> None:
    """Report this session's table statistics when it next goes idle (PostgreSQL 15+)."""
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
    except asyncpg.UndefinedFunctionError:
        pass


def missing(out: Collection, table: str) -> list[Finding]:
    return [
        f
        for f in out.findings
        if f.event_name == semconv.EVENT_MISSING_INDEX and f.object == f"public.{table}"
    ]


async def advise_until(c: PostgresCollector, table: str, tiers: frozenset[Tier]) -> Collection:
    """Poll until the table's finding appears (table statistics reach the shared views a
    moment after the scans)."""
    for _ in range(100):
        out = await c.collect(tiers)
        assert out.failures == []
        if missing(out, table):
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"no missing-index finding for {table}")


def assert_no_secret(out: Collection, secret: str) -> None:
    for f in out.findings:
        assert secret not in repr(f), f
    for s in out.samples:
        assert secret not in repr(s.attributes), s


@pytest.fixture
async def bot(scratch_db: str) -> AsyncIterator[asyncpg.Connection]:
    """The bot's database session; what it ran last stays visible in pg_stat_activity."""
    conn = await asyncpg.connect(scratch_db, server_settings={"application_name": BOT_APP})
    yield conn
    await conn.close()


async def test_column_from_pg_stat_activity_without_the_values(
    scratch_db: str, bot: asyncpg.Connection
) -> None:
    setup = await asyncpg.connect(scratch_db)
    events, control = "otb_mi_events", "otb_mi_indexed"
    await make_table(setup, events)
    await make_table(setup, control, index_on="chat_ref")
    # A literal that would be a secret, long enough that pg_stat_activity cuts the text
    # inside it (track_activity_query_size, 1 kB by default): an unterminated string.
    secret = "sk-live-" + uuid.uuid4().hex
    literal = secret + "x" * 1100
    for table in (events, control, events, control, events, control, events, control):
        await bot.fetch(f"SELECT id FROM {table} WHERE chat_ref = '{literal}'")
    for table in (events, control):
        await bot.fetch(f"SELECT id FROM {table} WHERE chat_ref = '{literal}'")
        await flush_stats(bot)
    await bot.fetch(f"SELECT id FROM {events} WHERE chat_ref = '{literal}'")
    shown = await setup.fetchval(
        "SELECT query FROM pg_stat_activity WHERE application_name = $1", BOT_APP
    )
    assert secret in shown and literal not in shown  # visible, and cut inside the literal

    c = collector(scratch_db, missing_index_min_seq_scans=5, missing_index_min_rows=1000)
    try:
        out = await advise_until(c, events, FAST_AND_ADVICE)
    finally:
        await c.close()
    [found] = missing(out, events)
    assert found.suggestion == f"CREATE INDEX CONCURRENTLY ON public.{events} (chat_ref);"
    assert found.attributes[semconv.DB_QUERY_TEXT] == (
        f"SELECT id FROM {events} WHERE chat_ref = ?"
    )
    assert found.attributes[semconv.DB_COLLECTION_NAME] == f"public.{events}"
    assert (
        "chat_ref is compared with a value in the WHERE clause of 1 statement seen in "
        "pg_stat_activity" in found.evidence
    )
    assert_no_secret(out, secret)

    # The control table got the same statements, and its index served them.
    assert missing(out, control) == []
    stats = await setup.fetchrow(
        "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = $1", control
    )
    assert stats["idx_scan"] >= 5 and stats["seq_scan"] < stats["idx_scan"]
    await setup.close()


async def test_across_polls_the_busier_statement_decides_and_indexed_columns_are_skipped(
    scratch_db: str, bot: asyncpg.Connection
) -> None:
    setup = await asyncpg.connect(scratch_db)
    events = "otb_mi_multi"
    await make_table(setup, events, index_on="kind")
    await setup.close()
    busy = (
        f"SELECT id FROM public.{events} e WHERE e.chat_ref = 'zq7-chat' "
        "AND e.created_at > now() - interval '1 day'"
    )
    rare = f"SELECT id FROM {events} WHERE kind = 2 AND note = 'private note'"
    c = collector(scratch_db, missing_index_min_seq_scans=5, missing_index_min_rows=1000)
    try:
        for _ in range(2):  # two runs of the busy statement, each seen at a poll
            for _ in range(3):
                await bot.fetch(busy)
            await c.collect(frozenset({Tier.FAST}))
        await flush_stats(bot)
        await bot.fetch(rare)  # one run of the other, seen once (and again, idle: not counted)
        out = await advise_until(c, events, FAST_AND_ADVICE)
    finally:
        await c.close()
    [found] = missing(out, events)
    # kind leads an index: left out; chat_ref (2 runs seen) beats note (1); the range
    # AND-ed with chat_ref in the same WHERE clause follows it.
    assert found.suggestion == (
        f"CREATE INDEX CONCURRENTLY ON public.{events} (chat_ref, created_at);"
    )
    assert found.attributes[semconv.DB_QUERY_TEXT] == (
        f"SELECT id FROM public.{events} e WHERE e.chat_ref = ? "
        "AND e.created_at > now() - interval ?"
    )
    assert "(seen 2 times)" in found.evidence
    assert "chosen over note (seen 1 time): filtered more often" in found.evidence
    assert "zq7-chat" not in repr(found) and "private note" not in repr(found)


async def _show_when_the_agent_looks_again(
    scratch_db: str, bot: asyncpg.Connection, statement: str
) -> bool:
    """Run ``statement`` once the agent's session is reading the sessions' statements on
    their own (a burst), and leave it as the bot session's last one; False after 3 s."""
    watcher = await asyncpg.connect(scratch_db)
    try:
        for _ in range(300):
            shown = await watcher.fetchval(
                "SELECT query FROM pg_stat_activity WHERE application_name = $1",
                APPLICATION_NAME,
            )
            if shown and shown.lstrip().startswith("SELECT json_agg"):
                await bot.fetch(statement)
                return True
            await asyncio.sleep(0.01)
        return False
    finally:
        await watcher.close()


@pytest.mark.parametrize("burst", [True, False], ids=["burst", "no burst"])
async def test_a_statement_the_polls_missed_is_caught_by_the_advice_polls_burst(
    scratch_db: str, bot: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, burst: bool
) -> None:
    """A pool hides a session's statement behind its reset query between uses, so a poll
    now and then misses it. When a candidate's column is unknown, the advice poll looks
    at the sessions again for a second; the control without the burst keeps the
    placeholder (and the bot's statement is never run: nothing looked)."""
    if not burst:
        monkeypatch.setattr(postgres, "SESSION_BURST_POLLS", 0)
    setup = await asyncpg.connect(scratch_db)
    events = "otb_mi_burst"
    await make_table(setup, events)
    await setup.close()
    statement = f"SELECT id FROM {events} WHERE chat_ref = 'zq9-chat'"
    for _ in range(6):
        await bot.fetch(statement)
    await flush_stats(bot)
    await bot.execute(POOL_RESET)  # what a pool runs when a connection goes back to it
    c = collector(scratch_db, missing_index_min_seq_scans=5, missing_index_min_rows=1000)
    try:
        out = await c.collect(frozenset({Tier.FAST}))
        assert out.failures == []
        shown = asyncio.create_task(_show_when_the_agent_looks_again(scratch_db, bot, statement))
        out = await advise_until(c, events, FAST_AND_ADVICE)
        shown_in_burst = await shown
    finally:
        await c.close()
    [found] = missing(out, events)
    if burst:
        assert shown_in_burst
        assert found.suggestion == f"CREATE INDEX CONCURRENTLY ON public.{events} (chat_ref);"
        assert "1 statement seen in pg_stat_activity (seen 1 time)" in found.evidence
        assert "zq9-chat" not in repr(found)
    else:
        assert not shown_in_burst
        assert "(<column in the WHERE clause>)" in found.suggestion


async def test_nothing_known_keeps_the_placeholder(scratch_db: str) -> None:
    setup = await asyncpg.connect(scratch_db)
    events = "otb_mi_unknown"
    await make_table(setup, events)
    for _ in range(6):
        await setup.fetch(f"SELECT count(*) FROM {events}")  # no WHERE clause to learn from
    await setup.close()
    c = collector(scratch_db, missing_index_min_seq_scans=5, missing_index_min_rows=1000)
    try:
        out = await advise_until(c, events, FAST_AND_ADVICE)
    finally:
        await c.close()
    [found] = missing(out, events)
    assert found.suggestion == (
        f"CREATE INDEX CONCURRENTLY ON public.{events} (<column in the WHERE clause>);  "
        "-- find the column with EXPLAIN on the slow query"
    )
    assert semconv.DB_QUERY_TEXT not in found.attributes


async def test_column_from_pg_stat_statements(pg_statements_dsn: str) -> None:
    setup = await asyncpg.connect(pg_statements_dsn)
    events, control = unique("otb_mi_pgss_"), unique("otb_mi_pgss_ix_")
    secret = "sk-live-" + uuid.uuid4().hex
    try:
        await setup.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await make_table(setup, events)
        await make_table(setup, control, index_on="chat_ref")
        out: Any = None
        for _ in range(3):  # another test may reset pg_stat_statements meanwhile: again
            bot = await asyncpg.connect(pg_statements_dsn)
            for table in (events, control):
                for _ in range(3):  # a literal and a parameter: one normalized statement
                    await bot.fetch(f"SELECT id FROM {table} WHERE chat_ref = '{secret}'")
                    await bot.fetch(f"SELECT id FROM {table} WHERE chat_ref = $1", secret)
            await bot.close()  # gone from pg_stat_activity: only pg_stat_statements knows
            # A new agent each time: nothing seen in pg_stat_activity before.
            c = collector(
                pg_statements_dsn, missing_index_min_seq_scans=5, missing_index_min_rows=1000
            )
            try:
                out = await advise_until(c, events, frozenset({Tier.ADVICE}))
            finally:
                await c.close()
            if semconv.DB_QUERY_TEXT in missing(out, events)[0].attributes:
                break
        [found] = missing(out, events)
        assert found.suggestion == f"CREATE INDEX CONCURRENTLY ON public.{events} (chat_ref);"
        assert found.attributes[semconv.DB_QUERY_TEXT] == (
            f"SELECT id FROM {events} WHERE chat_ref = $1"
        )
        assert "seen in pg_stat_statements (" in found.evidence
        assert missing(out, control) == []
        assert_no_secret(out, secret)
    finally:
        await setup.execute(f"DROP TABLE IF EXISTS {events}; DROP TABLE IF EXISTS {control}")
        await setup.close()
