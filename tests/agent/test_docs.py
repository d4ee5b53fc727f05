"""docs/agent.md and the catalogue agree with the agent: every metric it exports is listed,
and every finding it sends is catalogued with settings that exist, at their real defaults."""

from __future__ import annotations

import re
from pathlib import Path

from otelbot import semconv
from otelbot.agent.config import AgentConfig, parse_duration

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
AGENT_EVENTS = {
    semconv.EVENT_UNUSED_INDEX,
    semconv.EVENT_DUPLICATE_INDEX,
    semconv.EVENT_INVALID_INDEX,
    semconv.EVENT_MISSING_INDEX,
    semconv.EVENT_IDLE_IN_TRANSACTION,
    semconv.EVENT_BOT_FROZEN,
}


def doc_rows(heading: str) -> dict[str, list[str]]:
    """First column (without backticks) -> cells, of the tables under a ``## heading``."""
    text = DOC.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([^`]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def test_every_metric_the_agent_exports_is_listed() -> None:
    listed = doc_rows("Metrics")
    agent = {m.name for m in semconv.all_metrics() if "agent" in m.source}
    assert semconv.OTELBOT_FINDINGS.name in agent
    assert agent - set(listed) == set()


def test_agent_findings_are_catalogued_with_their_real_settings() -> None:
    catalogued = {f.event: f for f in semconv.all_findings() if f.source == "agent"}
    assert set(catalogued) == AGENT_EVENTS
    assert set(doc_rows("Findings")) == AGENT_EVENTS
    keys = doc_rows("Configuration")
    defaults = AgentConfig()
    for finding in catalogued.values():
        assert finding.settings, finding.event
        for setting in finding.settings:
            value: object = defaults
            for part in setting.name.split("."):  # an agent.yaml key that exists
                value = getattr(value, part)
            assert keys[setting.name][0] == f"`{setting.default}`", setting.name
            assert parse_duration(setting.default) == value, setting.name
