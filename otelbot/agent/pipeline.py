"""Runs every collector target on its own schedule and exports what they produce over OTLP.

Each target (the bot process, each database, each Redis) is its own asyncio task, so one
target down never stops the others. A target that is down is retried with exponential
backoff and jitter, capped at the fast interval, so data resumes within one interval after it
comes back. The latest samples are kept per target and read by observable instruments when
the SDK's periodic reader exports; findings become OTel log records with an event name,
each counted in ``otelbot.findings`` by kind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from otelbot import semconv
from otelbot.agent.collectors.base import (
    ALL_TIERS,
    Collection,
    Collector,
    Failure,
    Finding,
    Sample,
    Tier,
)
from otelbot.agent.config import AgentConfig
from otelbot.export import endpoint

log = logging.getLogger("otelbot.agent")

SCOPE = "otelbot.agent"
BACKOFF_BASE = 1.0


# --------------------------------------------------------------------------- export setup


def _protocol(signal: str) -> str:
    value = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    return value.strip().lower()


class ExportLoss:
    """Counts data points and log records the exporters could not deliver."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {"metrics": 0, "logs": 0}

    def add(self, signal: str, n: int) -> None:
        with self._lock:
            self.counts[signal] += n


def build_providers(config: AgentConfig, loss: ExportLoss) -> tuple[MeterProvider, LoggerProvider]:
    """OTLP exporters chosen by the standard OTEL_EXPORTER_OTLP_* variables (grpc or
    http/protobuf); the resource (service.name) from OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES, so the agent's data sits next to the bot's."""
    resource = Resource.create()
    metric_exporter: MetricExporter
    log_exporter: LogRecordExporter
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        metric_exporter = GrpcMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        metric_exporter = OTLPMetricExporter()
    if _protocol("LOGS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogExporter,
        )

        log_exporter = GrpcLogExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        log_exporter = OTLPLogExporter()
    # One line when the endpoint stops taking a signal and one when it takes it again,
    # instead of the SDK's lines at every export; the loss is counted all the same.
    endpoint.install(prefix="", back_level=logging.INFO)
    watched_metrics = endpoint.WatchedMetricExporter(
        metric_exporter, on_loss=functools.partial(loss.add, "metrics")
    )
    watched_logs = endpoint.WatchedLogExporter(
        log_exporter, on_loss=functools.partial(loss.add, "logs")
    )
    interval = None
    if not os.environ.get("OTEL_METRIC_EXPORT_INTERVAL"):
        # Not below 1 s, also when derived from a fast poll interval (see ExportInterval).
        interval = (config.export_interval or max(config.intervals.fast, 1.0)) * 1000
    reader = PeriodicExportingMetricReader(watched_metrics, export_interval_millis=interval)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(watched_logs, max_queue_size=2048)
    )
    return meter_provider, logger_provider


# --------------------------------------------------------------------------- the pipeline


def _observable(meter: Meter, metric: semconv.Metric, callback: Any) -> None:
    kind = metric.instrument
    if "updowncounter" in kind:
        meter.create_observable_up_down_counter(
            metric.name, [callback], unit=metric.unit, description=metric.description
        )
    elif "counter" in kind:
        meter.create_observable_counter(
            metric.name, [callback], unit=metric.unit, description=metric.description
        )
    else:
        meter.create_observable_gauge(
            metric.name, [callback], unit=metric.unit, description=metric.description
        )


class TargetStatus:
    def __init__(self, target: str) -> None:
        self.target = target
        self.up: bool | None = None  # None: not polled yet
        self.last_error: str | None = None
        self.failures_in_row = 0


class Pipeline:
    def __init__(
        self,
        config: AgentConfig,
        collectors: Sequence[Collector],
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        loss: ExportLoss | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self.collectors = list(collectors)
        self._clock = clock
        self._intervals = {
            Tier.FAST: config.intervals.fast,
            Tier.SLOW: config.intervals.slow,
            Tier.ADVICE: config.intervals.advice,
        }
        # latest[i][metric name] -> samples of target i; replaced per metric on each poll
        self._latest: list[dict[str, list[Sample]]] = [{} for _ in self.collectors]
        self._instruments: set[str] = set()
        self._finding_sent: dict[tuple[str, str, str], float] = {}
        self.status = [TargetStatus(c.target) for c in self.collectors]
        self.rounds = 0  # completed polls over all targets
        self._logged_failures: set[tuple[str, str, str]] = set()
        self._loss = loss
        self._meter: Meter | None = None
        self._logger = None
        if meter_provider is not None:
            self._meter = meter_provider.get_meter(SCOPE)
            self._duration = self._meter.create_histogram(
                semconv.OTELBOT_AGENT_COLLECT_DURATION.name,
                unit="s",
                description=semconv.OTELBOT_AGENT_COLLECT_DURATION.description,
                explicit_bucket_boundaries_advisory=list(semconv.DURATION_BUCKETS),
            )
            self._errors = self._meter.create_counter(
                semconv.OTELBOT_AGENT_COLLECT_ERRORS.name,
                unit="{error}",
                description=semconv.OTELBOT_AGENT_COLLECT_ERRORS.description,
            )
            # Agent findings have no handler: counted by kind alone.
            self._findings = self._meter.create_counter(
                semconv.OTELBOT_FINDINGS.name,
                unit=semconv.OTELBOT_FINDINGS.unit,
                description=semconv.OTELBOT_FINDINGS.description,
            )
            if loss is not None:
                _observable(self._meter, semconv.OTELBOT_AGENT_EXPORT_FAILED, self._observe_loss)
        if logger_provider is not None:
            self._logger = logger_provider.get_logger(SCOPE)

    # ----------------------------------------------------------------------- data

    def samples(self) -> list[Sample]:
        return [s for per_target in self._latest for group in per_target.values() for s in group]

    def _observe_loss(self, options: CallbackOptions) -> Iterable[Observation]:
        assert self._loss is not None
        return [
            Observation(n, {semconv.OTELBOT_SIGNAL: signal})
            for signal, n in self._loss.counts.items()
        ]

    def _ensure_instrument(self, metric: semconv.Metric) -> None:
        if self._meter is None or metric.name in self._instruments:
            return
        self._instruments.add(metric.name)
        name = metric.name

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(s.value, dict(s.attributes))
                for per_target in self._latest
                for s in per_target.get(name, ())
            ]

        _observable(self._meter, metric, observe)

    def record(self, index: int, collector: Collector, result: Collection) -> None:
        status = self.status[index]
        latest = self._latest[index]
        if not result.target_up:
            latest.clear()  # no stale values for a target that is down; only its up metric
        grouped: dict[str, list[Sample]] = {}
        for s in result.samples:
            grouped.setdefault(s.metric.name, []).append(s)
            self._ensure_instrument(s.metric)
        latest.update(grouped)
        for failure in result.failures:
            self._on_failure(collector, failure, partial=result.target_up)
        if self._meter is not None:
            for name, seconds in result.durations.items():
                self._duration.record(seconds, {semconv.OTELBOT_COLLECTOR: name})
        was_up = status.up
        status.up = result.target_up
        if result.target_up:
            if was_up is False:
                log.info("%s is back", collector.target)
            status.failures_in_row = 0
            status.last_error = result.failures[0].message if result.failures else None
        else:
            status.failures_in_row += 1
            status.last_error = result.failures[0].message if result.failures else "down"
            if was_up is not False:
                log.warning("%s is down: %s", collector.target, status.last_error)
        for finding in result.findings:
            self._send_finding(collector, finding)

    def _on_failure(self, collector: Collector, failure: Failure, partial: bool) -> None:
        if self._meter is not None:
            self._errors.add(
                1,
                {
                    semconv.OTELBOT_COLLECTOR: failure.collector,
                    semconv.ERROR_TYPE: failure.error_type,
                },
            )
        key = (collector.target, failure.collector, failure.error_type)
        if partial and key not in self._logged_failures:
            # Outages of a whole target are logged once by record(); this is one part failing.
            log.warning("%s failed: %s", failure.collector, failure.message)
            self._logged_failures.add(key)

    def _send_finding(self, collector: Collector, finding: Finding) -> None:
        key = (collector.target, *finding.key)
        now = self._clock()
        sent = self._finding_sent.get(key)
        if sent is not None and now - sent < self._intervals[Tier.ADVICE]:
            return  # the same finding at most once per advice interval
        self._finding_sent[key] = now
        log.info("finding %s: %s: %s", finding.event_name, finding.object, finding.evidence)
        if self._meter is not None:
            self._findings.add(1, {semconv.FINDING_KIND: finding.event_name})
        if self._logger is None:
            return
        attributes: dict[str, Any] = dict(finding.attributes)
        attributes[semconv.FINDING_OBJECT] = finding.object
        attributes[semconv.FINDING_EVIDENCE] = finding.evidence
        attributes[semconv.FINDING_SUGGESTION] = finding.suggestion
        self._logger.emit(
            event_name=finding.event_name,
            body=f"{finding.object}: {finding.evidence}. Suggested: {finding.suggestion}",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes=attributes,
        )

    # ----------------------------------------------------------------------- scheduling

    def _backoff(self, failures_in_row: int) -> float:
        cap = self._intervals[Tier.FAST]
        delay = min(cap, BACKOFF_BASE * 2 ** max(0, failures_in_row - 1))
        return delay * random.uniform(0.5, 1.0)

    async def run_target(self, index: int, stop: asyncio.Event) -> None:
        collector = self.collectors[index]
        next_due = dict.fromkeys(Tier, 0.0)
        while not stop.is_set():
            now = self._clock()
            due = frozenset(t for t, at in next_due.items() if at <= now)
            try:
                result = await collector.collect(due)
            except Exception as exc:  # a bug in a collector must not stop the agent
                log.exception("collector %s crashed", collector.target)
                result = Collection(target_up=False)
                result.failures.append(Failure(collector.kind, type(exc).__name__, str(exc)))
            self.record(index, collector, result)
            self.rounds += 1
            if result.target_up:
                for tier in due:
                    next_due[tier] = now + self._intervals[tier]
                delay = min(next_due.values()) - self._clock()
            else:
                # Its data was dropped: the first poll after recovery collects every tier.
                next_due = dict.fromkeys(Tier, 0.0)
                delay = self._backoff(self.status[index].failures_in_row)
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self.run_target(i, stop), name=f"collect {c.target}")
            for i, c in enumerate(self.collectors)
        ]
        try:
            await stop.wait()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in self.collectors), return_exceptions=True)

    async def collect_once(self) -> tuple[list[Sample], list[Finding], list[Failure]]:
        """Every tier of every target, once, concurrently (``otelbot-agent once``)."""
        results = await asyncio.gather(*(c.collect(ALL_TIERS) for c in self.collectors))
        await asyncio.gather(*(c.close() for c in self.collectors), return_exceptions=True)
        samples: list[Sample] = []
        findings: list[Finding] = []
        failures: list[Failure] = []
        for i, result in enumerate(results):
            self.status[i].up = result.target_up
            samples.extend(result.samples)
            findings.extend(result.findings)
            failures.extend(result.failures)
        return samples, findings, failures
