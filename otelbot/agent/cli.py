"""``otelbot-agent``: the sidecar that watches the bot process, its runtime stats file,
PostgreSQL and Redis, and exports over OTLP.

    otelbot-agent run   [--config agent.yaml]                 # the long-running sidecar
    otelbot-agent check [--config agent.yaml]                 # validate, try every target once
    otelbot-agent once  [--config agent.yaml] [--format table|json]   # one collection, printed

Exit codes: 0 ok, 1 a target failed, 2 the configuration is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from otelbot import semconv
from otelbot.agent.collectors import build_collectors
from otelbot.agent.collectors.base import CheckError, Collector, Finding, Sample
from otelbot.agent.config import AgentConfig, ConfigError, load_config
from otelbot.agent.health import HealthServer
from otelbot.agent.pipeline import ExportLoss, Pipeline, build_providers
from otelbot.agent.state import IndexUsageStore

log = logging.getLogger("otelbot.agent")

EXIT_OK = 0
EXIT_TARGET_FAILED = 1
EXIT_BAD_CONFIG = 2
CHECK_TIMEOUT = 30.0


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("otelbot-agent: %(levelname)s: %(message)s"))
    root = logging.getLogger("otelbot")
    root.handlers[:] = [handler]
    root.setLevel(level)  # one of config.LOG_LEVELS
    root.propagate = False


def _load(path: str | None, err: TextIO) -> AgentConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"otelbot-agent: config error: {problem}", file=err)
        return None


# --------------------------------------------------------------------------- run


async def _run(config: AgentConfig) -> int:
    loss = ExportLoss()
    meter_provider, logger_provider = build_providers(config, loss)
    collectors = build_collectors(config)
    if not collectors:
        log.warning("no collector has a target: configure process, runtime, postgresql or redis")
    pipeline = Pipeline(config, collectors, meter_provider, logger_provider, loss)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    health: HealthServer | None = None
    if config.health.enabled:
        health = HealthServer(pipeline, config.health.host, config.health.port)
        try:
            await health.start()
            log.info("health on http://%s:%d/healthz and /readyz", config.health.host, health.port)
        except OSError as exc:
            log.error(
                "cannot listen on %s:%d for health checks (%s); set health.port to a free port "
                "or health.enabled: false",
                config.health.host,
                config.health.port,
                exc.strerror,
            )
            return EXIT_BAD_CONFIG
    log.info(
        "started with %d target(s): %s",
        len(collectors),
        ", ".join(c.target for c in collectors) or "none",
    )
    try:
        await pipeline.run(stop)
    finally:
        if health is not None:
            await health.stop()
        # Export what we have before leaving; off the loop, the exporters block.
        await asyncio.to_thread(meter_provider.shutdown)
        await asyncio.to_thread(logger_provider.shutdown)
    return EXIT_OK


# --------------------------------------------------------------------------- check


def _otlp_endpoint_line() -> str:
    import os

    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    grpc = (os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf") == "grpc"
    if not endpoint:
        endpoint = "http://localhost:4317" if grpc else "http://localhost:4318"
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host, port = parts.hostname or "localhost", parts.port or (4317 if grpc else 4318)
    try:
        with socket.create_connection((host, port), timeout=2):
            return f"ok    OTLP endpoint {host}:{port}"
    except OSError as exc:
        return (
            f"warn  OTLP endpoint {host}:{port}: not reachable ({exc.strerror or exc}); data "
            "would be dropped with a counted loss: set OTEL_EXPORTER_OTLP_ENDPOINT"
        )


async def _check_one(collector: Collector) -> tuple[bool, str]:
    try:
        detail = await asyncio.wait_for(collector.check(), CHECK_TIMEOUT)
        return True, f"ok    {collector.target}: {detail}"
    except CheckError as exc:
        return False, f"FAIL  {collector.target}: {exc}"
    except asyncio.TimeoutError:
        return False, f"FAIL  {collector.target}: no answer within {CHECK_TIMEOUT:.0f} s"
    except Exception as exc:
        return False, f"FAIL  {collector.target}: {type(exc).__name__}: {exc}"
    finally:
        await collector.close()


async def _check(config: AgentConfig, path: str | None, out: TextIO) -> int:
    print(f"ok    config {path or '(defaults and environment)'}", file=out)
    collectors = build_collectors(config, IndexUsageStore(None))
    if not collectors:
        print("FAIL  no targets: configure process, runtime, postgresql or redis", file=out)
        return EXIT_TARGET_FAILED
    results = await asyncio.gather(*(_check_one(c) for c in collectors))
    for _ok, line in results:
        print(line, file=out)
    print(await asyncio.to_thread(_otlp_endpoint_line), file=out)
    return EXIT_OK if all(ok for ok, _ in results) else EXIT_TARGET_FAILED


# --------------------------------------------------------------------------- once

_TABLE_HIDDEN = {semconv.SERVER_ADDRESS, semconv.SERVER_PORT}


def _value(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:.6g}"


def sample_json(s: Sample) -> dict[str, Any]:
    value: float | int = int(s.value) if s.value == int(s.value) else s.value
    return {
        "type": "metric",
        "name": s.metric.name,
        "unit": s.metric.unit,
        "attributes": dict(s.attributes),
        "value": value,
    }


def finding_json(f: Finding) -> dict[str, Any]:
    return {
        "type": "finding",
        "event_name": f.event_name,
        "object": f.object,
        "evidence": f.evidence,
        "suggestion": f.suggestion,
        "attributes": dict(f.attributes),
    }


def print_table(samples: Sequence[Sample], findings: Sequence[Finding], out: TextIO) -> None:
    rows = []
    for s in samples:
        attrs = " ".join(f"{k}={v}" for k, v in s.attributes.items() if k not in _TABLE_HIDDEN)
        rows.append((s.metric.name, _value(s.value), s.metric.unit, attrs))
    if rows:
        w0 = max(len(r[0]) for r in [*rows, ("METRIC", "", "", "")])
        w1 = max(len(r[1]) for r in [*rows, ("", "VALUE", "", "")])
        w2 = max(len(r[2]) for r in [*rows, ("", "", "UNIT", "")])
        print(f"{'METRIC':<{w0}}  {'VALUE':>{w1}}  {'UNIT':<{w2}}  ATTRIBUTES", file=out)
        for r in rows:
            print(f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:<{w2}}  {r[3]}".rstrip(), file=out)
    print(f"\n{len(findings)} finding(s)", file=out)
    for f in findings:
        print(
            f"\n[{f.event_name}] {f.object}\n  evidence:  {f.evidence}\n"
            f"  suggested: {f.suggestion}",
            file=out,
        )


async def _once(config: AgentConfig, fmt: str, out: TextIO, err: TextIO) -> int:
    # Reads the unused-index history but does not write it: `once` changes nothing.
    store = IndexUsageStore(config.resolved_state_file(), readonly=True)
    collectors = build_collectors(config, store)
    if not collectors:
        print(
            "otelbot-agent: no targets: configure process, runtime, postgresql or redis", file=err
        )
        return EXIT_TARGET_FAILED
    pipeline = Pipeline(config, collectors)
    samples, findings, failures = await pipeline.collect_once()
    for failure in failures:
        print(
            f"otelbot-agent: {failure.collector} failed ({failure.error_type}): {failure.message}",
            file=err,
        )
    if fmt == "json":
        for s in samples:
            print(json.dumps(sample_json(s), sort_keys=False), file=out)
        for f in findings:
            print(json.dumps(finding_json(f), sort_keys=False), file=out)
    else:
        print_table(samples, findings, out)
    return EXIT_OK if all(st.up for st in pipeline.status) else EXIT_TARGET_FAILED


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otelbot-agent",
        description="Sidecar agent: the bot process, its runtime stats, PostgreSQL and Redis "
        "health, exported over OTLP.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "collect and export over OTLP until stopped"),
        ("check", "validate the config and try every target once"),
        ("once", "collect everything once and print it (no export)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--config",
            "-c",
            default=None,
            help="YAML config file (default: $OTELBOT_AGENT_CONFIG; env OTELBOT_AGENT_* wins)",
        )
        if name == "once":
            p.add_argument("--format", choices=("table", "json"), default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = _load(args.config, sys.stderr)
    if config is None:
        return EXIT_BAD_CONFIG
    _setup_logging(config.log_level)
    try:
        if args.command == "run":
            return asyncio.run(_run(config))
        if args.command == "check":
            return asyncio.run(_check(config, args.config, sys.stdout))
        return asyncio.run(_once(config, args.format, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `otelbot-agent once | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
