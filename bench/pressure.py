"""Export under pressure: the OTLP endpoint goes away for a while during steady load.

Updates are fed to the fake Bot API at a fixed rate (below the bot's capacity, so the bot
is in steady state); the receiver process stops listening for ``down`` seconds and comes
back. Reported per phase (before, down, after): updates handled per second and the highest
RSS of the bot's whole process tree (the bot plus the export helper it starts), and of
each part; memory must stay bounded (the batch processor's queue is bounded and drops spans)
and throughput must not collapse.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from bench import e2e
from bench.procs import ROOT, FakeApi, Receiver, descendants, rss_bytes
from otelbot.testing.processes import Child, instrument_command


@dataclass
class PressureResult:
    config: str
    rate: float
    handled: dict[str, float]  # phase -> updates/s
    rss_mb: dict[str, float]  # phase -> highest RSS of bot + helper seen in the phase
    parts_mb: dict[str, tuple[float, float]]  # phase -> highest RSS of (bot, helper)
    spans_received: int


def _feed(api: FakeApi, rate: float, stop: threading.Event) -> None:
    batch = max(1, int(rate / 10))
    body = ('{"updates": [' + ",".join(['{"text": "load"}'] * batch) + "]}").encode()
    next_at = time.monotonic()
    while not stop.is_set():
        request = urllib.request.Request(
            api.base_url + "/_control/updates",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()
        next_at += batch / rate
        stop.wait(max(0.0, next_at - time.monotonic()))


def _rss_mb(pid: int) -> tuple[float, float]:
    """Current RSS of (the bot, its live descendants: the export helper) in MB."""
    others = 0
    for child in descendants(pid):
        try:
            others += rss_bytes(child)[0]
        except OSError:
            pass
    return rss_bytes(pid)[0] / 2**20, others / 2**20


def run_pressure(
    config: e2e.Config,
    rate: float,
    before: float,
    down: float,
    after: float,
    work_ms: float = 1.0,
    log=print,
) -> PressureResult:
    receiver = Receiver()
    api = FakeApi(0)
    bot = Child(
        [instrument_command(), sys.executable, "-m", "bench.workload_bot"],
        env=e2e.bot_env(config, api, receiver, work_ms),
        cwd=ROOT,
        name=config.name,
    )
    stop = threading.Event()
    rss: dict[str, float] = {}
    parts: dict[str, tuple[float, float]] = {}
    marks: dict[str, float] = {}
    try:
        bot.wait_for_line("polling", 60)
        feeder = threading.Thread(target=_feed, args=(api, rate, stop), daemon=True)
        feeder.start()
        for phase, seconds, action in (
            ("before", before, None),
            ("down", down, "down"),
            ("after", after, "up"),
        ):
            if action == "down":
                receiver.down()
            elif action == "up":
                receiver.up()
            marks[phase] = time.time()
            end = time.monotonic() + seconds
            peak, bot_peak, helper_peak = 0.0, 0.0, 0.0
            while time.monotonic() < end:
                own, helper = _rss_mb(bot.proc.pid)
                peak = max(peak, own + helper)
                bot_peak, helper_peak = max(bot_peak, own), max(helper_peak, helper)
                time.sleep(0.5)
            rss[phase], parts[phase] = peak, (bot_peak, helper_peak)
            log(
                f"  pressure {config.name:<16} {phase:<6} peak RSS {peak:5.0f} MB "
                f"(bot {bot_peak:.0f}, helper {helper_peak:.0f})"
            )
        marks["end"] = time.time()
        stop.set()
        feeder.join(5)
        sent = [c["at"] for c in api.get("/_control/calls?method=sendMessage")]
    finally:
        stop.set()
        bot.stop()
        api.stop()
    time.sleep(1.0)
    spans = receiver.spans()
    receiver.close()
    bounds = [
        ("before", marks["before"], marks["down"]),
        ("down", marks["down"], marks["after"]),
        ("after", marks["after"], marks["end"]),
    ]
    handled = {}
    for phase, start, end in bounds:
        start += 2.0 if phase == "before" else 0.0  # skip start-up
        handled[phase] = sum(1 for t in sent if start <= t < end) / (end - start)
    return PressureResult(config.name, rate, handled, rss, parts, spans)


def table(results: list[PressureResult], down: float) -> str:
    rows = [
        "| configuration | fed updates/s | handled/s before | handled/s endpoint down "
        "| handled/s after | peak RSS MB bot + helper, before / down / after "
        "| of which helper | spans received |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.config} | {r.rate:.0f} | {r.handled['before']:.0f} | "
            f"{r.handled['down']:.0f} | {r.handled['after']:.0f} | "
            f"{r.rss_mb['before']:.0f} / {r.rss_mb['down']:.0f} / "
            f"{r.rss_mb['after']:.0f} | "
            f"{' / '.join(f'{r.parts_mb[p][1]:.0f}' for p in ('before', 'down', 'after'))} | "
            f"{r.spans_received} |"
        )
    return "\n".join(rows)
