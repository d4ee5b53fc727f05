"""The otelbot-agent command and its configuration, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from otelbot import semconv
from otelbot.agent.config import ConfigError, load_config
from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.processes import Child
from tests.agent.collectors.test_runtime_and_process import write_stats

from .conftest import free_port

AGENT = [sys.executable, "-m", "otelbot.agent.cli"]


def run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTELBOT_AGENT_")}
    full_env.update(env or {})
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=60, env=full_env)


def write_config(tmp_path: Path, pg_dsn: str, redis_url: str, extra: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"postgresql:\n  databases:\n    - dsn: {pg_dsn}\n"
        f"redis:\n  instances:\n    - url: {redis_url}\n"
        f"state_file: {tmp_path / 'state.json'}\n{extra}"
    )
    return path


def test_env_wins_over_the_file_and_durations_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("intervals:\n  fast: 15s\n  slow: 5m\npostgresql:\n  lock_timeout: 2s\n")
    monkeypatch.setenv("OTELBOT_AGENT_INTERVALS__FAST", "3s")
    monkeypatch.setenv("OTELBOT_AGENT_REDIS__INSTANCES", '[{"url": "redis://127.0.0.1:6379/1"}]')
    config = load_config(path)
    assert config.intervals.fast == 3.0 and config.intervals.slow == 300.0
    assert config.postgresql.lock_timeout == 2.0
    assert config.redis.instances[0].label() == "127.0.0.1:6379"


def test_secrets_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text("postgresql://bot:pa55word@db.internal:6543/botdb\n")
    path = tmp_path / "a.yaml"
    path.write_text(f"postgresql:\n  databases:\n    - dsn_file: {tmp_path / 'dsn'}\n")
    db = load_config(path).postgresql.databases[0]
    assert db.connect_dsn().endswith("@db.internal:6543/botdb")
    assert db.label() == "db.internal:6543/botdb"
    assert "pa55word" not in repr(db)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("intervals:\n  fast: soon\n", "intervals.fast: expected a duration like 15s"),
        ("postgres:\n  databases: []\n", "postgres: unknown key"),
        ("process:\n  enabled: true\n", "process: set one of pid, pid_file or pattern"),
        (
            "postgresql:\n  databases:\n    - dsn_file: /nonexistent/dsn\n",
            "postgresql.databases.0: cannot read dsn_file '/nonexistent/dsn'",
        ),
        (
            "redis:\n  instances:\n    - url: http://x\n",
            "redis.instances.0: url must start with redis://",
        ),
        ("intervals: [1, 2\n", "line 2"),
        ("- a\n- b\n", "the top level must be a mapping"),
    ],
)
def test_bad_configs_give_one_line_each(tmp_path: Path, yaml_text: str, expected: str) -> None:
    assert expected in _the_one_problem(tmp_path, yaml_text)


def _the_one_problem(tmp_path: Path, yaml_text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    return info.value.problems[0]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("postgresql:\n  top_tables: 99999999999999999999\n", "postgresql.top_tables: "),
        ("postgresql:\n  top_statements: 1001\n", "less than or equal to 1000"),
        ("log_level: NOPE\n", "log_level: must be one of DEBUG, INFO, WARNING"),
        ("export_interval: 0.0001\n", "export_interval: must be between 1s and 1d, not 0.1ms"),
        ("intervals:\n  fast: 1ms\n", "intervals.fast: must be between 100ms and 7d"),
        ("intervals:\n  slow: .inf\n", "intervals.slow: must be between"),
        ("postgresql:\n  statement_timeout: 1000d\n", "must be between 100ms and 1h"),
        ("postgresql:\n  unused_index_window: 0.5\n", "between 1s and 365d (or 0)"),
        ("postgresql:\n  missing_index_min_rows: 9223372036854775808\n", "less than or equal"),
        ("process:\n  pid: -1\n", "process.pid: "),
    ],
)
def test_values_out_of_bounds_are_errors(tmp_path: Path, yaml_text: str, expected: str) -> None:
    assert expected in _the_one_problem(tmp_path, yaml_text)


def test_bounds_leave_the_documented_values_alone(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "log_level: debug\nexport_interval: 1s\nintervals: {fast: 100ms, slow: 7d}\n"
        "postgresql: {top_tables: 1000, top_statements: 0, unused_index_window: 0}\n"
    )
    config = load_config(path)
    assert config.log_level == "DEBUG" and config.export_interval == 1.0
    assert config.intervals.slow == 7 * 86400 and config.postgresql.unused_index_window == 0


# Each of these crashed with a traceback and exit 1, or was silently ignored, before: the
# docs promise exit 2 and one line for every config error a user can make.
@pytest.mark.parametrize(
    ("content", "env", "expected"),
    [
        (b"intervals:\n  fast: 5s\n\xad\xfe\x00\x81", {}, "not a text file in UTF-8"),
        ("intervals:\n  fast: 5s\n".encode("utf-16"), {}, "the file is UTF-16; save it as UTF-8"),
        (b"1: 2\n", {}, "the top-level key 1 is not a name; the keys are intervals"),
        (b"true: 1\n", {}, "the top-level key True is not a name"),
        (
            None,
            {"OTELBOT_AGENT_REDIS__INSTANCES": "not json"},
            "OTELBOT_AGENT_REDIS__INSTANCES: a list is written as JSON",
        ),
        (
            None,
            {"OTELBOT_AGENT_INTERVAL__FAST": "5s"},
            "OTELBOT_AGENT_INTERVAL__FAST: 'interval' is not a key of the top level; "
            "did you mean OTELBOT_AGENT_INTERVALS__FAST?",
        ),
        (None, {"OTELBOT_AGENT_BOGUS": "1"}, "OTELBOT_AGENT_BOGUS: 'bogus' is not a key"),
        (
            None,
            {"OTELBOT_AGENT_INTERVALS__FASTT": "5s"},
            "did you mean OTELBOT_AGENT_INTERVALS__FAST?",
        ),
        (None, {"OTELBOT_AGENT_LOG_LEVEL": "NOPE"}, "log_level (from OTELBOT_AGENT_LOG_LEVEL)"),
        (b"postgresql:\n  top_tables: 99999999999999999999\n", {}, "postgresql.top_tables"),
        (b"export_interval: 0.0001\n", {}, "export_interval: must be between 1s"),
    ],
)
def test_config_errors_exit_2_with_one_line(
    tmp_path: Path, content: bytes | None, env: dict[str, str], expected: str
) -> None:
    args = ["check"]
    if content is not None:
        path = tmp_path / "agent.yaml"
        path.write_bytes(content)
        args += ["--config", str(path)]
    result = run_agent(*args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("otelbot-agent: config error: ")
    assert expected in lines[0]


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("intervals:\n  fast: -1\n  slow: never\nredis:\n  instances: [{}]\n")
    result = run_agent("check", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("otelbot-agent: config error: ") for line in lines)
    assert "Traceback" not in result.stderr


def test_check_ok_and_failing_target(tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    ok = run_agent("check", "--config", str(write_config(tmp_path, pg_dsn, redis_url)))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    postgresql" in ok.stdout and "ok    redis" in ok.stdout

    dead = free_port()
    bad = write_config(
        tmp_path,
        f"postgresql://postgres:hunter2secret@127.0.0.1:{dead}/test",
        redis_url,
    )
    result = run_agent("check", "--config", str(bad))
    assert result.returncode == 1
    assert f"FAIL  postgresql 127.0.0.1:{dead}/test" in result.stdout
    assert "check host and port" in result.stdout
    assert "hunter2secret" not in result.stdout + result.stderr


def test_once_json_and_table(tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    config = str(write_config(tmp_path, pg_dsn, redis_url))
    result = run_agent("once", "--config", config, "--format", "json")
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {o["name"]: o for o in objects if o["type"] == "metric"}
    assert by_name["postgresql.up"]["value"] == 1
    assert by_name["redis.up"]["value"] == 1
    assert set(by_name["postgresql.db_size"]) == {"type", "name", "unit", "attributes", "value"}
    assert by_name["postgresql.db_size"]["unit"] == "By"
    assert by_name["postgresql.db_size"]["attributes"]["db.namespace"] == pg_dsn.rsplit("/", 1)[1]

    table = run_agent("once", "--config", config, "--format", "table")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["METRIC", "VALUE", "UNIT", "ATTRIBUTES"]
    assert "finding(s)" in table.stdout
    assert not (tmp_path / "state.json").exists()  # once changes nothing


def test_run_exports_serves_health_and_stops_on_sigterm(
    tmp_path: Path, redis_url: str, otlp_receiver: OtlpReceiver
) -> None:
    port = free_port()
    # A frozen bot (this process, heartbeat 2 minutes old): a finding, and its count.
    write_stats(tmp_path / f"{os.getpid()}.stats", os.getpid(), time.time() - 120)
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"intervals:\n  fast: 0.5s\nexport_interval: 1s\n"
        f"redis:\n  instances:\n    - url: {redis_url}\n"
        f"runtime: {{dir: {tmp_path}}}\n"
        f"health:\n  port: {port}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELBOT_AGENT_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="otb-agent-e2e",
    )
    proc = subprocess.Popen(
        [*AGENT, "run", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        otlp_receiver.wait_for(lambda r: r.points("redis.up"), 20)
        counted = otlp_receiver.wait_for(
            lambda r: [
                p
                for p in r.points(semconv.OTELBOT_FINDINGS.name)
                if p.attributes.get(semconv.FINDING_KIND) == semconv.EVENT_BOT_FROZEN
            ],
            20,
        )
        otlp_receiver.wait_for(lambda r: r.logs(semconv.EVENT_BOT_FROZEN), 20)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert otlp_receiver.points("redis.up")[0].resource["service.name"] == "otb-agent-e2e"
    # Sent once per advice interval (1 h by default): one finding, counted once, no handler.
    assert len(otlp_receiver.logs(semconv.EVENT_BOT_FROZEN)) == 1
    points = otlp_receiver.points(semconv.OTELBOT_FINDINGS.name)
    assert len(points) >= len(counted)
    for point in points:  # cumulative, exported every second
        assert point.kind == "sum" and point.monotonic and point.value == 1
        assert point.attributes == {semconv.FINDING_KIND: semconv.EVENT_BOT_FROZEN}
        assert point.resource["service.name"] == "otb-agent-e2e"


def test_run_says_once_when_the_endpoint_is_down_and_once_when_it_is_back(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()  # nothing listens there yet
    # A frozen bot: a finding (a log record) every advice interval, besides the metrics.
    write_stats(tmp_path / f"{os.getpid()}.stats", os.getpid(), time.time() - 120)
    path = tmp_path / "agent.yaml"
    path.write_text(
        "intervals: {fast: 0.5s, advice: 1s}\nexport_interval: 1s\nlog_level: debug\n"
        f"redis:\n  instances:\n    - url: {redis_url}\n"
        f"runtime: {{dir: {tmp_path}}}\nhealth: {{enabled: false}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTELBOT_AGENT_", "OTEL_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
        OTEL_BLRP_SCHEDULE_DELAY="200",
    )
    out = Child([*AGENT, "run", "--config", str(path)], env=env)
    receiver = OtlpReceiver(http_port=port, grpc_port=None)
    items = ("data points", "log records")
    try:
        for item in items:  # down, and failing again without a line at INFO
            out.wait_for_line(f"still does not take {item}", 60)
        receiver.start()
        for item in items:
            out.wait_for_line(f"takes {item} again", 60)
        # The counted loss still tells how much was lost, for both signals.
        receiver.wait_for(
            lambda r: (
                {
                    p.attributes[semconv.OTELBOT_SIGNAL]
                    for p in r.points(semconv.OTELBOT_AGENT_EXPORT_FAILED.name)
                    if p.value > 0
                }
                >= {"metrics", "logs"}
            ),
            30,
        )
    finally:
        code = out.stop(30)  # SIGTERM, as a supervisor would
        receiver.stop()
    assert code == 0, out.output
    for item in items:
        down = out.matching(f"cannot export {item} to ")
        back = out.matching(f"takes {item} again")
        assert len(down) == 1 and len(back) == 1, out.output
        assert down[0].startswith("otelbot-agent: WARNING: cannot export")
        assert f"127.0.0.1:{port}" in down[0] and "(Connection refused)" in down[0]
        assert back[0].startswith("otelbot-agent: INFO: http://127.0.0.1:")
    for sdk_line in ("Transient error", "Failed to export", "Traceback"):
        assert out.matching(sdk_line) == [], out.output


def test_collector_modules_load_only_for_enabled_targets(tmp_path: Path, pg_dsn: str) -> None:
    import importlib

    from otelbot.agent.collectors import REGISTRY

    for name, module in REGISTRY.items():  # each name is its module's NAME
        assert name == importlib.import_module(module).NAME
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"postgresql:\n  databases:\n    - dsn: {pg_dsn}\nstate_file: {tmp_path / 'state.json'}\n"
    )
    probe = (
        "import json, sys; from otelbot.agent.config import load_config; "
        "from otelbot.agent.collectors import build_collectors; "
        f"c = build_collectors(load_config({str(config)!r})); "
        "print(json.dumps([[type(x).__name__ for x in c], sorted(sys.modules)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTELBOT_AGENT_")},
    )
    assert out.returncode == 0, out.stderr
    built, modules = json.loads(out.stdout)
    assert built == ["PostgresCollector"]
    assert "otelbot.agent.collectors.postgres" in modules
    # No Redis target: neither the Redis collector nor the Redis client is loaded.
    assert "otelbot.agent.collectors.redis" not in modules and "redis" not in modules
