"""A short `otelbot demo` run (small data, a few seconds of load): the real CLI, the real
`opentelemetry-instrument` bot and `otelbot-agent`, the embedded receiver.

The report lists the findings the bot's detectors and the agent sent. This test holds the
demo bot's contract: each problem planted in it (otelbot/demo/bot/handlers.py and
schema.sql) is named by a finding with the right handler or object, its healthy handlers
get no bot finding, every setting the demo changes is printed and documented, the token
never leaked, and the HTML file is written."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from otelbot.demo.run import documented_settings
from tests.e2e._run import ROOT

pytestmark = pytest.mark.e2e

PROBLEMS_TITLE = "Problems found"
AFTER_PROBLEMS = "Update latency per handler"

#: Each planted problem: the finding's kind, and the handler (bot findings) or the object
#: (agent findings) it must name.
PLANTED_IN_HANDLERS = {
    "n_plus_one": "list_orders",
    "blocked_loop": "build_report",
    "cache_rarely_hits": "get_price",
    "flood_wait": "broadcast",
    "memory_growth": "remember_visit",
}
PLANTED_IN_SCHEMA = {
    "missing_index": "otelbot_demo.promo_codes",
    "unused_index": "otelbot_demo.orders_note_idx",
}
#: The demo bot's handlers with no problem in them.
HEALTHY = ("start", "show_profile", "chat")


@dataclass
class Row:
    finding: str
    handler: str
    object: str
    evidence: str
    suggestion: str
    code: str

    def text(self) -> str:
        """The row's cells without spaces (a folded cell splits a word across lines)."""
        return "".join((self.object, self.evidence, self.suggestion)).replace(" ", "")


def problem_rows(out: str) -> list[Row]:
    """The rows of the report's problem table (a rich table, cells wrapped over lines)."""
    section = out.split(PROBLEMS_TITLE, 1)[1].split(AFTER_PROBLEMS, 1)[0]
    rows: list[Row] = []
    cells: list[list[str]] = []
    for line in section.splitlines():
        line = line.strip()
        if line.startswith("│"):
            parts = [p.strip() for p in line.strip("│").split("│")]
            if not cells:
                cells = [[] for _ in parts]
            for column, part in zip(cells, parts, strict=True):
                if part:
                    column.append(part)
        elif line[:1] in ("├", "└") and cells:
            rows.append(Row(*(" ".join(c) for c in cells)))
            cells = []
    return rows


def missing_planted(out: str) -> list[str]:
    """Each planted problem no finding in the report names, as 'kind (handler)'."""
    rows = problem_rows(out)
    missing = [
        f"{kind} ({handler})"
        for kind, handler in PLANTED_IN_HANDLERS.items()
        if not any(r.finding == kind and r.handler == handler for r in rows)
    ]
    for kind, obj in PLANTED_IN_SCHEMA.items():
        named = [r for r in rows if r.finding == kind and obj in r.text()]
        if kind == "missing_index":  # the finding names the column to index
            named = [r for r in named if re.search(r"\(code\)|column`?code\b", r.text())]
        if not named:
            missing.append(f"{kind} ({obj})")
    return missing


def assert_report_names_every_problem(out: str) -> None:
    """The report's problem table names each planted problem, and no bot finding names a
    healthy handler."""
    assert PROBLEMS_TITLE in out, out
    rows = problem_rows(out)
    table = "\n".join(f"{r.finding} | {r.handler} | {r.object} | {r.code}" for r in rows)
    missing = missing_planted(out)
    assert not missing, f"not named by any finding: {missing}\nthe problem table:\n{table}"
    wrong = [r for r in rows if r.handler in HEALTHY]
    assert not wrong, f"findings on healthy handlers:\n{table}"


def demo_settings(out: str) -> dict[str, str]:
    """The header's "demo settings: NAME=value, ..." (wrapped over lines when long)."""
    block = out.split("demo settings: ", 1)[1].split("demo agent.yaml:", 1)[0]
    listed = " ".join(block.split())
    if listed.startswith("none"):
        return {}
    return dict(item.split("=", 1) for item in listed.split(", "))


def _otelbot() -> str:
    return str(Path(sys.executable).parent / "otelbot")


def test_short_demo_run_lists_a_finding_for_every_planted_problem(
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
    print(out)
    assert proc.returncode == 0, out + proc.stderr

    # What the demo changed is shown, and each is a documented setting of the bot.
    settings = demo_settings(out)
    documented = documented_settings()
    findings_doc = (ROOT / "docs" / "findings.md").read_text()
    for name in settings:
        assert name in documented and f"`{name}`" in findings_doc, name

    # Rows carry the bot's code location where the finding has one (handlers.py:LINE).
    rows = problem_rows(out)
    assert any(re.fullmatch(r"handlers\.py:\d+", r.code) for r in rows), rows
    for section in (
        "Slowest trace",
        "Bot API calls per method",
        "Database statements",
        "Cache (otelbot.cache.requests)",
        "event-loop lag max",
        "Memory trend",
        "Active users (telegram.users.active)",
        "5m window",
        "Database connections",
        "idle",
        "max_connections",
    ):
        assert section in out, section
    assert "✓ the bot token appeared nowhere in the telemetry" in out

    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html")
    assert PROBLEMS_TITLE in text and "list_orders" in text and "demo settings:" in text
    assert "<script src" not in text and "<link " not in text  # self-contained

    assert_report_names_every_problem(out)


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
