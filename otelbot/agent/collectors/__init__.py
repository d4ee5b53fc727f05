"""Collectors, registered by name. A new collector is one module with a ``build(config)``
function returning its targets, plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from otelbot.agent.collectors import postgres, process, redis, runtime
from otelbot.agent.collectors.base import Collector
from otelbot.agent.config import AgentConfig
from otelbot.agent.state import IndexUsageStore

Builder = Callable[[AgentConfig], list[Collector]]

REGISTRY: dict[str, Builder] = {
    process.NAME: process.build,
    runtime.NAME: runtime.build,
    postgres.NAME: postgres.build,
    redis.NAME: redis.build,
}


def build_collectors(config: AgentConfig, store: IndexUsageStore | None = None) -> list[Collector]:
    """Every enabled collector's targets, in registry order."""
    out: list[Collector] = []
    for name, builder in REGISTRY.items():
        if name == postgres.NAME:
            out.extend(postgres.build(config, store))
        else:
            out.extend(builder(config))
    return out
