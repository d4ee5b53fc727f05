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
            "bare,otelbot,otelbot (SDK exporter),contrib 10%",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text()
    for name in ("| bare |", "| otelbot |", "| otelbot (SDK exporter) |", "| contrib 10% |"):
        assert name in text
    data = json.loads(out.with_suffix(".json").read_text())
    runs = {row["config"]: row["runs"][0] for row in data["e2e"]}
    assert runs["bare"]["spans_per_update"] == 0
    # Full update traces: update, SQL, Redis and Bot API spans arrive at the receiver,
    # through the offload helper process (the default) and the SDK exporter alike.
    assert runs["otelbot"]["spans_per_update"] >= 4
    assert runs["otelbot (SDK exporter)"]["spans_per_update"] >= 4
    assert all(r["updates_per_s"] > 0 for r in runs.values())
