"""Hot-path metric instruments that otelbot aggregates itself and the SDK exports.

With opentelemetry-sdk 1.45 one ``Histogram.record()`` or ``Counter.add()`` costs
20-25 µs of the bot's event-loop thread (a ``Measurement`` object, attribute
hashing, locks, an exemplar offer per reader); an update records ten of them. The
instruments here keep the same data (sums and explicit-bucket histograms per attribute
set) in plain Python objects: a record is a dictionary lookup keyed by the identity of
the (cached, never mutated) attribute dict, a ``bisect`` and a few additions, under
1 µs.

They reach the exporters through the SDK: each ``MetricReader`` of the provider gets
its collect callback wrapped, and the points are added to the ``MetricsData`` the SDK
collected, under the same instrumentation scope, as ``Sum`` and ``Histogram`` metrics
with cumulative temporality, exactly as the SDK's instruments would report them. Push
(OTLP) and pull (Prometheus) readers both see them.

They are used only where they give the same result as the SDK's instruments: an SDK
``MeterProvider`` with no views, whose readers all want cumulative temporality and the
default aggregation. Otherwise, or with ``OTELBOT_FAST_METRICS=false``,
:func:`create_instrument` returns the SDK's own instruments. What is not kept:
exemplars (the SDK attaches one sampled trace id per bucket; otelbot's are off).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import Meter

from otelbot.core import config
from otelbot.semconv import Metric

logger = logging.getLogger("otelbot")

#: Distinct attribute sets kept per instrument; later ones are added to one overflow
#: series, as the metrics SDK specification describes.
CARDINALITY_LIMIT = 2000
OVERFLOW_ATTRIBUTES: Mapping[str, Any] = {"otel.metric.overflow": True}
#: The SDK's default explicit bucket boundaries (used when a metric gives none).
DEFAULT_BOUNDARIES = (
    0.0,
    5.0,
    10.0,
    25.0,
    50.0,
    75.0,
    100.0,
    250.0,
    500.0,
    750.0,
    1000.0,
    2500.0,
    5000.0,
    7500.0,
    10000.0,
)
_ID_CACHE_LIMIT = 4096


def enabled_by_env() -> bool:
    return config.fast_metrics()


class _SumPoint:
    __slots__ = ("attributes", "start", "value")

    def __init__(self, attributes: Mapping[str, Any] | None) -> None:
        self.attributes = attributes
        self.start = time.time_ns()
        self.value: int | float = 0


class _HistogramPoint:
    __slots__ = ("attributes", "counts", "max", "min", "start", "sum")

    def __init__(self, attributes: Mapping[str, Any] | None, buckets: int) -> None:
        self.attributes = attributes
        self.start = time.time_ns()
        self.counts = [0] * buckets
        self.sum: float = 0
        self.min = float("inf")
        self.max = float("-inf")


class _Instrument:
    """Points per attribute set. The hot path finds a point by ``id()`` of the attribute
    dict it was given (the instrumentations pass cached dicts); a dict seen for the first
    time is looked up by content, so equal dicts share one series."""

    kind = ""

    def __init__(self, name: str, unit: str, description: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._by_id: dict[int, Any] = {}
        self._by_content: dict[frozenset[tuple[str, Any]], Any] = {}
        self._lock = threading.Lock()

    def _new_point(self, attributes: Mapping[str, Any] | None) -> Any:
        raise NotImplementedError

    def _point(self, attributes: Mapping[str, Any] | None) -> Any:
        """The point for ``attributes`` (slow path: first use of this dict object)."""
        key = frozenset(attributes.items()) if attributes else frozenset()
        with self._lock:
            point = self._by_content.get(key)
            if point is None:
                if len(self._by_content) >= CARDINALITY_LIMIT:
                    key = frozenset(OVERFLOW_ATTRIBUTES.items())
                    point = self._by_content.get(key)
                    if point is None:
                        point = self._by_content[key] = self._new_point(dict(OVERFLOW_ATTRIBUTES))
                else:
                    # The point keeps its own copy: the series' attributes can't change.
                    point = self._by_content[key] = self._new_point(
                        dict(attributes) if attributes else None
                    )
            if len(self._by_id) >= _ID_CACHE_LIMIT:
                self._by_id.clear()
            # Keyed by id(), holding the dict itself so that the id is not reused.
            self._by_id[id(attributes)] = (attributes, point)
        return point

    def points(self) -> list[Any]:
        with self._lock:
            return list(self._by_content.values())


class FastSum(_Instrument):
    """``Counter`` / ``UpDownCounter`` with the SDK's ``add()`` signature."""

    def __init__(self, name: str, unit: str, description: str, monotonic: bool) -> None:
        super().__init__(name, unit, description)
        self.monotonic = monotonic
        self.kind = "counter" if monotonic else "updowncounter"

    def _new_point(self, attributes: Mapping[str, Any] | None) -> _SumPoint:
        return _SumPoint(attributes)

    def add(
        self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None
    ) -> None:
        if amount < 0 and self.monotonic:
            logger.debug("otelbot: negative amount for counter %s dropped", self.name)
            return
        entry = self._by_id.get(id(attributes))
        point = (
            entry[1] if entry is not None and entry[0] is attributes else (self._point(attributes))
        )
        point.value += amount


class FastHistogram(_Instrument):
    """Explicit-bucket ``Histogram`` with the SDK's ``record()`` signature."""

    kind = "histogram"

    def __init__(
        self, name: str, unit: str, description: str, boundaries: Sequence[float] | None
    ) -> None:
        super().__init__(name, unit, description)
        self.boundaries = tuple(float(b) for b in (boundaries or DEFAULT_BOUNDARIES))

    def _new_point(self, attributes: Mapping[str, Any] | None) -> _HistogramPoint:
        return _HistogramPoint(attributes, len(self.boundaries) + 1)

    def record(
        self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None
    ) -> None:
        if amount < 0:
            logger.debug("otelbot: negative value for histogram %s dropped", self.name)
            return
        entry = self._by_id.get(id(attributes))
        point = (
            entry[1] if entry is not None and entry[0] is attributes else (self._point(attributes))
        )
        point.counts[bisect_left(self.boundaries, amount)] += 1
        point.sum += amount
        if amount < point.min:
            point.min = amount
        if amount > point.max:
            point.max = amount


class _Registry:
    """The fast instruments of one SDK ``MeterProvider``, and the hook in its readers."""

    def __init__(self) -> None:
        self.scopes: dict[Any, list[_Instrument]] = {}
        self.lock = threading.Lock()

    def add(self, scope: Any, instrument: _Instrument) -> _Instrument:
        with self.lock:
            existing = self.scopes.setdefault(scope, [])
            for other in existing:  # the same name twice in one scope: one stream
                if other.name == instrument.name and other.kind == instrument.kind:
                    return other
            existing.append(instrument)
        return instrument

    def metrics(self, now: int) -> dict[Any, list[Any]]:
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            NumberDataPoint,
            Sum,
        )

        cumulative = AggregationTemporality.CUMULATIVE
        out: dict[Any, list[Any]] = {}
        with self.lock:
            scopes = [(scope, list(instruments)) for scope, instruments in self.scopes.items()]
        for scope, instruments in scopes:
            metrics = []
            for instrument in instruments:
                points = instrument.points()
                if not points:
                    continue
                data: Any
                if isinstance(instrument, FastHistogram):
                    hpoints = []
                    for p in points:
                        counts = list(p.counts)  # one C-level copy of the live list
                        count = sum(counts)
                        if not count:
                            continue
                        hpoints.append(
                            HistogramDataPoint(
                                attributes=p.attributes,
                                start_time_unix_nano=p.start,
                                time_unix_nano=now,
                                count=count,
                                sum=p.sum,
                                bucket_counts=tuple(counts),
                                explicit_bounds=instrument.boundaries,
                                min=p.min,
                                max=p.max,
                            )
                        )
                    if not hpoints:
                        continue
                    data = Histogram(data_points=hpoints, aggregation_temporality=cumulative)
                else:
                    assert isinstance(instrument, FastSum)
                    data = Sum(
                        data_points=[
                            NumberDataPoint(
                                attributes=p.attributes,
                                start_time_unix_nano=p.start,
                                time_unix_nano=now,
                                value=p.value,
                            )
                            for p in points
                        ],
                        aggregation_temporality=cumulative,
                        is_monotonic=instrument.monotonic,
                    )
                metrics.append(
                    Metric(
                        name=instrument.name,
                        description=instrument.description,
                        unit=instrument.unit,
                        data=data,
                    )
                )
            if metrics:
                out[scope] = metrics
        return out

    def merge(self, data: Any, resource: Any) -> Any:
        """``data`` (the SDK's ``MetricsData`` or None) with this registry's metrics added."""
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics

        extra = self.metrics(time.time_ns())
        if not extra:
            return data
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if resource_metrics:
            first = resource_metrics[0]
            scope_metrics = list(first.scope_metrics)
        else:
            first, scope_metrics = None, []
        index = {sm.scope: i for i, sm in enumerate(scope_metrics)}
        for scope, metrics in extra.items():
            i = index.get(scope)
            if i is None:
                scope_metrics.append(
                    ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url or "")
                )
            else:
                sm = scope_metrics[i]
                scope_metrics[i] = ScopeMetrics(
                    scope=sm.scope, metrics=[*sm.metrics, *metrics], schema_url=sm.schema_url
                )
        merged = ResourceMetrics(
            resource=first.resource if first is not None else resource,
            scope_metrics=scope_metrics,
            schema_url=first.schema_url if first is not None else (resource.schema_url or ""),
        )
        return MetricsData(resource_metrics=[merged, *resource_metrics[1:]])


#: One registry per SDK measurement consumer (that is, per MeterProvider).
_registries: weakref.WeakKeyDictionary[Any, _Registry] = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()


_KINDS = ("Counter", "UpDownCounter", "Histogram")


def _readers_fit(consumer: Any) -> bool:
    """True when the provider's readers would report our instruments as we do:
    no views, cumulative temporality and default aggregation for every kind we make."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality
    from opentelemetry.sdk.metrics.view import (
        DefaultAggregation,
        ExplicitBucketHistogramAggregation,
        SumAggregation,
    )

    config = getattr(consumer, "_sdk_config", None)
    if config is None or getattr(config, "views", None):
        return False
    readers = getattr(consumer, "_reader_storages", None)
    if readers is None:
        return False
    for reader in readers:
        temporality = getattr(reader, "_instrument_class_temporality", None)
        aggregation = getattr(reader, "_instrument_class_aggregation", None)
        if temporality is None or aggregation is None or not hasattr(reader, "_collect"):
            return False
        # The readers key these by the SDK's instrument classes (``_Counter``, …).
        seen = 0
        for cls, chosen_temporality in temporality.items():
            kind = cls.__name__.lstrip("_")
            if kind not in _KINDS:
                continue
            seen += 1
            if chosen_temporality is not AggregationTemporality.CUMULATIVE:
                return False
            chosen = aggregation.get(cls)
            if isinstance(chosen, DefaultAggregation):
                continue
            # The OTLP exporter asks for explicit-bucket histograms outright: the same as
            # the default as long as it sets no boundaries of its own.
            if (
                kind == "Histogram"
                and isinstance(chosen, ExplicitBucketHistogramAggregation)
                and getattr(chosen, "_boundaries", None) is None
                and getattr(chosen, "_record_min_max", True)
            ):
                continue
            if kind != "Histogram" and isinstance(chosen, SumAggregation):
                continue
            return False
        if seen != len(_KINDS):
            return False
    return True


def _registry_for(meter: Any) -> tuple[_Registry, Any] | None:
    consumer = getattr(meter, "_measurement_consumer", None)
    scope = getattr(meter, "_instrumentation_scope", None)
    if consumer is None or scope is None:
        return None
    with _registries_lock:
        registry = _registries.get(consumer)
        if registry is not None:
            return registry, scope
        try:
            if not _readers_fit(consumer):
                return None
            config = consumer._sdk_config
            registry = _Registry()
            for reader in list(consumer._reader_storages):
                _hook_reader(reader, registry, config.resource)
        except Exception as exc:  # an SDK whose internals differ: use its instruments
            logger.debug("otelbot: fast metrics unavailable (%s)", exc)
            return None
        _registries[consumer] = registry
    return registry, scope


def _hook_reader(reader: Any, registry: _Registry, resource: Any) -> None:
    collect = reader._collect
    if collect is None:
        raise RuntimeError("reader not registered")

    def collect_with_fast_metrics(metric_reader: Any, *args: Any, **kwargs: Any) -> Any:
        data = collect(metric_reader, *args, **kwargs)
        try:
            return registry.merge(data, resource)
        except Exception as exc:  # never lose the SDK's own metrics
            logger.warning("otelbot: could not add otelbot's metrics to a collection: %s", exc)
            return data

    reader._collect = collect_with_fast_metrics


def fast_instrument(
    meter: Any,
    kind: str,
    name: str,
    unit: str,
    description: str,
    boundaries: Iterable[float] | None = None,
) -> Any:
    """A fast counter, up-down counter or histogram on ``meter``'s provider; None when
    the provider can't take them (then the caller makes the SDK's instrument)."""
    if not enabled_by_env():
        return None
    found = _registry_for(meter)
    if found is None:
        return None
    registry, scope = found
    instrument: _Instrument
    if kind == "histogram":
        instrument = FastHistogram(
            name, unit, description, list(boundaries) if boundaries else None
        )
    elif kind in ("counter", "updowncounter"):
        instrument = FastSum(name, unit, description, monotonic=kind == "counter")
    else:
        return None
    return registry.add(scope, instrument)


def create_instrument(meter: Meter, metric: Metric, callbacks: Any = None) -> Any:
    """The instrument a catalogue entry describes: for counters, up-down counters and
    histograms otelbot's own aggregation when the provider allows it (``fastmetrics``),
    else the SDK's instrument."""
    kind = metric.instrument
    if kind in ("counter", "updowncounter", "histogram"):
        fast = fast_instrument(
            meter, kind, metric.name, metric.unit, metric.description, metric.buckets
        )
        if fast is not None:
            return fast
    if kind == "counter":
        return meter.create_counter(metric.name, metric.unit, metric.description)
    if kind == "updowncounter":
        return meter.create_up_down_counter(metric.name, metric.unit, metric.description)
    if kind == "histogram":
        try:
            return meter.create_histogram(
                metric.name,
                metric.unit,
                metric.description,
                explicit_bucket_boundaries_advisory=list(metric.buckets or ()) or None,
            )
        except TypeError:  # API older than 1.23 has no advisory
            return meter.create_histogram(metric.name, metric.unit, metric.description)
    if kind == "gauge":
        if callbacks is not None:
            return meter.create_observable_gauge(
                metric.name, callbacks, metric.unit, metric.description
            )
        return meter.create_gauge(metric.name, metric.unit, metric.description)
    if kind == "observable_counter":
        return meter.create_observable_counter(
            metric.name, callbacks, metric.unit, metric.description
        )
    if kind == "observable_updowncounter":
        return meter.create_observable_up_down_counter(
            metric.name, callbacks, metric.unit, metric.description
        )
    raise ValueError(f"unknown instrument kind {kind!r} for {metric.name}")
