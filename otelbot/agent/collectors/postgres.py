"""PostgreSQL 13-17: database, activity, tables, indexes, statements, and index advice.

Each category is one query (a fixed number per poll, never one per table), with top-K in SQL
and the rest summed into a ``(other)`` series. The session has its own ``statement_timeout``
and ``lock_timeout``, is read-only, and sizes of relations someone holds an
``ACCESS EXCLUSIVE`` lock on come from ``pg_class.relpages`` instead of a lock-taking
``pg_relation_size``, so a locked table does not stall the poll. A ``pg_monitor`` role is
enough. The agent never changes the database: findings carry statements for a human.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from otelbot import semconv
from otelbot.agent.collectors.base import (
    AttributeValue,
    CheckError,
    Collection,
    Collector,
    Failure,
    Finding,
    Tier,
    describe_error,
    error_type,
)
from otelbot.agent.config import AgentConfig, PostgresConfig, PostgresDatabase
from otelbot.agent.index_columns import (
    IndexChoice,
    SeenStatements,
    Statement,
    TableColumns,
    choose,
    normalize,
)
from otelbot.agent.state import IndexUsageStore

log = logging.getLogger("otelbot.agent.postgresql")

NAME = "postgresql"
OTHER = "(other)"
APPLICATION_NAME = "otelbot-agent"

# --------------------------------------------------------------------------- feature detection

# Also turns JIT compilation off for the agent's session (PostgreSQL 11+): the catalog
# joins below are estimated above jit_above_cost, and compiling them took longer than
# running them (32 of 45 ms for the duplicate-index query on 6,000 indexes).
FEATURES_SQL = """
SELECT current_setting('server_version_num')::int AS version,
       (SELECT extnamespace::regnamespace::text FROM pg_extension
         WHERE extname = 'pg_stat_statements') AS pgss_schema,
       CASE WHEN current_setting('server_version_num')::int >= 110000
            THEN set_config('jit', 'off', false) END AS jit
"""

# --------------------------------------------------------------------------- database (fast)
# postgresql.commits, .rollbacks, .blks_hit, .blks_read, .deadlocks, .temp_files, .temp.io,
# .conflicts, .database.xid_age, .connection.max

DATABASE_SQL = """
SELECT d.xact_commit, d.xact_rollback, d.blks_hit, d.blks_read, d.deadlocks, d.temp_files,
       d.temp_bytes, d.conflicts, age(db.datfrozenxid) AS xid_age,
       current_setting('max_connections')::int AS max_connections
  FROM pg_stat_database d JOIN pg_database db ON db.oid = d.datid
 WHERE d.datname = current_database()
"""

# --------------------------------------------------------------------------- activity (fast)
# postgresql.backends by state and application_name (top $1 applications, rest "(other)")

BACKENDS_SQL = """
WITH a AS (
  SELECT coalesce(state, 'unknown') AS state,
         coalesce(nullif(application_name, ''), '(none)') AS app, count(*) AS n
    FROM pg_stat_activity
   WHERE datname = current_database() AND backend_type = 'client backend'
   GROUP BY 1, 2
), apps AS (
  SELECT app, row_number() OVER (ORDER BY sum(n) DESC, app) AS rank FROM a GROUP BY app
)
SELECT a.state, CASE WHEN apps.rank <= $1 THEN a.app ELSE '(other)' END AS app,
       sum(a.n)::bigint AS n
  FROM a JOIN apps USING (app)
 GROUP BY 1, 2
"""

# [pid, query_start, active, query] of the sessions' statements with a WHERE clause: a
# part of ACTIVITY_SQL, and alone the burst of reads for a missing index's column
SESSIONS_SQL = """SELECT json_agg(json_build_array(r.pid, extract(epoch FROM r.query_start),
                                         r.state = 'active', r.query))
          FROM (SELECT pid, query_start, state, query FROM pg_stat_activity
                 WHERE datname = current_database() AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid() AND application_name <> $1
                   AND query ILIKE '%where%'
                 ORDER BY query_start DESC NULLS LAST
                 LIMIT 50) r"""

#: The burst of reads of the sessions' statements at an advice poll where a missing-index
#: candidate's column is not known yet: 1 s of them, a few ms of the server's time in all.
SESSION_BURST_POLLS = 20
SESSION_BURST_EVERY = 0.05

# postgresql.idle_in_transaction.max_duration, .transaction.max_duration, .locks.waiting
ACTIVITY_SQL = f"""
SELECT coalesce(max(extract(epoch FROM now() - state_change))
                FILTER (WHERE state LIKE 'idle in transaction%'), 0)::float8 AS idle_in_tx_max,
       coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8 AS xact_max,
       (SELECT count(*) FROM pg_locks l JOIN pg_stat_activity w ON w.pid = l.pid
         WHERE NOT l.granted AND w.datname = current_database()) AS waiting_locks,
       -- statements with a WHERE clause that sessions run (or, idle, ran last), for the
       -- missing-index finding's column; the agent strips their values on arrival
       ({SESSIONS_SQL}) AS sessions
  FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend'
   AND pid <> pg_backend_pid()
"""

# otelbot.postgresql.idle_in_transaction findings: sessions idle in a transaction > $1 s
IDLE_SESSIONS_SQL = """
SELECT pid, usename::text AS usename, coalesce(nullif(application_name, ''), '(none)') AS app,
       extract(epoch FROM now() - state_change)::float8 AS idle_for
  FROM pg_stat_activity
 WHERE datname = current_database() AND state LIKE 'idle in transaction%'
   AND now() - state_change > make_interval(secs => $1)
 ORDER BY state_change
 LIMIT 10
"""

# --------------------------------------------------------------------------- sizes (slow)
# Relations under (or queued for) an ACCESS EXCLUSIVE lock: their size comes from relpages.

_LOCKED_CTE = """
locked AS (
  SELECT DISTINCT relation FROM pg_locks
   WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock'
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)"""

# postgresql.db_size
DB_SIZE_SQL = "SELECT pg_database_size(current_database()) AS size"

# --------------------------------------------------------------------------- tables (slow)
# postgresql.table.count, .table.size, .sequential_scans, .sequential_scans.rows_read,
# .table.index_scans, .rows, .table.vacuum.count, .table.analyze.count, .table.*.age
# Top $1 tables by size and top $1 by scans; the rest summed into "(other)".

TABLES_SQL = f"""
WITH {_LOCKED_CTE},
t AS (
  SELECT s.schemaname || '.' || s.relname AS name,
         CASE WHEN s.relid IN (SELECT relation FROM locked)
                OR c.reltoastrelid IN (SELECT relation FROM locked)
                OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = s.relid
                              AND i.indexrelid IN (SELECT relation FROM locked))
              THEN c.relpages::bigint * current_setting('block_size')::bigint
              ELSE coalesce(pg_total_relation_size(s.relid), 0) END AS size,
         s.seq_scan, s.seq_tup_read, coalesce(s.idx_scan, 0) AS idx_scan,
         s.n_live_tup, s.n_dead_tup, s.vacuum_count, s.autovacuum_count,
         s.analyze_count, s.autoanalyze_count,
         extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8
           AS vacuum_age,
         extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::float8
           AS analyze_age
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
), ranked AS (
  SELECT t.*, (row_number() OVER (ORDER BY size DESC, name) <= $1
               OR row_number() OVER (ORDER BY seq_scan + idx_scan DESC, name) <= $1) AS top
    FROM t
)
SELECT name, size, seq_scan, seq_tup_read, idx_scan, n_live_tup, n_dead_tup, vacuum_count,
       autovacuum_count, analyze_count, autoanalyze_count, vacuum_age, analyze_age,
       1::bigint AS tables
  FROM ranked WHERE top
UNION ALL
SELECT '(other)', sum(size), sum(seq_scan), sum(seq_tup_read), sum(idx_scan), sum(n_live_tup),
       sum(n_dead_tup), sum(vacuum_count), sum(autovacuum_count), sum(analyze_count),
       sum(autoanalyze_count), NULL, NULL, count(*)
  FROM ranked WHERE NOT top HAVING count(*) > 0
"""

# --------------------------------------------------------------------------- indexes (slow)
# postgresql.index.count, .index.scans, .index.size, .index.tuples_read, .index.tuples_fetched
# Top $1 indexes by size and top $1 by scans; the rest summed into "(other)".

INDEXES_SQL = f"""
WITH {_LOCKED_CTE},
x AS (
  SELECT s.schemaname || '.' || s.relname AS table_name, s.indexrelname::text AS index_name,
         CASE WHEN s.indexrelid IN (SELECT relation FROM locked)
                OR s.relid IN (SELECT relation FROM locked)
              THEN c.relpages::bigint * current_setting('block_size')::bigint
              ELSE coalesce(pg_relation_size(s.indexrelid), 0) END AS size,
         s.idx_scan, s.idx_tup_read, s.idx_tup_fetch
    FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid
), ranked AS (
  SELECT x.*, (row_number() OVER (ORDER BY size DESC, table_name, index_name) <= $1
               OR row_number() OVER (ORDER BY idx_scan DESC, table_name, index_name) <= $1)
              AS top
    FROM x
)
SELECT table_name, index_name, size, idx_scan, idx_tup_read, idx_tup_fetch, 1::bigint AS indexes
  FROM ranked WHERE top
UNION ALL
SELECT '(other)', '(other)', sum(size), sum(idx_scan), sum(idx_tup_read), sum(idx_tup_fetch),
       count(*)
  FROM ranked WHERE NOT top HAVING count(*) > 0
"""

# --------------------------------------------------------------------------- statements (slow)
# postgresql.statement.calls, .time, .mean_time, .rows: top $1 by total time, when the
# pg_stat_statements extension is installed in this database and preloaded by the server.

STATEMENTS_SQL = """
SELECT s.queryid, min(left(s.query, 200)) AS query, sum(s.calls)::bigint AS calls,
       sum(s.total_exec_time)::float8 / 1000 AS total_s, sum(s.rows)::bigint AS rows
  FROM {schema}.pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
 WHERE d.datname = current_database() AND s.queryid IS NOT NULL
 GROUP BY s.queryid
 ORDER BY sum(s.total_exec_time) DESC
 LIMIT $1
"""

# --------------------------------------------------------------------------- advice (hourly)
# Every user index with what the unused/invalid findings need. Only an index that can be
# reported as unused needs its size (stat-ing its files): not an invalid, unique or
# primary-key one.

ADVICE_INDEXES_SQL = f"""
WITH {_LOCKED_CTE}
SELECT s.indexrelid::bigint AS oid, s.schemaname || '.' || s.relname AS table_name,
       s.schemaname || '.' || s.indexrelname AS index_name, s.idx_scan,
       i.indisunique, i.indisprimary, i.indisvalid,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid) AS backs_constraint,
       CASE WHEN i.indisunique OR i.indisprimary OR NOT i.indisvalid THEN NULL
            WHEN s.indexrelid IN (SELECT relation FROM locked)
              OR s.relid IN (SELECT relation FROM locked)
            THEN c.relpages::bigint * current_setting('block_size')::bigint
            ELSE coalesce(pg_relation_size(s.indexrelid), 0) END AS size,
       format('DROP INDEX CONCURRENTLY %I.%I;', s.schemaname, s.indexrelname) AS drop_sql,
       format('REINDEX INDEX CONCURRENTLY %I.%I;', s.schemaname, s.indexrelname) AS reindex_sql
  FROM pg_stat_user_indexes s
  JOIN pg_index i ON i.indexrelid = s.indexrelid
  JOIN pg_class c ON c.oid = s.indexrelid
"""

# Index a is redundant when index b on the same table, same method, same predicate and
# expressions, starts with all of a's key columns (same operator classes and collations).
# A unique a is only redundant when b is identical to it.
# An index's key column names from the catalog (pg_get_indexdef() would lock the table);
# {} is the alias of the row holding its indexrelid.
_COLUMNS = """(SELECT string_agg(CASE WHEN k.attnum = 0 THEN '(expression)'
                               ELSE at.attname::text END, ', ' ORDER BY k.ord)
          FROM pg_index i CROSS JOIN unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
          LEFT JOIN pg_attribute at ON at.attrelid = i.indrelid AND at.attnum = k.attnum
         WHERE i.indexrelid = {}.indexrelid)"""

DUPLICATE_INDEXES_SQL = f"""
WITH x AS (
  SELECT i.indexrelid, i.indrelid, c.relam, i.indisunique, i.indisprimary,
         string_to_array(i.indkey::text, ' ') AS cols,
         string_to_array(i.indclass::text, ' ') AS ops,
         string_to_array(i.indcollation::text, ' ') AS colls,
         -- raw node trees (pg_get_expr() would lock the table) without their token
         -- positions; the regex only for indexes that have expressions or predicates
         CASE WHEN i.indexprs IS NULL THEN ''
              ELSE regexp_replace(i.indexprs::text, ':location -?[0-9]+', '', 'g') END AS exprs,
         CASE WHEN i.indpred IS NULL THEN ''
              ELSE regexp_replace(i.indpred::text, ':location -?[0-9]+', '', 'g') END AS pred,
         n.nspname, c.relname, t.relname AS table_name,
         EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) AS backs_constraint
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\\_toast%'
     AND i.indisvalid
)
SELECT a.nspname || '.' || a.table_name AS table_name,
       a.nspname || '.' || a.relname AS index_name, b.nspname || '.' || b.relname AS covered_by,
       -- column names only for the pairs found
       {_COLUMNS.format("a")} AS index_columns,
       {_COLUMNS.format("b")} AS covering_columns,
       format('DROP INDEX CONCURRENTLY %I.%I;', a.nspname, a.relname) AS drop_sql
  FROM x a JOIN x b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid
 WHERE a.relam = b.relam AND a.exprs = b.exprs AND a.pred = b.pred
   AND NOT a.backs_constraint
   AND array_length(a.cols, 1) <= array_length(b.cols, 1)
   AND a.cols = b.cols[1:array_length(a.cols, 1)]
   AND a.ops = b.ops[1:array_length(a.ops, 1)]
   AND a.colls = b.colls[1:array_length(a.colls, 1)]
   AND (NOT a.indisunique OR (b.indisunique AND a.cols = b.cols))
   -- of two identical indexes report only one (keep the one backing a constraint, or the older)
   AND NOT (a.cols = b.cols AND a.indisunique = b.indisunique
            AND NOT b.backs_constraint AND a.indexrelid < b.indexrelid)
 ORDER BY 1, 2
"""

# Tables read mostly by sequential scans over many rows, with what choosing the index's
# column needs: the table's columns (quoted for SQL) and their estimated distinct values
# (pg_stats shows them only to a role that may read the table), the columns that already
# lead a valid index, and, with pg_stat_statements ({statements}), the statements naming
# the table, heaviest first.
MISSING_INDEXES_SQL = """
WITH m AS (
  SELECT s.relid, s.schemaname::text AS schema_name, s.relname::text AS rel_name,
         s.schemaname || '.' || s.relname AS table_name, s.seq_scan, s.seq_tup_read,
         coalesce(s.idx_scan, 0) AS idx_scan, s.n_live_tup,
         format('%I.%I', s.schemaname, s.relname) AS qualified
    FROM pg_stat_user_tables s
   WHERE s.seq_scan >= $1 AND s.n_live_tup >= $2 AND s.seq_tup_read / s.seq_scan >= $2
     AND s.seq_scan > coalesce(s.idx_scan, 0)
   ORDER BY s.seq_tup_read DESC
   LIMIT 20
){statements_cte}
SELECT m.*, c.columns, c.quoted, c.n_distinct,
       ARRAY(SELECT DISTINCT a.attname::text FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indrelid = m.relid AND i.indisvalid AND i.indpred IS NULL) AS indexed,
       {statements}
  FROM m
  CROSS JOIN LATERAL (
    SELECT array_agg(a.attname::text ORDER BY a.attnum) AS columns,
           array_agg(quote_ident(a.attname) ORDER BY a.attnum) AS quoted,
           array_agg(st.n_distinct::float8 ORDER BY a.attnum) AS n_distinct
      FROM pg_attribute a
      LEFT JOIN pg_stats st ON st.schemaname = m.schema_name AND st.tablename = m.rel_name
                           AND st.attname = a.attname AND NOT st.inherited
     WHERE a.attrelid = m.relid AND a.attnum > 0 AND NOT a.attisdropped
  ) c
 ORDER BY m.seq_tup_read DESC
"""
_NO_STATEMENTS = "NULL::text[] AS statements, NULL::bigint[] AS calls"
# Read once (MATERIALIZED), then searched per table.
_STATEMENTS_CTE = """,
q AS MATERIALIZED (
  SELECT left(s.query, 4000) AS query, sum(s.calls)::bigint AS calls,
         sum(s.total_exec_time) AS total
    FROM {schema}.pg_stat_statements s
   WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND s.query ILIKE '%where%'
   GROUP BY 1
)"""
_STATEMENTS = """ARRAY(SELECT q.query FROM q WHERE strpos(lower(q.query), lower(m.rel_name)) > 0
               ORDER BY q.total DESC, q.query LIMIT 20) AS statements,
       ARRAY(SELECT q.calls FROM q WHERE strpos(lower(q.query), lower(m.rel_name)) > 0
               ORDER BY q.total DESC, q.query LIMIT 20) AS calls"""

# Connection-level failures: the target is down, stop this poll and back off.
_DISCONNECTED = (
    OSError,
    ConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


@dataclass(frozen=True)
class _Category:
    name: str  # otelbot.collector value: postgresql.<name>
    tier: Tier


DATABASE = _Category("postgresql.database", Tier.FAST)
ACTIVITY = _Category("postgresql.activity", Tier.FAST)
SIZES = _Category("postgresql.sizes", Tier.SLOW)
TABLES = _Category("postgresql.tables", Tier.SLOW)
INDEXES = _Category("postgresql.indexes", Tier.SLOW)
STATEMENTS = _Category("postgresql.statements", Tier.SLOW)
ADVICE = _Category("postgresql.advice", Tier.ADVICE)


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _human_duration(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    return f"{s:.0f} s"


class PostgresCollector(Collector):
    kind = NAME

    def __init__(
        self,
        db: PostgresDatabase,
        config: PostgresConfig,
        store: IndexUsageStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._cfg = config
        self._store = store
        self._clock = clock
        self._conn: asyncpg.Connection | None = None
        self._pgss_schema: str | None = None
        self._version = 0
        self.queries = 0  # queries sent since start; tests check it is fixed per poll
        self._seen = SeenStatements()  # statements seen in pg_stat_activity, no values
        self._attrs: dict[str, AttributeValue] = {
            semconv.SERVER_ADDRESS: db.host,
            semconv.SERVER_PORT: db.port,
            semconv.DB_NAMESPACE: db.database,
        }
        self._categories: list[tuple[_Category, Callable[[Collection], Awaitable[None]]]] = [
            (DATABASE, self._database),
            (ACTIVITY, self._activity),
            (SIZES, self._sizes),
            (TABLES, self._tables),
            (INDEXES, self._indexes),
            (STATEMENTS, self._statements),
            (ADVICE, self._advice),
        ]

    @property
    def target(self) -> str:
        return f"postgresql {self._db.label()}"

    @property
    def state_key(self) -> str:
        return f"{self._db.host}:{self._db.port}/{self._db.database}"

    # ----------------------------------------------------------------------- connection

    async def _connect(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        cfg = self._cfg
        password = self._db.password.get_secret_value() if self._db.password else None
        conn = await asyncpg.connect(
            self._db.connect_dsn(),
            password=password,
            timeout=cfg.connect_timeout,
            statement_cache_size=32,
            server_settings={
                "application_name": APPLICATION_NAME,
                "statement_timeout": str(int(cfg.statement_timeout * 1000)),
                "lock_timeout": str(int(cfg.lock_timeout * 1000)),
                "idle_in_transaction_session_timeout": "60000",
                "default_transaction_read_only": "on",
            },
        )
        try:
            row = await asyncio.wait_for(conn.fetchrow(FEATURES_SQL), cfg.statement_timeout + 2)
            self.queries += 1
        except BaseException:
            conn.terminate()
            raise
        assert row is not None
        self._version = row["version"]
        if self._version < 130000:
            log.warning(
                "%s: PostgreSQL %d is older than 13; some statistics may be missing",
                self.target,
                self._version // 10000,
            )
        schema = row["pgss_schema"]
        if schema is None:
            if self._pgss_schema is None and self._version:
                log.info(
                    "%s: pg_stat_statements is not installed; top statements are skipped "
                    "(CREATE EXTENSION pg_stat_statements to enable them)",
                    self.target,
                )
            self._pgss_schema = ""
        else:
            self._pgss_schema = schema
        self._conn = conn
        return conn

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self._connect()
        self.queries += 1
        try:
            return await asyncio.wait_for(conn.fetch(sql, *args), self._cfg.statement_timeout + 2)
        except asyncio.TimeoutError:
            # The server did not answer in time: the session state is unknown, start afresh.
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await asyncio.wait_for(self._conn.close(), 2)
            except Exception:
                self._conn.terminate()
            self._conn = None

    # ----------------------------------------------------------------------- collect

    async def collect(self, tiers: frozenset[Tier]) -> Collection:
        out = Collection()
        try:
            await self._connect()
        except Exception as exc:
            self._drop_connection()
            err = error_type(exc)
            out.add_up(semconv.POSTGRESQL_UP, self._attrs, err)
            out.failures.append(
                Failure(NAME, err, f"{self.target}: {self._scrub(describe_error(exc))}")
            )
            return out
        for category, run in self._categories:
            if category.tier not in tiers:
                continue
            started = time.perf_counter()
            try:
                await run(out)
            except Exception as exc:
                err = error_type(exc)
                message = f"{self.target}: {self._scrub(describe_error(exc))}"
                out.failures.append(Failure(category.name, err, message))
                if isinstance(exc, _DISCONNECTED) or self._conn is None or self._conn.is_closed():
                    self._drop_connection()
                    out.samples.clear()
                    out.add_up(semconv.POSTGRESQL_UP, self._attrs, err)
                    return out
            finally:
                out.durations[category.name] = time.perf_counter() - started
        out.add_up(semconv.POSTGRESQL_UP, self._attrs)
        return out

    async def _database(self, out: Collection) -> None:
        rows = await self._fetch(DATABASE_SQL)
        if not rows:
            return
        r = rows[0]
        a = self._attrs
        out.add_with(semconv.POSTGRESQL_COMMITS, r["xact_commit"], a)
        out.add_with(semconv.POSTGRESQL_ROLLBACKS, r["xact_rollback"], a)
        out.add_with(semconv.POSTGRESQL_BLKS_HIT, r["blks_hit"], a)
        out.add_with(semconv.POSTGRESQL_BLKS_READ, r["blks_read"], a)
        out.add_with(semconv.POSTGRESQL_DEADLOCKS, r["deadlocks"], a)
        out.add_with(semconv.POSTGRESQL_TEMP_FILES, r["temp_files"], a)
        out.add_with(semconv.POSTGRESQL_TEMP_IO, r["temp_bytes"], a)
        out.add_with(semconv.POSTGRESQL_CONFLICTS, r["conflicts"], a)
        out.add_with(semconv.POSTGRESQL_DATABASE_XID_AGE, r["xid_age"], a)
        out.add_with(semconv.POSTGRESQL_CONNECTION_MAX, r["max_connections"], a)

    async def _activity(self, out: Collection) -> None:
        a = self._attrs
        for r in await self._fetch(BACKENDS_SQL, self._cfg.top_applications):
            out.add_with(
                semconv.POSTGRESQL_BACKENDS,
                r["n"],
                {
                    **a,
                    semconv.POSTGRESQL_BACKEND_STATE: r["state"],
                    semconv.POSTGRESQL_APPLICATION_NAME: r["app"],
                },
            )
        rows = await self._fetch(ACTIVITY_SQL, APPLICATION_NAME)
        if rows:
            r = rows[0]
            out.add_with(semconv.POSTGRESQL_IDLE_IN_TRANSACTION_MAX, r["idle_in_tx_max"], a)
            out.add_with(semconv.POSTGRESQL_TRANSACTION_MAX, r["xact_max"], a)
            out.add_with(semconv.POSTGRESQL_LOCKS_WAITING, r["waiting_locks"], a)
            if r["sessions"]:
                # [pid, query_start, active, query]; the text is normalized before it is kept
                self._seen.observe_sessions(
                    (int(pid), started, bool(active), query or "")
                    for pid, started, active, query in json.loads(r["sessions"])
                )
        for r in await self._fetch(IDLE_SESSIONS_SQL, self._cfg.idle_in_transaction_after):
            out.findings.append(
                Finding(
                    semconv.EVENT_IDLE_IN_TRANSACTION,
                    f"{self._db.database} backend pid {r['pid']}",
                    f"session of user {r['usename']} (application_name {r['app']!r}) has been "
                    f"idle inside an open transaction for {_human_duration(r['idle_for'])}; it "
                    "holds its locks and stops vacuum from cleaning up",
                    f"SELECT pg_terminate_backend({r['pid']});  -- and fix the code path that "
                    "leaves the transaction open, or set idle_in_transaction_session_timeout",
                    {**a, semconv.POSTGRESQL_APPLICATION_NAME: r["app"]},
                )
            )

    async def _sizes(self, out: Collection) -> None:
        rows = await self._fetch(DB_SIZE_SQL)
        if rows:
            out.add_with(semconv.POSTGRESQL_DB_SIZE, rows[0]["size"], self._attrs)

    async def _tables(self, out: Collection) -> None:
        count = 0
        for r in await self._fetch(TABLES_SQL, self._cfg.top_tables):
            count += r["tables"]
            a = {**self._attrs, semconv.DB_COLLECTION_NAME: r["name"]}
            out.add_with(semconv.POSTGRESQL_TABLE_SIZE, r["size"], a)
            out.add_with(semconv.POSTGRESQL_SEQUENTIAL_SCANS, r["seq_scan"], a)
            out.add_with(semconv.POSTGRESQL_SEQUENTIAL_SCANS_ROWS, r["seq_tup_read"], a)
            out.add_with(semconv.POSTGRESQL_TABLE_INDEX_SCANS, r["idx_scan"], a)
            live = {**a, semconv.POSTGRESQL_ROW_STATE: "live"}
            dead = {**a, semconv.POSTGRESQL_ROW_STATE: "dead"}
            out.add_with(semconv.POSTGRESQL_ROWS, r["n_live_tup"], live)
            out.add_with(semconv.POSTGRESQL_ROWS, r["n_dead_tup"], dead)
            manual = {**a, semconv.POSTGRESQL_MAINTENANCE_MODE: "manual"}
            auto = {**a, semconv.POSTGRESQL_MAINTENANCE_MODE: "auto"}
            out.add_with(semconv.POSTGRESQL_TABLE_VACUUM_COUNT, r["vacuum_count"], manual)
            out.add_with(semconv.POSTGRESQL_TABLE_VACUUM_COUNT, r["autovacuum_count"], auto)
            out.add_with(semconv.POSTGRESQL_TABLE_ANALYZE_COUNT, r["analyze_count"], manual)
            out.add_with(semconv.POSTGRESQL_TABLE_ANALYZE_COUNT, r["autoanalyze_count"], auto)
            out.add_with(semconv.POSTGRESQL_TABLE_VACUUM_AGE, r["vacuum_age"], a)
            out.add_with(semconv.POSTGRESQL_TABLE_ANALYZE_AGE, r["analyze_age"], a)
        out.add_with(semconv.POSTGRESQL_TABLE_COUNT, count, self._attrs)

    async def _indexes(self, out: Collection) -> None:
        count = 0
        for r in await self._fetch(INDEXES_SQL, self._cfg.top_indexes):
            count += r["indexes"]
            a = {
                **self._attrs,
                semconv.DB_COLLECTION_NAME: r["table_name"],
                semconv.POSTGRESQL_INDEX_NAME: r["index_name"],
            }
            out.add_with(semconv.POSTGRESQL_INDEX_SIZE, r["size"], a)
            out.add_with(semconv.POSTGRESQL_INDEX_SCANS, r["idx_scan"], a)
            out.add_with(semconv.POSTGRESQL_INDEX_TUPLES_READ, r["idx_tup_read"], a)
            out.add_with(semconv.POSTGRESQL_INDEX_TUPLES_FETCHED, r["idx_tup_fetch"], a)
        out.add_with(semconv.POSTGRESQL_INDEX_COUNT, count, self._attrs)

    async def _statements(self, out: Collection) -> None:
        if not self._pgss_schema or self._cfg.top_statements == 0:
            return
        sql = STATEMENTS_SQL.format(schema=_quote_ident(self._pgss_schema))
        try:
            rows = await self._fetch(sql, self._cfg.top_statements)
        except asyncpg.ObjectNotInPrerequisiteStateError:
            log.info(
                "%s: pg_stat_statements is installed but not loaded by the server; top "
                "statements are skipped (add it to shared_preload_libraries and restart)",
                self.target,
            )
            self._pgss_schema = ""  # until the next reconnect
            return
        for r in rows:
            a = {
                **self._attrs,
                semconv.POSTGRESQL_QUERY_ID: str(r["queryid"]),
                semconv.DB_QUERY_TEXT: r["query"],
            }
            calls = r["calls"] or 0
            out.add_with(semconv.POSTGRESQL_STATEMENT_CALLS, calls, a)
            out.add_with(semconv.POSTGRESQL_STATEMENT_TIME, r["total_s"], a)
            out.add_with(
                semconv.POSTGRESQL_STATEMENT_MEAN_TIME, r["total_s"] / calls if calls else 0, a
            )
            out.add_with(semconv.POSTGRESQL_STATEMENT_ROWS, r["rows"], a)

    async def _advice(self, out: Collection) -> None:
        cfg = self._cfg
        now = self._clock()
        db = self.state_key
        base = self._attrs
        present: set[str] = set()
        for r in await self._fetch(ADVICE_INDEXES_SQL):
            name = r["index_name"]
            attrs = {
                **base,
                semconv.DB_COLLECTION_NAME: r["table_name"],
                semconv.POSTGRESQL_INDEX_NAME: name,
            }
            if not r["indisvalid"]:
                out.findings.append(
                    Finding(
                        semconv.EVENT_INVALID_INDEX,
                        name,
                        f"index {name} on {r['table_name']} is invalid (a failed CREATE INDEX "
                        "CONCURRENTLY or REINDEX left it behind): writes still maintain it, "
                        "queries never use it",
                        f"{r['reindex_sql']}  -- or, if it is not needed: {r['drop_sql']}",
                        attrs,
                    )
                )
                continue
            present.add(name)
            obs = self._store.observe(db, name, r["oid"], r["idx_scan"] or 0, now)
            if r["indisunique"] or r["indisprimary"] or r["backs_constraint"]:
                continue
            if obs.is_unused(now, cfg.unused_index_window):
                idle = obs.unused_for(now)
                window = _human_duration(cfg.unused_index_window)
                out.findings.append(
                    Finding(
                        semconv.EVENT_UNUSED_INDEX,
                        name,
                        f"no scans of {name} on {r['table_name']} for "
                        f"{_human_duration(idle)} (window {window},"
                        f" {obs.scans} scans since the last stats reset); it costs "
                        f"{_human_bytes(r['size'])} and slows every write",
                        r["drop_sql"],
                        attrs,
                    )
                )
        self._store.forget_missing(db, present)
        self._store.save()
        for r in await self._fetch(DUPLICATE_INDEXES_SQL):
            out.findings.append(
                Finding(
                    semconv.EVENT_DUPLICATE_INDEX,
                    r["index_name"],
                    f"index {r['index_name']} ({r['index_columns']}) is covered by "
                    f"{r['covered_by']} ({r['covering_columns']}) on {r['table_name']}: that "
                    "index starts with the same columns and serves the same queries",
                    r["drop_sql"],
                    {
                        **base,
                        semconv.DB_COLLECTION_NAME: r["table_name"],
                        semconv.POSTGRESQL_INDEX_NAME: r["index_name"],
                    },
                )
            )
        rows = await self._missing_index_candidates()
        choices = [self._index_choice(r) for r in rows]
        if None in choices:
            # pg_stat_activity shows a statement only while it runs or until the session's
            # next one (a pool's reset query hides it): a quick look at more moments
            await self._watch_sessions()
            choices = [c or self._index_choice(r) for r, c in zip(rows, choices, strict=True)]
        for r, choice in zip(rows, choices, strict=True):
            per_scan = r["seq_tup_read"] // max(r["seq_scan"], 1)
            evidence = (
                f"{r['seq_scan']} sequential scans of {r['table_name']} read "
                f"{r['seq_tup_read']} rows ({per_scan} per scan, {r['n_live_tup']} live "
                f"rows) against {r['idx_scan']} index scans"
            )
            table_attrs: dict[str, AttributeValue] = {
                **base,
                semconv.DB_COLLECTION_NAME: r["table_name"],
            }
            if choice is None:
                suggestion = (
                    f"CREATE INDEX CONCURRENTLY ON {r['qualified']} (<column in the WHERE "
                    "clause>);  -- find the column with EXPLAIN on the slow query"
                )
            else:
                evidence += "; " + choice.reason
                suggestion = (
                    f"CREATE INDEX CONCURRENTLY ON {r['qualified']} ({', '.join(choice.quoted)});"
                )
                table_attrs[semconv.DB_QUERY_TEXT] = choice.statement
            out.findings.append(
                Finding(
                    semconv.EVENT_MISSING_INDEX, r["table_name"], evidence, suggestion, table_attrs
                )
            )

    async def _watch_sessions(self) -> None:
        """``SESSION_BURST_POLLS`` reads of the sessions' statements, ``SESSION_BURST_EVERY``
        seconds apart, for the missing-index column when no poll has seen one."""
        for i in range(SESSION_BURST_POLLS):
            if i:
                await asyncio.sleep(SESSION_BURST_EVERY)
            sessions = (await self._fetch(SESSIONS_SQL, APPLICATION_NAME))[0][0]
            if sessions:
                self._seen.observe_sessions(
                    (int(pid), started, bool(active), query or "")
                    for pid, started, active, query in json.loads(sessions)
                )

    async def _missing_index_candidates(self) -> list[asyncpg.Record]:
        cfg = self._cfg
        args = (cfg.missing_index_min_seq_scans, cfg.missing_index_min_rows)
        if self._pgss_schema:
            cte = _STATEMENTS_CTE.format(schema=_quote_ident(self._pgss_schema))
            sql = MISSING_INDEXES_SQL.format(statements_cte=cte, statements=_STATEMENTS)
            try:
                return await self._fetch(sql, *args)
            except asyncpg.ObjectNotInPrerequisiteStateError:
                log.info(
                    "%s: pg_stat_statements is installed but not loaded by the server; "
                    "missing-index columns come from pg_stat_activity alone (add it to "
                    "shared_preload_libraries and restart)",
                    self.target,
                )
                self._pgss_schema = ""  # until the next reconnect
        sql = MISSING_INDEXES_SQL.format(statements_cte="", statements=_NO_STATEMENTS)
        return await self._fetch(sql, *args)

    def _index_choice(self, r: asyncpg.Record) -> IndexChoice | None:
        """The column(s) for a missing index: from pg_stat_statements when it knows a
        statement filtering the table, else from what pg_stat_activity showed."""
        live = max(r["n_live_tup"], 0)
        distinct: dict[str, float] = {}
        for name, n in zip(r["columns"] or (), r["n_distinct"] or (), strict=False):
            if n is not None and n != 0:  # negative: a fraction of the rows
                distinct[name] = n if n > 0 else -n * live
        table = TableColumns(
            r["schema_name"],
            r["rel_name"],
            dict(zip(r["columns"] or (), r["quoted"] or (), strict=False)),
            distinct,
            frozenset(r["indexed"] or ()),
        )
        if r["statements"]:
            statements = [
                Statement.parse(normalize(q), calls or 0)
                for q, calls in zip(r["statements"], r["calls"], strict=False)
            ]
            choice = choose(table, statements, "pg_stat_statements")
            if choice is not None:
                return choice
        return choose(table, self._seen.statements(r["rel_name"]), "pg_stat_activity")

    def _scrub(self, text: str) -> str:
        """Error messages never carry the password or the DSN."""
        for secret in (self._db.password, self._db.dsn):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        if self._db.dsn is not None:
            password = urlsplit(self._db.dsn.get_secret_value()).password
            if password:
                text = text.replace(password, "***")
        return text

    # ----------------------------------------------------------------------- check

    async def check(self) -> str:
        try:
            await self._connect()
            rows = await self._fetch(DATABASE_SQL)
        except Exception as exc:
            self._drop_connection()
            raise CheckError(f"{self._scrub(describe_error(exc))}; {_hint(exc)}") from None
        finally:
            await self.close()
        if not rows:
            raise CheckError("connected, but pg_stat_database has no row for this database")
        statements = "with" if self._pgss_schema else "without"
        return f"PostgreSQL {self._version // 10000}, {statements} pg_stat_statements"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hint(exc: BaseException) -> str:
    kind = error_type(exc)
    if kind == "auth":
        return "check the user and password (password_file / dsn_file) and pg_hba.conf"
    if kind == "network":
        return "check host and port, and that PostgreSQL accepts TCP connections from the agent"
    if kind == "timeout":
        return "the server is slow or unreachable; check the network or raise connect_timeout"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "the database does not exist; check database / dsn"
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return "grant the agent's role pg_monitor: GRANT pg_monitor TO <role>;"
    return "see the PostgreSQL server log"


def build(config: AgentConfig, store: IndexUsageStore | None = None) -> list[Collector]:
    c = config.postgresql
    if not c.enabled:
        return []
    if store is None:
        store = IndexUsageStore(config.resolved_state_file())
    return [PostgresCollector(db, c, store) for db in c.databases]
