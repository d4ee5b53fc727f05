"""In-memory SDK providers for tests: finished spans and collected metric points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass
class Point:
    name: str
    unit: str
    attributes: dict[str, Any]
    value: Any  # number, or for histograms the point itself (count, sum, bucket_counts)


class MemoryTelemetry:
    """A tracer provider and a meter provider whose output tests can read back."""

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self) -> list[ReadableSpan]:
        return list(self.span_exporter.get_finished_spans())

    def span_names(self) -> list[str]:
        return [s.name for s in self.spans()]

    def clear(self) -> None:
        self.span_exporter.clear()

    def points(self, name: str | None = None) -> list[Point]:
        data = self.metric_reader.get_metrics_data()
        out: list[Point] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if name is not None and metric.name != name:
                        continue
                    for dp in metric.data.data_points:
                        value = getattr(dp, "value", dp)
                        attrs = dict(dp.attributes or {})
                        out.append(Point(metric.name, metric.unit or "", attrs, value))
        return out

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
