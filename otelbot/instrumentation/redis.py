"""Redis: one CLIENT span per command, one ``PIPELINE`` span per pipeline, cache hit/miss counts.

Usage::

    import redis

    from otelbot.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument()          # or let ``opentelemetry-instrument`` do it

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    client.set("greeting", "hello")           # span "SET", db.query.text "SET ? ?"
    client.get("greeting")                    # span "GET": otelbot.cache.result "hit",
                                              # otelbot.cache.key_shape "greeting";
                                              # otelbot.cache.requests{result=hit}
    with client.pipeline() as pipe:
        pipe.set("a", 1).get("a").execute()   # one span "PIPELINE", db.operation.batch.size 2

    RedisInstrumentor().uninstrument()

The sync client (``redis.Redis``) and ``redis.asyncio.Redis`` are both covered, from
redis-py 5 on. Keys and values are never recorded: the command text keeps the command
name and one ``?`` per argument, and a cache read's key only as its shape (below). Error
messages are cleaned of them too, on the Redis span and on any other span otelbot records
the same error on (the update's, when a handler lets it through):

- redis-py's pipeline errors name the failing command whole (``Command # 2 (INCRBY
  user:7 1) of pipeline caused error: ...``): the command becomes its shape
  (``Command # 2 (INCRBY ? ?) of pipeline caused error: ...``);
- the server's reason is cut at its first quote (``unknown command 'x', with args
  beginning with: 'key'`` -> ``unknown command …``) and before the first word that is
  one of the command's arguments (``WRONGTYPE Operation against a key …`` for a key
  named "key");
- a script's (``EVAL``, ``FCALL``, ...) error text is the script's own: only its error
  code, if it has one, is kept.

The error type is always recorded (``redis.exceptions.ResponseError``).

A cache read (``GET``, ``MGET``, ``HGET``, ``HGETALL``, ...) is a hit when it returns
something. Its span carries the result and its key's shape (``profile:?:settings``, see
:mod:`otelbot.core.keyshape`: ids, numbers, timestamps, UUIDs, hex strings and e-mail
addresses become ``?``, only the key's plain words stay), each only when every key of the
read has the same one; the shape is left out with ``OTELBOT_CAPTURE_QUERY_TEXT=false``.
For a sampled update, the shapes of the keys its cache reads and writes used, each read's
result and the TTL a write set go to the update's notes for the cache detector
(:mod:`otelbot.diagnosis.cache`). Keys are shaped only for a recording span or a noted
update, once per raw key while it stays in a small cache: sampled-out traffic pays nothing.

Spans are leaves: they are started with ``tracer.start_span`` under the current context
and never made current. Per-client attributes are built once per connection pool and
per-command ones once per (pool, command, argument count), so a command costs two dict
lookups before the span starts.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
from collections.abc import Collection, Sequence
from time import perf_counter
from typing import Any

from opentelemetry.trace import SpanKind

from otelbot.core.config import capture_query_text
from otelbot.core.errors import error_type, record_exception, register_cleaner, unregister_cleaner
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.keyshape import cached_key_shape
from otelbot.core.lightspan import light_tracer
from otelbot.core.patching import OtelbotInstrumentor, guarded_async, guarded_sync
from otelbot.diagnosis import notes
from otelbot.semconv import (
    CACHE_HIT,
    CACHE_KEY_SHAPE,
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
_FIELDS = 4  # a list, one hit or miss per field of the one key; None entries are misses
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
    "HMGET": _FIELDS,
}

# Cache writes whose key shapes are noted for the detectors (what a handler does after a
# miss), and where their TTL is: in SET's options, or the second argument in seconds or
# milliseconds (SETEX, PSETEX, EXPIRE, PEXPIRE).
_ONE_KEY = 1  # the key is the first argument
_KEY_VALUE_PAIRS = 2  # MSET k1 v1 k2 v2
_TTL_OPTIONS = 3  # SET k v [EX s | PX ms]
_TTL_SECONDS = 4
_TTL_MILLISECONDS = 5
_WRITES: dict[str, tuple[int, int]] = {
    "SET": (_ONE_KEY, _TTL_OPTIONS),
    "SETNX": (_ONE_KEY, 0),
    "SETEX": (_ONE_KEY, _TTL_SECONDS),
    "PSETEX": (_ONE_KEY, _TTL_MILLISECONDS),
    "GETSET": (_ONE_KEY, 0),
    "HSET": (_ONE_KEY, 0),
    "HSETNX": (_ONE_KEY, 0),
    "HMSET": (_ONE_KEY, 0),
    "JSON.SET": (_ONE_KEY, 0),
    "EXPIRE": (_ONE_KEY, _TTL_SECONDS),
    "PEXPIRE": (_ONE_KEY, _TTL_MILLISECONDS),
    "MSET": (_KEY_VALUE_PAIRS, 0),
    "MSETNX": (_KEY_VALUE_PAIRS, 0),
}


# What an update's notes hold per key a command used: (key shape, "hit"/"miss" for a read
# or None for a write, the TTL in seconds a write set or None).
_KeyUse = tuple[str, str | None, float | None]


def _ttl(how: int, args: Sequence[Any]) -> float | None:
    """The TTL in seconds a write sets, when it sets one relative to now."""
    try:
        if how == _TTL_OPTIONS:
            for i in range(3, len(args) - 1):
                option = args[i]
                if isinstance(option, bytes):
                    option = option.decode("latin-1")
                if isinstance(option, str):
                    option = option.upper()
                    if option == "EX":
                        return float(args[i + 1])
                    if option == "PX":
                        return float(args[i + 1]) / 1000.0
            return None
        if how == _TTL_SECONDS and len(args) > 2:
            return float(args[2])
        if how == _TTL_MILLISECONDS and len(args) > 2:
            return float(args[2]) / 1000.0
    except (TypeError, ValueError):
        pass
    return None


def _read_keys(read: int, args: Sequence[Any], result: Any) -> tuple[_KeyUse, ...]:
    """(key shape, hit or miss, None) per key a cache read asked for."""
    if isinstance(result, BaseException):  # a failed command inside a pipeline
        return ()
    if read == _SINGLE:
        return ((cached_key_shape(args[1]), CACHE_MISS if result is None else CACHE_HIT, None),)
    if read == _HASH:
        return ((cached_key_shape(args[1]), CACHE_HIT if result else CACHE_MISS, None),)
    if not isinstance(result, (list, tuple)):
        return ()
    if read == _MULTI:
        keys: Sequence[Any] = args[1:]
    else:
        keys = (args[1],) * len(result)
    return tuple(
        (cached_key_shape(key), CACHE_MISS if value is None else CACHE_HIT, None)
        for key, value in zip(keys, result, strict=False)
    )


def _write_keys(write: tuple[int, int], args: Sequence[Any]) -> tuple[_KeyUse, ...]:
    """(key shape, None, TTL in seconds or None) per key a cache write sets."""
    where, how = write
    ttl = _ttl(how, args) if how else None
    if where == _ONE_KEY:
        return ((cached_key_shape(args[1]), None, ttl),)
    return tuple((cached_key_shape(args[i]), None, ttl) for i in range(1, len(args) - 1, 2))


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


# ------------------------------------------------------------------ error messages
# Everything below runs only when a command fails.

_SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_PIPELINE_HEAD = "Command # "
_PIPELINE_JOIN = ") of pipeline caused error: "
# Beyond this many arguments a failed pipeline's reason keeps its error code only: they
# are not all searched for in it.
_MAX_ARGUMENTS_SEARCHED = 512
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

# Original error text -> cleaned text, filled where the command's arguments are known (the
# Redis span's end), read where they are not (the update span recording the same error).
_cleaned: dict[str, str] = {}
_CLEANED_MAX = 256


def _argument_texts(commands_args: Sequence[Sequence[Any]]) -> list[str] | None:
    """The text of every argument of the commands (as redis-py writes it), the words of a
    command spelled in one string included; None when there are too many to search."""
    texts: list[str] = []
    for args in commands_args:
        for index, arg in enumerate(args):
            if isinstance(arg, (bytes, bytearray, memoryview)):
                text = bytes(arg).decode("utf-8", errors="replace")
            elif isinstance(arg, str):
                text = arg
            else:
                try:
                    text = str(arg)
                except Exception:
                    continue
            if index == 0:  # the command name, with any arguments spelled after it
                texts.extend(text.split()[1:])
            elif text:
                texts.append(text)
        if len(texts) > _MAX_ARGUMENTS_SEARCHED:
            return None
    return texts


def _error_code(text: str) -> str:
    """The leading all-capitals word of a server error (``WRONGTYPE``, ``NOSCRIPT``), or ""."""
    word = text.split(" ", 1)[0]
    return word if word.isascii() and word.isalpha() and word.isupper() else ""


def _cut(text: str, at: int) -> str:
    if at >= len(text):
        return text
    kept = text[:at].rstrip(" :,(")
    return kept + " …" if kept else "…"


def _clean_reason(reason: str, script: bool, arguments: list[str] | None) -> str:
    """A server's (or redis-py's) reason without anything taken from the command."""
    if script or arguments is None:
        return _cut(reason, len(_error_code(reason)))
    cut = len(reason)
    for quote in ("'", '"'):
        at = reason.find(quote)
        if 0 <= at < cut:
            cut = at
    for arg in arguments:
        if len(arg) > cut:
            continue
        at = reason.find(arg)
        while 0 <= at < cut:
            after = at + len(arg)
            if (at == 0 or reason[at - 1] not in _WORD_CHARS) and (
                after >= len(reason) or reason[after] not in _WORD_CHARS
            ):
                cut = at
                break
            at = reason.find(arg, at + 1)
    return _cut(reason, cut)


def _unwrapped(reason: str) -> str:
    """The asyncio client writes a pipeline error's reason as its args tuple: ``('x',)``."""
    if reason.startswith("(") and reason.endswith(")"):
        try:
            value = ast.literal_eval(reason)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return reason
        if isinstance(value, tuple) and value and isinstance(value[0], str):
            return value[0]
    return reason


def _clean_error_text(
    text: str, commands: Sequence[_Command], commands_args: Sequence[Sequence[Any]]
) -> str:
    """``text`` of an error raised by ``commands`` (one, or a pipeline's) sent with
    ``commands_args``, without any key or value; unknown commands (both empty) make the
    check for arguments impossible, and only the structure and quotes are used."""
    arguments = _argument_texts(commands_args) if commands_args else []
    if text.startswith(_PIPELINE_HEAD) and _PIPELINE_JOIN in text:
        # The last separator: what comes before it, where a value could repeat the
        # separator, is dropped whole.
        head, _, reason = text.rpartition(_PIPELINE_JOIN)
        number = head[len(_PIPELINE_HEAD) :].split(" ", 1)[0]
        index = int(number) - 1 if number.isdigit() else -1
        if 0 <= index < len(commands):
            failed: _Command | None = commands[index]
            shape = commands[index].query_text
        else:
            failed = None
            words = head.split("(", 1)[-1].split(" ", 1)
            shape = words[0].upper() + " …" if _plausible_command(words[0]) else "…"
        script = failed is not None and failed.name in _SCRIPT_COMMANDS
        cleaned = _clean_reason(_unwrapped(reason), script, arguments)
        number = number if number.isdigit() else "?"
        return _PIPELINE_HEAD + number + " (" + shape + _PIPELINE_JOIN + cleaned
    script = len(commands) == 1 and commands[0].name in _SCRIPT_COMMANDS
    return _clean_reason(text, script, arguments)


def _remember_cleaned(
    exc: BaseException, commands: Sequence[_Command], commands_args: Sequence[Sequence[Any]]
) -> None:
    text = str(exc)
    if text not in _cleaned:
        if len(_cleaned) >= _CLEANED_MAX:
            _cleaned.clear()
        _cleaned[text] = _clean_error_text(text, commands, commands_args)


def _cleaned_message(exc: BaseException) -> str:
    """The cleaner of redis-py's exceptions, wherever otelbot records one."""
    text = str(exc)
    known = _cleaned.get(text)
    return known if known is not None else _clean_error_text(text, (), ())


class _Command:
    """Everything recorded for one (pool, command, argument count), built once."""

    __slots__ = (
        "error_attrs",
        "hit_attrs",
        "keyed",
        "metric_attrs",
        "miss_attrs",
        "name",
        "query_text",
        "read",
        "span_attrs",
        "with_key_shape",
        "write",
    )

    def __init__(
        self, target: _Target, name: str, argc: int, with_text: bool, keyed: bool = True
    ) -> None:
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
        # Keys are shaped only where they are arguments of their own (not spelled in the
        # command's string, "GET key"): reads, and writes while an update is noted.
        self.keyed = keyed and argc > 0 and (self.read is not None or name in _WRITES)
        self.write = _WRITES.get(name)
        self.with_key_shape = with_text
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
            entry = _Command(self, name, extra + nargs - 1, self.with_text, extra == 0)
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


class _CommandCall:
    """One command between ``start_command`` and ``end_command``."""

    __slots__ = ("args", "command", "span", "started")

    def __init__(self, command: _Command, span: Any, args: tuple[Any, ...]) -> None:
        self.command = command
        self.span = span
        self.args = args  # read only if the command fails
        self.started = perf_counter()


class _PipelineCall:
    """One pipeline between ``start_pipeline`` and ``end_pipeline``."""

    __slots__ = ("commands", "span", "stack", "started", "target")

    def __init__(
        self, target: _Target, span: Any, commands: tuple[_Command, ...], stack: Any
    ) -> None:
        self.target = target
        self.span = span
        self.commands = commands
        # The queued (args, options) pairs: a new list replaces it after execute().
        self.stack = stack
        self.started = perf_counter()


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

    def start_span(self, command: _Command) -> Any:
        return self.tracer.start_span(
            command.name, kind=SpanKind.CLIENT, attributes=command.span_attrs
        )

    # The hooks of guarded_sync / guarded_async (which contain any error of theirs): one
    # pair for the commands and one for the pipelines, of both the sync and asyncio clients.
    def start_command(
        self, client: Any, args: tuple[Any, ...], options: dict[str, Any]
    ) -> _CommandCall:
        command = self.target(client).command(args[0], len(args))
        return _CommandCall(command, self.start_span(command), args)

    def end_command(self, call: _CommandCall, result: Any, exc: BaseException | None) -> None:
        command = call.command
        if exc is not None:
            self.failed(command, call.span, call.started, exc, (command,), (call.args,))
            return
        end = perf_counter()
        duration = end - call.started
        span = call.span
        noted = notes.noting()
        keys = None
        if command.keyed:
            # Keys are shaped for a recording span or a noted update only.
            if command.read is not None:
                if noted or span.is_recording():
                    keys = _read_keys(command.read, call.args, result)
                    if keys:
                        self.annotate(span, command, keys)
            elif noted and command.write is not None:
                keys = _write_keys(command.write, call.args)
        span.end()
        self.duration.record(duration, command.metric_attrs)
        if command.read is not None:
            self.count_read(command, result)
        if noted:
            notes.note(notes.REDIS, command.query_text, call.started, end, keys or None)

    def start_pipeline(
        self, pipe: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _PipelineCall | None:
        stack = getattr(pipe, "command_stack", None)
        if not stack:
            return None  # nothing queued: nothing is sent
        target = self.target(pipe)
        commands = tuple(target.command(args[0], len(args)) for args, _options in stack)
        span = self.start_span(target.pipeline)
        if span.is_recording():
            span.set_attribute(DB_OPERATION_BATCH_SIZE, len(commands))
            if self.with_text:
                span.set_attribute(DB_QUERY_TEXT, target.batch(commands).query_text)
        return _PipelineCall(target, span, commands, stack)

    def end_pipeline(
        self, call: _PipelineCall | None, results: Any, exc: BaseException | None
    ) -> None:
        if call is None:
            return
        target = call.target
        if exc is not None:
            commands_args = [args for args, _options in call.stack]
            self.failed(target.pipeline, call.span, call.started, exc, call.commands, commands_args)
            return
        end = perf_counter()
        duration = end - call.started
        call.span.end()
        self.duration.record(duration, target.pipeline.metric_attrs)
        if notes.noting():
            keys = _pipeline_keys(call, results)
            notes.note(notes.REDIS, SPAN_REDIS_PIPELINE, call.started, end, tuple(keys) or None)
        reads = target.batch(call.commands).reads
        if reads and isinstance(results, list) and len(results) == len(call.commands):
            for index, command in reads:
                self.count_read(command, results[index])

    def failed(
        self,
        command: _Command,
        span: Any,
        started: float,
        exc: BaseException,
        commands: Sequence[_Command],
        commands_args: Sequence[Sequence[Any]],
    ) -> None:
        duration = perf_counter() - started
        if isinstance(exc, asyncio.CancelledError):
            if span.is_recording():
                span.set_attribute(ERROR_TYPE, error_type(exc))
        else:
            # Before recording: the cleaner reads it here, and on the update's span later.
            _remember_cleaned(exc, commands, commands_args)
            record_exception(span, exc)
        span.end()
        attrs = command.error_attrs.get(type(exc))
        if attrs is None:
            attrs = dict(command.metric_attrs)
            attrs[ERROR_TYPE] = error_type(exc)
            if len(command.error_attrs) < _MAX_ERROR_TYPES:
                command.error_attrs[type(exc)] = attrs
        self.duration.record(duration, attrs)

    @staticmethod
    def annotate(span: Any, command: _Command, keys: Sequence[_KeyUse]) -> None:
        """``otelbot.cache.result`` and ``otelbot.cache.key_shape`` on a read's span, each
        when every key of the read has the same one."""
        if not span.is_recording():
            return
        shape, result, _ = keys[0]
        same_shape = same_result = True
        for other_shape, other_result, _ in keys[1:]:
            same_shape = same_shape and other_shape == shape
            same_result = same_result and other_result == result
        if same_result:
            span.set_attribute(CACHE_RESULT, result)
        if same_shape and command.with_key_shape:
            span.set_attribute(CACHE_KEY_SHAPE, shape)

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


def _pipeline_keys(call: _PipelineCall, results: Any) -> list[_KeyUse]:
    """The keys a pipeline's cache reads and writes used, for the update's notes."""
    keys: list[_KeyUse] = []
    complete = isinstance(results, list) and len(results) == len(call.commands)
    for index, (command, (args, _options)) in enumerate(
        zip(call.commands, call.stack, strict=False)
    ):
        if not command.keyed:
            continue
        if command.read is not None:
            if complete:
                keys.extend(_read_keys(command.read, args, results[index]))
        elif command.write is not None:
            keys.extend(_write_keys(command.write, args))
    return keys


class RedisInstrumentor(OtelbotInstrumentor):
    """Traces and measures redis-py commands and pipelines, sync and asyncio."""

    _instruments: Collection[str] = ("redis >= 5",)

    def _instrument(self, **kwargs: Any) -> None:
        import redis.asyncio.client as async_client
        import redis.client as sync_client
        from redis.exceptions import RedisError

        tracer, meter = self.tracer_and_meter(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        patches = self.patches
        register_cleaner(RedisError, _cleaned_message)

        def commands(guard: Any) -> Any:
            start, end = telemetry.start_command, telemetry.end_command
            return lambda original: guard(original, start, end, "redis command")

        def pipelines(guard: Any) -> Any:
            start, end = telemetry.start_pipeline, telemetry.end_pipeline
            return lambda original: guard(original, start, end, "redis pipeline")

        # Pipeline overrides execute_command (it queues), so patching Redis.execute_command
        # does not reach queued commands; immediate_execute_command runs the commands a
        # WATCHing pipeline sends right away, each one a command of its own.
        patches.wrap(sync_client.Redis, "execute_command", commands(guarded_sync))
        patches.wrap(sync_client.Pipeline, "immediate_execute_command", commands(guarded_sync))
        patches.wrap(sync_client.Pipeline, "execute", pipelines(guarded_sync))
        patches.wrap(async_client.Redis, "execute_command", commands(guarded_async))
        patches.wrap(async_client.Pipeline, "immediate_execute_command", commands(guarded_async))
        patches.wrap(async_client.Pipeline, "execute", pipelines(guarded_async))

    def _uninstrument(self, **kwargs: Any) -> None:
        from redis.exceptions import RedisError

        unregister_cleaner(RedisError)
        super()._uninstrument(**kwargs)
