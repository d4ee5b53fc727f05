"""otelbot's own aggregation (fastmetrics) reports exactly what the SDK's instruments
report, and steps aside whenever a reader or a view would make it differ."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from otelbot import semconv
from otelbot.core import fastmetrics
from otelbot.core.fastmetrics import create_instrument

METRICS = (
    semconv.DB_CLIENT_OPERATION_DURATION,
    semconv.TELEGRAM_UPDATES,
    semconv.TELEGRAM_UPDATES_ACTIVE,
    semconv.OTELBOT_GC_PAUSE_DURATION,
)


def _record_workload(meter: Any, seed: int) -> list[Any]:
    """The same measurements, in the same order, as an instrumentation would make them;
    attribute dicts are cached and reused (the hot path) and sometimes rebuilt equal."""
    instruments = [create_instrument(meter, m) for m in METRICS]
    duration, updates, active, pause = instruments
    rng = random.Random(seed)
    cached = [
        {"db.system.name": "postgresql", "db.operation.name": op}
        for op in ("SELECT", "INSERT", "UPDATE")
    ]
    for i in range(3000):
        attrs = rng.choice(cached)
        if i % 7 == 0:
            attrs = dict(attrs)  # an equal dict, another object: must join the same series
        duration.record(rng.expovariate(200.0), attrs)
        if i % 11 == 0:
            duration.record(rng.uniform(1, 20), attrs)  # far buckets and the +Inf one
        updates.add(1, {"telegram.update.type": rng.choice(("message", "callback_query"))})
        active.add(1, {"telegram.update.type": "message"})
        active.add(-1, {"telegram.update.type": "message"})
        pause.record(rng.uniform(0, 0.01), {"cpython.gc.generation": i % 3})
    active.add(2, None)
    duration.record(-1.0, cached[0])  # negative values are dropped by both
    updates.add(-3, cached[0])
    return instruments


def _collect(reader: InMemoryMetricReader) -> dict[tuple[str, str], Any]:
    """name/scope -> (unit, description, kind details, points keyed by attributes)."""
    out: dict[tuple[str, str], Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = {}
                for p in metric.data.data_points:
                    key = tuple(sorted((p.attributes or {}).items()))
                    if hasattr(p, "bucket_counts"):
                        points[key] = (
                            p.count,
                            round(p.sum, 9),
                            tuple(p.bucket_counts),
                            tuple(p.explicit_bounds),
                            p.min,
                            p.max,
                        )
                    else:
                        points[key] = p.value
                monotonic = getattr(metric.data, "is_monotonic", None)
                out[(sm.scope.name, metric.name)] = (
                    metric.unit,
                    metric.description,
                    type(metric.data).__name__,
                    metric.data.aggregation_temporality,
                    monotonic,
                    points,
                )
    return out


def _provider(monkeypatch: pytest.MonkeyPatch, fast: bool, **kwargs: Any) -> tuple[Any, Any]:
    monkeypatch.setenv("OTELBOT_FAST_METRICS", "true" if fast else "false")
    reader = InMemoryMetricReader(**kwargs)
    return MeterProvider(metric_readers=[reader]), reader


def test_same_points_as_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk_provider, sdk_reader = _provider(monkeypatch, fast=False)
    sdk_instruments = _record_workload(sdk_provider.get_meter("otelbot.test"), seed=7)
    fast_provider, fast_reader = _provider(monkeypatch, fast=True)
    fast_instruments = _record_workload(fast_provider.get_meter("otelbot.test"), seed=7)

    assert not any(isinstance(i, fastmetrics._Instrument) for i in sdk_instruments)
    assert all(isinstance(i, fastmetrics._Instrument) for i in fast_instruments)
    sdk, fast = _collect(sdk_reader), _collect(fast_reader)
    assert set(sdk) == {("otelbot.test", m.name) for m in METRICS}
    assert fast == sdk
    # A second collection is cumulative, as the SDK's.
    monkeypatch.setenv("OTELBOT_FAST_METRICS", "false")
    _record_workload(sdk_provider.get_meter("otelbot.test"), seed=8)
    monkeypatch.setenv("OTELBOT_FAST_METRICS", "true")
    _record_workload(fast_provider.get_meter("otelbot.test"), seed=8)
    assert _collect(fast_reader) == _collect(sdk_reader)


def test_sdk_metrics_of_the_same_provider_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, reader = _provider(monkeypatch, fast=True)
    meter = provider.get_meter("otelbot.test")
    create_instrument(meter, semconv.TELEGRAM_UPDATES).add(2, {"a": 1})
    meter.create_counter("user.counter").add(5)  # the bot's own instrument, same scope
    provider.get_meter("user.scope").create_histogram("user.histogram").record(1.5)
    got = _collect(reader)
    assert got[("otelbot.test", "telegram.updates")][-1] == {(("a", 1),): 2}
    assert got[("otelbot.test", "user.counter")][-1] == {(): 5}
    assert ("user.scope", "user.histogram") in got


@pytest.mark.parametrize("setup", ["delta", "view", "boundaries", "env"])
def test_steps_aside_when_the_result_would_differ(
    monkeypatch: pytest.MonkeyPatch, setup: str
) -> None:
    monkeypatch.setenv("OTELBOT_FAST_METRICS", "true")
    reader_kwargs: dict[str, Any] = {}
    views: list[View] = []
    if setup == "delta":
        reader_kwargs["preferred_temporality"] = {Histogram: AggregationTemporality.DELTA}
    elif setup == "view":
        views.append(View(instrument_name="*", attribute_keys=set()))
    elif setup == "boundaries":
        reader_kwargs["preferred_aggregation"] = {
            Histogram: ExplicitBucketHistogramAggregation(boundaries=[0.1, 1.0])
        }
    else:
        monkeypatch.setenv("OTELBOT_FAST_METRICS", "false")
    provider = MeterProvider(metric_readers=[InMemoryMetricReader(**reader_kwargs)], views=views)
    instrument = create_instrument(provider.get_meter("x"), semconv.DB_CLIENT_OPERATION_DURATION)
    assert not isinstance(instrument, fastmetrics._Instrument)


def test_the_otlp_exporters_reader_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELBOT_FAST_METRICS", "true")
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint="http://127.0.0.1:9"), export_interval_millis=10**9
    )
    provider = MeterProvider(metric_readers=[reader])
    try:
        instrument = create_instrument(
            provider.get_meter("x"), semconv.DB_CLIENT_OPERATION_DURATION
        )
        assert isinstance(instrument, fastmetrics.FastHistogram)
    finally:
        provider.shutdown(timeout_millis=100)


def test_cardinality_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, reader = _provider(monkeypatch, fast=True)
    counter = create_instrument(provider.get_meter("x"), semconv.TELEGRAM_UPDATES)
    for i in range(fastmetrics.CARDINALITY_LIMIT + 50):
        counter.add(1, {"n": i})
    points = _collect(reader)[("x", "telegram.updates")][-1]
    assert len(points) == fastmetrics.CARDINALITY_LIMIT + 1
    assert points[(("otel.metric.overflow", True),)] == 50
