"""Prometheus names of the catalogue's metrics (OTLP -> Prometheus translation) and a
scanner for the metric names a PromQL expression uses."""

from __future__ import annotations

import re

from otelbot import semconv

_UNITS = {"s": "seconds", "By": "bytes", "ms": "milliseconds"}
_FUNCS = {
    "sum",
    "rate",
    "increase",
    "histogram_quantile",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "and",
    "or",
    "unless",
    "offset",
    "deriv",
    "topk",
    "bottomk",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "clamp_min",
    "clamp_max",
    "abs",
    "irate",
    "delta",
    "time",
    "vector",
    "scalar",
    "label_replace",
    "absent",
    "le",
    "bool",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "quantile",
    "sort_desc",
    "sort",
    "count_over_time",
    "sum_over_time",
    "last_over_time",
    "histogram_sum",
    "histogram_count",
    "ln",
    "round",
}


def series_base(m: semconv.Metric) -> str:
    name = m.name.replace(".", "_")
    unit = _UNITS.get(m.unit, "")
    if unit and not name.endswith(unit):
        name = f"{name}_{unit}"
    return name


def catalogue_series_names() -> set[str]:
    """Every series name a catalogue metric can appear under in Prometheus."""
    names: set[str] = set()
    for m in semconv.all_metrics():
        base = series_base(m)
        if m.instrument == "histogram":
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        elif m.instrument in ("counter", "observable_counter"):
            names.add(f"{base}_total")
        else:
            names.add(base)
            if m.unit == "1":
                names.add(f"{base}_ratio")  # the collector's translation of unit "1" gauges
    return names


def metric_names_in(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name metrics (not functions, labels, keywords)."""
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # drop label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    names = set(re.findall(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b(?!\s*\()", expr))
    names |= set(re.findall(r'__name__=~"([a-z_]+)\(', expr))
    return {n for n in names if n not in _FUNCS and not re.fullmatch(r"[0-9e]+", n)}
