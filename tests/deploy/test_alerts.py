"""alerts/: `promtool check rules` and `promtool test rules` (a unit test for every alert),
and every metric an alert uses is in the catalogue."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.promnames import catalogue_series_names, metric_names_in

ALERTS = Path(__file__).resolve().parents[2] / "alerts"
RULES = ALERTS / "otelbot.rules.yml"
TESTS = ALERTS / "otelbot.test.yml"


def alerts() -> list[dict[str, str]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules(promtool: str) -> None:
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules(promtool: str) -> None:
    out = subprocess.run(
        [promtool, "test", "rules", TESTS.name],
        cwd=ALERTS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    tested = set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            if t.get("exp_alerts"):
                tested.add(t["alertname"])
    assert {a["alert"] for a in alerts()} == tested


def test_the_issue_alerts_exist() -> None:
    assert {a["alert"] for a in alerts()} >= {
        "TelegramUpdateLatencyHigh",
        "TelegramFloodWaits",
        "BotEventLoopBlocked",
        "BotFrozen",
        "BotMemoryGrowing",
        "PostgreSQLDown",
        "RedisDown",
        "PostgreSQLIdleInTransaction",
        "PostgreSQLUnusedIndex",
        "OtelbotFinding",
    }


def test_alerts_use_only_catalogue_metrics() -> None:
    known = catalogue_series_names()
    for a in alerts():
        unknown = metric_names_in(a["expr"]) - known
        assert not unknown, f"{a['alert']}: not in otelbot/semconv.py: {unknown}"
