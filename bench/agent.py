"""The agent on a large schema, beside Debian's prometheus-postgres-exporter.

A database ``otelbot_bench_agent`` with 2,000 tables and 6,000 indexes is created once
(kept between runs). Then, each measured on the same database:

- ``otelbot-agent once --config …`` (one full collection, PostgreSQL only): wall time, peak
  RSS, series printed, queries issued (transactions counted by ``pg_stat_database``);
- the same collection inside one agent process, twice: the first on a new connection, the
  next as the running sidecar does it at every poll (all tiers each time);
- ``prometheus-postgres-exporter`` (default collectors): one scrape of ``/metrics``: scrape
  time, exporter RSS after it, series, queries issued. Skipped when not installed
  (``apt-get install prometheus-postgres-exporter``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from otelbot.testing.defaults import pg_dsn
from otelbot.testing.processes import free_port

DATABASE = "otelbot_bench_agent"
TABLES = 2000
INDEXES_PER_TABLE = 3


def _dsn(database: str) -> str:
    return pg_dsn().rsplit("/", 1)[0] + "/" + database


async def ensure_schema(tables: int = TABLES) -> None:
    import asyncpg

    admin = await asyncpg.connect(pg_dsn())
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    con = await asyncpg.connect(_dsn(DATABASE))
    try:
        have = await con.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 't%'"
        )
        for start in range(have, tables, 200):
            parts = []
            for i in range(start, min(start + 200, tables)):
                t = f"t{i:04d}"
                parts.append(
                    f"CREATE TABLE {t} (id bigint PRIMARY KEY, user_id bigint, chat_id bigint, "
                    f"created timestamptz DEFAULT now(), body text);"
                    f"CREATE INDEX {t}_user ON {t} (user_id);"
                    f"CREATE INDEX {t}_chat ON {t} (chat_id, created);"
                )
            await con.execute("BEGIN;" + "".join(parts) + "COMMIT;")
        await con.execute("ANALYZE")
    finally:
        await con.close()


async def _transactions() -> int:
    import asyncpg

    con = await asyncpg.connect(pg_dsn())
    try:
        await con.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(0.6)
        return int(
            await con.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
                DATABASE,
            )
        )
    finally:
        await con.close()


def transactions() -> int:
    return asyncio.run(_transactions())


def _agent_config(directory: Path) -> Path:
    """An agent config for the benchmark database alone (PostgreSQL only)."""
    config = directory / "agent.yaml"
    config.write_text(
        f"postgresql:\n  databases:\n    - dsn: {_dsn(DATABASE)}\n"
        f"state_file: {directory / 'state.json'}\n"
    )
    return config


_MEASURE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('maxrss=%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "file=sys.stderr); sys.exit(r.returncode)"
)


def run_agent() -> dict[str, Any]:
    agent = shutil.which("otelbot-agent", path=str(Path(sys.executable).parent))
    if agent is None:
        return {"skipped": "otelbot-agent is not installed"}
    with tempfile.TemporaryDirectory() as tmp:
        config = _agent_config(Path(tmp))
        started = time.perf_counter()
        subprocess.run([agent, "--help"], capture_output=True, check=False)
        startup = time.perf_counter() - started
        before = transactions()
        started = time.perf_counter()
        # Through a fresh wrapper process: its RUSAGE_CHILDREN is the agent's alone.
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _MEASURE,
                agent,
                "once",
                "--config",
                str(config),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        after = transactions()
    rss = int(out.stderr.strip().rsplit("maxrss=", 1)[-1]) * 1024 if "maxrss=" in out.stderr else 0
    if out.returncode not in (0, 1):
        return {"skipped": f"otelbot-agent once failed ({out.returncode}): {out.stderr[-500:]}"}
    series = sum(
        1
        for line in out.stdout.splitlines()
        if line.startswith("{") and '"finding"' not in line[:40]
    )
    # Two queries of the measurement itself (flush + read) land in another database.
    return {
        "wall_s": wall,
        "startup_s": startup,
        "peak_rss_mb": rss / 2**20,
        "series": series,
        "queries": after - before,
    }


def _collect_twice(config_path: str) -> dict[str, Any]:
    """In this process, as the running agent does: the first full collection (new
    connection) and the next one (what the sidecar does at every poll), all tiers."""
    import resource

    from otelbot.agent.collectors import build_collectors
    from otelbot.agent.collectors.base import ALL_TIERS
    from otelbot.agent.config import load_config
    from otelbot.agent.state import IndexUsageStore

    config = load_config(config_path)
    collectors = build_collectors(
        config, IndexUsageStore(config.resolved_state_file(), readonly=True)
    )

    async def collect() -> dict[str, Any]:
        # Each collector keeps its connection between polls, as in `otelbot-agent run`.
        times, series = [], 0
        for _ in range(2):
            started = time.perf_counter()
            results = await asyncio.gather(*(c.collect(ALL_TIERS) for c in collectors))
            times.append(time.perf_counter() - started)
            failures = [f for r in results for f in r.failures]
            if failures:
                raise RuntimeError(f"collection failed: {failures}")
            series = sum(len(r.samples) for r in results)
        for collector in collectors:
            await collector.close()
        return {"first_s": times[0], "next_s": times[1], "series": series}

    result = asyncio.run(collect())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_collections() -> dict[str, Any]:
    """``_collect_twice`` in a fresh process (its own RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = _agent_config(Path(tmp))
        out = subprocess.run(
            [sys.executable, "-m", "bench.agent", "--collect", str(config)],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
    if out.returncode != 0:
        return {"skipped": f"collection failed ({out.returncode}): {out.stderr[-500:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_exporter() -> dict[str, Any]:
    exe = shutil.which("prometheus-postgres-exporter")
    if exe is None:
        return {
            "skipped": "prometheus-postgres-exporter is not installed "
            "(apt-get install prometheus-postgres-exporter)"
        }
    port = free_port()
    env = dict(os.environ, DATA_SOURCE_NAME=_dsn(DATABASE) + "?sslmode=disable")
    proc = subprocess.Popen(
        [exe, f"--web.listen-address=127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(100):
            try:
                urllib.request.urlopen(url.replace("/metrics", "/"), timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        before = transactions()
        started = time.perf_counter()
        body = urllib.request.urlopen(url, timeout=120).read().decode()
        wall = time.perf_counter() - started
        after = transactions()
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    finally:
        proc.terminate()
        proc.wait(10)
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    return {"wall_s": wall, "peak_rss_mb": rss / 2**20, "series": series, "queries": after - before}


def run_all(log: Any = print) -> dict[str, dict[str, Any]]:
    log(f"agent: schema {DATABASE} ({TABLES} tables, {TABLES * INDEXES_PER_TABLE} indexes)")
    asyncio.run(ensure_schema())
    return {
        "otelbot-agent once": run_agent(),
        "otelbot-agent collections": run_collections(),
        "prometheus-postgres-exporter": run_exporter(),
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| tool | wall s (of which process start-up) | peak RSS MB | series "
        "| queries (transactions) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "skipped" in r:
            rows.append(f"| {name} | skipped: {r['skipped']} | | | |")
        elif "first_s" in r:
            rows.append(
                f"| {name}: first (new connection) / next, in the running agent | "
                f"{r['first_s']:.2f} / {r['next_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                f"{r['series']} | |"
            )
        else:
            startup = f" ({r['startup_s']:.2f})" if "startup_s" in r else " (already running)"
            rows.append(
                f"| {name} | {r['wall_s']:.2f}{startup} | {r['peak_rss_mb']:.0f} | "
                f"{r['series']} | {r['queries']} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--collect":
        print(json.dumps(_collect_twice(sys.argv[2])))
    else:
        sys.exit("usage: python -m bench.agent --collect CONFIG")
