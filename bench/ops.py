"""Per operation: what tracing adds to one aiohttp request, asyncpg query, Redis command.

Each mode runs in its own process (instrumentors patch globally): ``bare`` (no
instrumentation), ``otelbot`` and ``contrib``, both with the same SDK setup (a
TracerProvider with a BatchSpanProcessor, a MeterProvider with a reader; spans are
handed to an exporter that drops them, so the figure is the instrumentation and the SDK,
not the OTLP encoding). The servers are real: the fake Bot API in another process,
PostgreSQL, Redis. The figure is the bot process's CPU time per operation (all threads),
which is steadier than wall time on a shared machine; the lowest of the interleaved rounds
is kept; added = mode - bare.

    python -m bench.ops --mode otelbot --n 3000      # one mode, prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.procs import FakeApi
from otelbot.testing.defaults import BOT_TOKEN, pg_dsn, redis_url

MODES = ("bare", "otelbot", "contrib")
OPERATIONS = ("aiohttp request", "asyncpg query", "Redis command")


class _Drop:
    """A SpanExporter that drops what it gets."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def setup(mode: str) -> None:
    if mode == "bare":
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Drop()))  # type: ignore[arg-type]
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    if mode == "otelbot":
        from otelbot.instrumentation.aiohttp_client import AiohttpClientInstrumentor
        from otelbot.instrumentation.asyncpg import AsyncpgInstrumentor
        from otelbot.instrumentation.redis import RedisInstrumentor
    else:
        from opentelemetry.instrumentation.aiohttp_client import (  # type: ignore[no-redef]
            AioHttpClientInstrumentor as AiohttpClientInstrumentor,
        )
        from opentelemetry.instrumentation.asyncpg import (  # type: ignore[no-redef]
            AsyncPGInstrumentor as AsyncpgInstrumentor,
        )
        from opentelemetry.instrumentation.redis import (  # type: ignore[no-redef]
            RedisInstrumentor,
        )
    AiohttpClientInstrumentor().instrument()
    AsyncpgInstrumentor().instrument()
    RedisInstrumentor().instrument()


async def measure(n: int, api_base: str) -> dict[str, float]:
    import aiohttp
    import asyncpg
    import redis.asyncio as redis
    from opentelemetry import trace

    tracer = trace.get_tracer("bench")
    pool = await asyncpg.create_pool(pg_dsn(), min_size=1, max_size=1)
    cache = redis.Redis.from_url(redis_url())
    session = aiohttp.ClientSession()
    url = f"{api_base}/bot{BOT_TOKEN}/sendMessage"

    async def http() -> None:
        async with session.post(url, json={"chat_id": 1, "text": "hi"}) as response:
            await response.read()

    async def sql() -> None:
        await pool.fetchval("SELECT count(*) FROM pg_class WHERE relpages >= $1", 0)

    async def incr() -> None:
        await cache.incr("bench:ops")

    results: dict[str, float] = {}
    for name, op in zip(OPERATIONS, (http, sql, incr), strict=True):
        for _ in range(min(200, n)):  # warm up: connections, caches, statement cache
            await op()
        # Under a parent span, as in a bot's handler (the update's span is current).
        with tracer.start_as_current_span("parent"):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(n):
                await op()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        results[name] = cpu / n * 1e6
        results[name + " wall"] = wall / n * 1e6
    await session.close()
    await cache.aclose()
    await pool.close()
    return results


def run_mode(mode: str, n: int, api_base: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.ops", "--mode", mode, "--n", str(n), "--api", api_base],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.ops --mode {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_all(n: int, repeats: int, log: Any = print) -> dict[str, dict[str, float]]:
    """Lowest CPU µs per operation per mode over ``repeats`` interleaved rounds (other
    load on the machine only ever adds time, so the minimum is the steadiest figure)."""
    api = FakeApi(0)
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    try:
        for round_no in range(1, repeats + 1):
            for mode in MODES:
                samples[mode].append(run_mode(mode, n, api.base_url))
                row = "  ".join(f"{op} {samples[mode][-1][op]:6.1f}" for op in OPERATIONS)
                log(f"  ops round {round_no}/{repeats} {mode:<8} CPU µs/op: {row}")
    finally:
        api.stop()
    return {m: {k: min(s[k] for s in samples[m]) for k in samples[m][0]} for m in MODES}


def table(medians: dict[str, dict[str, float]]) -> str:
    rows = [
        "| operation | bare CPU µs/op | otelbot adds µs | contrib adds µs | otelbot / contrib |",
        "|---|---:|---:|---:|---:|",
    ]
    for op in OPERATIONS:
        bare = medians["bare"][op]
        ours = medians["otelbot"][op] - bare
        theirs = medians["contrib"][op] - bare
        share = f"{ours / theirs:.2f}" if theirs > 0 else "-"
        rows.append(f"| {op} | {bare:.0f} | {ours:.1f} | {theirs:.1f} | {share} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--api", required=True, help="base URL of the fake Bot API")
    args = parser.parse_args(argv)
    setup(args.mode)
    print(json.dumps(asyncio.run(measure(args.n, args.api))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
