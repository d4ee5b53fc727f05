"""What drives the garbage collector in the workload bot: a census of the objects it
tracks, per update, bare against otelbot.

    python -m bench.gc_census --config bare,otelbot
    python -m bench.gc_census --config otelbot --counts-seconds 15 --top 25 --json /tmp/c.json

The workload bot (``bench.workload_bot``, run as ``python -m bench.gc_census --child``, under
the real ``opentelemetry-instrument`` for an instrumented configuration) is pinned to one
CPU with all it starts, the fake Bot API and the OTLP receiver to the other, as in
``bench.parts``. A ``gc.callbacks`` hook in the bot counts, per generation, collections,
the objects a collection finds in the generations it collects ("young") and those it
frees (cyclic garbage: every one was a net +1 on the generation-0 counter, which
triggers a collection at 700), and for generation 1 the survivors moved to generation 2
(what ``long_lived_pending`` adds up; a full collection runs once it passes 25% of the
long-lived heap and 10 generation-1 collections have run). The driver steps the bot
through its windows with SIGUSR1 and reads the replies sent in each from the fake API:

1. counts: ``--counts-seconds`` without tracemalloc. Collections per 1,000 updates, and
   per update: young objects met by generation-0 collections, garbage freed, objects
   promoted to generation 2. These numbers are the census's measure (timings are not).
2. types: ``--types-seconds``, still without tracemalloc: at each generation-0 collection
   the objects in generation 0 by type (a coroutine or function with its code's name).
   Compare them per collection, not per update: an object alive across several updates
   is met by every collection in its life, so more collections meet more of everything.
3. tracemalloc starts (``--frames`` frames); ``--settle`` seconds pass so that the
   objects the bot keeps renewing have a traceback.
4. garbage: ``--garbage-seconds`` with ``gc.DEBUG_SAVEALL``: what the collector frees is
   kept in ``gc.garbage`` instead, then grouped by type and allocation site.
5. attribution: ``--attribution-seconds``: the objects each generation-0 collection meets
   and those each generation-1 collection moves to generation 2 (the tail of
   ``gc.get_objects(2)``), by type and allocation site.

What the counter counts: every allocation of a type the collector supports (tuples of
atoms included, though a collection later untracks them; not str, bytes, int, float) is
+1 on the generation-0 counter, every deallocation -1 but never below 0, and a
collection resets it. A temporary freed at once costs nothing; an object that outlives
other work (across an ``await``, in a queue until an export) is +1 whose -1 may land on
a counter already reset: those lost -1s are what the collections add up to.

An allocation site is the innermost frame of the object's tracemalloc traceback outside
the standard library (``asyncio``, ``contextvars``, ... are walked outward): its package
is the owner ("otelbot" for otelbot and OpenTelemetry, "app" for the bot, aiogram,
asyncpg, redis, aiohttp, pydantic, ...), the line is the site. Objects allocated before
tracemalloc started, or reused from a free list (tuples, contexts, ...), have no
traceback ("unknown"). tracemalloc slows the bot down by several times, so per-update
numbers of windows 4 and 5 are for attribution (which
site, which share), not for comparing with window 1; time-driven work (metric export,
profiler, heartbeat) weighs less per update there.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import linecache
import os
import signal
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ENV_REPORT = "BENCH_GC_CENSUS"
ENV_FRAMES = "BENCH_GC_CENSUS_FRAMES"
#: The windows the bot steps through, one per SIGUSR1; the driver reads replies at each.
STEPS = ("counts", "types", "settle", "garbage", "attribution")

_STDLIB = (sysconfig.get_paths()["stdlib"] + "/", sysconfig.get_paths()["platstdlib"] + "/")
_CHECKOUT = str(Path(__file__).resolve().parents[1]) + "/"
_OTEL = ("otelbot", "opentelemetry", "google")


def _short(filename: str) -> str | None:
    """A frame's file from its top-level package on, or None for the standard library
    (and frozen or generated code)."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    if filename.startswith(_CHECKOUT):
        return filename.removeprefix(_CHECKOUT)
    if filename.startswith(_STDLIB) or filename.startswith("<"):
        return None
    return filename


def site_of(obj: object) -> tuple[str, str]:
    """(owner, site) of a tracked object from its tracemalloc traceback."""
    tb = tracemalloc.get_object_traceback(obj)
    if tb is None:
        return _UNKNOWN
    found = _sites.get(tb)
    if found is None:
        found = _sites[tb] = _site(tb)
    return found


_UNKNOWN = ("unknown", "(no traceback: allocated before tracemalloc started, or from a free list)")
_sites: dict[tracemalloc.Traceback, tuple[str, str]] = {}


def _site(tb: tracemalloc.Traceback) -> tuple[str, str]:
    inner = None
    for frame in reversed(tb):  # oldest first: walk from the most recent
        short = _short(frame.filename)
        if short is None:
            if inner is None:
                stdlib = frame.filename
                for prefix in _STDLIB:
                    stdlib = stdlib.removeprefix(prefix)
                inner = f"{stdlib}:{frame.lineno}"
            continue
        owner = "otelbot" if short.split("/", 1)[0].removesuffix(".py") in _OTEL else "app"
        line = linecache.getline(frame.filename, frame.lineno).strip()[:90]
        where = f"{short}:{frame.lineno} `{line}`"
        return owner, where + (f" (in {inner})" if inner else "")
    return "stdlib", inner or "?"


def type_of(obj: object) -> str:
    """A young object's type for the census without tracemalloc: the class's module and
    name; for a coroutine or function, also its code's name."""
    cls = type(obj)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    code = getattr(obj, "cr_code", None) or getattr(obj, "__code__", None)
    if code is not None and cls.__name__ in ("coroutine", "function"):
        where = _short(code.co_filename) or "stdlib"
        return f"{name} {code.co_qualname} ({where.split('/', 1)[0]})"
    return name


class Census:
    """The hook inside the bot: counters always, attribution in its windows."""

    def __init__(self, path: str, frames: int) -> None:
        self.path = path
        self.frames = frames
        self.step = -1
        #: per generation: collections, young objects met, garbage freed; gen-2 promotions
        self.collections = [0, 0, 0]
        self.young = [0, 0, 0]
        self.freed = [0, 0, 0]
        self.promoted = 0
        self._young_now = 0
        self._gen2_len = 0
        self._tracking = False
        self._types = False
        #: type (with a coroutine's or function's name) -> objects met in generation 0
        self.young_types: collections.Counter[str] = collections.Counter()
        #: (owner, site, type) -> objects met in generation 0 by its collections
        self.young_sites: collections.Counter[tuple[str, str, str]] = collections.Counter()
        #: (owner, site, type) -> objects moved to generation 2
        self.promoted_sites: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.report: dict[str, Any] = {"steps": []}
        self._mark = self._snapshot()
        gc.callbacks.append(self._callback)
        signal.signal(signal.SIGUSR1, self._next)

    def _snapshot(self) -> list[int]:
        return [*self.collections, *self.young, *self.freed, self.promoted]

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            if generation < 2:
                self._young_now = sum(len(gc.get_objects(g)) for g in range(generation + 1))
            if self._types and generation == 0:
                for obj in gc.get_objects(0):
                    self.young_types[type_of(obj)] += 1
            if self._tracking:
                if generation == 0:
                    for obj in gc.get_objects(0):
                        self.young_sites[(*site_of(obj), type(obj).__qualname__)] += 1
                elif generation == 1:
                    self._gen2_len = len(gc.get_objects(2))
            return
        self.collections[generation] += 1
        self.freed[generation] += info["collected"]
        if generation == 2:
            return
        self.young[generation] += self._young_now
        if generation == 1:
            self.promoted += self._young_now - info["collected"]
            if self._tracking:
                for obj in gc.get_objects(2)[self._gen2_len :]:
                    self.promoted_sites[(*site_of(obj), type(obj).__qualname__)] += 1

    def _next(self, signum: int, frame: Any) -> None:
        """The end of one window and the start of the next (the first signal only
        starts the counts window)."""
        mark = self._snapshot()
        delta = [b - a for a, b in zip(self._mark, mark, strict=True)]
        self._mark = mark
        self.step += 1
        if self.step == 0:
            print("census step start done", flush=True)
            return
        name = STEPS[self.step - 1]
        entry: dict[str, Any] = {"name": name, "counters": delta}
        if name == "counts":
            self._types = True
        elif name == "types":
            self._types = False
            entry["types"] = self.young_types.most_common()
            tracemalloc.start(self.frames)
        elif name == "settle":
            gc.set_debug(gc.DEBUG_SAVEALL)
        elif name == "garbage":
            gc.set_debug(0)
            found: collections.Counter[tuple[str, str, str]] = collections.Counter()
            for obj in gc.garbage:
                found[(*site_of(obj), type(obj).__qualname__)] += 1
            gc.garbage.clear()
            entry["sites"] = [[*k, n] for k, n in found.most_common()]
            self._tracking = True
        elif name == "attribution":
            self._tracking = False
            entry["young_sites"] = [[*k, n] for k, n in self.young_sites.most_common()]
            entry["sites"] = [[*k, n] for k, n in self.promoted_sites.most_common()]
            tracemalloc.stop()
        self.report["steps"].append(entry)
        Path(self.path).write_text(json.dumps(self.report))
        print(f"census step {name} done", flush=True)


def child() -> None:
    """The workload bot with the census hook (the driver's ``--child``)."""
    from bench import workload_bot

    Census(os.environ[ENV_REPORT], int(os.environ.get(ENV_FRAMES, "30")))
    asyncio.run(workload_bot.main())


# ---------------------------------------------------------------- the driver


def run_config(config: Any, receiver: Any, args: argparse.Namespace) -> dict[str, Any]:
    from bench import e2e, onecpu
    from bench.procs import ROOT, FakeApi, pinned
    from otelbot.testing.processes import Child, instrument_command

    windows = (
        args.counts_seconds,
        args.types_seconds,
        args.settle,
        args.garbage_seconds,
        args.attribution_seconds,
    )
    api = FakeApi(int((args.warmup + sum(windows) + 20) * 1500), onecpu.OTHER_CPU)
    report = Path(tempfile.mkstemp(prefix="otelbot-census-")[1])
    cmd = [sys.executable, "-m", "bench.gc_census", "--child"]
    if config.instrumented:
        cmd = [instrument_command(), *cmd]
    env = e2e.bot_env(config, api, receiver, 0.0)
    env[ENV_REPORT] = str(report)
    env[ENV_FRAMES] = str(args.frames)
    bot = Child(pinned(cmd, onecpu.BOT_CPU), env=env, cwd=ROOT, name=config.name)
    replies = []
    try:
        bot.wait_for_line("polling", 60)
        time.sleep(args.warmup)

        def count() -> int:
            return len(api.get("/_control/calls?method=sendMessage"))

        replies.append(count())
        bot.proc.send_signal(signal.SIGUSR1)
        bot.wait_for_line("census step start done", 60)
        for step, seconds in zip(STEPS, windows, strict=True):
            time.sleep(seconds)
            replies.append(count())
            bot.proc.send_signal(signal.SIGUSR1)
            bot.wait_for_line(f"census step {step} done", 600)
    finally:
        bot.stop()
        api.stop()
    steps = json.loads(report.read_text())["steps"]
    report.unlink(missing_ok=True)
    out: dict[str, Any] = {"config": config.name, "windows": {}}
    for i, entry in enumerate(steps):
        counters = entry["counters"]
        out["windows"][entry["name"]] = {
            "updates": replies[i + 1] - replies[i],
            "collections": counters[0:3],
            "young": counters[3:6],
            "freed": counters[6:9],
            "promoted": counters[9],
            "sites": entry.get("sites", []),
            "young_sites": entry.get("young_sites", []),
            "types": entry.get("types", []),
        }
    return out


def summary(results: list[dict[str, Any]], top: int) -> str:
    lines = []
    names = [r["config"] for r in results]
    lines.append("| per update (counts window, no tracemalloc) | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    counts = [r["windows"]["counts"] for r in results]
    row("updates in the window", [str(c["updates"]) for c in counts])
    for g in range(3):
        row(
            f"generation {g} collections per 1,000 updates",
            [f"{c['collections'][g] / c['updates'] * 1000:.1f}" for c in counts],
        )
    row(
        "young objects met by generation-0 collections",
        [f"{c['young'][0] / c['updates']:.1f}" for c in counts],
    )
    for g in range(3):
        row(
            f"garbage freed by generation-{g} collections",
            [f"{c['freed'][g] / c['updates']:.1f}" for c in counts],
        )
    row(
        "objects promoted to generation 2 (long_lived_pending)",
        [f"{c['promoted'] / c['updates']:.1f}" for c in counts],
    )
    lines.append("")
    lines.append(
        "Young objects met by generation-0 collections, by type (types window, "
        "no tracemalloc), per update:"
    )
    lines.append("")
    type_windows = [r["windows"]["types"] for r in results]
    per = [{t: c / max(w["updates"], 1) for t, c in w["types"]} for w in type_windows]
    order = sorted({t for p in per for t in p}, key=lambda t: -max(p.get(t, 0.0) for p in per))
    lines.append("| type | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    row("all", [f"{sum(p.values()):.1f}" for p in per])
    for t in order[: top * 2]:
        row(t, [f"{p.get(t, 0.0):.2f}" for p in per])
    for r in results:
        for window, key, title in (
            ("garbage", "sites", "cyclic garbage (DEBUG_SAVEALL)"),
            ("attribution", "young_sites", "young objects met by generation-0 collections"),
            ("attribution", "sites", "moved to generation 2 by generation-1 collections"),
        ):
            w = r["windows"][window]
            n = max(w["updates"], 1)
            by_owner: collections.Counter[str] = collections.Counter()
            for site in w[key]:
                by_owner[site[0]] += site[3]
            lines.append("")
            lines.append(
                f"**{r['config']}: {title}**, {w['updates']} updates (tracemalloc on): "
                + ", ".join(f"{o} {c / n:.1f}" for o, c in by_owner.most_common())
                + " per update"
            )
            lines.append("")
            lines.append("| objects/update | owner | type | site |")
            lines.append("|---:|---|---|---|")
            for owner, where, kind, count in w[key][:top]:
                lines.append(f"| {count / n:.2f} | {owner} | {kind} | {where} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", "--configs", dest="configs", default="bare,otelbot")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--counts-seconds", type=float, default=15.0)
    parser.add_argument("--types-seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--garbage-seconds", type=float, default=4.0)
    parser.add_argument("--attribution-seconds", type=float, default=15.0)
    parser.add_argument("--frames", type=int, default=12, help="tracemalloc frames")
    parser.add_argument("--top", type=int, default=20, help="sites listed per table")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.child:
        child()
        return 0
    from bench import e2e, onecpu
    from bench.procs import Receiver

    chosen = onecpu.configs(e2e.split_names(args.configs, onecpu.NAMES))
    receiver = Receiver(onecpu.OTHER_CPU)
    results = []
    try:
        for config in chosen:
            results.append(run_config(config, receiver, args))
            print(f"  {config.name}: done", file=sys.stderr, flush=True)
    finally:
        receiver.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(summary(results, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
