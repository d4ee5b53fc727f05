"""Per operation: what tracing adds to one aiohttp request, asyncpg query, Redis command.

Each mode runs in its own process (instrumentors patch globally):

- ``bare``: no OpenTelemetry at all (no SDK);
- ``otelbot``: otelbot's instrumentors, an SDK TracerProvider, and the trace export path
  otelbot's distro picks on this machine (``otelbot.export.cpus``: the export helper
  process from two usable CPUs on, else the SDK's BatchSpanProcessor + OTLP exporter);
- ``contrib``: the contrib instrumentations, an SDK TracerProvider with the SDK's
  BatchSpanProcessor + OTLP/HTTP exporter (what a contrib setup ships with).

Both instrumented modes have a MeterProvider with an in-memory reader (metrics are
recorded, not exported) and send their spans as OTLP/HTTP protobuf to the benchmark's
receiver in another process. The servers are real: the fake Bot API in another process,
PostgreSQL, Redis. The figure is CPU time per operation of the process (all threads) plus
its export helper's, the span processors flushed before each reading (so encoding and
sending are in it); CPU time is steadier than wall time on a shared machine; the lowest of
the interleaved rounds is kept; added = mode - bare.

    python -m bench.ops --mode otelbot --n 3000      # one mode, prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.procs import FakeApi, Receiver, tree_cpu_seconds
from otelbot.testing.defaults import BOT_TOKEN, pg_dsn, redis_url

MODES = ("bare", "otelbot", "contrib")
OPERATIONS = ("aiohttp request", "asyncpg query", "Redis command")


def setup(mode: str, endpoint: str) -> Any:
    """The mode's tracer provider (None for bare); spans go to ``endpoint`` (OTLP/HTTP)."""
    if mode == "bare":
        return None
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = endpoint + "/v1/traces"  # helper too
    provider = TracerProvider()
    if mode == "otelbot":
        from otelbot.export import distro, offload

        exporter: SpanExporter = (
            offload.OffloadSpanExporter()
            if distro.choose_trace_exporter() == distro.HELPER_EXPORTER
            else OTLPSpanExporter()
        )
        provider.add_span_processor(offload.export_processor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
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
    return provider


def _cpu(provider: Any) -> tuple[float, float]:
    """(this process's CPU seconds, its export helper's), after flushing the spans."""
    if provider is not None:
        provider.force_flush()
    return time.process_time(), tree_cpu_seconds(os.getpid())[1]


async def measure(n: int, api_base: str, provider: Any) -> dict[str, float]:
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
        for _ in range(min(200, n)):  # warm up: connections, caches, the export helper
            await op()
        # Under a parent span, as in a bot's handler (the update's span is current).
        with tracer.start_as_current_span("parent"):
            cpu, helper = _cpu(provider)
            wall = time.perf_counter()
            for _ in range(n):
                await op()
            wall = time.perf_counter() - wall
            cpu_end, helper_end = _cpu(provider)
        results[name] = (cpu_end - cpu + helper_end - helper) / n * 1e6
        results[name + " helper"] = (helper_end - helper) / n * 1e6
        results[name + " wall"] = wall / n * 1e6
    await session.close()
    await cache.aclose()
    await pool.close()
    return results


def run_mode(mode: str, n: int, api_base: str, endpoint: str) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.ops", "--mode", mode, "--n", str(n), "--api", api_base]
    out = subprocess.run(
        [*cmd, "--endpoint", endpoint],
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
    receiver = Receiver()
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    try:
        for round_no in range(1, repeats + 1):
            for mode in MODES:
                samples[mode].append(run_mode(mode, n, api.base_url, receiver.endpoint))
                row = "  ".join(f"{op} {samples[mode][-1][op]:6.1f}" for op in OPERATIONS)
                log(f"  ops round {round_no}/{repeats} {mode:<8} CPU µs/op: {row}")
    finally:
        api.stop()
        receiver.close()
    return {m: {k: min(s[k] for s in samples[m]) for k in samples[m][0]} for m in MODES}


def table(medians: dict[str, dict[str, float]]) -> str:
    rows = [
        "| operation | bare CPU µs/op | otelbot adds µs (of which its export helper) "
        "| contrib adds µs | otelbot / contrib |",
        "|---|---:|---:|---:|---:|",
    ]
    for op in OPERATIONS:
        bare = medians["bare"][op]
        ours = medians["otelbot"][op] - bare
        theirs = medians["contrib"][op] - bare
        share = f"{ours / theirs:.2f}" if theirs > 0 else "-"
        helper = medians["otelbot"].get(op + " helper", 0.0)
        rows.append(f"| {op} | {bare:.0f} | {ours:.1f} ({helper:.1f}) | {theirs:.1f} | {share} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--api", required=True, help="base URL of the fake Bot API")
    parser.add_argument("--endpoint", required=True, help="base URL of the OTLP receiver")
    args = parser.parse_args(argv)
    provider = setup(args.mode, args.endpoint)
    results = asyncio.run(measure(args.n, args.api, provider))
    if provider is not None:
        provider.shutdown()  # the export helper exits before this process
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
