from pathlib import Path

from otelbot import semconv

ROOT = Path(__file__).resolve().parents[1]


def test_docs_metrics_md_is_generated_from_the_catalogue() -> None:
    on_disk = (ROOT / "docs" / "metrics.md").read_text()
    assert on_disk == semconv.render_markdown(), (
        "docs/metrics.md is stale: run `make docs` (python -m otelbot.semconv > docs/metrics.md)"
    )


def test_catalogue_is_consistent() -> None:
    metrics = semconv.all_metrics()
    names = [m.name for m in metrics]
    assert len(names) == len(set(names)), "a metric is declared twice"
    for m in metrics:
        assert m.unit, m.name
        if m.instrument == "histogram":
            assert m.unit in ("s", "By"), f"{m.name}: histograms are in seconds or bytes"
        assert m.instrument in {
            "counter",
            "histogram",
            "updowncounter",
            "gauge",
            "observable_counter",
            "observable_updowncounter",
            "observable_gauge",
        }, m.name
        assert m.name.split(".")[0] in {
            "telegram",
            "http",
            "db",
            "otelbot",
            "cpython",
            "process",
            "postgresql",
            "redis",
        }, m.name
