"""``make bench``: every benchmark, side by side, one table.

    python -m bench.run                       # full run, writes bench/results/latest.md
    python -m bench.run --quick               # tiny sizes (what the smoke test runs)
    python -m bench.run --only e2e --configs bare,otelbot --repeats 3

Parts: ``e2e`` (the workload bot per configuration, interleaved rounds), ``onecpu`` (the
bot pinned to one CPU with no handler work, process-tree CPU per update by slope), ``ops`` (added
µs per aiohttp request / asyncpg query / Redis command, otelbot vs contrib), ``pressure``
(the OTLP endpoint down during load), ``encode`` (µs per span of OTLP encoding, the SDK's
against otelbot's, ``bench.encode``), ``profiler`` (the sampling profiler's cost per
sample and per second, ``bench.profiler``), ``memory`` (an allocation-heavy handler's CPU
per call with the memory watch idle and in a traced window, ``bench.memory``), ``agent``
(one agent collection on a large schema beside prometheus-postgres-exporter, when both are
available).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

from bench import agent, e2e, encode, memory, onecpu, ops, pressure, profiler
from bench.procs import ROOT

RESULTS = ROOT / "bench" / "results"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def e2e_table(summaries: list[e2e.Summary]) -> str:
    # Each workload bot (aiogram, python-telegram-bot) is compared with its own bare run.
    bares = {s.config.module: s for s in summaries if not s.config.instrumented}
    rows = [
        "| configuration | updates/s (median) | min-max | ratio to bare | per round "
        "| spans/update | CPU µs/update, bot + helper | bot / helper "
        "| peak RSS MB, bot + helper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        bare = bares.get(s.config.module)
        ratio = f"{s.median / bare.median:.2f}" if bare and bare.median else "-"
        paired = e2e.paired_ratio(s, bare) if bare else None
        per_round = f"{paired:.2f}" if paired is not None else "-"
        lo = min(r.updates_per_s for r in s.runs)
        hi = max(r.updates_per_s for r in s.runs)
        rows.append(
            f"| {s.config.name} | {s.median:.0f} | {lo:.0f}-{hi:.0f} | {ratio} | {per_round} | "
            f"{s.med('spans_per_update'):.2f} | {s.med('cpu_us_per_update'):.0f} | "
            f"{s.med('bot_cpu_us_per_update'):.0f} / {s.med('helper_cpu_us_per_update'):.0f} | "
            f"{s.med('bot_peak_rss_mb'):.0f} + {s.med('helper_peak_rss_mb'):.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default="e2e,onecpu,ops,pressure,encode,profiler,memory,agent",
        help="comma-separated parts to run",
    )
    parser.add_argument(
        "--onecpu-configs",
        default=",".join(onecpu.DEFAULT_CONFIGS),
        help="configurations of the one-CPU part",
    )
    parser.add_argument("--onecpu-rounds", type=int, default=3)
    parser.add_argument(
        "--onecpu-updates",
        default="1000,3000",
        help="the two run lengths of the one-CPU part (CPU per update is the slope)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(c.name for c in e2e.CONFIGS if c.default),
        help="comma-separated configurations (default: all but the (PTB) ones)",
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--work-ms", type=float, default=1.0)
    parser.add_argument("--ops-n", type=int, default=3000, help="operations per ops sample")
    parser.add_argument(
        "--pressure-rate", type=float, default=200.0, help="updates/s fed during the pressure test"
    )
    parser.add_argument(
        "--pressure-down", type=float, default=60.0, help="seconds the OTLP endpoint is down"
    )
    parser.add_argument(
        "--pressure-near",
        type=float,
        default=0.9,
        help="also feed this share of otelbot's e2e throughput (near capacity; 0: no)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    parser.add_argument(
        "--chart",
        type=lambda v: Path(v) if v else None,
        default=ROOT / "docs" / "performance-throughput.png",
        help="where the throughput chart goes ('' for none)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.updates, args.ops_n, args.pressure_down = 1, 60, 50, 3.0
        args.onecpu_rounds, args.onecpu_updates = 1, "30,90"
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    known = {c.name: c for c in e2e.CONFIGS}
    wanted = e2e.split_names(args.configs, list(known))
    configs = [known[name] for name in dict.fromkeys(wanted) if name in known]  # in that order
    unknown = set(wanted) - set(known)
    if unknown:
        parser.error(
            f"unknown configuration(s) {sorted(unknown)}; known: {[c.name for c in e2e.CONFIGS]}"
        )

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    sections = [
        f"# otelbot benchmark results\n\n{started}; `{command.strip()}`\n\nMachine: {machine()}\n"
    ]
    data: dict[str, object] = {"when": started, "machine": machine(), "command": command}

    if "e2e" in parts:
        print(
            f"e2e: {len(configs)} configurations x {args.repeats} rounds, "
            f"{args.updates} updates each, {args.work_ms} ms work per update",
            flush=True,
        )
        summaries = e2e.run_interleaved(
            configs, args.repeats, args.updates, args.work_ms, log=lambda m: print(m, flush=True)
        )
        table = e2e_table(summaries)
        sections.append(
            f"## End to end: the workload bot (aiogram; python-telegram-bot in the (PTB) rows), "
            f"{args.updates} updates, {args.repeats} interleaved "
            f"rounds\n\nPer update: one asyncpg pool SELECT, one Redis INCR, one sendMessage, "
            f"{args.work_ms} ms of Python work: a fixed part of every update, which the ratios "
            f"depend on (the one-CPU part has none). CPU (from the first poll to the last "
            f"reply) and peak RSS cover the bot's process tree, the bot and the export helper "
            f"it starts (with its start-up), and each part.\n\n{table}\n"
        )
        data["e2e"] = [
            {
                "config": s.config.name,
                "description": s.config.description,
                "median": s.median,
                "runs": [r.__dict__ for r in s.runs],
            }
            for s in summaries
        ]

    if "onecpu" in parts:
        chosen = onecpu.configs(e2e.split_names(args.onecpu_configs, onecpu.NAMES))
        short, long = (int(n) for n in args.onecpu_updates.split(","))
        print(
            f"onecpu: {len(chosen)} configurations x {args.onecpu_rounds} rounds, the bot "
            f"pinned to CPU {onecpu.BOT_CPU}, {short} and {long} updates, no handler work",
            flush=True,
        )
        slopes = onecpu.run(
            chosen, args.onecpu_rounds, short, long, log=lambda m: print(m, flush=True)
        )
        sections.append(
            f"## One CPU: the bot and all it starts pinned to one CPU, no handler work\n\n"
            f"Per update: one asyncpg pool SELECT, one Redis INCR, one sendMessage, nothing "
            f"else. The bot, the export helper it starts, pinned to CPU {onecpu.BOT_CPU}; the "
            f"fake Bot API and the OTLP receiver to CPU {onecpu.OTHER_CPU}; PostgreSQL and "
            f"Redis not pinned. CPU per update: the whole process tree's CPU time (bot and "
            f"helper, process start to exit) as the slope between runs of {short} and {long} "
            f"updates; median of {args.onecpu_rounds} interleaved rounds (min-max). "
            f"Throughput: the {long}-update runs. On one CPU `otelbot` as shipped exports "
            f"with `otelbot_otlp` (the SDK's exporter with otelbot's encoder); "
            f"`otelbot (export helper)` forces `otelbot_offload`.\n\n"
            f"{onecpu.table(slopes)}\n"
        )
        data["onecpu"] = onecpu.data(slopes)

    if "ops" in parts:
        print(
            f"ops: bare / otelbot / contrib, {args.ops_n} operations, {args.repeats} rounds",
            flush=True,
        )
        medians = ops.run_all(args.ops_n, args.repeats, log=lambda m: print(m, flush=True))
        sections.append(
            "## Per operation: CPU time added, each mode as it ships\n\n"
            "bare: no OpenTelemetry; otelbot: its instrumentors, the SDK and the trace export "
            "path its distro picks on this machine (the export helper on 2+ CPUs); contrib: "
            "the contrib instrumentations, the SDK's batch processor and OTLP exporter. Spans "
            "go to the OTLP receiver; CPU of all threads plus the export helper's, the span "
            f"processors flushed before each reading. {args.ops_n} sequential operations "
            "under a parent span, against the fake Bot "
            "API (another process), PostgreSQL and Redis; lowest of "
            f"{args.repeats} interleaved rounds.\n\n{ops.table(medians)}\n"
        )
        data["ops"] = medians

    if "pressure" in parts:
        chosen = [c for c in e2e.CONFIGS if c.name in ("otelbot", "otelbot (SDK exporter)")]
        before = after = 5.0 if args.quick else 15.0
        rates = [args.pressure_rate]
        # Near capacity too: a share of what otelbot handled in the e2e part of this run.
        shipped = [r for r in data.get("e2e", []) if r["config"] == "otelbot"]
        if shipped and args.pressure_near > 0 and not args.quick:
            rates.append(round(args.pressure_near * shipped[0]["median"]))
        print(
            f"pressure: endpoint down {args.pressure_down:.0f} s at "
            f"{', '.join(f'{r:.0f}' for r in rates)} updates/s",
            flush=True,
        )
        results = [
            pressure.run_pressure(
                c,
                rate,
                before,
                args.pressure_down,
                after,
                args.work_ms,
                log=lambda m: print(m, flush=True),
            )
            for rate in rates
            for c in chosen
        ]
        near = (
            f" and at {rates[1]:.0f}/s ({args.pressure_near:.0%} of otelbot's end-to-end "
            "throughput above: near capacity)"
            if len(rates) > 1
            else ""
        )
        sections.append(
            f"## Export under pressure: OTLP endpoint down for {args.pressure_down:.0f} s\n\n"
            f"Updates fed at {args.pressure_rate:.0f}/s{near}; {before:.0f} s up, "
            f"{args.pressure_down:.0f} s down, {after:.0f} s up again.\n\n"
            f"{pressure.table(results, args.pressure_down)}\n"
        )
        data["pressure"] = [r.__dict__ for r in results]

    if "encode" in parts:
        batch, rounds, repeat = (64, 3, 1) if args.quick else (512, 15, 5)
        print(f"encode: batches of {batch} spans, {rounds} rounds", flush=True)
        os.environ.setdefault("OTELBOT_LIGHT_SPANS", "true")
        result = encode.measure(batch, rounds, repeat)
        sections.append(
            f"## OTLP encoding: µs per span\n\n`python -m bench.encode --batch {batch} "
            f"--rounds {rounds} --repeat {repeat}`. The workload's spans (an update, a SQL "
            f"query, a Redis command, a Bot API call) encoded to one OTLP/HTTP request body "
            f"each way, after checking that each way writes the SDK encoder's bytes; median "
            f"of {rounds} rounds.\n\n{encode.table(result)}\n"
        )
        data["encode"] = result

    if "profiler" in parts:
        samples, seconds, rounds = (200, 0.3, 1) if args.quick else (5000, 3.0, 5)
        print(f"profiler: {samples} samples per stack, {rounds} rounds", flush=True)
        result = profiler.run(samples, seconds, rounds)
        sections.append(
            f"## The sampling profiler: cost per sample and per second\n\n"
            f"`python -m bench.profiler --samples {samples} --seconds {seconds} --rounds "
            f"{rounds}`. Per sample: `Profile.add` on this thread's stack (`sys._current_frames"
            f"()` included, as the watcher thread does), most frames a library's; with the "
            f"thread's CPU time read (on CPU or waiting) and without; median of {rounds} "
            f"rounds of {samples} samples. Per second: a CPU-bound handler on an asyncio "
            f"loop through the step timer for {seconds} s, profiler off and at 67 Hz, "
            f"interleaved; medians.\n\n{profiler.table(result)}\n"
        )
        data["profiler"] = result

    if "memory" in parts:
        seconds, rounds = (1.0, 1) if args.quick else (3.0, 5)
        print(f"memory: {rounds} rounds of {seconds:.0f} s per mode", flush=True)
        result = memory.run(seconds, rounds)
        sections.append(
            f"## Memory watch: an allocation-heavy handler outside and inside a traced "
            f"window\n\n`python -m bench.memory --seconds {seconds:.0f} --rounds {rounds}`. "
            f"CPU per call of a handler's allocation-heavy Python ({memory.DEPTH} frames "
            f"deep) with no watch, with otelbot's memory watch idle (tracemalloc off: what "
            f"runs all the time) and during a traced window opened by the watch's own code "
            f"(as `SIGUSR2` asks); median of {rounds} interleaved rounds.\n\n"
            f"{memory.table(result)}\n"
        )
        data["memory"] = result

    if "agent" in parts and not args.quick:
        results = agent.run_all(log=lambda m: print(m, flush=True))
        sections.append(
            f"## Agent: one full collection, {agent.TABLES} tables / "
            f"{agent.TABLES * agent.INDEXES_PER_TABLE} indexes\n\n"
            "`otelbot-agent once` (PostgreSQL only, a new process: start-up, connection, "
            "collection, printing); the same collection twice inside one agent process "
            "(the first on a new connection, the next as the running sidecar polls, all "
            "tiers); one scrape of Debian's prometheus-postgres-exporter (default "
            "collectors, already running), same database.\n\n"
            f"{agent.table(results)}\n"
        )
        data["agent"] = results

    text = "\n".join(sections)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    print(f"written to {args.out}")
    if "e2e" in parts and not args.quick and args.chart:
        try:
            from bench import chart

            chart.draw(args.out.with_suffix(".json"), args.chart)
            print(f"chart: {args.chart}")
        except ImportError:
            print("chart skipped: matplotlib is not installed (pip install -e '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
