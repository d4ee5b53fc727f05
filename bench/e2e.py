"""End-to-end: the workload bot under each configuration, updates per second.

Each run: a fresh fake Bot API process with ``updates`` message updates queued, the bot
(bare or under ``opentelemetry-instrument``) long-polling it, the OTLP receiver process
shared by all runs. Throughput is read from the fake API's call log: the times of the
``sendMessage`` calls, first and last 10% dropped (start-up and drain).
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field

from bench.procs import (
    ROOT,
    FakeApi,
    Receiver,
    pinned,
    tree_cpu_seconds,
    tree_peak_rss_bytes,
    wait_exited,
)
from otelbot.testing.defaults import BOT_TOKEN, pg_dsn, redis_url
from otelbot.testing.processes import Child, instrument_command

#: Every otelbot instrumentor entry point: naming them all lets the contrib ones load.
OTELBOT_ENTRY_POINTS = (
    "otelbot_aiohttp_client,otelbot_aiohttp_server,otelbot_asyncpg,"
    "otelbot_redis,otelbot_aiogram,otelbot_runtime,otelbot_ptb,otelbot_httpx,otelbot_telebot"
)
SAMPLE_10 = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
#: The SDK's own OTLP exporter in the bot's process (otelbot's default is otelbot_offload).
STANDARD_EXPORTER = {"OTEL_TRACES_EXPORTER": "otlp"}
CONTRIB = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": OTELBOT_ENTRY_POINTS, **STANDARD_EXPORTER}


@dataclass(frozen=True)
class Config:
    name: str
    instrumented: bool
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: The workload bot's module; run by default (``make bench``) or only when named.
    module: str = "bench.workload_bot"
    default: bool = True


CONFIGS = [
    Config("bare", False, {}, "plain python, no OpenTelemetry"),
    Config(
        "otelbot",
        True,
        {},
        "otelbot as shipped: 100% sampled, OTLP encoded in otelbot's helper process",
    ),
    Config(
        "otelbot, findings off",
        True,
        {"OTELBOT_FINDINGS": "off"},
        "otelbot as shipped with OTELBOT_FINDINGS=off: what the detectors cost",
    ),
    Config(
        "otelbot, profiler off",
        True,
        {"OTELBOT_PROFILE_HZ": "0"},
        "otelbot as shipped with OTELBOT_PROFILE_HZ=0: what the sampling profiler costs",
    ),
    Config(
        "otelbot (SDK exporter)",
        True,
        STANDARD_EXPORTER,
        "otelbot, 100% sampled, OTEL_TRACES_EXPORTER=otlp (the SDK's exporter in the bot)",
    ),
    Config(
        "otelbot (in-process export)",
        True,
        {"OTEL_TRACES_EXPORTER": "otelbot_otlp"},
        "otelbot, 100% sampled, OTEL_TRACES_EXPORTER=otelbot_otlp (otelbot's encoder in the "
        "bot, no helper process: what ships on one CPU)",
        default=False,
    ),
    Config(
        "contrib",
        True,
        CONTRIB,
        "contrib aiohttp-client/asyncpg/redis, 100% sampled, the SDK's OTLP exporter",
    ),
    Config("otelbot 10%", True, SAMPLE_10, "otelbot as shipped, parentbased_traceidratio 0.1"),
    Config(
        "otelbot 10%, findings off",
        True,
        {**SAMPLE_10, "OTELBOT_FINDINGS": "off"},
        "otelbot 10% with OTELBOT_FINDINGS=off: what the detectors, the watchdog and the "
        "profiler cost when one update in ten is traced",
        default=False,
    ),
    Config("contrib 10%", True, {**CONTRIB, **SAMPLE_10}, "contrib, parentbased_traceidratio 0.1"),
    Config(
        "bare (PTB)",
        False,
        {},
        "the python-telegram-bot workload bot, no OpenTelemetry",
        module="bench.workload_ptb_bot",
    ),
    Config(
        "otelbot (PTB)",
        True,
        {},
        "the python-telegram-bot workload bot, otelbot as shipped",
        module="bench.workload_ptb_bot",
    ),
    Config(
        "contrib (PTB)",
        True,
        CONTRIB,
        "the python-telegram-bot workload bot, contrib httpx/asyncpg/redis, the SDK's OTLP "
        "exporter",
        module="bench.workload_ptb_bot",
    ),
]


def split_names(text: str, known: list[str]) -> list[str]:
    """Configuration names from a comma-separated list; a known name may hold a comma
    ("otelbot, findings off"), so the longest known run of pieces is taken first."""
    pieces = [p.strip() for p in text.split(",") if p.strip()]
    names, i = [], 0
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            name = ", ".join(pieces[i:j])
            if name in known or j == i + 1:
                names.append(name)
                i = j
                break
    return names


@dataclass
class RunResult:
    """One run. CPU and memory cover the bot's whole process tree (the bot and the export
    helper it starts) and each part; per-update CPU is from the "polling" line to the last
    reply (a helper started meanwhile has its start-up in it); the totals run from process
    start to exit (after the bot's final flush), for slopes over two run lengths."""

    config: str
    updates_per_s: float
    spans_per_update: float
    cpu_us_per_update: float  # bot + helper
    peak_rss_mb: float  # bot's peak + helper's peak
    bot_cpu_us_per_update: float = 0.0
    helper_cpu_us_per_update: float = 0.0
    bot_peak_rss_mb: float = 0.0
    helper_peak_rss_mb: float = 0.0
    updates: int = 0
    bot_cpu_total_s: float = math.nan
    helper_cpu_total_s: float = math.nan


def bot_env(config: Config, api: FakeApi, receiver: Receiver, work_ms: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "BOT_TOKEN": BOT_TOKEN,
            "BOT_API_BASE": api.base_url,
            "PG_DSN": pg_dsn(),
            "REDIS_URL": redis_url(),
            "BENCH_WORK_MS": str(work_ms),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if config.instrumented:
        env.update(
            {
                "OTEL_SERVICE_NAME": "bench-bot",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            }
        )
        env.update(config.env)
    return env


def steady_rate(times: list[float], trim: float = 0.1) -> float:
    """Calls per second between the first and last ``trim`` share of the calls."""
    times = sorted(times)
    lo, hi = int(len(times) * trim), int(len(times) * (1 - trim)) - 1
    if hi <= lo or times[hi] <= times[lo]:
        return 0.0
    return (hi - lo) / (times[hi] - times[lo])


def run_once(
    config: Config,
    receiver: Receiver,
    updates: int,
    work_ms: float,
    timeout: float = 300.0,
    bot_cpus: str | None = None,
    api_cpus: str | None = None,
) -> RunResult:
    """``bot_cpus`` / ``api_cpus`` ("0", "1"): pin the bot (and all it starts) and the fake
    Bot API to those CPUs."""
    api = FakeApi(updates, api_cpus)
    cmd = [sys.executable, "-m", config.module]
    if config.instrumented:
        cmd = [instrument_command(), *cmd]
    cmd = pinned(cmd, bot_cpus)
    spans_before = receiver.spans()
    bot = Child(cmd, env=bot_env(config, api, receiver, work_ms), cwd=ROOT, name=config.name)
    pid = bot.proc.pid
    totals = (math.nan, math.nan)
    try:
        bot.wait_for_line("polling", 60)
        bot_start, helper_start = tree_cpu_seconds(pid)
        deadline = time.monotonic() + timeout
        while True:
            status = api.get("/_control/status")
            if status["delivered"] >= updates and status["calls"] >= updates:
                sent = api.get("/_control/calls?method=sendMessage")
                if len(sent) >= updates:
                    break
            if bot.proc.poll() is not None:
                raise RuntimeError(f"bot exited early:\n{bot.output[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{config.name}: {updates} updates not handled in time")
            time.sleep(0.25)
        bot_end, helper_end = tree_cpu_seconds(pid)
        bot_peak, helper_peak = tree_peak_rss_bytes(pid)
        bot.proc.send_signal(signal.SIGTERM)
        if wait_exited(pid):  # exited, not yet reaped: final CPU times, the helper's included
            totals = tree_cpu_seconds(pid)
    finally:
        code = bot.stop()
        api.stop()
    if code not in (0, -15):
        raise RuntimeError(f"{config.name}: bot exited with {code}:\n{bot.output[-3000:]}")
    # The bot flushes its span queue on shutdown; wait for the count to settle. Counted for
    # the bare bot too: what arrived while it ran, which is none when nothing leaks between
    # runs and the bare bot is really bare.
    spans, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.6:
        now = receiver.spans() - spans_before
        if now != spans:
            spans, stable_since = now, time.monotonic()
        time.sleep(0.1)
    bot_cpu, helper_cpu = bot_end - bot_start, helper_end - helper_start
    return RunResult(
        config.name,
        steady_rate([c["at"] for c in sent]),
        spans / updates,
        (bot_cpu + helper_cpu) / updates * 1e6,
        (bot_peak + helper_peak) / 2**20,
        bot_cpu / updates * 1e6,
        helper_cpu / updates * 1e6,
        bot_peak / 2**20,
        helper_peak / 2**20,
        updates,
        *totals,
    )


@dataclass
class Summary:
    config: Config
    runs: list[RunResult]

    @property
    def median(self) -> float:
        return statistics.median(r.updates_per_s for r in self.runs)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


def paired_ratio(summary: Summary, bare: Summary) -> float | None:
    """The median over rounds of a configuration's rate over bare's in the same round.

    The machine's speed drifts over minutes; a round runs every configuration within a
    minute or two, so this ratio leaves out most of the drift between rounds that the
    ratio of the medians keeps."""
    pairs = [
        run.updates_per_s / base.updates_per_s
        for run, base in zip(summary.runs, bare.runs, strict=False)
        if base.updates_per_s > 0
    ]
    return statistics.median(pairs) if pairs else None


def run_interleaved(
    configs: list[Config], repeats: int, updates: int, work_ms: float, log=print
) -> list[Summary]:
    """A B C …, B C … A, C … A B: each round runs every configuration once, the order
    rotated by one each round so that none always runs first (the cyclic order stays)."""
    receiver = Receiver()
    summaries = [Summary(c, []) for c in configs]
    try:
        for round_no in range(1, repeats + 1):
            shift = (round_no - 1) % len(summaries)
            for summary in summaries[shift:] + summaries[:shift]:
                result = run_once(summary.config, receiver, updates, work_ms)
                summary.runs.append(result)
                log(
                    f"  round {round_no}/{repeats} {summary.config.name:<22} "
                    f"{result.updates_per_s:7.1f} updates/s  "
                    f"{result.spans_per_update:4.2f} spans/update  "
                    f"{result.cpu_us_per_update:6.0f} µs CPU/update"
                )
    finally:
        receiver.close()
    return summaries
