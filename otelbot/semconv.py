"""The otelbot catalogue: every metric, span and attribute name otelbot emits.

This module is the single source of truth. The instrumentation and the agent take
their names, units and bucket boundaries from here, ``docs/metrics.md`` is generated
from it (``python -m otelbot.semconv > docs/metrics.md``) and a test fails when the
two differ.

Stable OpenTelemetry semantic-convention names are used where they exist; names
specific to Telegram live under ``telegram.*``, anything else under ``otelbot.*``.
Units are seconds and bytes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

# --------------------------------------------------------------------------- attributes

# General
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

# HTTP (stable semconv)
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_FULL = "url.full"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
URL_TEMPLATE = "url.template"
USER_AGENT_ORIGINAL = "user_agent.original"
CLIENT_ADDRESS = "client.address"

# Database (stable semconv)
DB_SYSTEM_NAME = "db.system.name"
DB_NAMESPACE = "db.namespace"
DB_OPERATION_NAME = "db.operation.name"
DB_COLLECTION_NAME = "db.collection.name"
DB_QUERY_TEXT = "db.query.text"
DB_RESPONSE_STATUS_CODE = "db.response.status_code"
DB_OPERATION_BATCH_SIZE = "db.operation.batch.size"
DB_CLIENT_CONNECTION_POOL_NAME = "db.client.connection.pool.name"
DB_CLIENT_CONNECTION_STATE = "db.client.connection.state"

# Cache (otelbot)
CACHE_RESULT = "otelbot.cache.result"
CACHE_KEY_SHAPE = "otelbot.cache.key_shape"  # e.g. "profile:?" (variable parts as ?)

# Code location (stable semconv): the bot's own code, never otelbot's or a library's
CODE_FUNCTION_NAME = "code.function.name"
CODE_FILE_PATH = "code.file.path"
CODE_LINE_NUMBER = "code.line.number"

# Findings (otelbot)
FINDING_KIND = "otelbot.finding.kind"  # the finding's event name

# Telegram (otelbot)
TELEGRAM_API_METHOD = "telegram.api.method"
TELEGRAM_API_ERROR_CODE = "telegram.api.error_code"
TELEGRAM_API_RETRY_AFTER = "telegram.api.retry_after"
TELEGRAM_BOT_ID = "telegram.bot.id"
TELEGRAM_UPDATE_TYPE = "telegram.update.type"
TELEGRAM_UPDATE_OUTCOME = "telegram.update.outcome"
TELEGRAM_UPDATE_ID = "telegram.update.id"
TELEGRAM_INGRESS = "telegram.ingress"
TELEGRAM_HANDLER = "telegram.handler"
TELEGRAM_CHAT_TYPE = "telegram.chat.type"
TELEGRAM_CHAT_ID = "telegram.chat.id"
TELEGRAM_USER_ID = "telegram.user.id"
TELEGRAM_WEBHOOK_REPLY_METHOD = "telegram.webhook.reply_method"
TELEGRAM_USERS_WINDOW = "telegram.users.window"

# Runtime
CPYTHON_GC_GENERATION = "cpython.gc.generation"
PROCESS_CPU_MODE = "cpu.mode"
PROCESS_MEMORY_TYPE = "otelbot.memory.type"

# Agent
OTELBOT_COLLECTOR = "otelbot.collector"

# Well-known values
DB_SYSTEM_POSTGRESQL = "postgresql"
DB_SYSTEM_REDIS = "redis"
CACHE_HIT = "hit"
CACHE_MISS = "miss"
CONNECTION_STATE_IDLE = "idle"
CONNECTION_STATE_USED = "used"

# --------------------------------------------------------------------------- spans

SPAN_TELEGRAM_UPDATE = "telegram.update"  # "telegram.update {type}"
SPAN_TELEGRAM_API = "telegram.api"  # "telegram.api {method}"
SPAN_TELEGRAM_JOB = "telegram.job"  # "telegram.job {callback}"
SPAN_EVENT_FLOOD_WAIT = "telegram.flood_wait"
SPAN_EVENT_FINDING = "otelbot.finding"  # on the example update's span
SPAN_REDIS_PIPELINE = "PIPELINE"

# Redaction placeholder for a bot token: /bot123456:REDACTED/sendMessage
TOKEN_PLACEHOLDER = "REDACTED"
TELEGRAM_URL_TEMPLATE = "/bot{token}/{method}"
TELEGRAM_FILE_URL_TEMPLATE = "/file/bot{token}/{file_path}"


@dataclass(frozen=True)
class Span:
    name: str
    kind: str
    description: str
    attributes: tuple[str, ...]
    source: str


SPANS: tuple[Span, ...] = (
    Span(
        "telegram.update {type}",
        "SERVER (a root: polling, and updates PTB or telebot take from their own queue or "
        "webhook server) / INTERNAL (a child of the webhook's server span)",
        "One Telegram update, from arrival to the end of its handler.",
        (
            TELEGRAM_UPDATE_TYPE,
            TELEGRAM_INGRESS,
            TELEGRAM_BOT_ID,
            TELEGRAM_CHAT_TYPE,
            TELEGRAM_HANDLER,
            TELEGRAM_UPDATE_OUTCOME,
            ERROR_TYPE,
            TELEGRAM_WEBHOOK_REPLY_METHOD,
            TELEGRAM_UPDATE_ID,
            TELEGRAM_CHAT_ID,
            TELEGRAM_USER_ID,
        ),
        "otelbot_aiogram, otelbot_ptb, otelbot_telebot",
    ),
    Span(
        "telegram.api {method}",
        "CLIENT",
        "One Bot API call, with the HTTP details on the same span. getUpdates is not traced "
        "unless OTELBOT_TRACE_GET_UPDATES=true.",
        (
            TELEGRAM_API_METHOD,
            TELEGRAM_BOT_ID,
            TELEGRAM_API_ERROR_CODE,
            TELEGRAM_API_RETRY_AFTER,
            HTTP_REQUEST_METHOD,
            HTTP_RESPONSE_STATUS_CODE,
            URL_FULL,
            URL_TEMPLATE,
            SERVER_ADDRESS,
            SERVER_PORT,
            ERROR_TYPE,
        ),
        "otelbot_aiohttp_client, otelbot_httpx, otelbot_aiogram, otelbot_ptb, otelbot_telebot",
    ),
    Span(
        "{METHOD}",
        "CLIENT",
        "Any other aiohttp or httpx client request.",
        (
            HTTP_REQUEST_METHOD,
            HTTP_RESPONSE_STATUS_CODE,
            URL_FULL,
            SERVER_ADDRESS,
            SERVER_PORT,
            ERROR_TYPE,
        ),
        "otelbot_aiohttp_client, otelbot_httpx",
    ),
    Span(
        "telegram.job {callback}",
        "INTERNAL (root)",
        "One run of a python-telegram-bot JobQueue job, named by its callback's qualified "
        "name: a trace of its own, with the job's SQL, Redis and Bot API calls under it.",
        (TELEGRAM_HANDLER, ERROR_TYPE),
        "otelbot_ptb",
    ),
    Span(
        "{METHOD} {route}",
        "SERVER",
        "An aiohttp server request (webhooks); honours an incoming traceparent.",
        (
            HTTP_REQUEST_METHOD,
            HTTP_ROUTE,
            HTTP_RESPONSE_STATUS_CODE,
            URL_PATH,
            URL_SCHEME,
            SERVER_ADDRESS,
            SERVER_PORT,
            USER_AGENT_ORIGINAL,
            ERROR_TYPE,
        ),
        "otelbot_aiohttp_server",
    ),
    Span(
        "{operation} {table}",
        "CLIENT",
        "One asyncpg operation (execute, executemany, fetch*, cursor, prepared statement), "
        "e.g. `SELECT users`.",
        (
            DB_SYSTEM_NAME,
            DB_NAMESPACE,
            DB_OPERATION_NAME,
            DB_COLLECTION_NAME,
            DB_QUERY_TEXT,
            DB_OPERATION_BATCH_SIZE,
            SERVER_ADDRESS,
            SERVER_PORT,
            DB_RESPONSE_STATUS_CODE,
            ERROR_TYPE,
        ),
        "otelbot_asyncpg",
    ),
    Span(
        "{COMMAND}",
        "CLIENT",
        "One Redis command (`GET`), or `PIPELINE` for a pipeline; arguments are never recorded. "
        "A cache read (GET, MGET, HGET, ...) has its result (hit or miss) and its key's shape "
        "(variable parts as `?`), each when all its keys share it.",
        (
            DB_SYSTEM_NAME,
            DB_NAMESPACE,
            DB_OPERATION_NAME,
            DB_QUERY_TEXT,
            DB_OPERATION_BATCH_SIZE,
            CACHE_RESULT,
            CACHE_KEY_SHAPE,
            SERVER_ADDRESS,
            SERVER_PORT,
            ERROR_TYPE,
        ),
        "otelbot_redis",
    ),
)

# --------------------------------------------------------------------------- metrics

# Bucket boundaries in seconds, for latencies from sub-millisecond Redis calls to
# multi-second updates.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# Flood-wait retry_after values are whole seconds, up to hours.
RETRY_AFTER_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# GC pauses and loop lag: microseconds to seconds.
PAUSE_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


@dataclass(frozen=True)
class Metric:
    """One metric: its name, instrument kind, unit and the attributes it may carry."""

    name: str
    instrument: str  # counter | histogram | updowncounter | gauge | observable_counter | ...
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    source: str = "instrumentation"
    buckets: tuple[float, ...] | None = field(default=None)


# Bot (otelbot_aiogram, otelbot_aiohttp_client)
TELEGRAM_UPDATES = Metric(
    "telegram.updates",
    "counter",
    "{update}",
    "Updates processed; an update no handler took counts under the handler `unhandled`.",
    (TELEGRAM_UPDATE_TYPE, TELEGRAM_HANDLER, TELEGRAM_INGRESS, TELEGRAM_UPDATE_OUTCOME, ERROR_TYPE),
)
TELEGRAM_UPDATE_DURATION = Metric(
    "telegram.update.duration",
    "histogram",
    "s",
    "Time from an update's arrival to the end of its handling, per handler (the bot's own "
    "handler names: bounded by its code; `unhandled` when no handler took the update).",
    (TELEGRAM_UPDATE_TYPE, TELEGRAM_HANDLER, TELEGRAM_UPDATE_OUTCOME),
    buckets=DURATION_BUCKETS,
)
TELEGRAM_UPDATES_ACTIVE = Metric(
    "telegram.updates.active",
    "updowncounter",
    "{update}",
    "Updates being handled right now (catches unbounded task pile-ups).",
    (TELEGRAM_UPDATE_TYPE,),
)
TELEGRAM_API_DURATION = Metric(
    "telegram.api.duration",
    "histogram",
    "s",
    "Duration of Bot API calls.",
    (TELEGRAM_API_METHOD, TELEGRAM_API_ERROR_CODE, ERROR_TYPE),
    buckets=DURATION_BUCKETS,
)
TELEGRAM_API_FLOOD_WAITS = Metric(
    "telegram.api.flood_waits",
    "counter",
    "{wait}",
    "Bot API calls refused with 429 Too Many Requests (flood control).",
    (TELEGRAM_API_METHOD,),
)
TELEGRAM_API_RETRY_AFTER_METRIC = Metric(
    "telegram.api.retry_after",
    "histogram",
    "s",
    "retry_after asked for by the Bot API on a flood wait.",
    (TELEGRAM_API_METHOD,),
    buckets=RETRY_AFTER_BUCKETS,
)
TELEGRAM_USERS_ACTIVE = Metric(
    "telegram.users.active",
    "gauge",
    "{user}",
    "Distinct users seen in the window, estimated with a fixed-size sketch (no ids kept).",
    (TELEGRAM_USERS_WINDOW,),
)

# HTTP (otelbot_aiohttp_client, otelbot_aiohttp_server)
HTTP_CLIENT_REQUEST_DURATION = Metric(
    "http.client.request.duration",
    "histogram",
    "s",
    "Duration of HTTP client requests.",
    (
        HTTP_REQUEST_METHOD,
        HTTP_RESPONSE_STATUS_CODE,
        SERVER_ADDRESS,
        SERVER_PORT,
        URL_TEMPLATE,
        ERROR_TYPE,
    ),
    buckets=DURATION_BUCKETS,
)
HTTP_SERVER_REQUEST_DURATION = Metric(
    "http.server.request.duration",
    "histogram",
    "s",
    "Duration of HTTP server requests.",
    (HTTP_REQUEST_METHOD, HTTP_ROUTE, HTTP_RESPONSE_STATUS_CODE, URL_SCHEME, ERROR_TYPE),
    buckets=DURATION_BUCKETS,
)
HTTP_SERVER_ACTIVE_REQUESTS = Metric(
    "http.server.active_requests",
    "updowncounter",
    "{request}",
    "HTTP server requests being handled.",
    (HTTP_REQUEST_METHOD, URL_SCHEME),
)

# Database and cache (otelbot_asyncpg, otelbot_redis)
DB_CLIENT_OPERATION_DURATION = Metric(
    "db.client.operation.duration",
    "histogram",
    "s",
    "Duration of database client operations.",
    (
        DB_SYSTEM_NAME,
        DB_NAMESPACE,
        DB_OPERATION_NAME,
        DB_COLLECTION_NAME,
        SERVER_ADDRESS,
        SERVER_PORT,
        DB_RESPONSE_STATUS_CODE,
        ERROR_TYPE,
    ),
    buckets=DURATION_BUCKETS,
)
DB_CLIENT_CONNECTION_COUNT = Metric(
    "db.client.connection.count",
    "observable_updowncounter",
    "{connection}",
    "Connections in the pool, by state (idle, used).",
    (DB_CLIENT_CONNECTION_POOL_NAME, DB_CLIENT_CONNECTION_STATE),
)
DB_CLIENT_CONNECTION_MAX = Metric(
    "db.client.connection.max",
    "observable_updowncounter",
    "{connection}",
    "Largest number of connections the pool allows.",
    (DB_CLIENT_CONNECTION_POOL_NAME,),
)
DB_CLIENT_CONNECTION_PENDING_REQUESTS = Metric(
    "db.client.connection.pending_requests",
    "updowncounter",
    "{request}",
    "Callers waiting for a pool connection.",
    (DB_CLIENT_CONNECTION_POOL_NAME,),
)
DB_CLIENT_CONNECTION_WAIT_TIME = Metric(
    "db.client.connection.wait_time",
    "histogram",
    "s",
    "Time it took to get a connection from the pool.",
    (DB_CLIENT_CONNECTION_POOL_NAME,),
    buckets=DURATION_BUCKETS,
)
OTELBOT_CACHE_REQUESTS = Metric(
    "otelbot.cache.requests",
    "counter",
    "{request}",
    "Cache reads by result: a read that returns nothing is a miss; multi-key reads count per key.",
    (DB_SYSTEM_NAME, DB_OPERATION_NAME, CACHE_RESULT),
)

# Runtime (otelbot_runtime)
CPYTHON_GC_COLLECTIONS = Metric(
    "cpython.gc.collections",
    "observable_counter",
    "{collection}",
    "Garbage collections run, per generation.",
    (CPYTHON_GC_GENERATION,),
)
CPYTHON_GC_COLLECTED_OBJECTS = Metric(
    "cpython.gc.collected_objects",
    "observable_counter",
    "{object}",
    "Objects collected by the garbage collector, per generation.",
    (CPYTHON_GC_GENERATION,),
)
CPYTHON_GC_UNCOLLECTABLE_OBJECTS = Metric(
    "cpython.gc.uncollectable_objects",
    "observable_counter",
    "{object}",
    "Objects the garbage collector found but could not free, per generation.",
    (CPYTHON_GC_GENERATION,),
)
OTELBOT_GC_PAUSE_DURATION = Metric(
    "otelbot.gc.pause.duration",
    "histogram",
    "s",
    "How long each garbage collection stopped the bot (measured with gc.callbacks).",
    (CPYTHON_GC_GENERATION,),
    buckets=PAUSE_BUCKETS,
)
OTELBOT_ASYNCIO_LOOP_LAG = Metric(
    "otelbot.asyncio.loop.lag",
    "histogram",
    "s",
    "How late a periodic event-loop callback ran: time the loop was blocked.",
    buckets=PAUSE_BUCKETS,
)
OTELBOT_ASYNCIO_TASKS = Metric(
    "otelbot.asyncio.tasks",
    "gauge",
    "{task}",
    "asyncio tasks alive on the bot's loop.",
)
PROCESS_MEMORY_USAGE = Metric(
    "process.memory.usage",
    "observable_updowncounter",
    "By",
    "Resident memory of the bot process.",
    source="instrumentation, agent",
)
PROCESS_MEMORY_VIRTUAL = Metric(
    "process.memory.virtual",
    "observable_updowncounter",
    "By",
    "Virtual memory of the bot process.",
    source="instrumentation, agent",
)
PROCESS_CPU_TIME = Metric(
    "process.cpu.time",
    "observable_counter",
    "s",
    "CPU time of the bot process.",
    (PROCESS_CPU_MODE,),
    source="instrumentation, agent",
)
PROCESS_THREAD_COUNT = Metric(
    "process.thread.count",
    "observable_updowncounter",
    "{thread}",
    "Threads of the bot process.",
    source="instrumentation, agent",
)
PROCESS_OPEN_FILE_DESCRIPTOR_COUNT = Metric(
    "process.unix.file_descriptor.count",
    "observable_updowncounter",
    "{file_descriptor}",
    "Open file descriptors of the bot process.",
    source="instrumentation, agent",
)

# --------------------------------------------------------------------------- agent metrics
# (otelbot.agent collectors register theirs below)

OTELBOT_AGENT_COLLECT_DURATION = Metric(
    "otelbot.agent.collect.duration",
    "histogram",
    "s",
    "Duration of one collector run.",
    (OTELBOT_COLLECTOR,),
    source="agent",
    buckets=DURATION_BUCKETS,
)
OTELBOT_AGENT_COLLECT_ERRORS = Metric(
    "otelbot.agent.collect.errors",
    "counter",
    "{error}",
    "Collector runs that failed.",
    (OTELBOT_COLLECTOR, ERROR_TYPE),
    source="agent",
)

# Agent attributes
POSTGRESQL_INDEX_NAME = "postgresql.index.name"
POSTGRESQL_BACKEND_STATE = "postgresql.backend.state"
POSTGRESQL_APPLICATION_NAME = "postgresql.application.name"
POSTGRESQL_ROW_STATE = "postgresql.row.state"  # live | dead
POSTGRESQL_MAINTENANCE_MODE = "postgresql.maintenance.mode"  # manual | auto
POSTGRESQL_QUERY_ID = "postgresql.query.id"
PROCESS_PID = "process.pid"
PROCESS_CONTEXT_SWITCH_TYPE = "process.context_switch.type"  # voluntary | involuntary
OTELBOT_SIGNAL = "otelbot.signal"  # metrics | logs
FINDING_OBJECT = "otelbot.finding.object"
FINDING_EVIDENCE = "otelbot.finding.evidence"
FINDING_SUGGESTION = "otelbot.finding.suggestion"
PROFILE_STACKS = "otelbot.profile.stacks"  # collapsed stacks of the hot code finding's handler

# Agent findings: OTel log records carrying these event names.
EVENT_UNUSED_INDEX = "otelbot.postgresql.unused_index"
EVENT_DUPLICATE_INDEX = "otelbot.postgresql.duplicate_index"
EVENT_INVALID_INDEX = "otelbot.postgresql.invalid_index"
EVENT_MISSING_INDEX = "otelbot.postgresql.missing_index"
EVENT_IDLE_IN_TRANSACTION = "otelbot.postgresql.idle_in_transaction"
EVENT_BOT_FROZEN = "otelbot.bot.frozen"

OTELBOT_AGENT_EXPORT_FAILED = Metric(
    "otelbot.agent.export.failed",
    "counter",
    "{item}",
    "Data points or log records the agent could not deliver to the OTLP endpoint (counted loss).",
    (OTELBOT_SIGNAL,),
    source="agent",
)

OTELBOT_FINDINGS = Metric(
    "otelbot.findings",
    "counter",
    "{finding}",
    "Findings sent (each also a log record): one per (kind, handler, object) and interval. "
    "`otelbot.finding.kind` is the finding's event name; agent findings have no handler.",
    (FINDING_KIND, TELEGRAM_HANDLER),
    source="instrumentation, agent",
)
OTELBOT_PROFILE_SAMPLES = Metric(
    "otelbot.profile.samples",
    "counter",
    "{sample}",
    "Samples of the event loop thread's stack (`OTELBOT_PROFILE_HZ` a second) per owner and "
    "function: `telegram.handler` is the handler whose step was running, or `idle` (the loop "
    "waiting), `otelbot` (otelbot's and OpenTelemetry's own code) or `(loop)` (anything else "
    "on the loop: polling, dispatch, unsampled updates, background tasks); "
    "`code.function.name` is the innermost function of the bot's own code (the library "
    "calls it made count for it), else the library's package in parentheses. The 10 "
    "functions with the most samples of each owner are named, the rest are `(other)`.",
    (TELEGRAM_HANDLER, CODE_FUNCTION_NAME),
)

_PG = (SERVER_ADDRESS, SERVER_PORT, DB_NAMESPACE)
_PG_TABLE = (*_PG, DB_COLLECTION_NAME)
_PG_INDEX = (*_PG_TABLE, POSTGRESQL_INDEX_NAME)
_REDIS = (SERVER_ADDRESS, SERVER_PORT)

# Process collector (process.* above, plus)
PROCESS_CONTEXT_SWITCHES = Metric(
    "process.context_switches",
    "observable_counter",
    "{context_switch}",
    "Context switches of the bot process.",
    (PROCESS_CONTEXT_SWITCH_TYPE,),
    source="agent",
)
PROCESS_UPTIME = Metric(
    "process.uptime",
    "observable_gauge",
    "s",
    "Time since the bot process started.",
    source="agent",
)

# Runtime collector (reads the bot's stats file; cpython.gc.*, otelbot.asyncio.tasks and
# telegram.updates.active above carry process.pid when the agent reports them)
OTELBOT_GC_PAUSE_TIME = Metric(
    "otelbot.gc.pause.time",
    "observable_counter",
    "s",
    "Total time garbage collections stopped the bot.",
    (CPYTHON_GC_GENERATION, PROCESS_PID),
    source="agent",
)
OTELBOT_GC_PAUSE_MAX = Metric(
    "otelbot.gc.pause.max",
    "observable_gauge",
    "s",
    "Longest garbage-collection pause.",
    (CPYTHON_GC_GENERATION, PROCESS_PID),
    source="agent",
)
OTELBOT_ASYNCIO_LOOP_LAG_LAST = Metric(
    "otelbot.asyncio.loop.lag.last",
    "observable_gauge",
    "s",
    "Event-loop lag measured at the bot's last tick.",
    (PROCESS_PID,),
    source="agent",
)
OTELBOT_ASYNCIO_LOOP_LAG_MAX = Metric(
    "otelbot.asyncio.loop.lag.max",
    "observable_gauge",
    "s",
    "Longest event-loop lag since the bot started.",
    (PROCESS_PID,),
    source="agent",
)
OTELBOT_BOT_UPDATES_HANDLED = Metric(
    "otelbot.bot.updates.handled",
    "observable_counter",
    "{update}",
    "Updates the bot has handled since it started.",
    (PROCESS_PID,),
    source="agent",
)
OTELBOT_BOT_HEARTBEAT_AGE = Metric(
    "otelbot.bot.heartbeat.age",
    "observable_gauge",
    "s",
    "Seconds since the bot last wrote its stats file; a large value means a frozen bot.",
    (PROCESS_PID,),
    source="agent",
)

# PostgreSQL collector: names of the OpenTelemetry Collector postgresqlreceiver where it has one
POSTGRESQL_UP = Metric(
    "postgresql.up",
    "observable_gauge",
    "1",
    "1 when the database answered the last poll, else 0.",
    (*_PG, ERROR_TYPE),
    source="agent",
)
POSTGRESQL_DB_SIZE = Metric(
    "postgresql.db_size",
    "observable_updowncounter",
    "By",
    "Database size.",
    _PG,
    source="agent",
)
POSTGRESQL_COMMITS = Metric(
    "postgresql.commits",
    "observable_counter",
    "{commit}",
    "Committed transactions.",
    _PG,
    source="agent",
)
POSTGRESQL_ROLLBACKS = Metric(
    "postgresql.rollbacks",
    "observable_counter",
    "{rollback}",
    "Rolled-back transactions.",
    _PG,
    source="agent",
)
POSTGRESQL_BLKS_HIT = Metric(
    "postgresql.blks_hit",
    "observable_counter",
    "{block}",
    "Block reads served from the buffer cache (cache hit ratio = hit / (hit + read)).",
    _PG,
    source="agent",
)
POSTGRESQL_BLKS_READ = Metric(
    "postgresql.blks_read",
    "observable_counter",
    "{block}",
    "Block reads that missed the cache.",
    _PG,
    source="agent",
)
POSTGRESQL_DEADLOCKS = Metric(
    "postgresql.deadlocks",
    "observable_counter",
    "{deadlock}",
    "Deadlocks detected.",
    _PG,
    source="agent",
)
POSTGRESQL_TEMP_FILES = Metric(
    "postgresql.temp_files",
    "observable_counter",
    "{file}",
    "Temporary files written by queries (work_mem too small).",
    _PG,
    source="agent",
)
POSTGRESQL_TEMP_IO = Metric(
    "postgresql.temp.io",
    "observable_counter",
    "By",
    "Bytes written to temporary files.",
    _PG,
    source="agent",
)
POSTGRESQL_CONFLICTS = Metric(
    "postgresql.conflicts",
    "observable_counter",
    "{query}",
    "Queries cancelled by recovery conflicts (standbys).",
    _PG,
    source="agent",
)
POSTGRESQL_DATABASE_XID_AGE = Metric(
    "postgresql.database.xid_age",
    "observable_gauge",
    "{transaction}",
    "Age of the database's oldest unfrozen transaction id (wraparound risk).",
    _PG,
    source="agent",
)
POSTGRESQL_BACKENDS = Metric(
    "postgresql.backends",
    "observable_updowncounter",
    "{connection}",
    "Connections to the database by state and application_name (top applications, rest as "
    "`(other)`).",
    (*_PG, POSTGRESQL_BACKEND_STATE, POSTGRESQL_APPLICATION_NAME),
    source="agent",
)
POSTGRESQL_CONNECTION_MAX = Metric(
    "postgresql.connection.max",
    "observable_updowncounter",
    "{connection}",
    "max_connections of the server.",
    _PG,
    source="agent",
)
POSTGRESQL_IDLE_IN_TRANSACTION_MAX = Metric(
    "postgresql.idle_in_transaction.max_duration",
    "observable_gauge",
    "s",
    "Longest time a session has been idle inside an open transaction.",
    _PG,
    source="agent",
)
POSTGRESQL_TRANSACTION_MAX = Metric(
    "postgresql.transaction.max_duration",
    "observable_gauge",
    "s",
    "Age of the oldest open transaction.",
    _PG,
    source="agent",
)
POSTGRESQL_LOCKS_WAITING = Metric(
    "postgresql.locks.waiting",
    "observable_gauge",
    "{lock}",
    "Lock requests not yet granted.",
    _PG,
    source="agent",
)
POSTGRESQL_TABLE_COUNT = Metric(
    "postgresql.table.count",
    "observable_updowncounter",
    "{table}",
    "User tables.",
    _PG,
    source="agent",
)
POSTGRESQL_TABLE_SIZE = Metric(
    "postgresql.table.size",
    "observable_updowncounter",
    "By",
    "Table size with TOAST and indexes (top tables, rest as `(other)`).",
    _PG_TABLE,
    source="agent",
)
POSTGRESQL_SEQUENTIAL_SCANS = Metric(
    "postgresql.sequential_scans",
    "observable_counter",
    "{sequential_scan}",
    "Sequential scans of the table.",
    _PG_TABLE,
    source="agent",
)
POSTGRESQL_SEQUENTIAL_SCANS_ROWS = Metric(
    "postgresql.sequential_scans.rows_read",
    "observable_counter",
    "{row}",
    "Rows read by sequential scans of the table.",
    _PG_TABLE,
    source="agent",
)
POSTGRESQL_TABLE_INDEX_SCANS = Metric(
    "postgresql.table.index_scans",
    "observable_counter",
    "{scan}",
    "Index scans on the table, all its indexes together.",
    _PG_TABLE,
    source="agent",
)
POSTGRESQL_ROWS = Metric(
    "postgresql.rows",
    "observable_updowncounter",
    "{row}",
    "Live and dead rows of the table.",
    (*_PG_TABLE, POSTGRESQL_ROW_STATE),
    source="agent",
)
POSTGRESQL_TABLE_VACUUM_COUNT = Metric(
    "postgresql.table.vacuum.count",
    "observable_counter",
    "{vacuum}",
    "Vacuums of the table, manual or by autovacuum.",
    (*_PG_TABLE, POSTGRESQL_MAINTENANCE_MODE),
    source="agent",
)
POSTGRESQL_TABLE_ANALYZE_COUNT = Metric(
    "postgresql.table.analyze.count",
    "observable_counter",
    "{analyze}",
    "Analyzes of the table, manual or by autovacuum.",
    (*_PG_TABLE, POSTGRESQL_MAINTENANCE_MODE),
    source="agent",
)
POSTGRESQL_TABLE_VACUUM_AGE = Metric(
    "postgresql.table.vacuum.age",
    "observable_gauge",
    "s",
    "Time since the table was last vacuumed (either mode); absent when never.",
    _PG_TABLE,
    source="agent",
)
POSTGRESQL_TABLE_ANALYZE_AGE = Metric(
    "postgresql.table.analyze.age",
    "observable_gauge",
    "s",
    "Time since the table was last analyzed (either mode); absent when never.",
    _PG_TABLE,
    source="agent",
)
POSTGRESQL_INDEX_COUNT = Metric(
    "postgresql.index.count",
    "observable_updowncounter",
    "{index}",
    "User indexes.",
    _PG,
    source="agent",
)
POSTGRESQL_INDEX_SCANS = Metric(
    "postgresql.index.scans",
    "observable_counter",
    "{scan}",
    "Scans of the index (top indexes, rest as `(other)`).",
    _PG_INDEX,
    source="agent",
)
POSTGRESQL_INDEX_SIZE = Metric(
    "postgresql.index.size",
    "observable_updowncounter",
    "By",
    "Index size.",
    _PG_INDEX,
    source="agent",
)
POSTGRESQL_INDEX_TUPLES_READ = Metric(
    "postgresql.index.tuples_read",
    "observable_counter",
    "{tuple}",
    "Index entries returned by scans of the index.",
    _PG_INDEX,
    source="agent",
)
POSTGRESQL_INDEX_TUPLES_FETCHED = Metric(
    "postgresql.index.tuples_fetched",
    "observable_counter",
    "{tuple}",
    "Live table rows fetched by simple index scans of the index.",
    _PG_INDEX,
    source="agent",
)
_PG_STATEMENT = (*_PG, POSTGRESQL_QUERY_ID, DB_QUERY_TEXT)
POSTGRESQL_STATEMENT_CALLS = Metric(
    "postgresql.statement.calls",
    "observable_counter",
    "{call}",
    "Calls of a top statement from pg_stat_statements (normalized text, `$n` placeholders).",
    _PG_STATEMENT,
    source="agent",
)
POSTGRESQL_STATEMENT_TIME = Metric(
    "postgresql.statement.time",
    "observable_counter",
    "s",
    "Total execution time of a top statement.",
    _PG_STATEMENT,
    source="agent",
)
POSTGRESQL_STATEMENT_MEAN_TIME = Metric(
    "postgresql.statement.mean_time",
    "observable_gauge",
    "s",
    "Mean execution time of a top statement.",
    _PG_STATEMENT,
    source="agent",
)
POSTGRESQL_STATEMENT_ROWS = Metric(
    "postgresql.statement.rows",
    "observable_counter",
    "{row}",
    "Rows returned or affected by a top statement.",
    _PG_STATEMENT,
    source="agent",
)

# Redis collector: names of the OpenTelemetry Collector redisreceiver where it has one
REDIS_UP = Metric(
    "redis.up",
    "observable_gauge",
    "1",
    "1 when Redis answered the last poll, else 0.",
    (*_REDIS, ERROR_TYPE),
    source="agent",
)
REDIS_MEMORY_USED = Metric(
    "redis.memory.used",
    "observable_gauge",
    "By",
    "Memory allocated by Redis.",
    _REDIS,
    source="agent",
)
REDIS_MEMORY_RSS = Metric(
    "redis.memory.rss",
    "observable_gauge",
    "By",
    "Resident memory of the Redis process.",
    _REDIS,
    source="agent",
)
REDIS_MEMORY_PEAK = Metric(
    "redis.memory.peak",
    "observable_gauge",
    "By",
    "Peak memory allocated by Redis.",
    _REDIS,
    source="agent",
)
REDIS_MEMORY_FRAGMENTATION_RATIO = Metric(
    "redis.memory.fragmentation_ratio",
    "observable_gauge",
    "1",
    "Resident memory / allocated memory.",
    _REDIS,
    source="agent",
)
REDIS_MAXMEMORY = Metric(
    "redis.maxmemory",
    "observable_gauge",
    "By",
    "maxmemory setting (0 = no limit).",
    _REDIS,
    source="agent",
)
REDIS_CLIENTS_CONNECTED = Metric(
    "redis.clients.connected",
    "observable_updowncounter",
    "{client}",
    "Connected clients.",
    _REDIS,
    source="agent",
)
REDIS_CLIENTS_BLOCKED = Metric(
    "redis.clients.blocked",
    "observable_updowncounter",
    "{client}",
    "Clients blocked in a blocking call.",
    _REDIS,
    source="agent",
)
REDIS_COMMANDS_PROCESSED = Metric(
    "redis.commands.processed",
    "observable_counter",
    "{command}",
    "Commands processed.",
    _REDIS,
    source="agent",
)
REDIS_CONNECTIONS_RECEIVED = Metric(
    "redis.connections.received",
    "observable_counter",
    "{connection}",
    "Connections accepted.",
    _REDIS,
    source="agent",
)
REDIS_CONNECTIONS_REJECTED = Metric(
    "redis.connections.rejected",
    "observable_counter",
    "{connection}",
    "Connections rejected (maxclients).",
    _REDIS,
    source="agent",
)
REDIS_KEYSPACE_HITS = Metric(
    "redis.keyspace.hits",
    "observable_counter",
    "{hit}",
    "Key lookups that found the key.",
    _REDIS,
    source="agent",
)
REDIS_KEYSPACE_MISSES = Metric(
    "redis.keyspace.misses",
    "observable_counter",
    "{miss}",
    "Key lookups that missed.",
    _REDIS,
    source="agent",
)
REDIS_KEYS_EVICTED = Metric(
    "redis.keys.evicted",
    "observable_counter",
    "{key}",
    "Keys evicted by maxmemory.",
    _REDIS,
    source="agent",
)
REDIS_KEYS_EXPIRED = Metric(
    "redis.keys.expired",
    "observable_counter",
    "{key}",
    "Keys expired.",
    _REDIS,
    source="agent",
)
REDIS_DB_KEYS = Metric(
    "redis.db.keys",
    "observable_gauge",
    "{key}",
    "Keys in the logical database.",
    (*_REDIS, DB_NAMESPACE),
    source="agent",
)
REDIS_DB_EXPIRES = Metric(
    "redis.db.expires",
    "observable_gauge",
    "{key}",
    "Keys with a TTL in the logical database.",
    (*_REDIS, DB_NAMESPACE),
    source="agent",
)
REDIS_SLOWLOG_LENGTH = Metric(
    "redis.slowlog.length",
    "observable_gauge",
    "{entry}",
    "Entries in the slow log.",
    _REDIS,
    source="agent",
)
REDIS_UPTIME = Metric(
    "redis.uptime",
    "observable_counter",
    "s",
    "Time since the Redis server started.",
    _REDIS,
    source="agent",
)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Setting:
    """An ``OTELBOT_*`` variable that tunes a detector."""

    name: str
    default: str
    meaning: str


@dataclass(frozen=True)
class Finding:
    """One kind of finding: what it means, when it fires and how to tune it.

    ``docs/findings.md`` is generated from these (``python -m otelbot.semconv findings``).
    """

    event: str  # the log record's event name, also otelbot.finding.kind
    title: str
    source: str  # bot | agent
    threshold: str
    evidence: str
    suggestion: str
    settings: tuple[Setting, ...] = ()


#: Turns every bot-side detector off (the agent has its own switches in agent.yaml).
FINDINGS_SETTING = Setting(
    "OTELBOT_FINDINGS", "on", "`off` turns every detector in the bot off (nothing is collected)."
)
FINDINGS_INTERVAL_SETTING = Setting(
    "OTELBOT_FINDINGS_INTERVAL",
    "300",
    "Seconds: the same finding (kind, handler, object) is sent at most once per interval.",
)

EVENT_N_PLUS_ONE = "otelbot.bot.n_plus_one"
EVENT_TRANSACTION_HELD_OPEN = "otelbot.bot.transaction_held_open"
EVENT_CACHE_RARELY_HITS = "otelbot.bot.cache_rarely_hits"
EVENT_POOL_STARVATION = "otelbot.bot.pool_starvation"
EVENT_SLOW_HANDLER = "otelbot.bot.slow_handler"
EVENT_BLOCKED_LOOP = "otelbot.bot.blocked_loop"
EVENT_FLOOD_WAIT = "otelbot.bot.flood_wait"
EVENT_MEMORY_GROWTH = "otelbot.bot.memory_growth"
EVENT_HOT_CODE = "otelbot.bot.hot_code"

FINDINGS: tuple[Finding, ...] = (
    # The agent's (otelbot-agent); their settings are agent.yaml keys, each also an
    # OTELBOT_AGENT_* variable (postgresql.unused_index_window is
    # OTELBOT_AGENT_POSTGRESQL__UNUSED_INDEX_WINDOW). Every one is re-sent at most once per
    # `intervals.advice`.
    Finding(
        EVENT_UNUSED_INDEX,
        "An index nothing reads",
        "agent",
        "a valid index that is not unique, not a primary key and backs no constraint had no "
        "scan for `postgresql.unused_index_window`. The agent keeps, per index, when it first "
        "saw it and when its scan counter last moved in `state_file`, so an agent restart or a "
        "statistics reset (`pg_stat_reset*`, a crash) does not make a used index unused. "
        "Checked every `intervals.advice`.",
        "the index, its table, how long it went without a scan against the window, its scans "
        "since the last statistics reset and its size.",
        "`DROP INDEX CONCURRENTLY schema.index;` (it costs its size and slows every write); "
        "the agent never runs it.",
        (
            Setting(
                "postgresql.unused_index_window",
                "7d",
                "How long an index must go without a scan; `0` reports never-used at once.",
            ),
            Setting("intervals.advice", "1h", "How often index findings are looked for."),
        ),
    ),
    Finding(
        EVENT_DUPLICATE_INDEX,
        "An index another index covers",
        "agent",
        "another valid index on the same table (same method, expressions, predicate, "
        "operator classes and collations) starts with all of this index's columns; a unique "
        "index is only a duplicate of an identical unique one, an index backing a constraint "
        "is never reported, and of two identical indexes one is. Read from the catalogs "
        "only (no lock), every `intervals.advice`.",
        "the index and its columns, the index covering it and its columns, the table.",
        "`DROP INDEX CONCURRENTLY schema.index;`",
        (Setting("intervals.advice", "1h", "How often index findings are looked for."),),
    ),
    Finding(
        EVENT_INVALID_INDEX,
        "An invalid index left by a failed build",
        "agent",
        "an index's `indisvalid` is false: a `CREATE INDEX CONCURRENTLY` or `REINDEX "
        "CONCURRENTLY` failed and left it behind; writes maintain it, queries never use it. "
        "Checked every `intervals.advice`.",
        "the index and its table.",
        "`REINDEX INDEX CONCURRENTLY schema.index;`, or drop it when it is not needed.",
        (Setting("intervals.advice", "1h", "How often index findings are looked for."),),
    ),
    Finding(
        EVENT_MISSING_INDEX,
        "A table read by sequential scans (missing index)",
        "agent",
        "a table has at least `postgresql.missing_index_min_seq_scans` sequential scans, holds "
        "and reads per scan at least `postgresql.missing_index_min_rows` rows, and has more "
        "sequential than index scans (the 20 reading the most rows). The column comes from "
        "the statements filtering the table: from `pg_stat_statements` when it is installed "
        "and loaded, else from the statements the agent saw in `pg_stat_activity` at its "
        "polls (kept per table, bounded, without their values); when none is known yet, "
        "the advice poll reads `pg_stat_activity` 20 more times over a second, since a "
        "pool's reset query hides a session's last statement between uses. Only columns "
        "the table has and that lead no valid index count; the one filtered by the most calls (or "
        "sightings) leads, ties going to an equality over a range, then to the more selective "
        "(distinct values from `pg_stats`, when the agent's role may read the table), and "
        "the busiest statement's "
        "other equality columns AND-ed with it, then one range column, follow it. Checked "
        "every `intervals.advice`.",
        "sequential scans, rows read (per scan) and live rows against index scans; the "
        "column, how many statements filter on it and their calls or sightings, why it was "
        "chosen over the next column; the busiest of those statements in `db.query.text` "
        "(normalized: `$n` and `?` instead of values).",
        "`CREATE INDEX CONCURRENTLY ON schema.table (column);`, or several columns when one "
        "WHERE clause AND-s them; when no statement filtering the table is known, "
        "`(<column in the WHERE clause>)` and EXPLAIN the slow query to find it.",
        (
            Setting(
                "postgresql.missing_index_min_seq_scans",
                "100",
                "Sequential scans of a table before it is judged.",
            ),
            Setting(
                "postgresql.missing_index_min_rows",
                "10000",
                "Rows a table must hold and each of its sequential scans read on average.",
            ),
            Setting("intervals.advice", "1h", "How often index findings are looked for."),
        ),
    ),
    Finding(
        EVENT_IDLE_IN_TRANSACTION,
        "A session idle inside an open transaction",
        "agent",
        "a session of the database has been idle inside an open transaction for longer than "
        "`postgresql.idle_in_transaction_after` (at most 10 per poll, the oldest first). "
        "Checked every `intervals.fast`.",
        "the backend pid, its user and `application_name` (also as "
        "`postgresql.application.name`), how long it has been idle; it holds its locks and "
        "keeps vacuum from cleaning up.",
        "`SELECT pg_terminate_backend(pid);` and fix the code path that leaves the "
        "transaction open, or set `idle_in_transaction_session_timeout`.",
        (
            Setting(
                "postgresql.idle_in_transaction_after",
                "60s",
                "How long a session may sit idle inside a transaction.",
            ),
            Setting("intervals.fast", "15s", "How often sessions are looked at."),
        ),
    ),
    Finding(
        EVENT_BOT_FROZEN,
        "A frozen bot (stale heartbeat)",
        "agent",
        "the heartbeat in the bot's runtime stats file (`OTELBOT_RUNTIME_DIR`) is older than "
        "`runtime.frozen_after` while the bot's process still exists: its event loop has not "
        "ticked since. Checked every `intervals.fast`.",
        "the pid (`process.pid`), the heartbeat's age against the bot's tick interval and "
        "the threshold, updates in flight and the last loop lag.",
        "`py-spy dump --pid N` shows where the loop is blocked; restart the bot if it does "
        "not recover.",
        (
            Setting(
                "runtime.frozen_after",
                "10s",
                "Heartbeat age that makes a bot frozen.",
            ),
            Setting("intervals.fast", "15s", "How often the stats files are read."),
        ),
    ),
    Finding(
        EVENT_FLOOD_WAIT,
        "Telegram's flood control (429)",
        "bot",
        "a Bot API call of the handler is refused with 429 Too Many Requests "
        "(at least `OTELBOT_FLOOD_MIN` in one update).",
        "the Bot API method, how many calls of it were refused in the example update and "
        "since the bot started, the largest `retry_after`, and the line of the bot's code "
        "that made the call.",
        "send through a queue that keeps to Telegram's limits (about 1 message per second "
        "per chat, 20 per minute per group, 30 per second overall) instead of a burst; "
        "honour `retry_after` before retrying.",
        (Setting("OTELBOT_FLOOD_MIN", "1", "429 answers in one update that make a finding."),),
    ),
    Finding(
        EVENT_MEMORY_GROWTH,
        "Memory keeps growing, and the line that holds it",
        "bot",
        "resident memory grew by `OTELBOT_MEMORY_GROWTH_MB` over the last "
        "`OTELBOT_MEMORY_WINDOW` seconds, in at least three of the window's quarters (a "
        "rise that levels off does not count); then allocations are traced with "
        "`tracemalloc` for `OTELBOT_MEMORY_TRACE_SECONDS`, and one line of the bot's own "
        "code holds at least half of the traced growth, grew in both halves of the traced "
        "window, at a quarter of the threshold's rate or more. Short-lived garbage and a "
        "cache filled once make no finding.",
        "resident memory growth in MB and MB/min, and the line's growth while traced (MB, "
        "blocks, share of the traced growth); the line, its function and the handler it "
        "ran in (also when called from the handler). Only sizes and code locations are "
        "recorded, never the objects.",
        "keep the structure that holds these objects bounded (`collections.deque(maxlen=...)`, "
        "an LRU or TTL cache, a size check) or drop the references once they are no longer "
        "needed.",
        (
            Setting(
                "OTELBOT_MEMORY_GROWTH_MB",
                "10",
                "Megabytes of resident-memory growth over the window that start a traced "
                "window; `0` turns this detector off.",
            ),
            Setting(
                "OTELBOT_MEMORY_WINDOW",
                "600",
                "Seconds of memory samples judged (one sample every window/40 s, at most "
                "every 15 s).",
            ),
            Setting(
                "OTELBOT_MEMORY_TRACE_SECONDS",
                "10",
                "Seconds tracemalloc traces allocations (10 frames) once growth is seen "
                "(a quiet bot longer, up to 10x, so that about 15 sampled updates fall in "
                "it); allocation is slower meanwhile. The next traced window waits a "
                "window, then twice as long each time, up to an hour.",
            ),
            Setting(
                "OTELBOT_MEMORY_SIGNAL",
                "SIGUSR2",
                "A signal that traces one window now, whatever the growth so far "
                "(`kill -USR2 <pid>`; a line is named by the same rules, at 10 KB/s or more, "
                "and the outcome is logged on the `otelbot.findings` logger). Installed when "
                "the first sampled update starts the memory watch, only from the main thread "
                "and only if the bot has no handler of its own for it; `off`: none.",
            ),
        ),
    ),
    Finding(
        EVENT_BLOCKED_LOOP,
        "A handler or task blocks the event loop",
        "bot",
        "one step of an async handler (the code it runs between two awaits) held the event "
        "loop at least `OTELBOT_BLOCKING_MS`; every other update stalls meanwhile. Sync "
        "handlers run in a thread and are not judged. A block anywhere else (a background "
        "task, a middleware or filter, the framework's own code, a python-telegram-bot "
        "job, an update head sampling left out, any handler of `AsyncTeleBot`, whose "
        "handlers are not step-timed) is found by the loop heartbeat: a "
        "`loop.call_later` callback every half threshold (asyncio or uvloop) that a watcher "
        "thread checks; it came back at least the threshold late, two reads of the loop "
        "thread's stack during the block found one callback running on, and what is left "
        "after the garbage collector's pauses (`gc.callbacks`) and the timed handler steps "
        "in it (judged as above, never twice) still reaches the threshold. Such a finding "
        "has no trace (no update owns the block); its handler is the bot function the loop "
        "or the library called (the handler of an unsampled update, the coroutine function "
        "of a task, a job's callback), `(outside handlers)` when the stack held no bot code.",
        "for a handler step: the longest step and the handler's whole time on the loop in "
        "the example update, how many of the handler's timed updates blocked, and the line "
        "of the bot's code that held the loop (read from the loop thread's stack while the "
        "step ran; when the step ended before that, the await it ended at; else the "
        "handler). For a block the heartbeat found: how late the beat came (a lower bound "
        "of the block, at most half the threshold short), the innermost line of the bot's "
        "code on the stack and the call it was making (`render_report (bot.py:35) → "
        "time.sleep`), or with no bot frame the library's package and function "
        "(`(aiogram)`), the running task's coroutine, and the garbage collection and timed "
        "steps taken off.",
        "move blocking calls (`time.sleep`, `requests`, file or sync database I/O) to "
        "`asyncio.to_thread` or an executor, use an async client instead, or split CPU work "
        "into chunks with an `await asyncio.sleep(0)` between them.",
        (
            Setting(
                "OTELBOT_BLOCKING_MS",
                "100",
                "Milliseconds one step may hold the loop (and any other code, for the loop "
                "heartbeat, which beats every half of it); steps of a tenth of it count as "
                "stalling other updates (see the slow handler finding). "
                "`OTELBOT_BLOCKED_LOOP_THRESHOLD` is the same setting under another name "
                "(used when `OTELBOT_BLOCKING_MS` is not set).",
            ),
        ),
    ),
    Finding(
        EVENT_HOT_CODE,
        "A handler's own code dominates its latency (hot code)",
        "bot",
        "the low-rate profiler's on-CPU samples of the handler's steps (samples times their "
        "interval: its own code and the library calls it makes on the loop, not otelbot's; "
        "a sample is on CPU when the loop thread ran, or was ready to run, for at least a "
        "quarter of the wall time since the previous sample, so time in `time.sleep`, "
        "blocking I/O or a lock is waiting, not hot code: that is the blocked-loop "
        "finding's) reach "
        "`OTELBOT_HOT_CODE_SHARE` of its sampled updates' total time (less the time other "
        "updates' long steps stalled them, as for slow handlers) and "
        "`OTELBOT_HOT_CODE_MS` per update on average, over at least 5 sampled updates and "
        "10 samples. Judged every `OTELBOT_PROFILE_INTERVAL` seconds on what was sampled "
        "since the handler was last judged. The thread's CPU time is read from "
        "`/proc/self/task/<tid>/schedstat` on Linux, else from its CPU clock "
        "(`time.pthread_getcpuclockid`; then a thread the machine's load keeps off the CPU "
        "counts as waiting); where neither can be read (macOS, Windows) every sample counts "
        "as on CPU.",
        "the handler's own CPU time on the loop per update and its share of the update time, "
        "the number of updates and samples (on CPU and waiting), and its hottest lines of "
        "the bot's code by on-CPU samples, lines that were mostly waiting left out (function, "
        "file:line, the library or built-in call the line was making, share of the "
        "handler's samples on CPU there); the hottest line is the finding's `code.*`. The "
        f"attribute `{PROFILE_STACKS}` holds the handler's stacks of the bot's frames as "
        "collapsed-stack text (`handler;outer (file:line);inner (file:line);→ call count` a "
        "line, at most 8 KB) for a flame graph tool. The profile of every handler, not only "
        "a flagged one, is in the `otelbot.profile.samples` metric.",
        "make the named lines cheaper (a better algorithm, caching or precomputing the "
        "result), or move the work off the loop (`asyncio.to_thread` for code that releases "
        "the GIL, a `ProcessPoolExecutor` for pure-Python CPU work), or cut it into chunks "
        "with an `await asyncio.sleep(0)` between them so other updates can run.",
        (
            Setting(
                "OTELBOT_PROFILE_HZ",
                "67",
                "Samples a second of the event loop thread's stack (taken by the step "
                "watcher thread while findings are on); `0` turns the profiler, its metric "
                "and this finding off.",
            ),
            Setting(
                "OTELBOT_PROFILE_INTERVAL",
                "60",
                "Seconds between two exports of the profile (metric) and two judgements of "
                "hot code.",
            ),
            Setting(
                "OTELBOT_HOT_CODE_SHARE",
                "0.5",
                "Share (0 to 1) of the handler's update time its own code must take.",
            ),
            Setting(
                "OTELBOT_HOT_CODE_MS",
                "20",
                "Milliseconds of own CPU time on the loop per update, on average, below which a "
                "handler is not judged hot however small its waits are.",
            ),
        ),
    ),
    Finding(
        EVENT_SLOW_HANDLER,
        "A slow handler, and where its time goes",
        "bot",
        "the p95 duration of the handler's last 100 sampled updates, less the time other "
        "updates' long steps (a tenth of `OTELBOT_BLOCKING_MS` or more) held the loop during "
        "each, and less the time it waited for a loop busy with other updates, reaches "
        "`OTELBOT_SLOW_HANDLER_MS` over at least `OTELBOT_SLOW_HANDLER_MIN_UPDATES` updates. "
        "The wait for a busy loop is measured on asyncio's selector loops (not uvloop) from "
        "the loop's time outside `select()`: each of the update's steps waited about one mean "
        "loop iteration, or, when the loop ran other code for 80% or more of the time the "
        "update was not running (the process at its CPU limit), all its untraced waits did: "
        "a healthy handler is not named slow because the bot is saturated.",
        "the p95, the slow updates' time split into the handler's own code on the loop, SQL "
        "(the statement), Redis (the command), the Bot API (the method), pool waits, other "
        "HTTP (the host) and untraced waits, the dominant one named; time other updates "
        "stalled it, and time it waited for the busy loop, are said apart and not held "
        "against it. Overlapping operations count "
        "once, by precedence: pool wait, SQL, Redis, Bot API, HTTP, then own code.",
        "depends on the dominant cause: EXPLAIN the statement and index or rewrite it; "
        "cache what rarely changes; send slow Bot API calls in the background and re-send "
        "files by `file_id` instead of uploading them again; a larger pool or shorter "
        "holds; profile and offload the handler's own code.",
        (
            Setting(
                "OTELBOT_SLOW_HANDLER_MS",
                "1000",
                "Milliseconds: a handler whose p95 reaches this is slow.",
            ),
            Setting(
                "OTELBOT_SLOW_HANDLER_MIN_UPDATES",
                "20",
                "Sampled updates of a handler before its p95 is judged (with fewer, a p95 is "
                "only the slowest update: one cold start or one busy second would name a "
                "healthy handler).",
            ),
        ),
    ),
    Finding(
        EVENT_N_PLUS_ONE,
        "The same statement repeated in one update (N+1)",
        "bot",
        "one update runs the same SQL statement (by its sanitized text), the same Redis "
        "command shape (`GET ?`) or the same Bot API method at least "
        "`OTELBOT_N_PLUS_ONE_MIN` times, usually from a loop. Transaction control "
        "(BEGIN, COMMIT, ...) is not counted.",
        "the statement (`db.query.text`, `db.collection.name` for SQL; the method for the "
        "Bot API), how many times the example update ran it, the time those runs took and "
        "their share of the update's time, and the line of the bot's code that issued it.",
        "SQL: one query for all items (`WHERE id = ANY($1)` or a JOIN; `executemany` or "
        "`unnest` for writes). Redis: `MGET`/`HMGET` or one pipeline. Bot API: a send "
        "queue with rate limiting instead of a loop of calls.",
        (
            Setting(
                "OTELBOT_N_PLUS_ONE_MIN",
                "5",
                "Runs of one statement shape in one update that make a finding (at least 2).",
            ),
        ),
    ),
    Finding(
        EVENT_TRANSACTION_HELD_OPEN,
        "A transaction held open across a non-database wait",
        "bot",
        "between BEGIN and COMMIT/ROLLBACK on one connection the handler awaited a Bot API "
        "call or another HTTP call (any, however fast: Telegram can take seconds or ask to "
        "retry later), or spent more than `OTELBOT_TRANSACTION_IDLE_MS` without a "
        "statement on that connection. A call running alongside the transaction (not "
        "between two of its statements) does not count.",
        "how long the transaction was held open, what was awaited inside it (Bot API "
        "methods, HTTP hosts, the longest gap without database work), the first table it "
        "touched, and the handler's code.",
        "finish the transaction first: do the database work, COMMIT, then call Telegram "
        "or the other service (or call first and open the transaction with the answer). "
        "Meanwhile it holds its row locks and its pool connection.",
        (
            Setting(
                "OTELBOT_TRANSACTION_IDLE_MS",
                "100",
                "Milliseconds without a statement inside a transaction that make a finding. "
                "A statement round trip takes about 1 ms on one host and a few on a LAN, "
                "so 100 ms is a wait, not the bot's own work between statements; lower "
                "values start to catch event-loop scheduling delays under load.",
            ),
        ),
    ),
    Finding(
        EVENT_POOL_STARVATION,
        "Updates wait for an asyncpg pool connection",
        "bot",
        "an update waited at least `OTELBOT_POOL_WAIT_MS` for a pool connection and either "
        "that wait reached `OTELBOT_POOL_WAIT_MAX_MS`, or the p95 of the pool's last "
        "acquire waits (sampled updates, up to 512 within 60 s) reached "
        "`OTELBOT_POOL_WAIT_MS` over at least `OTELBOT_POOL_WAIT_MIN` acquires.",
        "the pool (`db.client.connection.pool.name`), the p95 and longest acquire wait, how "
        "many acquires waited, the pool's max_size, and the handlers holding connections "
        "the most (total time from acquire to release): holds, mean and longest hold, and "
        "the line of the bot's code that gave back the longest hold.",
        "hold a connection only for the queries: no Bot API or HTTP calls and no long "
        "transactions while it is held, and use `pool.fetch*` / `pool.execute` directly "
        "instead of keeping `acquire()` across other awaits; or raise max_size, within the "
        "server's `max_connections`.",
        (
            Setting(
                "OTELBOT_POOL_WAIT_MS",
                "100",
                "Milliseconds: an acquire wait this long is slow; the p95 of the recent "
                "waits reaching it makes a finding.",
            ),
            Setting(
                "OTELBOT_POOL_WAIT_MAX_MS",
                "1000",
                "Milliseconds: one acquire wait this long makes a finding on its own.",
            ),
            Setting(
                "OTELBOT_POOL_WAIT_MIN",
                "20",
                "Recent acquires needed before their p95 is judged.",
            ),
        ),
    ),
    Finding(
        EVENT_CACHE_RARELY_HITS,
        "A cache that rarely hits",
        "bot",
        "fewer than `OTELBOT_CACHE_MIN_HIT_RATIO` of a handler's Redis reads of one key "
        "shape hit, over at least `OTELBOT_CACHE_MIN_READS` reads, and the handler writes "
        "keys of that shape after at least a quarter of its misses (it uses them as a "
        "cache). Key shapes keep the key's words and turn ids, numbers, timestamps, UUIDs, "
        "hex strings and e-mail addresses into `?` (`price:?:?`); raw keys are never "
        "recorded. Keys only ever read, aiogram's FSM keys (`fsm:...`) and shapes beyond "
        "the first 1,000 (`(other)`) are not judged.",
        "reads, hits and hit ratio of the key shape; after how many misses the handler "
        "wrote a key of the same shape and ran SQL (a cache-aside whose entries are never "
        "read back); the TTL written with it (`SET ... EX`, `SETEX`, `EXPIRE`); the hit "
        "ratio of the handler's other key shapes and of the whole bot.",
        "build the key only from what identifies the cached data: a part that changes on "
        "every call (a timestamp, a random id, a counter) makes every read a miss; if the "
        "key is stable, its entries expire before they are read again: keep them longer, "
        "or stop caching this data.",
        (
            Setting(
                "OTELBOT_CACHE_MIN_HIT_RATIO",
                "0.10",
                "Hit ratio (0 to 1) under which a key shape's reads make a finding.",
            ),
            Setting(
                "OTELBOT_CACHE_MIN_READS",
                "50",
                "Reads of a (handler, key shape) before its hit ratio is judged.",
            ),
        ),
    ),
)


def all_findings() -> tuple[Finding, ...]:
    return FINDINGS


def finding(event: str) -> Finding:
    for f in FINDINGS:
        if f.event == event:
            return f
    raise KeyError(event)


def all_metrics() -> list[Metric]:
    """Every metric in the catalogue, in declaration order."""
    return [v for v in globals().values() if isinstance(v, Metric)]


def metric_names() -> set[str]:
    return {m.name for m in all_metrics()}


def render_markdown() -> str:
    """docs/metrics.md, generated from this module."""
    out = [
        "# Metrics and spans",
        "",
        "Generated from `otelbot/semconv.py` by `python -m otelbot.semconv`; do not edit by hand.",
        "",
        "## Spans",
        "",
        "| span name | kind | what it is | attributes | emitted by |",
        "|---|---|---|---|---|",
    ]
    for s in SPANS:
        attrs = ", ".join(f"`{a}`" for a in s.attributes)
        out.append(f"| `{s.name}` | {s.kind} | {s.description} | {attrs} | {s.source} |")
    out += [
        "",
        "## Metrics",
        "",
        "| metric | instrument | unit | what it is | attributes | emitted by |",
        "|---|---|---|---|---|---|",
    ]
    for m in all_metrics():
        attrs = ", ".join(f"`{a}`" for a in m.attributes) or "—"
        out.append(
            f"| `{m.name}` | {m.instrument} | `{m.unit}` | {m.description} | {attrs} | {m.source} |"
        )
    out.append("")
    return "\n".join(out)


def render_findings_markdown() -> str:
    """docs/findings.md, generated from this module."""
    out = [
        "# Findings",
        "",
        "Generated from `otelbot/semconv.py` by `python -m otelbot.semconv findings`; do not "
        "edit by hand.",
        "",
        "A finding is an OTel log record (severity WARN) whose event name says what was "
        "found, with `otelbot.finding.object`, `otelbot.finding.evidence` and "
        "`otelbot.finding.suggestion`, plus `telegram.handler`, `code.*`, "
        "`db.collection.name` and `db.query.text` where they apply. A bot-side finding "
        "carries the trace and span id of one example update and is also an "
        f"`{SPAN_EVENT_FINDING}` event on that update's span. Each is counted in "
        f"`{OTELBOT_FINDINGS.name}`. See docs/configuration.md for where they go.",
        "",
        "## Where the detectors run, and what sampling costs them",
        "",
        "In the bot's process, at the end of each sampled update, before its span ends: the "
        "instrumentations note one small tuple per SQL, Redis, Bot API, HTTP call and pool "
        "wait, and each detector reads them and keeps bounded per-handler counters. This "
        "place was chosen because the finding can then be an event on the example update's "
        "own span, it works whichever exporter is in use (the export helper, "
        "`otelbot_otlp` in the bot's process on one CPU, or none), and it costs little: "
        "`python -m bench.diagnosis` "
        "measures one sampled update with every detector (begin, three operations, end) at "
        "about 17 µs on this kind of machine, and `note()` outside a sampled update at "
        "0.2 µs. The export helper process sees the same spans, but only after the update "
        "ended and only when it is in use. Two parts run beside the updates, in one daemon "
        "thread each: the step watcher, which also checks the loop heartbeat and samples "
        "for the profiler (blocked loop, hot code), and the memory watch (growing memory).",
        "",
        "End to end, in one `make bench` run "
        '(docs/performance.md, "Against the goals of issue 18") a bot with no handler '
        "work kept 0.66 of bare's throughput on one CPU with findings on and 0.92 with "
        "`OTELBOT_FINDINGS=off`; in the next, findings on cost no more than off, and a "
        "per-part profile puts the detectors, the step timer and the watcher thread at "
        "about 124 µs per update, plus more garbage collection. On two CPUs with 1 ms of "
        "handler work and findings on, the two latest runs (bench/results/issue-16.md, "
        "runs E and F) gave full traces 0.86 and 0.85 of bare, 0.87 per round in both "
        "(the budget of issue 6: 0.85), and 10% sampling 0.94 and 0.97, 0.98 and 0.95 "
        "per round (budget 0.95); findings off gave 0.99 and 0.95 with full traces: "
        "findings cost about 290 µs of CPU per sampled update there, the whole of the "
        "budget's margin. Four earlier runs, before an update's notes shared the "
        "update's context variable, gave full traces 0.80-0.98. A bot at the limit of "
        "its CPU can turn findings off, or sample (`OTEL_TRACES_SAMPLER_ARG`).",
        "",
        "With head sampling (for example `OTEL_TRACES_SAMPLER=parentbased_traceidratio`, "
        "`OTEL_TRACES_SAMPLER_ARG=0.1`) the detectors see only the sampled updates, so a "
        "user loses this much: a problem that happens in every update of a handler (N+1, a "
        "transaction held open, a blocking step) is found on its first sampled update, "
        "about ten updates later at 10%; a problem that happens now and then (a flood wait, "
        "one slow upload) is found only if it falls on a sampled update; thresholds counted "
        "in updates or reads (50 cache reads, 20 updates for a slow handler, 20 acquires "
        "for pool waits) take ten times the traffic to reach. Growing memory does not "
        "depend on sampling; the profiler samples all the time, but only the steps of "
        "sampled updates are put to a handler (the rest count as `(loop)`). A blocked loop "
        "is found whether the update was sampled or not (the loop heartbeat), but only a "
        "sampled update's block carries its trace.",
        "",
        "Settings for every bot-side detector:",
        "",
    ]
    for s in (FINDINGS_SETTING, FINDINGS_INTERVAL_SETTING):
        out.append(f"- `{s.name}` (default `{s.default}`): {s.meaning}")
    for source, heading in (("bot", "From the bot"), ("agent", "From the agent")):
        out += ["", f"## {heading}", ""]
        for f in FINDINGS:
            if f.source != source:
                continue
            out += [
                f"### `{f.event}`: {f.title}",
                "",
                f"- **Fires when:** {f.threshold}",
                f"- **Evidence:** {f.evidence}",
                f"- **Suggestion:** {f.suggestion}",
            ]
            if f.settings:
                out.append("- **Settings:**")
                for s in f.settings:
                    out.append(f"  - `{s.name}` (default `{s.default}`): {s.meaning}")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["findings"]:
        sys.stdout.write(render_findings_markdown())
    else:
        sys.stdout.write(render_markdown())
