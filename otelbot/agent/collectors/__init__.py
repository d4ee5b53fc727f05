"""Collectors, registered by name. A new collector is one module with a ``build(config)``
function returning its targets, plus one line here."""

from __future__ import annotations

import importlib

from otelbot.agent.collectors.base import Collector
from otelbot.agent.config import AgentConfig
from otelbot.agent.state import IndexUsageStore

#: collector name (the module's ``NAME`` and its config section) -> module. A module is
#: imported only when its section is enabled: an agent without Redis never loads the
#: Redis client (a tenth of a second of start-up and its memory).
REGISTRY: dict[str, str] = {
    "process": "otelbot.agent.collectors.process",
    "runtime": "otelbot.agent.collectors.runtime",
    "postgresql": "otelbot.agent.collectors.postgres",
    "redis": "otelbot.agent.collectors.redis",
}


def _wanted(section: object) -> bool:
    """Enabled, and with at least one target where the section lists them."""
    if not getattr(section, "enabled", False):
        return False
    return all(
        getattr(section, targets)
        for targets in ("databases", "instances")
        if hasattr(section, targets)
    )


def build_collectors(config: AgentConfig, store: IndexUsageStore | None = None) -> list[Collector]:
    """Every enabled collector's targets, in registry order."""
    out: list[Collector] = []
    for name, module_name in REGISTRY.items():
        if not _wanted(getattr(config, name)):
            continue
        module = importlib.import_module(module_name)
        if name == "postgresql":
            out.extend(module.build(config, store))
        else:
            out.extend(module.build(config))
    return out
