"""The throughput chart of docs/performance.md, from a results JSON file.

python -m bench.chart bench/results/latest.json docs/performance-throughput.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def draw(results: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results.read_text())
    rows = data.get("e2e") or []
    if not rows:
        return
    names = [r["config"] for r in rows]
    medians = [r["median"] for r in rows]
    bare = next((r["median"] for r in rows if r["config"] == "bare"), None)
    colors = [
        "#888888" if n == "bare" else "#2b7bba" if n.startswith("otelbot") else "#d9822b"
        for n in names
    ]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    bars = ax.barh(names[::-1], medians[::-1], color=colors[::-1])
    for bar, value in zip(bars, medians[::-1], strict=True):
        label = f"{value:.0f}/s" + (f"  ({value / bare:.2f}x bare)" if bare else "")
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            " " + label,
            va="center",
            fontsize=9,
        )
    if bare:
        ax.axvline(bare * 0.85, color="#2b7bba", linestyle=":", linewidth=1)
        ax.text(bare * 0.85, -0.75, "0.85x bare ", fontsize=8, color="#2b7bba", ha="right")
    ax.set_xlabel("updates handled per second (median of interleaved runs)")
    ax.set_xlim(0, max(medians) * 1.35)
    ax.set_title("aiogram bot throughput by configuration", fontsize=11)
    fig.text(0.01, 0.01, data.get("machine", ""), fontsize=7, color="#666666")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


if __name__ == "__main__":
    draw(Path(sys.argv[1]), Path(sys.argv[2]))
