"""Redis from ``INFO``: memory, clients, commands, keyspace hits/misses, evictions, expirations,
fragmentation, keys per database, plus ``SLOWLOG LEN``. Two commands per poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from otelbot import semconv
from otelbot.agent.collectors.base import (
    AttributeValue,
    CheckError,
    Collection,
    Collector,
    Failure,
    Tier,
    describe_error,
    error_type,
)
from otelbot.agent.config import AgentConfig, RedisInstance

NAME = "redis"

# INFO field -> catalogue metric (redisreceiver names)
INFO_METRICS: tuple[tuple[str, semconv.Metric], ...] = (
    ("used_memory", semconv.REDIS_MEMORY_USED),
    ("used_memory_rss", semconv.REDIS_MEMORY_RSS),
    ("used_memory_peak", semconv.REDIS_MEMORY_PEAK),
    ("mem_fragmentation_ratio", semconv.REDIS_MEMORY_FRAGMENTATION_RATIO),
    ("maxmemory", semconv.REDIS_MAXMEMORY),
    ("connected_clients", semconv.REDIS_CLIENTS_CONNECTED),
    ("blocked_clients", semconv.REDIS_CLIENTS_BLOCKED),
    ("total_commands_processed", semconv.REDIS_COMMANDS_PROCESSED),
    ("total_connections_received", semconv.REDIS_CONNECTIONS_RECEIVED),
    ("rejected_connections", semconv.REDIS_CONNECTIONS_REJECTED),
    ("keyspace_hits", semconv.REDIS_KEYSPACE_HITS),
    ("keyspace_misses", semconv.REDIS_KEYSPACE_MISSES),
    ("evicted_keys", semconv.REDIS_KEYS_EVICTED),
    ("expired_keys", semconv.REDIS_KEYS_EXPIRED),
    ("uptime_in_seconds", semconv.REDIS_UPTIME),
)


class RedisCollector(Collector):
    kind = NAME

    def __init__(self, instance: RedisInstance, timeout: float) -> None:
        assert instance.url is not None
        self._instance = instance
        self._timeout = timeout
        host, port = instance.host_port()
        self._attrs: dict[str, AttributeValue] = {
            semconv.SERVER_ADDRESS: host,
            semconv.SERVER_PORT: port,
        }
        self._client: aioredis.Redis | None = None

    @property
    def target(self) -> str:
        return f"redis {self._instance.label()}"

    def _get_client(self) -> aioredis.Redis:
        if self._client is None:
            assert self._instance.url is not None
            kwargs: dict[str, Any] = {
                "socket_timeout": self._timeout,
                "socket_connect_timeout": self._timeout,
                "max_connections": 1,
                "client_name": "otelbot-agent",
            }
            password = self._instance.password()
            if password is not None:
                kwargs["password"] = password
            self._client = aioredis.Redis.from_url(self._instance.url.get_secret_value(), **kwargs)
        return self._client

    async def _poll(self) -> tuple[dict[str, Any], int]:
        client = self._get_client()
        info = await asyncio.wait_for(client.info("all"), self._timeout + 1)
        slowlog = await asyncio.wait_for(client.slowlog_len(), self._timeout + 1)
        return info, int(slowlog)

    async def collect(self, tiers: frozenset[Tier]) -> Collection:
        out = Collection()
        if Tier.FAST not in tiers:
            return out
        started = time.perf_counter()
        try:
            info, slowlog = await self._poll()
        except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as exc:
            await self._reset()
            err = error_type(exc)
            out.add_up(semconv.REDIS_UP, self._attrs, err)
            out.failures.append(Failure(NAME, err, f"{self.target}: {describe_error(exc)}"))
            return out
        finally:
            out.durations[NAME] = time.perf_counter() - started
        a = self._attrs
        for field_name, metric in INFO_METRICS:
            value = info.get(field_name)
            if isinstance(value, int | float):
                out.add_with(metric, value, a)
        for key, value in info.items():
            if key.startswith("db") and key[2:].isdigit() and isinstance(value, dict):
                db = {**a, semconv.DB_NAMESPACE: key[2:]}
                out.add_with(semconv.REDIS_DB_KEYS, value.get("keys"), db)
                out.add_with(semconv.REDIS_DB_EXPIRES, value.get("expires"), db)
        out.add_with(semconv.REDIS_SLOWLOG_LENGTH, slowlog, a)
        out.add_up(semconv.REDIS_UP, self._attrs)
        return out

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.aclose(), 1)
            except Exception:
                pass

    async def close(self) -> None:
        await self._reset()

    async def check(self) -> str:
        try:
            info, _ = await self._poll()
        except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as exc:
            kind = error_type(exc)
            hint = {
                "auth": "check the password (password_file, or the url's user:password)",
                "network": "check the url's host and port and that Redis is running",
                "timeout": "Redis did not answer in time; check the network or raise timeout",
            }.get(kind, "see the Redis server log")
            raise CheckError(f"{describe_error(exc)}; {hint}") from None
        finally:
            await self._reset()
        return f"Redis {info.get('redis_version', '?')}"


def build(config: AgentConfig) -> list[Collector]:
    c = config.redis
    if not c.enabled:
        return []
    return [RedisCollector(inst, c.timeout) for inst in c.instances]
