"""The running agent: targets going down and coming back, export to a real OTLP receiver,
counted loss when the endpoint is down, health endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from otelbot import semconv
from otelbot.agent.collectors import build_collectors
from otelbot.agent.collectors.base import ALL_TIERS
from otelbot.agent.collectors.redis import RedisCollector
from otelbot.agent.config import RedisInstance
from otelbot.agent.health import HealthServer
from otelbot.agent.pipeline import ExportLoss, Pipeline, build_providers
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.agent.collectors.test_runtime_and_process import write_stats

from .conftest import PrivateRedis, TcpProxy, agent_config, values


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def up(pipeline: Pipeline, name: str) -> list[tuple[float, str | None]]:
    return [
        (s.value, s.attributes.get(semconv.ERROR_TYPE))  # type: ignore[misc]
        for s in pipeline.samples()
        if s.metric.name == name
    ]


async def test_targets_down_and_back_independently(
    pg_proxy: TcpProxy, private_redis: PrivateRedis
) -> None:
    config = agent_config(
        intervals={"fast": 0.3, "slow": 60, "advice": 3600},
        postgresql={
            "databases": [{"dsn": f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test"}],
            "connect_timeout": 1,
            "statement_timeout": 1,
        },
        redis={"instances": [{"url": private_redis.url}], "timeout": 1},
        runtime={"enabled": False},
    )
    pipeline = Pipeline(config, build_collectors(config))
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    try:
        await eventually(
            lambda: (
                up(pipeline, "postgresql.up") == [(1, None)]
                and up(pipeline, "redis.up") == [(1, None)]
            )
        )
        assert values(pipeline.samples(), "postgresql.table.count")  # slow tier ran too

        await pg_proxy.cut()
        await eventually(lambda: up(pipeline, "postgresql.up") == [(0, "network")])
        assert not values(pipeline.samples(), "postgresql.commits")  # no stale values
        # Redis keeps being collected while PostgreSQL is down
        before = values(pipeline.samples(), "redis.commands.processed")[0]
        await eventually(lambda: values(pipeline.samples(), "redis.commands.processed")[0] > before)

        await pg_proxy.restore()
        await eventually(lambda: up(pipeline, "postgresql.up") == [(1, None)], timeout=3)
        await eventually(lambda: values(pipeline.samples(), "postgresql.table.count"), timeout=3)

        private_redis.stop()
        await eventually(lambda: up(pipeline, "redis.up") == [(0, "network")])
        assert up(pipeline, "postgresql.up") == [(1, None)]
        private_redis.start()
        await eventually(lambda: up(pipeline, "redis.up") == [(1, None)], timeout=3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_redis_auth_error_type_and_password_file(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, password="s3cret-redis").start()
    try:
        wrong = RedisCollector(RedisInstance(url=server.url), timeout=2)
        out = await wrong.collect(ALL_TIERS)
        assert [
            (s.value, s.attributes.get(semconv.ERROR_TYPE))
            for s in out.samples
            if s.metric.name == "redis.up"
        ] == [(0, "auth")]
        secret = tmp_path / "redis-password"
        secret.write_text("s3cret-redis\n")
        right = RedisCollector(RedisInstance(url=server.url, password_file=str(secret)), 2)
        out = await right.collect(ALL_TIERS)
        await right.close()
        assert values(out.samples, "redis.up") == [1]
        assert values(out.samples, "redis.memory.used")[0] > 0
        assert values(out.samples, "redis.slowlog.length") == [0]
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_export_to_the_otlp_receiver(
    otlp_receiver: OtlpReceiver,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    import os

    endpoint = (
        otlp_receiver.http_endpoint
        if protocol != "grpc"
        else ("http://" + otlp_receiver.grpc_endpoint)
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "otb-agent-test-bot")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    write_stats(tmp_path / f"{os.getpid()}.stats", os.getpid(), time.time() - 120)
    config = agent_config(
        intervals={"fast": 0.5},
        export_interval=1,
        redis={"instances": [{"url": redis_url}]},
        runtime={"dir": str(tmp_path)},
    )
    loss = ExportLoss()
    meter_provider, logger_provider = build_providers(config, loss)
    pipeline = Pipeline(config, build_collectors(config), meter_provider, logger_provider, loss)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    try:
        await asyncio.to_thread(
            otlp_receiver.wait_for,
            lambda r: (
                r.points("redis.up")
                and r.points("otelbot.agent.collect.duration")
                and r.logs(semconv.EVENT_BOT_FROZEN)
            ),
            15,
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await asyncio.to_thread(meter_provider.shutdown)
        await asyncio.to_thread(logger_provider.shutdown)
    point = otlp_receiver.points("redis.up")[0]
    assert point.value == 1
    assert point.resource["service.name"] == "otb-agent-test-bot"
    assert point.resource["deployment.environment.name"] == "test"
    assert {
        p.attributes[semconv.CPYTHON_GC_GENERATION]
        for p in otlp_receiver.points("cpython.gc.collections")
    } == {0, 1, 2}
    durations = otlp_receiver.points("otelbot.agent.collect.duration")
    assert {p.attributes[semconv.OTELBOT_COLLECTOR] for p in durations} >= {"redis", "runtime"}
    log = otlp_receiver.logs(semconv.EVENT_BOT_FROZEN)[0]
    assert log.attributes[semconv.FINDING_OBJECT] == f"pid {os.getpid()}"
    assert "py-spy dump" in log.attributes[semconv.FINDING_SUGGESTION]
    assert log.resource["service.name"] == "otb-agent-test-bot"
    assert len(otlp_receiver.logs(semconv.EVENT_BOT_FROZEN)) == 1  # not repeated every poll
    assert loss.counts == {"metrics": 0, "logs": 0}


async def test_endpoint_down_counts_the_loss_and_keeps_running(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import free_port

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    config = agent_config(
        intervals={"fast": 0.2},
        export_interval=1,
        redis={"instances": [{"url": redis_url}]},
        runtime={"enabled": False},
    )
    loss = ExportLoss()
    meter_provider, logger_provider = build_providers(config, loss)
    pipeline = Pipeline(config, build_collectors(config), meter_provider, logger_provider, loss)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    try:
        await eventually(lambda: loss.counts["metrics"] > 0, timeout=15)
        rounds = pipeline.rounds
        await eventually(lambda: pipeline.rounds > rounds + 2)  # still collecting
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await asyncio.to_thread(meter_provider.shutdown, 2000)
        await asyncio.to_thread(logger_provider.shutdown)


async def test_health_endpoints(redis_url: str) -> None:
    config = agent_config(
        intervals={"fast": 0.2},
        redis={"instances": [{"url": redis_url}]},
        runtime={"enabled": False},
    )
    pipeline = Pipeline(config, build_collectors(config))
    health = HealthServer(pipeline, "127.0.0.1", 0)
    await health.start()

    async def get(path: str) -> tuple[str, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = (await reader.read()).decode()
        writer.close()
        head, _, body = data.partition("\r\n\r\n")
        return head.split(" ", 2)[1], body

    stop = asyncio.Event()
    try:
        assert (await get("/healthz"))[0] == "200"
        assert (await get("/readyz"))[0] == "503"  # nothing polled yet
        task = asyncio.create_task(pipeline.run(stop))
        await eventually(lambda: pipeline.rounds > 0)
        status, body = await get("/readyz")
        assert status == "200" and "redis" in body and ": up" in body
    finally:
        stop.set()
        await health.stop()
    await asyncio.wait_for(task, 10)
