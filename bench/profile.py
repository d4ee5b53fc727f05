"""Profile the workload bot under one configuration with py-spy (where the time goes).

    python -m bench.profile --config otelbot --updates 4000 --out /tmp/otelbot.txt

Writes py-spy's collapsed stacks and prints the functions with the most samples
(inclusive and own), so a before/after of an optimisation is one command.

    python -m bench.profile --one-cpu --config otelbot   # µs per update per part, one CPU

``--one-cpu`` runs ``bench.parts`` instead: the bot pinned to one CPU as in
``bench.onecpu``, every thread (and the export helper) sampled, each part's µs per update.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import e2e
from bench.procs import ROOT, FakeApi, Receiver
from otelbot.testing.processes import Child, instrument_command

_OTEL_PARTS = {
    "metrics",
    "trace",
    "sdk",
    "attributes",
    "context",
    "util",
    "propagate",
    "propagators",
    "baggage",
    "exporter",
    "instrumentation",
    "semconv",
    "proto",
}


#: Frames that only start the event loop: samples whose innermost non-stdlib frame is one
#: of these are the loop's own work (or its idle wait), not the caller's.
_LOOP_SHELL = (
    "<module> ",
    "main ",
    "RuntimeMetrics._wrap_run_forever.",
    "RuntimeMetrics._wrap_runner_run.",
)


def package_of(frame: str) -> str | None:
    """The top-level package a py-spy frame is in (``aiogram``, ``opentelemetry``,
    ``otelbot``); None for the standard library."""
    where = frame.rpartition(" (")[2].rstrip(")")
    path = where.rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    top = path.lstrip("/").split("/", 1)[0].removesuffix(".py")
    if "/" in path and top in _OTEL_PARTS:  # py-spy drops the namespace package's name
        return "opentelemetry"
    if not top or top.startswith("<") or top in sys.stdlib_module_names:
        return None
    return top


def _samples(collapsed: Path, thread: str) -> tuple[list[tuple[list[str], int]], int]:
    """The (frames without the thread frame, sample count) lines of one thread, and their
    total."""
    out: list[tuple[list[str], int]] = []
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if thread not in frames[0]:
            continue
        n = int(count)
        total += n
        out.append((frames[1:], n))
    return out, total


def by_package(collapsed: Path, thread: str = "MainThread") -> list[tuple[str, float]]:
    """Main-thread samples per package; stdlib frames count for the package calling them."""
    counts: collections.Counter[str] = collections.Counter()
    samples, total = _samples(collapsed, thread)
    for frames, n in samples:
        owner = "asyncio loop (incl. idle)"
        for frame in reversed(frames):
            package = package_of(frame)
            if package is not None:
                if not frame.startswith(_LOOP_SHELL):
                    owner = package
                break
        counts[owner] += n
    return [(p, n / total) for p, n in counts.most_common()] if total else []


def instrumentation_cost(collapsed: Path, thread: str = "MainThread") -> list[tuple[str, float]]:
    """Main-thread samples spent in otelbot/OpenTelemetry, per innermost otelbot function
    (what the instrumentation adds, including the SDK and stdlib work it causes)."""
    counts: collections.Counter[str] = collections.Counter()
    samples, total = _samples(collapsed, thread)
    for frames, n in samples:
        owner = None
        for frame in reversed(frames):
            package = package_of(frame)
            if package is None:
                continue
            if frame.startswith(_LOOP_SHELL):
                break
            if package == "otelbot":
                owner = frame  # the innermost otelbot frame: the instrumentation step
                break
            if package != "opentelemetry":
                break
        if owner is not None:
            counts[owner] += n
    return [(f, n / total) for f, n in counts.most_common()] if total else []


def summarize(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{total} samples", "", "main thread by package:"]
    out += [f"  {share:6.1%}  {package}" for package, share in by_package(collapsed)]
    cost = instrumentation_cost(collapsed)
    out += ["", f"otelbot/OpenTelemetry on the main thread: {sum(c for _, c in cost):.1%}"]
    out += [f"  {share:6.1%}  {frame}" for frame, share in cost[:top]]
    out += ["", "own:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="otelbot")
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/otelbot-profile.txt"))
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--one-cpu", action="store_true", help="µs per update per part on one CPU (bench.parts)"
    )
    args = parser.parse_args(argv)
    if args.one_cpu:
        from bench import parts

        return parts.main(["--config", args.config, "--seconds", str(args.seconds)])
    config = next(c for c in e2e.CONFIGS if c.name == args.config)
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    receiver = Receiver()
    api = FakeApi(args.updates)
    cmd = [sys.executable, "-m", "bench.workload_bot"]
    if config.instrumented:
        cmd = [instrument_command(), *cmd]
    bot = Child(cmd, env=e2e.bot_env(config, api, receiver, 1.0), cwd=ROOT, name=config.name)
    try:
        bot.wait_for_line("polling", 60)
        time.sleep(1.0)
        subprocess.run(
            [
                pyspy,
                "record",
                "--pid",
                str(bot.proc.pid),
                "--format",
                "raw",
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "250",
                "--threads",
                "--nonblocking",
                "-o",
                str(args.out),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        bot.stop()
        api.stop()
        receiver.close()
    print(summarize(args.out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
