"""A short `otelbot demo` run (small data, a few seconds of load): the real CLI, the real
`opentelemetry-instrument` bot and `otelbot-agent`, the embedded receiver. The report must
name every built-in problem with its handler, confirm the token never leaked, and write
the HTML file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e._run import ROOT

pytestmark = pytest.mark.e2e

# Each built-in problem and the handler the report must attribute it to.
EXPECTED = {
    "n+1 queries": "list_orders",
    "missing index": "redeem_promo",
    "unused index": "buy_product",
    "blocked event loop": "build_report",
    "cache that always misses": "get_price",
    "flood control (429)": "broadcast",
    "growing memory": "remember_visit",
}


def assert_report_names_every_problem(out: str) -> None:
    """The terminal report's problem table names each built-in problem with its handler."""
    problems = out.split("Problems found", 1)[1].split("Update latency per handler", 1)[0]
    rows = [line for line in problems.splitlines() if "│" in line]
    for problem, handler in EXPECTED.items():
        row = next((r for r in rows if f"✓ {problem}" in r), None)
        assert row is not None, f"{problem!r} not found:\n{problems}"
        assert row.split("│")[2].strip() == handler, row
    assert "✗" not in problems


def _otelbot() -> str:
    return str(Path(sys.executable).parent / "otelbot")


def test_short_demo_run_names_every_problem_and_its_handler(
    tmp_path: Path, pg_dsn: str, redis_url: str
) -> None:
    html = tmp_path / "report.html"
    proc = subprocess.run(
        [
            _otelbot(),
            "demo",
            "--duration",
            "10",
            "--small",
            "--no-progress",
            "--html",
            str(html),
            "--pg-dsn",
            pg_dsn,
            "--redis-url",
            redis_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert_report_names_every_problem(out)
    for section in (
        "Slowest trace",
        "Bot API calls per method",
        "Database statements",
        "Cache (otelbot.cache.requests)",
        "event-loop lag max",
        "Memory trend",
        "DROP INDEX CONCURRENTLY",
        "otelbot_demo.orders_note_idx",
        "CREATE INDEX CONCURRENTLY ON",
        "otelbot_demo.promo_codes",
    ):
        assert section in out, section
    assert "✓ the bot token appeared nowhere in the telemetry" in out

    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html")
    assert "Problems found" in text and "remember_visit" in text
    assert "<script src" not in text and "<link " not in text  # self-contained


def test_postgresql_unreachable_is_one_clear_line(tmp_path: Path, redis_url: str) -> None:
    proc = subprocess.run(
        [
            _otelbot(),
            "demo",
            "--duration",
            "1",
            "--small",
            "--no-progress",
            "--html",
            str(tmp_path / "r.html"),
            "--pg-dsn",
            "postgresql://postgres@127.0.0.1:1/test",
            "--redis-url",
            redis_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("otelbot demo: PostgreSQL is not reachable at 127.0.0.1:1")
    assert "scripts/services" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
