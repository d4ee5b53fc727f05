"""The benchmark harness still runs (tiny sizes, no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run

pytestmark = pytest.mark.e2e


def test_e2e_bench_runs_every_kind_of_configuration(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    code = run.main(
        [
            "--quick",
            "--only",
            "e2e",
            "--configs",
            # bare right after a bot that exported: its spans must all count to that run
            "otelbot,bare,otelbot (SDK exporter),contrib 10%,otelbot, profiler off",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text()
    for name in (
        "| bare |",
        "| otelbot |",
        "| otelbot (SDK exporter) |",
        "| contrib 10% |",
        "| otelbot, profiler off |",
    ):
        assert name in text
    data = json.loads(out.with_suffix(".json").read_text())
    runs = {row["config"]: row["runs"][0] for row in data["e2e"]}
    # Spans are counted at the receiver for every configuration, the bare bot included:
    # full update traces (update, SQL, Redis and Bot API spans) through the offload helper
    # process (the default) and the SDK exporter alike, a tenth of them at 10%, none bare.
    assert runs["otelbot"]["spans_per_update"] >= 4
    assert runs["otelbot (SDK exporter)"]["spans_per_update"] >= 4
    assert 0 < runs["contrib 10%"]["spans_per_update"] < 4
    assert runs["bare"]["spans_per_update"] == 0  # none left over from the run before
    # Throughput from the fake API's call log, CPU and memory from /proc: every run measured.
    for name, r in runs.items():
        assert r["updates_per_s"] > 0, name
        assert r["cpu_us_per_update"] > 0, name
        assert r["peak_rss_mb"] > 10, name  # a Python process with aiogram loaded
        assert r["bot_cpu_total_s"] > 0, name  # read at exit, before the bot was reaped
    # The whole process tree: the export helper's CPU is counted (it is started at the
    # first batch, at the latest at the final flush, and waited for by the bot); the bot
    # exporting in its own process has no helper.
    assert runs["otelbot"]["helper_cpu_total_s"] > 0
    assert runs["otelbot (SDK exporter)"]["helper_cpu_total_s"] == 0
    assert runs["bare"]["helper_cpu_total_s"] == 0


def test_one_cpu_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    configs = "bare,otelbot,otelbot (export helper)"
    code = run.main(["--quick", "--only", "onecpu", "--onecpu-configs", configs, "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert "## One CPU" in text
    for name in configs.split(","):
        assert f"| {name} |" in text
    data = {
        row["config"]: row for row in json.loads(out.with_suffix(".json").read_text())["onecpu"]
    }
    for name, row in data.items():
        short, long = row["runs"][0]
        assert (short["updates"], long["updates"]) == (30, 90), name
        assert row["updates_per_s"] > 0, name
    # On one CPU otelbot as shipped exports from the bot's process; the helper row forces
    # the helper, whose CPU is counted with the bot's.
    assert data["otelbot"]["runs"][0][1]["helper_cpu_total_s"] == 0
    assert data["otelbot (export helper)"]["runs"][0][1]["helper_cpu_total_s"] > 0
    assert data["otelbot"]["runs"][0][1]["spans_per_update"] >= 4
    assert data["otelbot (export helper)"]["runs"][0][1]["spans_per_update"] >= 4


def test_profiler_and_memory_benches_run(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    assert run.main(["--quick", "--only", "profiler,memory", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## The sampling profiler" in text and "## Memory watch" in text
    data = json.loads(out.with_suffix(".json").read_text())
    rows = data["profiler"]["per_sample"]
    assert [(r["depth"], r["bot_frames"]) for r in rows] == [(20, 5), (50, 5), (50, 50), (100, 10)]
    for r in rows:
        assert r["us"] > 0 and r["us_without_clock"] > 0
    assert data["profiler"]["chunks_per_s_on"] > 0 and data["profiler"]["chunks_per_s_off"] > 0
    per_call = data["memory"]["us_per_call"]
    assert set(per_call) == {"bare", "idle", "window"}
    assert all(v > 0 for v in per_call.values())
    # The window was really traced by otelbot's watch: calls were made while it was open,
    # and the watch thread took its snapshots and tallied them.
    assert data["memory"]["window_calls"] > 0
    assert data["memory"]["window_thread_cpu_ms"] > 0


def test_encode_bench_runs_and_checks_the_bytes(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    assert run.main(["--quick", "--only", "encode", "--out", str(out)]) == 0
    assert "## OTLP encoding" in out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())["encode"]
    # Every way was measured (each one's bytes were checked against the SDK's first).
    assert set(data) == {"sdk", "ours spans", "ours light", "ours rows", "rebuild + sdk"}
    assert all(v > 0 for v in data.values())
