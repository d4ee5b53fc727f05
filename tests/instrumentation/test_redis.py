"""otelbot_redis against a real Redis server (db 5, keys under ``otb_redis_test:``)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio
import redis.asyncio.client
import redis.client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from otelbot.instrumentation.redis import RedisInstrumentor
from otelbot.testing.memory import MemoryTelemetry
from tests.instrumentation.conftest import WireTelemetry

DB = 5
PATCHED = (
    (redis.client.Redis, "execute_command"),
    (redis.client.Pipeline, "execute"),
    (redis.client.Pipeline, "immediate_execute_command"),
    (redis.asyncio.client.Redis, "execute_command"),
    (redis.asyncio.client.Pipeline, "execute"),
    (redis.asyncio.client.Pipeline, "immediate_execute_command"),
)


def _url(base: str, db: int) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + str(db), parts.query, parts.fragment))


@pytest.fixture
def url(redis_url: str) -> str:
    return _url(redis_url, DB)


@pytest.fixture
def prefix(url: str) -> Iterator[str]:
    prefix = "otb_redis_test:" + uuid.uuid4().hex + ":"
    yield prefix
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def instrumented(telemetry: MemoryTelemetry) -> Iterator[MemoryTelemetry]:
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        yield telemetry
    finally:
        instrumentor.uninstrument()


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(url) as c:
        yield c


@pytest.fixture
async def aclient(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(url)
    try:
        yield c
    finally:
        await c.aclose()


def _attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def _cache_counts(telemetry: MemoryTelemetry) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for point in telemetry.points("otelbot.cache.requests"):
        assert point.attributes["db.system.name"] == "redis"
        key = (point.attributes["db.operation.name"], point.attributes["otelbot.cache.result"])
        counts[key] = counts.get(key, 0) + point.value
    return counts


def _durations(telemetry: MemoryTelemetry) -> list[dict[str, Any]]:
    return [p.attributes for p in telemetry.points("db.client.operation.duration")]


def _assert_command_span(span: Any, name: str, text: str) -> None:
    assert span.name == name
    assert span.kind is SpanKind.CLIENT
    attrs = _attrs(span)
    assert attrs["db.system.name"] == "redis"
    assert attrs["db.namespace"] == str(DB)
    assert attrs["db.operation.name"] == name
    assert attrs["db.query.text"] == text
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == 6379
    assert "error.type" not in attrs


def test_sync_commands_are_client_spans_under_the_current_span(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    tracer = instrumented.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("handler") as parent:
        assert client.set(prefix + "k", "v", ex=60) is True
        assert client.get(prefix + "k") == b"v"
    spans = {s.name: s for s in instrumented.spans()}
    assert sorted(spans) == ["GET", "SET", "handler"]
    _assert_command_span(spans["SET"], "SET", "SET ? ? ? ?")
    _assert_command_span(spans["GET"], "GET", "GET ?")
    for name in ("SET", "GET"):
        span_parent = spans[name].parent
        assert span_parent is not None
        assert span_parent.span_id == parent.get_span_context().span_id
    durations = _durations(instrumented)
    assert {d["db.operation.name"] for d in durations} == {"SET", "GET"}
    for d in durations:
        assert d["db.namespace"] == str(DB)
        assert d["server.address"] == "127.0.0.1"
        assert d["server.port"] == 6379
        assert "db.query.text" not in d


async def test_async_commands_are_client_spans_under_the_current_span(
    instrumented: MemoryTelemetry, aclient: redis.asyncio.Redis, prefix: str
) -> None:
    tracer = instrumented.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("handler") as parent:
        assert await aclient.hset(prefix + "h", mapping={"a": "1", "b": "2"}) == 2
        assert await aclient.hget(prefix + "h", "a") == b"1"
        assert await aclient.execute_command("client setname", "otb-test") is True
    spans = [s for s in instrumented.spans() if s.name != "handler"]
    assert [s.name for s in spans] == ["HSET", "HGET", "CLIENT SETNAME"]
    _assert_command_span(spans[0], "HSET", "HSET ? ? ? ? ?")
    _assert_command_span(spans[1], "HGET", "HGET ? ?")
    _assert_command_span(spans[2], "CLIENT SETNAME", "CLIENT SETNAME ?")
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id


def _check_pipeline(telemetry: MemoryTelemetry, results: list[Any]) -> None:
    assert results == [True, b"1", 2]
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["PIPELINE"]
    attrs = _attrs(spans[0])
    assert spans[0].kind is SpanKind.CLIENT
    assert attrs["db.operation.batch.size"] == 3
    assert attrs["db.query.text"] == "SET ? ?\nGET ?\nINCRBY ? ?"  # redis-py sends INCR as INCRBY
    assert attrs["db.operation.name"] == "PIPELINE"
    assert attrs["db.namespace"] == str(DB)
    assert [d["db.operation.name"] for d in _durations(telemetry)] == ["PIPELINE"]
    assert _cache_counts(telemetry) == {("GET", "hit"): 1}


@pytest.mark.parametrize("transaction", [True, False])
def test_sync_pipeline_is_one_span(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str, transaction: bool
) -> None:
    with client.pipeline(transaction=transaction) as pipe:
        pipe.set(prefix + "p", "1")
        pipe.get(prefix + "p")
        pipe.incr(prefix + "p")
        results = pipe.execute()
    _check_pipeline(instrumented, results)


@pytest.mark.parametrize("transaction", [True, False])
async def test_async_pipeline_is_one_span(
    instrumented: MemoryTelemetry, aclient: redis.asyncio.Redis, prefix: str, transaction: bool
) -> None:
    async with aclient.pipeline(transaction=transaction) as pipe:
        pipe.set(prefix + "p", "1")
        pipe.get(prefix + "p")
        pipe.incr(prefix + "p")
        results = await pipe.execute()
    _check_pipeline(instrumented, results)


def test_watch_transaction_traces_immediate_commands_once(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    key = prefix + "counter"
    client.set(key, "5")
    instrumented.clear()

    def bump(pipe: redis.client.Pipeline) -> None:
        value = int(pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, value + 1)

    assert client.transaction(bump, key) == [True]
    assert client.get(key) == b"6"
    names = instrumented.span_names()
    assert names.count("WATCH") == 1
    assert names.count("PIPELINE") == 1
    assert names.count("GET") == 2  # the immediate one inside the transaction, then ours
    assert names.count("SET") == 0  # queued: only part of the PIPELINE span
    pipeline_span = next(s for s in instrumented.spans() if s.name == "PIPELINE")
    assert _attrs(pipeline_span)["db.operation.batch.size"] == 1


def test_cache_hits_and_misses(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    client.set(prefix + "a", "1")
    client.set(prefix + "b", "2")
    assert client.get(prefix + "a") == b"1"  # hit
    assert client.get(prefix + "missing") is None  # miss
    assert client.mget(prefix + "a", prefix + "missing", prefix + "b") == [b"1", None, b"2"]
    assert client.hgetall(prefix + "no-hash") == {}  # miss
    with client.pipeline() as pipe:
        pipe.get(prefix + "a")
        pipe.get(prefix + "gone")
        pipe.set(prefix + "c", "3")
        assert pipe.execute() == [b"1", None, True]
    assert _cache_counts(instrumented) == {
        ("GET", "hit"): 2,
        ("GET", "miss"): 2,
        ("MGET", "hit"): 2,
        ("MGET", "miss"): 1,
        ("HGETALL", "miss"): 1,
    }


async def test_async_cache_reads(
    instrumented: MemoryTelemetry, aclient: redis.asyncio.Redis, prefix: str
) -> None:
    await aclient.hset(prefix + "h", mapping={"a": "1"})
    assert await aclient.hgetall(prefix + "h") == {b"a": b"1"}
    assert await aclient.hmget(prefix + "h", ["a", "zz"]) == [b"1", None]
    assert await aclient.getdel(prefix + "nothing") is None
    assert _cache_counts(instrumented) == {
        ("HGETALL", "hit"): 1,
        ("HMGET", "hit"): 1,
        ("HMGET", "miss"): 1,
        ("GETDEL", "miss"): 1,
    }


def _all_recorded_text(telemetry: MemoryTelemetry) -> str:
    parts: list[str] = []
    for span in telemetry.spans():
        parts.append(span.name)
        parts.extend(repr(v) for v in (span.attributes or {}).values())
        parts.append(repr(span.status.description))
        for event in span.events:
            parts.append(event.name)
            parts.extend(repr(v) for v in (event.attributes or {}).values())
    for point in telemetry.points():
        parts.extend(repr(v) for v in point.attributes.values())
    return "\n".join(parts)


def test_no_key_or_value_is_recorded(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    key = prefix + "SecretKeyName"
    value = "SecretValue-" + uuid.uuid4().hex
    client.set(key, value)
    client.get(key)
    client.mget(key, key + "x")
    client.hset(key + "h", "SecretField", value)
    with client.pipeline() as pipe:
        pipe.set(key, value)
        pipe.get(key)
        pipe.execute()
    # Commands spelled in one string, and a server error that echoes the arguments back.
    client.execute_command("SET " + key + " " + value)
    with pytest.raises(redis.ResponseError) as caught:
        client.execute_command("OTBNOSUCHCOMMAND", key, value)
    assert key in str(caught.value)  # the server did echo it; telemetry must not
    recorded = _all_recorded_text(instrumented)
    assert "exception" in recorded
    for secret in ("SecretKeyName", "SecretValue", "SecretField", prefix):
        assert secret not in recorded
    spans = instrumented.spans()
    assert _attrs(spans[-2])["db.query.text"] == "SET ? ?"
    assert spans[-1].name == "OTBNOSUCHCOMMAND"


def test_failing_command_keeps_the_exception_and_records_error_type(
    telemetry: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    key = prefix + "text"
    client.set(key, "not a number")
    with pytest.raises(redis.ResponseError) as bare:
        client.incr(key)

    instrumentor = RedisInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        with pytest.raises(redis.ResponseError) as traced:
            client.incr(key)
    finally:
        instrumentor.uninstrument()
    assert type(traced.value) is type(bare.value)
    assert str(traced.value) == str(bare.value)
    assert traced.value.args == bare.value.args

    [span] = telemetry.spans()
    assert span.name == "INCRBY"
    assert _attrs(span)["error.type"] == "redis.exceptions.ResponseError"
    assert span.status.status_code is StatusCode.ERROR
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "redis.exceptions.ResponseError"
    assert event.attributes["exception.message"] == str(bare.value)
    [duration] = _durations(telemetry)
    assert duration["error.type"] == "redis.exceptions.ResponseError"
    assert duration["db.operation.name"] == "INCRBY"


def test_failing_pipeline_records_error_type(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    client.set(prefix + "t", "x")
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(prefix + "t")
        pipe.get(prefix + "t")
        with pytest.raises(redis.ResponseError, match="not an integer"):
            pipe.execute()
    [span] = [s for s in instrumented.spans() if s.name == "PIPELINE"]
    assert _attrs(span)["error.type"] == "redis.exceptions.ResponseError"
    assert _attrs(span)["db.operation.batch.size"] == 2


async def test_error_text_never_carries_a_key_or_value(
    wire: WireTelemetry,
    client: redis.Redis,
    aclient: redis.asyncio.Redis,
    prefix: str,
) -> None:
    """redis-py's pipeline errors repeat the failing command whole, unquoted ("Command # 2
    (INCRBY <key> 1) of pipeline caused error: ..."), and a script's error text is the
    script's own: no key or value may reach the exported bytes through them."""
    key = prefix + "PiiKey"
    string_key = prefix + "PiiString"
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(**wire.providers)
    thread_errors: list[BaseException] = []
    try:
        with pytest.raises(redis.ResponseError, match="not an integer"):
            await aclient.pipeline(transaction=True).set(key, "PiiValue").incr(key).execute()
        await aclient.set(string_key, "PiiStored")
        async with aclient.pipeline(transaction=False) as pipe:
            pipe.get(string_key).lpush(string_key, "PiiPushed")
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await pipe.execute()

        def sync_pipeline_in_a_thread() -> None:
            with client.pipeline() as pipe:
                pipe.get(string_key).lpush(string_key, "PiiThread")
                try:
                    pipe.execute()
                except redis.ResponseError as exc:
                    thread_errors.append(exc)

        thread = threading.Thread(target=sync_pipeline_in_a_thread)
        thread.start()
        thread.join()
        # A script's error reply echoes an argument, unquoted.
        with pytest.raises(redis.ResponseError, match="PiiScriptArgument"):
            await aclient.eval(
                "return redis.error_reply('rejected ' .. ARGV[1])", 0, "PiiScriptArgument"
            )
    finally:
        instrumentor.uninstrument()
    assert [type(e) for e in thread_errors] == [redis.ResponseError]
    assert string_key in str(thread_errors[0])  # redis-py did put the key in the message
    raw = wire.exported()
    assert raw.count(b"exception.stacktrace") == 4, "every failure is recorded"
    words = ["PiiKey", "PiiValue", "PiiString", "PiiStored", "PiiPushed", "PiiThread"]
    words += ["PiiScriptArgument", prefix]
    leaked = [word for word in words if word.encode() in raw]
    assert leaked == []
    # What is useful stays: which command of the pipeline failed, and the server's reason.
    assert b"Command # 2 (INCRBY ? ?) of pipeline caused error: value is not an integer" in raw
    assert b"Command # 2 (LPUSH ? ?) of pipeline caused error: WRONGTYPE Operation" in raw
    assert b"redis.exceptions.ResponseError" in raw


async def test_cancellation_passes_through(
    instrumented: MemoryTelemetry, aclient: redis.asyncio.Redis, prefix: str
) -> None:
    task = asyncio.ensure_future(aclient.blpop([prefix + "never"], timeout=5))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    [span] = instrumented.spans()
    assert span.name == "BLPOP"
    assert _attrs(span)["error.type"] == "asyncio.exceptions.CancelledError"
    # The client still works afterwards.
    assert await aclient.ping() is True


def _sync_workload(client: redis.Redis, prefix: str) -> list[Any]:
    out: list[Any] = [
        client.set(prefix + "w", "1"),
        client.incrby(prefix + "w", 4),
        client.get(prefix + "w"),
        client.mget(prefix + "w", prefix + "none"),
        client.hset(prefix + "wh", mapping={"x": "1"}),
        client.hgetall(prefix + "wh"),
        client.zadd(prefix + "z", {"m": 1.5}),
        client.zscore(prefix + "z", "m"),
        client.delete(prefix + "w", prefix + "wh", prefix + "z"),
    ]
    with client.pipeline() as pipe:
        pipe.set(prefix + "w", "2")
        pipe.get(prefix + "w")
        pipe.delete(prefix + "w")
        out.append(pipe.execute())
    return out


async def _async_workload(client: redis.asyncio.Redis, prefix: str) -> list[Any]:
    out: list[Any] = [
        await client.set(prefix + "w", "1"),
        await client.incrby(prefix + "w", 4),
        await client.get(prefix + "w"),
        await client.mget(prefix + "w", prefix + "none"),
        await client.lpush(prefix + "l", "a", "b"),
        await client.lindex(prefix + "l", 0),
        await client.delete(prefix + "w", prefix + "l"),
    ]
    async with client.pipeline() as pipe:
        pipe.set(prefix + "w", "2")
        pipe.get(prefix + "w")
        pipe.delete(prefix + "w")
        out.append(await pipe.execute())
    return out


async def test_results_are_identical_with_and_without_instrumentation(
    telemetry: MemoryTelemetry, client: redis.Redis, aclient: redis.asyncio.Redis, prefix: str
) -> None:
    bare_sync = _sync_workload(client, prefix)
    bare_async = await _async_workload(aclient, prefix)
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        traced_sync = _sync_workload(client, prefix)
        traced_async = await _async_workload(aclient, prefix)
    finally:
        instrumentor.uninstrument()
    assert traced_sync == bare_sync
    assert traced_async == bare_async
    # One span per command and one per pipeline: one per workload step.
    assert len(telemetry.spans()) == len(bare_sync) + len(bare_async)


def test_uninstrument_restores_every_original(
    telemetry: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    originals = [owner.__dict__[name] for owner, name in PATCHED]
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        for (owner, name), original in zip(PATCHED, originals, strict=True):
            assert owner.__dict__[name] is not original
    finally:
        instrumentor.uninstrument()
    for (owner, name), original in zip(PATCHED, originals, strict=True):
        assert owner.__dict__[name] is original
    client.set(prefix + "after", "1")
    assert telemetry.spans() == []


def test_internal_error_does_not_break_the_command(
    instrumented: MemoryTelemetry,
    client: redis.Redis,
    prefix: str,
) -> None:
    # A corrupt per-pool cache makes otelbot's own lookup fail.
    client.connection_pool._otelbot_redis_target = object()  # type: ignore[attr-defined]
    assert client.set(prefix + "k", "v") is True
    assert client.get(prefix + "k") == b"v"
    with client.pipeline() as pipe:
        pipe.get(prefix + "k")
        assert pipe.execute() == [b"v"]
    with pytest.raises(redis.ResponseError):
        client.execute_command("OTBNOSUCHCOMMAND")
    assert instrumented.spans() == []


async def test_internal_error_in_span_start_does_not_break_async_commands(
    telemetry: MemoryTelemetry, aclient: redis.asyncio.Redis, prefix: str
) -> None:
    class BrokenTracerProvider(TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            tracer = super().get_tracer(*args, **kwargs)

            def start_span(*a: Any, **k: Any) -> Any:
                raise RuntimeError("tracer broke")

            tracer.start_span = start_span  # type: ignore[method-assign]
            return tracer

    instrumentor = RedisInstrumentor()
    instrumentor.instrument(
        tracer_provider=BrokenTracerProvider(), meter_provider=telemetry.meter_provider
    )
    try:
        assert await aclient.set(prefix + "k", "v") is True
        assert await aclient.get(prefix + "k") == b"v"
        async with aclient.pipeline() as pipe:
            pipe.get(prefix + "k")
            assert await pipe.execute() == [b"v"]
    finally:
        instrumentor.uninstrument()


def test_db_namespace_is_the_db_index(
    instrumented: MemoryTelemetry, redis_url: str, prefix: str
) -> None:
    with (
        redis.Redis.from_url(_url(redis_url, 3)) as db3,
        redis.Redis(host="127.0.0.1", port=6379, db=DB) as db5,
    ):
        db3.get(prefix + "x")
        db5.get(prefix + "x")
    namespaces = [_attrs(s)["db.namespace"] for s in instrumented.spans()]
    assert namespaces == ["3", "5"]
    assert sorted(d["db.namespace"] for d in _durations(instrumented)) == ["3", "5"]


def test_sampled_out_spans_still_record_metrics(
    telemetry: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=telemetry.meter_provider)
    try:
        client.get(prefix + "none")
        with client.pipeline() as pipe:
            pipe.get(prefix + "none")
            pipe.execute()
        with pytest.raises(redis.ResponseError):
            client.execute_command("OTBNOSUCHCOMMAND")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert exporter.get_finished_spans() == ()
    assert sorted(d["db.operation.name"] for d in _durations(telemetry)) == [
        "GET",
        "OTBNOSUCHCOMMAND",
        "PIPELINE",
    ]
    assert _cache_counts(telemetry) == {("GET", "miss"): 2}


def _cache_attrs(span: Any) -> tuple[Any, Any]:
    attrs = _attrs(span)
    return attrs.get("otelbot.cache.key_shape"), attrs.get("otelbot.cache.result")


def test_cache_reads_carry_result_and_key_shape_on_their_span(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    # The prefix's hex part and the ids become "?": "otb_redis_test:?:profile:?".
    shape = "otb_redis_test:?:profile:?"
    client.set(prefix + "profile:42", "x", ex=60)
    client.set(prefix + "profile:43", "y")
    client.set(prefix + "settings", "z")
    client.get(prefix + "profile:42")
    client.get(prefix + "profile:44")
    client.mget(prefix + "profile:42", prefix + "profile:43")
    client.mget(prefix + "profile:42", prefix + "profile:44")  # one hit, one miss
    client.mget(prefix + "profile:42", prefix + "settings")  # two shapes
    client.hgetall(prefix + "profile:45")
    client.incr(prefix + "counter:1")
    got = [(s.name, *_cache_attrs(s)) for s in instrumented.spans()]
    assert got == [
        ("SET", None, None),
        ("SET", None, None),
        ("SET", None, None),
        ("GET", shape, "hit"),
        ("GET", shape, "miss"),
        ("MGET", shape, "hit"),
        ("MGET", shape, None),
        ("MGET", None, "hit"),
        ("HGETALL", shape, "miss"),
        ("INCRBY", None, None),
    ]
    # The metric still counts per key.
    assert _cache_counts(instrumented)[("MGET", "hit")] == 5


async def test_async_cache_reads_carry_result_on_their_span(
    instrumented: MemoryTelemetry, aclient: redis.asyncio.Redis, prefix: str
) -> None:
    await aclient.set(prefix + "session:550e8400-e29b-41d4-a716-446655440000", "1")
    await aclient.get(prefix + "session:550e8400-e29b-41d4-a716-446655440000")
    await aclient.get(prefix + "session:6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    got = [_cache_attrs(s) for s in instrumented.spans() if s.name == "GET"]
    assert got == [
        ("otb_redis_test:?:session:?", "hit"),
        ("otb_redis_test:?:session:?", "miss"),
    ]


def test_key_shape_is_off_with_query_text(
    telemetry: MemoryTelemetry,
    client: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTELBOT_CAPTURE_QUERY_TEXT", "false")
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        client.get(prefix + "profile:1")
    finally:
        instrumentor.uninstrument()
    [span] = telemetry.spans()
    assert _cache_attrs(span) == (None, "miss")
    assert "db.query.text" not in _attrs(span)


def test_sampled_updates_note_key_shapes_results_and_ttls(
    instrumented: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    from otelbot.diagnosis import notes

    tracer = instrumented.tracer_provider.get_tracer("test")
    shape = "otb_redis_test:?:price:?"
    with tracer.start_as_current_span("update") as span:
        update = notes.UpdateNotes(span, "message", 0.0)
        token = notes.current.set(update)
        try:
            client.get(prefix + "price:1")
            client.set(prefix + "price:1", "9", ex=30)
            client.set(prefix + "price:2", "9", px=1500)
            client.execute_command("SETEX", prefix + "price:3", 45, "9")
            client.mget(prefix + "price:1", prefix + "price:9")
            client.hmget(prefix + "price:h1", ["a", "b"])
            client.incr(prefix + "price:n")
            with client.pipeline(transaction=False) as pipe:
                pipe.get(prefix + "price:1")
                pipe.expire(prefix + "price:1", 120)
                pipe.incr(prefix + "price:n")
                pipe.execute()
        finally:
            notes.current.reset(token)
    got = [(op.shape, op.extra) for op in update.ops]
    assert got == [
        ("GET ?", ((shape, "miss", None),)),
        ("SET ? ? ? ?", ((shape, None, 30.0),)),
        ("SET ? ? ? ?", ((shape, None, 1.5),)),
        ("SETEX ? ? ?", ((shape, None, 45.0),)),
        ("MGET ? ?", ((shape, "hit", None), (shape, "miss", None))),
        ("HMGET ? ? ?", (("otb_redis_test:?:price:?", "miss", None),) * 2),
        ("INCRBY ? ?", None),
        ("PIPELINE", ((shape, "hit", None), (shape, None, 120.0))),
    ]


def test_unsampled_reads_are_not_shaped(
    telemetry: MemoryTelemetry, client: redis.Redis, prefix: str
) -> None:
    from otelbot.core import keyshape

    provider = TracerProvider(sampler=ALWAYS_OFF)
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=telemetry.meter_provider)
    key = prefix + "unsampled:1"
    try:
        client.get(key)
        client.set(key, "1", ex=5)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert key.encode() not in keyshape._by_key and key not in keyshape._by_key
    assert _cache_counts(telemetry) == {("GET", "miss"): 1}
