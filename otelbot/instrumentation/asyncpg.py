"""asyncpg: one CLIENT span and one ``db.client.operation.duration`` point per round trip.

    import asyncio

    import asyncpg

    from otelbot.instrumentation.asyncpg import AsyncpgInstrumentor

    AsyncpgInstrumentor().instrument()  # or: opentelemetry-instrument python bot.py


    async def main() -> None:
        pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:5432/test")
        print(await pool.fetchval("SELECT count(*) FROM pg_class WHERE relpages > $1", 10))
        await pool.close()


    asyncio.run(main())

That prints a number and records a ``SELECT pg_class`` span whose ``db.query.text`` is
``SELECT count(*) FROM pg_class WHERE relpages > $1``, plus the pool's
``db.client.connection.*`` metrics.

What is traced: ``Connection.execute / executemany / fetch / fetchrow / fetchval /
fetchmany`` (pools and ``pool.acquire()`` proxies forward to these, so a pool query is one
span), prepared statements (``PreparedStatement.fetch*`` / ``executemany``;
``explain()`` runs ``Connection.fetchval`` and is traced through it) and cursors (each
fetch of rows from the server). The queries asyncpg runs itself to reset a connection on
its way back to the pool are not traced.

For the findings (sampled updates only, see otelbot.diagnosis): each pool acquire's wait,
and when that connection goes back to the pool (``Pool.release``, which ``async with
pool.acquire()`` and ``pool.fetch*`` call), so the pool starvation detector knows how long
each handler holds one.

Spans are leaves: started with ``tracer.start_span`` under the current context (the
update's span) and never made current. Name, attributes and metric attributes are built
once per (server, database, query) and cached; a query's parameters are never recorded,
and neither are the values PostgreSQL quotes in its error messages nor the row values of
their DETAIL: not on the query's span, nor on any other span otelbot records the error on
(the update's, when a handler lets it through).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Iterable
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from otelbot.core import config
from otelbot.core.errors import (
    error_type,
    internal_error,
    record_exception,
    register_cleaner,
    unregister_cleaner,
)
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.lightspan import light_tracer
from otelbot.core.patching import OtelbotInstrumentor
from otelbot.core.sql import sanitize_error_message, summarize
from otelbot.diagnosis import notes
from otelbot.diagnosis.pool import PoolUse
from otelbot.semconv import (
    CONNECTION_STATE_IDLE,
    CONNECTION_STATE_USED,
    DB_CLIENT_CONNECTION_COUNT,
    DB_CLIENT_CONNECTION_MAX,
    DB_CLIENT_CONNECTION_PENDING_REQUESTS,
    DB_CLIENT_CONNECTION_POOL_NAME,
    DB_CLIENT_CONNECTION_STATE,
    DB_CLIENT_CONNECTION_WAIT_TIME,
    DB_CLIENT_OPERATION_DURATION,
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_BATCH_SIZE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_RESPONSE_STATUS_CODE,
    DB_SYSTEM_NAME,
    DB_SYSTEM_POSTGRESQL,
    ERROR_TYPE,
    SERVER_ADDRESS,
    SERVER_PORT,
)

__all__ = ["AsyncpgInstrumentor"]

#: Distinct query strings remembered per server and database (oldest dropped first).
STATEMENT_CACHE_SIZE = 2048
#: Connections taken during sampled updates and not yet given back, remembered at most.
_HOLDING_KEPT = 1024

_CLIENT = SpanKind.CLIENT
_perf_counter = time.perf_counter

# True while asyncpg resets a connection for its pool: those queries are the driver's own.
_housekeeping: ContextVar[bool] = ContextVar("otelbot_asyncpg_housekeeping", default=False)


class _Statement:
    """Everything recorded about one query that does not change between calls."""

    __slots__ = ("metric_attributes", "name", "operation", "shape", "span_attributes")

    def __init__(
        self,
        name: str,
        span_attributes: dict[str, Any],
        metric_attributes: dict[str, Any],
        shape: str = "",
    ) -> None:
        self.name = name
        self.span_attributes = span_attributes
        self.metric_attributes = metric_attributes
        # What the detectors group by: the sanitized text (the span name when query text
        # capture is off), and the operation (BEGIN, COMMIT, SELECT, ...).
        self.shape = shape or name
        self.operation = str(metric_attributes.get(DB_OPERATION_NAME) or "")


class _Target:
    """One server and database: the attributes shared by every query sent to it."""

    __slots__ = ("attributes", "statements")

    def __init__(self, addr: Any, database: str | None) -> None:
        attributes: dict[str, Any] = {DB_SYSTEM_NAME: DB_SYSTEM_POSTGRESQL}
        if database:
            attributes[DB_NAMESPACE] = database
        if isinstance(addr, tuple) and len(addr) >= 2:
            attributes[SERVER_ADDRESS] = str(addr[0])
            attributes[SERVER_PORT] = int(addr[1])
        elif isinstance(addr, str):  # a Unix socket path
            attributes[SERVER_ADDRESS] = addr
        self.attributes = attributes
        self.statements: dict[str, _Statement] = {}


def _build_statement(target: _Target, query: str, capture_text: bool) -> _Statement:
    """Span name and attribute sets of ``query`` sent to ``target`` (cache miss path)."""
    shape = summarize(query)
    metric_attributes = dict(target.attributes)
    if shape.operation is not None:
        metric_attributes[DB_OPERATION_NAME] = shape.operation
    if shape.collection is not None:
        metric_attributes[DB_COLLECTION_NAME] = shape.collection
    span_attributes = dict(metric_attributes)
    if capture_text:
        span_attributes[DB_QUERY_TEXT] = shape.text
    return _Statement(
        shape.span_name,
        span_attributes,
        metric_attributes,
        shape.text if capture_text else shape.span_name,
    )


def _error_message(exc: BaseException, postgres_error: type) -> str:
    """The exception's message without the values it may quote.

    A PostgreSQL error's DETAIL (``Key (id)=(7) already exists``) carries row values
    unquoted, so only the primary message is kept.
    """
    if isinstance(exc, postgres_error) and exc.args:
        return sanitize_error_message(str(exc.args[0]))
    return sanitize_error_message(str(exc))


def _cleaned_errors(asyncpg: Any) -> tuple[type[BaseException], ...]:
    # Errors from the server, and the driver's own (``invalid input for query argument $1:
    # 'value'`` is an InterfaceError).
    return (asyncpg.PostgresError, asyncpg.InterfaceError)


def _pool_name(pool: Any) -> str:
    """``host:port/database`` of a pool, from a live connection or its connect arguments."""
    for holder in pool._holders:
        con = holder._con
        if con is not None:
            addr, database = con._addr, con._params.database
            if isinstance(addr, tuple):
                return f"{addr[0]}:{addr[1]}/{database}"
            return f"{addr}/{database}"
    kwargs = pool._connect_kwargs or {}
    args = pool._connect_args or ()
    host, port, database = kwargs.get("host"), kwargs.get("port"), kwargs.get("database")
    dsn = args[0] if args else kwargs.get("dsn")
    if isinstance(dsn, str) and "://" in dsn:
        parts = urlsplit(dsn)  # hostname leaves any user:password@ out
        host = host or parts.hostname
        port = port or parts.port
        database = database or parts.path.lstrip("/") or None
    return f"{host or 'localhost'}:{port or 5432}/{database or ''}"


class _PoolInfo:
    __slots__ = ("attributes", "idle", "used")

    def __init__(self, name: str) -> None:
        self.attributes = {DB_CLIENT_CONNECTION_POOL_NAME: name}
        self.idle = {**self.attributes, DB_CLIENT_CONNECTION_STATE: CONNECTION_STATE_IDLE}
        self.used = {**self.attributes, DB_CLIENT_CONNECTION_STATE: CONNECTION_STATE_USED}


class _Telemetry:
    """The tracer, instruments and caches of one ``instrument()`` call."""

    def __init__(
        self, tracer: Tracer, meter: Any, capture_text: bool, postgres_error: type
    ) -> None:
        # Spans without the SDK's per-span cost: see lightspan.
        self.tracer = light_tracer(tracer)
        self.capture_text = capture_text
        self.postgres_error = postgres_error
        self.active = True
        self.targets: dict[Any, dict[Any, _Target]] = {}
        # Pools are keyed by their first connection holder: Pool has __slots__ and no
        # __weakref__, its holders do.
        self.pools: WeakKeyDictionary[Any, _PoolInfo] = WeakKeyDictionary()
        # Connections taken during a sampled update, by holder, until given back.
        self.holding: dict[Any, PoolUse] = {}
        self.duration = create_instrument(meter, DB_CLIENT_OPERATION_DURATION)
        self.pending = create_instrument(meter, DB_CLIENT_CONNECTION_PENDING_REQUESTS)
        self.wait_time = create_instrument(meter, DB_CLIENT_CONNECTION_WAIT_TIME)
        create_instrument(meter, DB_CLIENT_CONNECTION_COUNT, [self._observe_count])
        create_instrument(meter, DB_CLIENT_CONNECTION_MAX, [self._observe_max])

    # ------------------------------------------------------------------ queries

    def statement(self, conn: Any, query: Any) -> _Statement | None:
        """The cached statement for ``query`` on ``conn``; None for a non-string query."""
        if not isinstance(query, str):
            return None
        addr = conn._addr
        database = conn._params.database
        by_database = self.targets.get(addr)
        target = None if by_database is None else by_database.get(database)
        if target is None:
            target = _Target(addr, database)
            self.targets.setdefault(addr, {})[database] = target
        statements = target.statements
        statement = statements.get(query)
        if statement is None:
            statement = _build_statement(target, query, self.capture_text)
            if len(statements) >= STATEMENT_CACHE_SIZE:
                del statements[next(iter(statements))]
            statements[query] = statement
        return statement

    def succeeded(self, span: Span, statement: _Statement, duration: float) -> None:
        try:
            span.end()
            self.duration.record(duration, statement.metric_attributes)
        except Exception as exc:
            internal_error("asyncpg span end", exc)

    def failed(
        self, span: Span, statement: _Statement, duration: float, exc: BaseException
    ) -> None:
        try:
            kind = error_type(exc)
            sqlstate = (
                getattr(exc, "sqlstate", None) if isinstance(exc, self.postgres_error) else None
            )
            attributes = dict(statement.metric_attributes)
            attributes[ERROR_TYPE] = kind
            if sqlstate:
                attributes[DB_RESPONSE_STATUS_CODE] = sqlstate
            self.duration.record(duration, attributes)
            if span.is_recording():
                if sqlstate:
                    span.set_attribute(DB_RESPONSE_STATUS_CODE, sqlstate)
                if isinstance(exc, asyncio.CancelledError):
                    span.set_attribute(ERROR_TYPE, kind)
                    span.set_status(StatusCode.ERROR, "cancelled")
                else:
                    record_exception(span, exc, message=_error_message(exc, self.postgres_error))
        except Exception as internal:
            internal_error("asyncpg error recording", internal)
        finally:
            try:
                span.end()
            except Exception as internal:
                internal_error("asyncpg span end", internal)

    # ------------------------------------------------------------------ pools

    def pool_info(self, pool: Any) -> _PoolInfo | None:
        holders = pool._holders
        if not holders:
            return None
        info = self.pools.get(holders[0])
        if info is None:  # a pool created before instrument()
            info = self.pools[holders[0]] = _PoolInfo(_pool_name(pool))
            # The point exists from the start (at 0), whether or not a request ever waits.
            self.pending.add(0, info.attributes)
        return info

    def acquired(self, info: _PoolInfo, waited: float, pending: bool = True) -> None:
        try:
            if pending:
                self.pending.add(-1, info.attributes)
            self.wait_time.record(waited, info.attributes)
        except Exception as exc:
            internal_error("asyncpg pool acquire", exc)

    def _live_pools(self) -> list[tuple[Any, _PoolInfo]]:
        if not self.active:
            return []
        return [
            (holder._pool, info)
            for holder, info in list(self.pools.items())
            if not holder._pool.is_closing()
        ]

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        try:
            for pool, info in self._live_pools():
                size, idle = pool.get_size(), pool.get_idle_size()
                out.append(Observation(idle, info.idle))
                out.append(Observation(size - idle, info.used))
        except Exception as exc:
            internal_error("asyncpg pool connection count", exc)
        return out

    def _observe_max(self, options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        try:
            for pool, info in self._live_pools():
                out.append(Observation(pool.get_max_size(), info.attributes))
        except Exception as exc:
            internal_error("asyncpg pool connection max", exc)
        return out


# ------------------------------------------------------------------ wrappers


def _query_method(tel: _Telemetry, query_keyword: str | None, batch: bool) -> Callable[[Any], Any]:
    """Wrap a method that sends one query (or one batch) and waits for the answer.

    ``query_keyword`` names the Connection method's query parameter; None means the
    method belongs to a prepared statement or a cursor, which carries its query and
    connection. A batch's argument list is the positional argument after the query or
    ``args=``.
    """

    batch_index = 0 if query_keyword is None else 1

    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _housekeeping.get():
                return await original(self, *args, **kwargs)
            statement = None
            span: Any = None
            try:
                if query_keyword is None:
                    statement = tel.statement(self._connection, self._query)
                else:
                    query = args[0] if args else kwargs.get(query_keyword)
                    statement = tel.statement(self, query)
                if statement is not None:
                    span = tel.tracer.start_span(
                        statement.name, kind=_CLIENT, attributes=statement.span_attributes
                    )
                    if batch and span.is_recording():
                        rows: Any = (
                            args[batch_index] if len(args) > batch_index else kwargs.get("args")
                        )
                        # Only sized collections: an iterator must not be consumed here.
                        if hasattr(rows, "__len__") and len(rows) >= 2:
                            span.set_attribute(DB_OPERATION_BATCH_SIZE, len(rows))
            except Exception as exc:
                internal_error("asyncpg span start", exc)
                statement = None
                if span is not None:
                    span.end()
            if statement is None:
                return await original(self, *args, **kwargs)
            start = _perf_counter()
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                end = _perf_counter()
                tel.failed(span, statement, end - start, exc)
                if notes.noting():
                    _note_sql(self, query_keyword, statement, start, end)
                raise
            end = _perf_counter()
            tel.succeeded(span, statement, end - start)
            if notes.noting():
                _note_sql(self, query_keyword, statement, start, end)
            return result

        return traced

    return make


def _note_sql(
    owner: Any, query_keyword: str | None, statement: _Statement, start: float, end: float
) -> None:
    """One SQL round trip on the current update's notes: extra is (connection identity,
    operation, table)."""
    try:
        conn = owner if query_keyword is not None else owner._connection
        notes.note(
            notes.SQL,
            statement.shape,
            start,
            end,
            (id(conn), statement.operation, statement.metric_attributes.get(DB_COLLECTION_NAME)),
        )
    except Exception as exc:
        internal_error("asyncpg findings note", exc)


def _housekeeping_method(original: Any) -> Any:
    @functools.wraps(original)
    async def untraced(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _housekeeping.set(True)
        try:
            return await original(self, *args, **kwargs)
        finally:
            _housekeeping.reset(token)

    return untraced


def _pool_init(tel: _Telemetry) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def init(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original(self, *args, **kwargs)
            try:
                tel.pool_info(self)
            except Exception as exc:
                internal_error("asyncpg pool registration", exc)
            return result

        return init

    return make


def _connection_ready(pool: Any) -> bool:
    """Whether ``pool.acquire()`` gets a live idle connection without waiting (asyncpg's
    holder queue prefers live connections); False when unsure."""
    try:
        holders = pool._queue._queue
        for holder in reversed(holders):
            if holder.is_connected():
                return True
    except Exception:
        pass
    return False


def _pool_acquire(tel: _Telemetry) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
            info = None
            pending = True
            try:
                info = tel.pool_info(self)
                if info is not None:
                    # A request served at once by an idle live connection is never
                    # pending: its +1/-1 would cancel out, so both are skipped.
                    pending = not _connection_ready(self)
                    if pending:
                        tel.pending.add(1, info.attributes)
            except Exception as exc:
                internal_error("asyncpg pool acquire", exc)
                info = None
            if info is None:
                return await original(self, *args, **kwargs)
            start = _perf_counter()
            proxy = None
            try:
                proxy = await original(self, *args, **kwargs)
                return proxy
            finally:
                end = _perf_counter()
                tel.acquired(info, end - start, pending)
                if notes.noting():
                    _note_pool_wait(tel, self, info, proxy, start, end)

        return acquire

    return make


def _note_pool_wait(
    tel: _Telemetry, pool: Any, info: _PoolInfo, proxy: Any, start: float, end: float
) -> None:
    """The wait on the current update's notes; a connection it got is remembered by its
    holder until released (the hold time)."""
    try:
        use = PoolUse(
            info.attributes[DB_CLIENT_CONNECTION_POOL_NAME],
            getattr(pool, "_maxsize", None),
            end,
        )
        notes.note(notes.POOL_WAIT, use.pool, start, end, use)
        if proxy is not None:
            holding = tel.holding
            if len(holding) >= _HOLDING_KEPT:  # connections never given back: forget them
                holding.clear()
            holding[proxy._holder] = use
    except Exception as exc:
        internal_error("asyncpg findings note", exc)


def _pool_release(tel: _Telemetry) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def release(self: Any, connection: Any, *args: Any, **kwargs: Any) -> Any:
            if tel.holding:
                try:
                    use = tel.holding.pop(getattr(connection, "_holder", None), None)
                    if use is not None:
                        use.release(_perf_counter())
                except Exception as exc:
                    internal_error("asyncpg pool release", exc)
            return await original(self, connection, *args, **kwargs)

        return release

    return make


class AsyncpgInstrumentor(OtelbotInstrumentor):
    """Traces asyncpg queries and reports its pools (``otelbot_asyncpg`` entry point)."""

    _instruments: Collection[str] = ("asyncpg >= 0.28",)

    def __init__(self) -> None:
        super().__init__()
        self._telemetry: _Telemetry | None = None

    def _instrument(self, **kwargs: Any) -> None:
        import asyncpg
        import asyncpg.connection
        import asyncpg.cursor
        import asyncpg.pool
        import asyncpg.prepared_stmt

        tracer, meter = self.tracer_and_meter(**kwargs)
        postgres_error = asyncpg.PostgresError
        tel = _Telemetry(tracer, meter, config.capture_query_text(), postgres_error)
        self._telemetry = tel
        # The same cleaning wherever otelbot records asyncpg's errors (the update span).
        for kind in _cleaned_errors(asyncpg):
            register_cleaner(kind, lambda exc: _error_message(exc, postgres_error))
        wrap = self.patches.wrap

        connection = asyncpg.connection.Connection
        for name, query_keyword, batch in (
            ("execute", "query", False),
            ("executemany", "command", True),
            ("fetch", "query", False),
            ("fetchrow", "query", False),
            ("fetchval", "query", False),
            ("fetchmany", "query", True),  # asyncpg >= 0.30
        ):
            wrap(connection, name, _query_method(tel, query_keyword, batch))
        wrap(connection, "reset", _housekeeping_method)

        statement = asyncpg.prepared_stmt.PreparedStatement
        for name, batch in (
            ("fetch", False),
            ("fetchrow", False),
            ("fetchval", False),
            ("fetchmany", True),  # asyncpg >= 0.30
            ("executemany", True),
        ):
            wrap(statement, name, _query_method(tel, None, batch))

        # A cursor's round trips: bind + first rows, bind only, and each further fetch.
        for name in ("_bind_exec", "_bind", "_exec"):
            wrap(asyncpg.cursor.BaseCursor, name, _query_method(tel, None, False))

        pool = asyncpg.pool.Pool
        wrap(pool, "_async__init__", _pool_init(tel))
        wrap(pool, "_acquire", _pool_acquire(tel))
        wrap(pool, "release", _pool_release(tel))

    def _uninstrument(self, **kwargs: Any) -> None:
        import asyncpg

        for kind in _cleaned_errors(asyncpg):
            unregister_cleaner(kind)
        if self._telemetry is not None:
            self._telemetry.active = False  # its observable callbacks go quiet
            self._telemetry = None
        super()._uninstrument(**kwargs)
