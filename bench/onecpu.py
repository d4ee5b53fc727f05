"""One CPU (a 1-vCPU VPS): the workload bot and every process it starts pinned to CPU 0,
the fake Bot API and the OTLP receiver to CPU 1.

CPU per update is the slope of the whole process tree's CPU time (bot and export helper,
from process start to exit after the final flush) over two run lengths, so that start-up
(~5 s of CPU for an interpreter with aiogram imported) and shutdown cancel out; given for
the tree and for each part. Throughput is the long run's steady rate. Configurations run
interleaved, a short and a long run each, per round; medians of the rounds.

PostgreSQL and Redis are the machine's services and are not pinned (they run on either CPU).

    python -m bench.onecpu --rounds 3                 # or: python -m bench.run --only onecpu
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from bench import e2e
from bench.procs import Receiver

BOT_CPU, OTHER_CPU = "0", "1"
#: On one CPU otelbot as shipped exports in the bot's process (otelbot_otlp); this row
#: forces the helper.
HELPER = e2e.Config(
    "otelbot (export helper)",
    True,
    {"OTEL_TRACES_EXPORTER": "otelbot_offload"},
    "otelbot with OTEL_TRACES_EXPORTER=otelbot_offload (the helper process on the same CPU)",
)
DEFAULT_CONFIGS = (
    "bare",
    "otelbot",
    "otelbot, findings off",
    "otelbot, profiler off",
    "otelbot (export helper)",
    "otelbot (SDK exporter)",
    "contrib",
    "otelbot 10%",
    "contrib 10%",
)


NAMES = [c.name for c in [*e2e.CONFIGS, HELPER]]


def configs(names: list[str] | tuple[str, ...]) -> list[e2e.Config]:
    known = {c.name: c for c in [*e2e.CONFIGS, HELPER]}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in names]


@dataclass
class Slope:
    """One configuration's rounds: per round a (short, long) pair of runs."""

    config: e2e.Config
    pairs: list[tuple[e2e.RunResult, e2e.RunResult]] = field(default_factory=list)

    def _per_update(self, part: str) -> list[float]:
        out = []
        for short, long in self.pairs:
            a = getattr(long, part + "_cpu_total_s") - getattr(short, part + "_cpu_total_s")
            n = long.updates - short.updates
            if not math.isnan(a) and n > 0:
                out.append(a / n * 1e6)
        return out

    def cpu_us(self, part: str) -> float:
        """Median µs per update of ``part``: "bot", "helper" or "tree" (both)."""
        if part == "tree":
            values = [
                b + h
                for b, h in zip(self._per_update("bot"), self._per_update("helper"), strict=True)
            ]
        else:
            values = self._per_update(part)
        return statistics.median(values) if values else math.nan

    def cpu_range(self) -> tuple[float, float]:
        values = [
            b + h for b, h in zip(self._per_update("bot"), self._per_update("helper"), strict=True)
        ]
        return (min(values), max(values)) if values else (math.nan, math.nan)

    @property
    def rate(self) -> float:
        return statistics.median(long.updates_per_s for _, long in self.pairs)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(long, attr) for _, long in self.pairs)


def run(
    chosen: list[e2e.Config],
    rounds: int,
    short: int,
    long: int,
    work_ms: float = 0.0,
    log: Any = print,
) -> list[Slope]:
    receiver = Receiver(OTHER_CPU)
    slopes = [Slope(c) for c in chosen]
    try:
        for round_no in range(1, rounds + 1):
            for slope in slopes:
                s, lg = (
                    e2e.run_once(
                        slope.config,
                        receiver,
                        n,
                        work_ms,
                        bot_cpus=BOT_CPU,
                        api_cpus=OTHER_CPU,
                    )
                    for n in (short, long)
                )
                slope.pairs.append((s, lg))
                per = (
                    (lg.bot_cpu_total_s + lg.helper_cpu_total_s)
                    - (s.bot_cpu_total_s + s.helper_cpu_total_s)
                ) / (long - short)
                log(
                    f"  one CPU round {round_no}/{rounds} {slope.config.name:<24} "
                    f"{lg.updates_per_s:6.1f} updates/s  {per * 1e6:6.0f} µs CPU/update "
                    f"(tree, slope)  {lg.spans_per_update:4.2f} spans/update"
                )
    finally:
        receiver.close()
    return slopes


def table(slopes: list[Slope]) -> str:
    bare = next((s for s in slopes if not s.config.instrumented), None)
    rows = [
        "| configuration | updates/s (median) | ratio to bare | CPU µs/update, bot + helper "
        "(min-max) | added to bare | bot µs | helper µs | spans/update "
        "| peak RSS MB bot + helper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in slopes:
        tree = s.cpu_us("tree")
        lo, hi = s.cpu_range()
        ratio = f"{s.rate / bare.rate:.2f}" if bare and bare.rate else "-"
        added = f"{tree - bare.cpu_us('tree'):+.0f}" if bare and s is not bare else ""
        helper = s.cpu_us("helper")
        rows.append(
            f"| {s.config.name} | {s.rate:.0f} | {ratio} | {tree:.0f} ({lo:.0f}-{hi:.0f}) | "
            f"{added} | {s.cpu_us('bot'):.0f} | {helper:.0f} | "
            f"{s.med('spans_per_update'):.2f} | "
            f"{s.med('bot_peak_rss_mb'):.0f} + {s.med('helper_peak_rss_mb'):.0f} |"
        )
    return "\n".join(rows)


def data(slopes: list[Slope]) -> list[dict[str, Any]]:
    return [
        {
            "config": s.config.name,
            "description": s.config.description,
            "updates_per_s": s.rate,
            "cpu_us_per_update": {p: s.cpu_us(p) for p in ("tree", "bot", "helper")},
            "runs": [[r.__dict__ for r in pair] for pair in s.pairs],
        }
        for s in slopes
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short", type=int, default=1000)
    parser.add_argument("--long", type=int, default=3000)
    parser.add_argument("--work-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    chosen = configs(e2e.split_names(args.configs, NAMES))
    slopes = run(chosen, args.rounds, args.short, args.long, args.work_ms)
    print(table(slopes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
