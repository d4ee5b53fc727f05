"""dashboards/: every panel's query returns data from a real Prometheus that scrapes a real
instrumented bot (examples/aiogram_bot.py under opentelemetry-instrument, the SDK's
Prometheus exporter) and the real otelbot-agent (its metrics served the same way). Both use
the PostgreSQL that preloads pg_stat_statements, so the "Slow statements" panel is checked
too."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otelbot.testing.fake_bot_api import FakeBotApi, Fault
from otelbot.testing.processes import Child, free_port
from tests.deploy.promnames import catalogue_series_names, metric_names_in
from tests.e2e._run import ROOT, run_instrumented

DASHBOARDS = ROOT / "dashboards"
HERE = Path(__file__).resolve().parent


def panels() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
    return out


def concrete(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "30s")
        .replace("$__range", "5m")
        .replace("$__interval", "15s")
        .replace("$job", ".*")
    )


def test_dashboards_are_built_from_build_py() -> None:
    sys.path.insert(0, str(DASHBOARDS))
    try:
        import build  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    for name, text in build.render().items():
        assert (DASHBOARDS / name).read_text() == text, f"run python dashboards/build.py ({name})"


def test_dashboards_have_stable_uids_and_a_datasource_variable() -> None:
    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
    assert uids == {"otelbot-bot-overview", "otelbot-postgresql", "otelbot-redis"}


def test_panels_use_only_catalogue_metrics() -> None:
    known = catalogue_series_names()
    for board, title, expr in panels():
        unknown = metric_names_in(expr) - known - {"target_info"}
        assert not unknown, f"{board} / {title}: not in otelbot/semconv.py: {unknown}"


# --------------------------------------------------------------------------- real Prometheus


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _query(base: str, expr: str) -> list[Any]:
    data = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert data["status"] == "success", data
    return data["data"]["result"]


@pytest.fixture
def prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    ports = {"bot": free_port(), "agent": free_port()}
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                    for job, port in ports.items()
                ],
            }
        )
    )
    server = Child(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        name="prometheus",
    )
    with server:
        base = f"http://127.0.0.1:{web}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1)
                break
            except OSError:
                if server.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"prometheus did not start:\n{server.tail(40)}")
                time.sleep(0.2)
        yield base, ports


def _bot_env(
    api: FakeBotApi, token: str, pg_dsn: str, redis_url: str, port: int, runtime_dir: Path
) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_SERVICE_NAME": "example-bot",
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTELBOT_RUNTIME_DIR": str(runtime_dir),
            "BOT_TOKEN": token,
            "BOT_API_BASE": api.base_url,
            "PG_DSN": pg_dsn,
            "REDIS_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


async def _prepare_database(pg_dsn: str) -> None:
    """A table with an index, scans of both kinds and dead rows, so the table and index
    panels have something to show; pg_stat_statements installed for the statements panel."""
    import asyncpg

    conn = await asyncpg.connect(pg_dsn)
    try:
        preload = await conn.fetchval("SHOW shared_preload_libraries")
        assert "pg_stat_statements" in preload, f"{pg_dsn} does not preload pg_stat_statements"
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS otelbot_deploy_check (id int PRIMARY KEY, v text);"
            "CREATE INDEX IF NOT EXISTS otelbot_deploy_check_v ON otelbot_deploy_check (v);"
            "TRUNCATE otelbot_deploy_check;"
            "INSERT INTO otelbot_deploy_check"
            " SELECT g, md5(g::text) FROM generate_series(1, 2000) g;"
            "DELETE FROM otelbot_deploy_check WHERE id % 3 = 0;"
        )
        for i in range(5):
            await conn.fetchval("SELECT count(*) FROM otelbot_deploy_check")
            await conn.fetchval("SELECT v FROM otelbot_deploy_check WHERE id = $1", i + 1)
    finally:
        await conn.close()


@pytest.mark.e2e
def test_every_panel_query_returns_series(
    prometheus: tuple[str, dict[str, int]],
    fake_bot_api: FakeBotApi,
    bot_token: str,
    pg_statements_dsn: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    import asyncio

    base, ports = prometheus
    pg_dsn = pg_statements_dsn
    asyncio.run(_prepare_database(pg_dsn))
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    api = fake_bot_api
    # One flood wait (429) and one 400 on sendMessage, the rest answered.
    api.script("sendMessage", [Fault.ok(), Fault.flood(retry_after=1), Fault.bad_request()])
    agent_config = tmp_path / "agent.yaml"
    agent_config.write_text(
        json.dumps(
            {
                "intervals": {"fast": "1s", "slow": "1s", "advice": "1h"},
                "process": {"enabled": True, "pattern": "aiogram_bot\\.py"},
                "runtime": {"enabled": True, "dir": str(runtime_dir)},
                "postgresql": {"databases": [{"name": "test", "dsn": pg_dsn}]},
                "redis": {"instances": [{"name": "cache", "url": redis_url}]},
                "health": {"host": "127.0.0.1", "port": free_port()},
                "state_file": str(tmp_path / "agent-state.json"),
            }
        )
    )
    env = _bot_env(api, bot_token, pg_dsn, redis_url, ports["bot"], runtime_dir)
    agent_env = {**env, "OTEL_SERVICE_NAME": "example-bot-agent"}
    agent = Child(
        [
            sys.executable,
            str(HERE / "_agent_prometheus.py"),
            str(ports["agent"]),
            "run",
            "--config",
            str(agent_config),
        ],
        env=agent_env,
        cwd=ROOT,
        name="agent",
    )
    with agent, run_instrumented(ROOT / "examples" / "aiogram_bot.py", env) as bot:
        bot.wait_for_line("polling", timeout=30)
        for round_ in range(3):
            api.push_updates(
                [
                    api.message_update("/start", user_id=8001),
                    api.message_update(f"hello {round_}", user_id=8002),
                    api.message_update("again", user_id=8003),
                    api.callback_update("count", user_id=8001),
                    api.message_update("/block", user_id=8004),
                    api.message_update("/gc", user_id=8005),
                    api.message_update("/fail", user_id=8006),
                ]
            )
            time.sleep(1.5)
        missing = _wait_for_all_panels(base, deadline=time.monotonic() + 40)
        assert not missing, (
            "panels without data:\n"
            + "\n".join(f"  {b} / {t}" for b, t, e in missing)
            + "\nseries scraped: "
            + ", ".join(sorted(_names(base)))
            + "\nbot output:\n"
            + bot.output[-3000:]
            + "\nagent output:\n"
            + agent.output[-3000:]
        )


def _names(base: str) -> list[str]:
    return _get(f"{base}/api/v1/label/__name__/values")["data"]


def _wait_for_all_panels(base: str, deadline: float) -> list[tuple[str, str, str]]:
    while True:
        missing = [(b, t, e) for b, t, e in panels() if not _query(base, concrete(e))]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(2)
