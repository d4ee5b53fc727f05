"""Redis: one CLIENT span per command, one ``PIPELINE`` span per pipeline, cache hit/miss counts.

Usage::

    import redis

    from otelbot.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument()          # or let ``opentelemetry-instrument`` do it

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    client.set("greeting", "hello")           # span "SET", db.query.text "SET ? ?"
    client.get("greeting")                    # span "GET", otelbot.cache.requests{result=hit}
    with client.pipeline() as pipe:
        pipe.set("a", 1).get("a").execute()   # one span "PIPELINE", db.operation.batch.size 2

    RedisInstrumentor().uninstrument()

The sync client (``redis.Redis``) and ``redis.asyncio.Redis`` are both covered, from
redis-py 5 on. Keys and values are never recorded: the command text keeps the command
name and one ``?`` per argument, and a server error message is cut at its first quote
(``ERR unknown command 'x', with args beginning with: 'key'`` -> ``ERR unknown command``).

Spans are leaves: they are started with ``tracer.start_span`` under the current context
and never made current. Per-client attributes are built once per connection pool and
per-command ones once per (pool, command, argument count), so a command costs two dict
lookups before the span starts.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Collection
from time import perf_counter
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

from otelbot.core.config import capture_query_text
from otelbot.core.errors import error_type, record_exception
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.lightspan import light_tracer
from otelbot.core.patching import OtelbotInstrumentor, guarded_async, guarded_sync
from otelbot.semconv import (
    CACHE_HIT,
    CACHE_MISS,
    CACHE_RESULT,
    DB_CLIENT_OPERATION_DURATION,
    DB_NAMESPACE,
    DB_OPERATION_BATCH_SIZE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_SYSTEM_NAME,
    DB_SYSTEM_REDIS,
    ERROR_TYPE,
    OTELBOT_CACHE_REQUESTS,
    SERVER_ADDRESS,
    SERVER_PORT,
    SPAN_REDIS_PIPELINE,
)

# The attribute a connection pool carries its cached _Target in.
_POOL_ATTR = "_otelbot_redis_target"

_MAX_COMMANDS_PER_POOL = 512
_MAX_BATCHES_PER_POOL = 128
_MAX_ERROR_TYPES = 32
# Arguments shown as "?" in db.query.text; more are summarised by a trailing "…".
_MAX_ARGS_IN_TEXT = 32
# The argument count in the cache key is capped so MGET with 40 or 400 keys share an entry.
_MAX_ARGC_KEY = _MAX_ARGS_IN_TEXT + 2
_MAX_BATCH_TEXT = 2048

_UNKNOWN_COMMAND = "UNKNOWN"

# How a read's result tells a hit from a miss.
_SINGLE = 1  # None is a miss
_HASH = 2  # an empty reply is a miss
_MULTI = 3  # a list, one hit or miss per key; None entries are misses
_READS: dict[str, int] = {
    "GET": _SINGLE,
    "GETEX": _SINGLE,
    "GETDEL": _SINGLE,
    "HGET": _SINGLE,
    "LINDEX": _SINGLE,
    "ZSCORE": _SINGLE,
    "JSON.GET": _SINGLE,
    "HGETALL": _HASH,
    "MGET": _MULTI,
    "HMGET": _MULTI,
}

# Commands whose second word is a subcommand (``CLIENT SETNAME``); for any other command a
# second word in the same string is an argument and may be a key, so it becomes "?".
_CONTAINER_COMMANDS = frozenset(
    {
        "ACL",
        "CLIENT",
        "CLUSTER",
        "COMMAND",
        "CONFIG",
        "DEBUG",
        "FUNCTION",
        "LATENCY",
        "MEMORY",
        "MODULE",
        "OBJECT",
        "PUBSUB",
        "SCRIPT",
        "SLOWLOG",
        "XGROUP",
        "XINFO",
        "HIMPORT",
    }
)

_generations = itertools.count(1)


def _plausible_command(word: str) -> bool:
    return (
        0 < len(word) <= 32
        and word.isascii()
        and word.replace(".", "").replace("_", "").replace("-", "").isalnum()
    )


def _command_name(raw: Any) -> tuple[str, int]:
    """The command's name in upper case and how many argument words ``raw`` itself holds."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        text = bytes(raw).decode("latin-1")
    elif isinstance(raw, str):
        text = raw
    else:
        return _UNKNOWN_COMMAND, 0
    words = text.split()
    if not words or not _plausible_command(words[0]):
        return _UNKNOWN_COMMAND, max(len(words) - 1, 0)
    name = words[0].upper()
    used = 1
    if name in _CONTAINER_COMMANDS and len(words) > 1 and _plausible_command(words[1]):
        name = name + " " + words[1].upper()
        used = 2
    return name, len(words) - used


def _query_text(name: str, argc: int) -> str:
    if argc > _MAX_ARGS_IN_TEXT:
        return name + " ?" * _MAX_ARGS_IN_TEXT + " …"
    return name + " ?" * argc


def _safe_message(text: str) -> str:
    """An error message without anything the server echoed back from the command."""
    cut = len(text)
    for quote in ("'", '"'):
        at = text.find(quote)
        if 0 <= at < cut:
            cut = at
    if cut == len(text):
        return text
    return text[:cut].rstrip(" :,") + " …"


def _record_error(span: Any, exc: BaseException) -> None:
    """Record ``exc`` on a recording span without letting an echoed key or value through."""
    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute(ERROR_TYPE, error_type(exc))
        return
    text = str(exc)
    safe = _safe_message(text)
    if safe == text:
        record_exception(span, exc)
        return
    # The stack trace ends with str(exc): record a copy whose message is the safe one (and
    # which has no chained exceptions); the caller's exception is not touched.
    try:
        clone = copy.copy(exc)
        clone.args = (safe,)
        clone.__traceback__ = exc.__traceback__
        clean = str(clone) == safe
    except Exception:
        clean = False
    if clean:
        record_exception(span, clone, message=safe)
    else:
        span.set_attribute(ERROR_TYPE, error_type(exc))
        span.set_status(StatusCode.ERROR, safe)


class _Command:
    """Everything recorded for one (pool, command, argument count), built once."""

    __slots__ = (
        "error_attrs",
        "hit_attrs",
        "metric_attrs",
        "miss_attrs",
        "name",
        "query_text",
        "read",
        "span_attrs",
    )

    def __init__(self, target: _Target, name: str, argc: int, with_text: bool) -> None:
        self.name = name
        self.query_text = _query_text(name, argc)
        self.span_attrs: dict[str, Any] = dict(target.span_attrs)
        self.span_attrs[DB_OPERATION_NAME] = name
        if with_text:
            self.span_attrs[DB_QUERY_TEXT] = self.query_text
        self.metric_attrs: dict[str, Any] = dict(target.metric_attrs)
        self.metric_attrs[DB_OPERATION_NAME] = name
        self.error_attrs: dict[type, dict[str, Any]] = {}
        self.read = _READS.get(name)
        self.hit_attrs = {
            DB_SYSTEM_NAME: DB_SYSTEM_REDIS,
            DB_OPERATION_NAME: name,
            CACHE_RESULT: CACHE_HIT,
        }
        self.miss_attrs = {
            DB_SYSTEM_NAME: DB_SYSTEM_REDIS,
            DB_OPERATION_NAME: name,
            CACHE_RESULT: CACHE_MISS,
        }


class _Batch:
    """A pipeline's command sequence: its text and which of its results are cache reads."""

    __slots__ = ("query_text", "reads")

    def __init__(self, commands: tuple[_Command, ...]) -> None:
        parts: list[str] = []
        size = 0
        for command in commands:
            size += len(command.query_text) + 1
            if size > _MAX_BATCH_TEXT:
                parts.append("…")
                break
            parts.append(command.query_text)
        self.query_text = "\n".join(parts)
        self.reads = tuple(
            (i, command) for i, command in enumerate(commands) if command.read is not None
        )


class _Target:
    """One connection pool's server, with its command and pipeline caches."""

    __slots__ = (
        "batches",
        "commands",
        "generation",
        "metric_attrs",
        "pipeline",
        "span_attrs",
        "with_text",
    )

    def __init__(self, pool: Any, generation: int, with_text: bool) -> None:
        self.generation = generation
        self.with_text = with_text
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        attrs: dict[str, Any] = {
            DB_SYSTEM_NAME: DB_SYSTEM_REDIS,
            DB_NAMESPACE: str(kwargs.get("db", 0) or 0),
        }
        path = kwargs.get("path")
        host = kwargs.get("host")
        if path:
            attrs[SERVER_ADDRESS] = str(path)
        elif host:
            attrs[SERVER_ADDRESS] = str(host)
            port = kwargs.get("port")
            if port is not None:
                try:
                    attrs[SERVER_PORT] = int(port)
                except (TypeError, ValueError):
                    pass
        self.span_attrs = attrs
        self.metric_attrs = dict(attrs)
        self.commands: dict[tuple[Any, int], _Command] = {}
        self.batches: dict[tuple[_Command, ...], _Batch] = {}
        self.pipeline = _Command(self, SPAN_REDIS_PIPELINE, 0, False)

    def command(self, raw: Any, nargs: int) -> _Command:
        """The entry for a command sent as ``nargs`` items, ``raw`` being the first."""
        if nargs > _MAX_ARGC_KEY:
            nargs = _MAX_ARGC_KEY
        key = (raw, nargs)
        entry = self.commands.get(key)
        if entry is None:
            name, extra = _command_name(raw)
            entry = _Command(self, name, extra + nargs - 1, self.with_text)
            if len(self.commands) < _MAX_COMMANDS_PER_POOL:
                self.commands[key] = entry
        return entry

    def batch(self, commands: tuple[_Command, ...]) -> _Batch:
        batch = self.batches.get(commands)
        if batch is None:
            batch = _Batch(commands)
            if len(self.batches) < _MAX_BATCHES_PER_POOL:
                self.batches[commands] = batch
        return batch


class _Telemetry:
    """The tracer, instruments and settings of one ``instrument()`` call."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        # Spans without the SDK's per-span cost: see lightspan.
        self.tracer = light_tracer(tracer)
        self.duration = create_instrument(meter, DB_CLIENT_OPERATION_DURATION)
        self.cache_requests = create_instrument(meter, OTELBOT_CACHE_REQUESTS)
        self.generation = next(_generations)
        self.with_text = capture_query_text()

    def target(self, client: Any) -> _Target:
        pool = client.connection_pool
        target = getattr(pool, _POOL_ATTR, None)
        if target is None or target.generation != self.generation:
            target = _Target(pool, self.generation, self.with_text)
            try:
                setattr(pool, _POOL_ATTR, target)
            except Exception:  # a pool class with __slots__: no cache, still correct
                pass
        return target

    def start(self, command: _Command) -> Any:
        return self.tracer.start_span(
            command.name, kind=SpanKind.CLIENT, attributes=command.span_attrs
        )

    # succeeded / failed / pipeline_succeeded run inside guarded_async / guarded_sync, which
    # contain any error of theirs.
    def succeeded(self, command: _Command, span: Any, start: float, result: Any) -> None:
        duration = perf_counter() - start
        span.end()
        self.duration.record(duration, command.metric_attrs)
        if command.read is not None:
            self.count_read(command, result)

    def failed(self, command: _Command, span: Any, start: float, exc: BaseException) -> None:
        duration = perf_counter() - start
        if span.is_recording():
            _record_error(span, exc)
        span.end()
        attrs = command.error_attrs.get(type(exc))
        if attrs is None:
            attrs = dict(command.metric_attrs)
            attrs[ERROR_TYPE] = error_type(exc)
            if len(command.error_attrs) < _MAX_ERROR_TYPES:
                command.error_attrs[type(exc)] = attrs
        self.duration.record(duration, attrs)

    def count_read(self, command: _Command, result: Any) -> None:
        kind = command.read
        if isinstance(result, BaseException):  # a failed command inside a pipeline
            return
        if kind == _SINGLE:
            self.cache_requests.add(1, command.miss_attrs if result is None else command.hit_attrs)
        elif kind == _HASH:
            self.cache_requests.add(1, command.hit_attrs if result else command.miss_attrs)
        elif isinstance(result, (list, tuple)):
            misses = sum(1 for value in result if value is None)
            hits = len(result) - misses
            if hits:
                self.cache_requests.add(hits, command.hit_attrs)
            if misses:
                self.cache_requests.add(misses, command.miss_attrs)

    def start_pipeline(self, pipe: Any, stack: Any) -> tuple[_Target, Any, tuple[_Command, ...]]:
        target = self.target(pipe)
        commands = tuple(target.command(args[0], len(args)) for args, _options in stack)
        span = self.start(target.pipeline)
        if span.is_recording():
            span.set_attribute(DB_OPERATION_BATCH_SIZE, len(commands))
            if self.with_text:
                span.set_attribute(DB_QUERY_TEXT, target.batch(commands).query_text)
        return target, span, commands

    def pipeline_succeeded(
        self,
        target: _Target,
        span: Any,
        start: float,
        commands: tuple[_Command, ...],
        results: Any,
    ) -> None:
        duration = perf_counter() - start
        span.end()
        self.duration.record(duration, target.pipeline.metric_attrs)
        reads = target.batch(commands).reads
        if reads and isinstance(results, list) and len(results) == len(commands):
            for index, command in reads:
                self.count_read(command, results[index])


def _command_hooks(telemetry: _Telemetry) -> tuple[Any, Any]:
    def begin(client: Any, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        command = telemetry.target(client).command(args[0], len(args))
        return command, telemetry.start(command), perf_counter()

    def end(state: Any, result: Any, exc: BaseException | None) -> None:
        command, span, start = state
        if exc is None:
            telemetry.succeeded(command, span, start, result)
        else:
            telemetry.failed(command, span, start, exc)

    return begin, end


def _pipeline_hooks(telemetry: _Telemetry) -> tuple[Any, Any]:
    def begin(pipeline: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        stack = getattr(pipeline, "command_stack", None)
        if not stack:
            return None  # nothing queued: nothing is sent
        target, span, commands = telemetry.start_pipeline(pipeline, stack)
        return target, span, commands, perf_counter()

    def end(state: Any, results: Any, exc: BaseException | None) -> None:
        if state is None:
            return
        target, span, commands, start = state
        if exc is None:
            telemetry.pipeline_succeeded(target, span, start, commands, results)
        else:
            telemetry.failed(target.pipeline, span, start, exc)

    return begin, end


def _sync_command(original: Any, telemetry: _Telemetry) -> Any:
    return guarded_sync(original, *_command_hooks(telemetry), "redis command")


def _async_command(original: Any, telemetry: _Telemetry) -> Any:
    return guarded_async(original, *_command_hooks(telemetry), "redis command")


def _sync_pipeline(original: Any, telemetry: _Telemetry) -> Any:
    return guarded_sync(original, *_pipeline_hooks(telemetry), "redis pipeline")


def _async_pipeline(original: Any, telemetry: _Telemetry) -> Any:
    return guarded_async(original, *_pipeline_hooks(telemetry), "redis pipeline")


class RedisInstrumentor(OtelbotInstrumentor):
    """Traces and measures redis-py commands and pipelines, sync and asyncio."""

    _instruments: Collection[str] = ("redis >= 5",)
    replaces_contrib = "redis"

    def _instrument(self, **kwargs: Any) -> None:
        import redis.asyncio.client as async_client
        import redis.client as sync_client

        tracer, meter = self.telemetry(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        patches = self.patches

        # Pipeline overrides execute_command (it queues), so patching Redis.execute_command
        # does not reach queued commands; immediate_execute_command runs the commands a
        # WATCHing pipeline sends right away, each one a command of its own.
        patches.wrap(sync_client.Redis, "execute_command", lambda f: _sync_command(f, telemetry))
        patches.wrap(
            sync_client.Pipeline, "immediate_execute_command", lambda f: _sync_command(f, telemetry)
        )
        patches.wrap(sync_client.Pipeline, "execute", lambda f: _sync_pipeline(f, telemetry))
        patches.wrap(async_client.Redis, "execute_command", lambda f: _async_command(f, telemetry))
        patches.wrap(
            async_client.Pipeline,
            "immediate_execute_command",
            lambda f: _async_command(f, telemetry),
        )
        patches.wrap(async_client.Pipeline, "execute", lambda f: _async_pipeline(f, telemetry))
