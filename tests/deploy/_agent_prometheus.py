"""Runs the real otelbot-agent CLI with its metrics served for Prometheus to scrape.

The agent exports only OTLP (otelbot/agent/pipeline.py builds its exporters itself and does
not read OTEL_METRICS_EXPORTER), so this swaps the providers it builds for a MeterProvider
with the SDK's PrometheusMetricReader; the collectors, the pipeline and the instruments are
the agent's own. Usage: python _agent_prometheus.py PORT otelbot-agent-args...
"""

from __future__ import annotations

import sys
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

import otelbot.agent.cli as agent_cli


def main() -> int:
    port = int(sys.argv[1])

    def build_providers(config: Any, loss: Any) -> tuple[MeterProvider, LoggerProvider]:
        start_http_server(port, addr="127.0.0.1")
        resource = Resource.create()
        return (
            MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()]),
            LoggerProvider(resource=resource),
        )

    agent_cli.build_providers = build_providers  # type: ignore[assignment]
    return agent_cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
