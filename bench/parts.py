"""Where the time goes on one CPU: µs per update per part, for the whole process tree.

    python -m bench.parts --config otelbot            # or: python -m bench.profile --one-cpu
    python -m bench.parts --config bare,otelbot,contrib --seconds 20

The workload bot (no handler work) runs pinned to one CPU with all it starts, the fake Bot
API, the OTLP receiver and py-spy to the other (``bench.onecpu``'s layout). Once it polls
and has run ``--warmup`` seconds, one window of ``--seconds`` is measured three ways:

- the process tree's CPU time (bot and export helper, from /proc) and the replies sent in
  the window: CPU per update, start-up and shutdown left out;
- py-spy samples of every thread of the bot and of its helper (idle threads not counted,
  no native frames, the bot not paused): each sample is given to one part, and a part's
  µs per update is its share of the samples times the CPU per update. On one CPU every
  thread's time is the bot's time, so the export and watcher threads are counted;
- the CPU time the bot spent in garbage collection (``BENCH_GC_FILE``, a ``gc.callbacks``
  probe in the workload bot). py-spy cannot see a collection: its time is already inside
  the parts, charged to whatever frame allocated when it ran; the line says how much.

A sample's part: on the main thread (and the default executor's threads) the innermost
frame that is not the standard library decides. The application's packages (aiogram,
asyncpg, redis, aiohttp, pydantic, ...) are the bare work; in otelbot or OpenTelemetry
frames, the frames are walked outward to the first one that says what the work is for
(see ``otel_part``). Threads of otelbot and the SDK are their own parts.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import e2e, onecpu
from bench.procs import (
    CLK_TCK,
    ROOT,
    FakeApi,
    Receiver,
    pinned,
    tree_cpu_seconds,
    tree_peak_rss_bytes,
)
from bench.workload_bot import GC_FILE_LAYOUT
from otelbot.testing.processes import Child, instrument_command

APP = "application and framework"
OTEL = "otelbot and OpenTelemetry"

#: otelbot's instrumentation modules and the part they are.
_INSTRUMENTATION = {
    "asyncpg": "SQL spans (asyncpg)",
    "redis": "Redis spans",
    "aiohttp_client": "Bot API spans (aiogram session, aiohttp)",
    "botapi": "Bot API spans (aiogram session, aiohttp)",
    "httpx_client": "Bot API spans (httpx)",
    "aiohttp_server": "webhook server spans",
    "runtime": "runtime metrics (GC, loop, process)",
}
#: Functions of the framework instrumentations that are the Bot API call's, not the update's.
_API_FUNCTIONS = ("api_call", "check_response", "pin_response", "make_request", "request")
#: The contrib instrumentations (``opentelemetry-instrumentation-*``) and their part.
_CONTRIB = {
    "asyncpg": "SQL spans (asyncpg)",
    "redis": "Redis spans",
    "aiohttp_client": "Bot API spans (aiogram session, aiohttp)",
    "httpx": "Bot API spans (httpx)",
}
_DIAGNOSIS = {
    "steps": "diagnosis: step timer (steps.py)",
    "blocking": "diagnosis: blocked loop (blocking.py)",
    "profiler": "diagnosis: profiler (profiler.py)",
    "hot_code": "diagnosis: hot code (hot_code.py)",
    "memory": "diagnosis: memory watch (memory.py, allocations.py)",
    "allocations": "diagnosis: memory watch (memory.py, allocations.py)",
    "heartbeat": "diagnosis: heartbeat (heartbeat.py)",
}
DETECTORS = "diagnosis: detectors (engine, notes, pool, slow, repeated, cache, ...)"
METRICS = "metrics recording"
ON_END = "span processor on_end / queue"
ENCODING = "export encoding (OTLP protobuf)"
SEND = "export HTTP send"
WRAPPERS = "wrappers (otelbot/core/patching.py)"


_STDLIB = sysconfig.get_paths()["stdlib"] + "/"
_CHECKOUT = str(ROOT) + "/"


def _where(frame: str) -> str:
    """The file path of a py-spy frame (``--full-filenames``) from its top-level package
    on: ``opentelemetry/sdk/trace/__init__.py``, ``otelbot/...``, ``asyncio/...``."""
    path = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if path.startswith(_CHECKOUT):
        return path.removeprefix(_CHECKOUT)
    return path.removeprefix(_STDLIB)


def _package(frame: str) -> str | None:
    """The top-level package a frame is in (OpenTelemetry's and protobuf's are
    "opentelemetry"); None for the standard library and for the odd frame py-spy reads
    half-written when it does not pause the bot."""
    path = _where(frame)
    if path.startswith("<attrs generated methods "):
        return path.removeprefix("<attrs generated methods ").split(".", 1)[0]
    if "/" not in path and not path.endswith(".py"):
        return None
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in sys.stdlib_module_names:
        return None
    return "opentelemetry" if top in ("opentelemetry", "google") else top


def _function(frame: str) -> str:
    return frame.rpartition(" (")[0]


def _specific(frame: str) -> str | None:
    """The part an otelbot or OpenTelemetry frame stands for, or None when the frame is
    generic (light spans, core helpers, the SDK's span code) and its caller decides."""
    path = _where(frame)
    parts = path.removesuffix(".py").split("/")
    name = parts[-1]
    if path.startswith("otelbot/"):
        area = parts[1] if len(parts) > 2 else ""
        if area == "core":
            return METRICS if name == "fastmetrics" else None
        if area == "diagnosis":
            return _DIAGNOSIS.get(name, DETECTORS)
        if area == "instrumentation":
            if name in ("aiogram", "ptb", "telebot", "updates"):
                function = _function(frame)
                if any(word in function for word in _API_FUNCTIONS):
                    return "Bot API spans (aiogram session, aiohttp)"
                return "update span (start/end, state)"
            return _INSTRUMENTATION.get(name, "instrumentation: " + name)
        if area == "runtime":
            if name == "loop":
                return "event-loop lag monitor (selector wrapper)"
            return "runtime metrics (GC, loop, process)"
        if area == "export":
            if name == "otlp":  # otelbot's own OTLP protobuf writer
                return ENCODING
            if name in ("offload", "rows"):
                return ON_END
            return "export: " + name
        return "otelbot: " + "/".join(parts[1:])
    path = path.removeprefix("opentelemetry/")
    parts = parts[1:] if parts[0] == "opentelemetry" else parts
    if path.startswith(("sdk/metrics", "metrics/")):
        return METRICS
    if path.startswith("sdk/trace/export"):
        return ON_END
    if path.startswith(("exporter/otlp/proto/common", "proto/", "google/protobuf")):
        return ENCODING
    if path.startswith("exporter/http/transport"):
        return SEND
    if path.startswith("instrumentation/") and len(parts) > 1:
        return _CONTRIB.get(parts[1])
    return None


def otel_part(chain: list[str]) -> str:
    """The part of a sample whose innermost library frames are otelbot's or
    OpenTelemetry's: ``chain`` holds those frames, innermost first, up to the first frame
    of another package. The first frame that names its purpose decides (a light span
    started by the Redis instrumentation is Redis; a histogram record is metrics, wherever
    it is called from); a chain of generic frames only is named by its innermost one."""
    for frame in chain:
        part = _specific(frame)
        if part is not None:
            return part
    path = _where(chain[0])
    if path.startswith("otelbot/core/patching"):
        return WRAPPERS
    if path.startswith("otelbot/core/lightspan"):
        return "light spans (called from outside otelbot)"
    if path.startswith("otelbot/"):
        return "otelbot: " + path.removeprefix("otelbot/").removesuffix(".py")
    path = path.removeprefix("opentelemetry/")
    if path.startswith("sdk/trace"):
        return "SDK spans (start/end)"
    return "OpenTelemetry: " + path.split("/")[0].removesuffix(".py")


#: Frames that only start the event loop (see bench.profile): what runs under them and
#: nothing else is the loop's own work.
_LOOP_SHELL = (
    "<module> ",
    "main ",
    "RuntimeMetrics._wrap_run_forever.",
    "RuntimeMetrics._wrap_runner_run.",
)
_OTEL_PACKAGES = ("otelbot", "opentelemetry", "google")
#: Packages of HTTP clients the exporters send with.
_HTTP = ("requests", "urllib3", "certifi", "charset_normalizer", "idna")


def main_thread_part(frames: list[str]) -> tuple[str, str]:
    """(group, part) of one main-thread (or executor-thread) sample, frames outermost
    first without the process and thread frames."""
    chain: list[str] = []
    for frame in reversed(frames):
        package = _package(frame)
        if package is None:
            continue
        if frame.startswith(_LOOP_SHELL):
            break
        if package in _OTEL_PACKAGES:
            chain.append(frame)
            continue
        if chain:
            return OTEL, otel_part(chain)
        if package == "bench":
            return APP, "the handler (bench/workload_bot.py)"
        return APP, package
    if chain:
        return OTEL, otel_part(chain)
    return APP, "asyncio loop and stdlib"


def export_thread_part(frames: list[str]) -> str:
    """The SDK's batch span processor thread, or the metric reader's: encoding, the HTTP
    send, or the processor's own work."""
    for frame in reversed(frames):
        package = _package(frame)
        if package in _HTTP:
            return SEND
        if package is None:
            continue
        part = _specific(frame)
        if part in (ENCODING, SEND):
            return part
        if part is None and "encod" in frame.lower():  # otelbot's own encoder
            return ENCODING
    for frame in reversed(frames):
        if _package(frame) in _OTEL_PACKAGES:
            part = _specific(frame)
            if part is not None and part != ON_END:
                return part
            return "the processor and exporter (other)"
    return "its loop (stdlib)"


HELPER = "helper"


def _split(frames: list[str], bot_pid: int) -> tuple[bool, str, list[str]]:
    """(whether the sample is from the export helper, its thread frame, the frames under
    it). With ``--subprocesses`` py-spy opens a sample with one process frame per level:
    the bot's, then the helper's."""
    i, helper = 0, False
    while i < len(frames) and frames[i].startswith("process "):
        helper = helper or not frames[i].startswith(f"process {bot_pid}:")
        i += 1
    thread = frames[i] if i < len(frames) else ""
    return helper, thread, frames[i + 1 :]


def thread_of(frames: list[str], bot_pid: int) -> str:
    """The bot's thread id a py-spy sample is from ("12345"), or HELPER for the export
    helper process."""
    helper, thread, _ = _split(frames, bot_pid)
    return HELPER if helper else thread.removeprefix("thread (").split(")", 1)[0]


def classify(frames: list[str], bot_pid: int) -> tuple[str, str]:
    """(group, part) of one py-spy sample (frames outermost first, process and thread
    frames included, as ``--threads --subprocesses`` writes them)."""
    helper, thread, frames = _split(frames, bot_pid)
    if helper:
        chain = [f for f in reversed(frames) if _package(f) in _OTEL_PACKAGES]
        return OTEL, "export helper process: " + (otel_part(chain) if chain else "its loop")
    if "MainThread" in thread or "asyncio_" in thread:
        return main_thread_part(frames)
    if "BatchSpan" in thread:
        return OTEL, "export thread: " + export_thread_part(frames)
    if "OtelPeriodicExportingMetricReader" in thread:
        return OTEL, "metric reader thread (collect, encode, send)"
    if "OtelbotOffloadWriter" in thread:
        return OTEL, "offload writer thread (rows to the helper)"
    if "otelbot-step-watch" in thread:
        chain = [f for f in reversed(frames) if _package(f) in _OTEL_PACKAGES]
        return OTEL, "watcher thread: " + (otel_part(chain) if chain else "its loop")
    return OTEL if "otel" in thread.lower() else APP, "other thread: " + thread.split(": ")[-1]


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of each live thread of ``pid``, by thread id (Linux /proc)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


@dataclass
class Profile:
    """One window. A part's µs per update: within each thread, the part's share of the
    thread's samples times the thread's CPU time (py-spy counts a thread that is runnable
    but waiting for the CPU as active, so sample counts alone overstate the threads that
    wake often); the helper process's CPU is split the same way."""

    config: str
    updates: int
    cpu_s: float
    helper_cpu_s: float
    seconds: float
    #: (thread id or HELPER, group, part) -> samples
    samples: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    #: thread id or HELPER -> CPU seconds in the window
    thread_cpu: dict[str, float] = field(default_factory=dict)
    #: Per generation 0, 1, 2: collections in the window, CPU seconds in them.
    gc: list[float] = field(default_factory=lambda: [0.0] * 6)
    rss_mb: float = 0.0
    helper_rss_mb: float = 0.0
    rate: int = 0
    #: CPU µs per update of each window pooled in (``add``)
    windows: list[float] = field(default_factory=list)

    @property
    def cpu_us(self) -> float:
        """The process tree's CPU µs per update in the window."""
        return (self.cpu_s + self.helper_cpu_s) / self.updates * 1e6 if self.updates else 0.0

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def add(self, other: Profile) -> None:
        """Pool another window of the same configuration (thread ids never repeat)."""
        self.updates += other.updates
        self.cpu_s += other.cpu_s
        self.helper_cpu_s += other.helper_cpu_s
        self.seconds += other.seconds
        self.samples.update(other.samples)
        helper = self.thread_cpu.pop(HELPER, 0.0) + other.thread_cpu.get(HELPER, 0.0)
        self.thread_cpu.update(other.thread_cpu)
        self.thread_cpu[HELPER] = helper
        self.gc = [a + b for a, b in zip(self.gc, other.gc, strict=True)]
        self.rss_mb = max(self.rss_mb, other.rss_mb)
        self.helper_rss_mb = max(self.helper_rss_mb, other.helper_rss_mb)
        self.windows.append(other.cpu_us)

    def parts(self) -> dict[tuple[str, str], float]:
        """(group, part) -> µs per update. CPU of threads without samples (exited, or
        too brief) is its own part."""
        if not self.updates:
            return {}
        per_thread: collections.Counter[str] = collections.Counter()
        for (thread, _, _), n in self.samples.items():
            per_thread[thread] += n
        out: dict[tuple[str, str], float] = collections.defaultdict(float)
        for (thread, group, part), n in self.samples.items():
            cpu = self.thread_cpu.get(thread, 0.0)
            out[(group, part)] += n / per_thread[thread] * cpu / self.updates * 1e6
        unsampled = (
            self.cpu_s
            + self.helper_cpu_s
            - sum(cpu for thread, cpu in self.thread_cpu.items() if thread in per_thread)
        )
        out[(APP, "threads without samples (exited, or idle in py-spy's view)")] += (
            unsampled / self.updates * 1e6
        )
        return dict(out)


def _read_gc(path: Path) -> tuple[float, ...]:
    """Per generation: collections so far, CPU seconds in them so far (six numbers)."""
    try:
        return GC_FILE_LAYOUT.unpack_from(path.read_bytes())
    except (OSError, ValueError):
        return (0.0,) * 6


def _replies(api: FakeApi) -> int:
    return len(api.get("/_control/calls?method=sendMessage"))


def measure(
    config: e2e.Config,
    receiver: Receiver,
    seconds: float,
    warmup: float,
    rate: int,
    updates: int,
    out: Path,
    gc_freeze: bool = False,
) -> Profile:
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    api = FakeApi(updates, onecpu.OTHER_CPU)
    gc_file = Path(tempfile.mkstemp(prefix="otelbot-gc-")[1])
    cmd = [sys.executable, "-m", config.module]
    if config.instrumented:
        cmd = [instrument_command(), *cmd]
    env = e2e.bot_env(config, api, receiver, 0.0)
    env["BENCH_GC_FILE"] = str(gc_file)
    if gc_freeze:
        env["BENCH_GC_FREEZE"] = "1"
    bot = Child(pinned(cmd, onecpu.BOT_CPU), env=env, cwd=ROOT, name=config.name)
    pid = bot.proc.pid
    try:
        bot.wait_for_line("polling", 60)
        time.sleep(warmup)
        record = subprocess.Popen(
            pinned(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    str(rate),
                    "--threads",
                    "--subprocesses",
                    "--full-filenames",
                    "--nonblocking",
                    "-o",
                    str(out),
                ],
                onecpu.OTHER_CPU,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # py-spy needs a moment to attach; the window starts once it samples.
        time.sleep(0.5)
        cpu0, helper0 = tree_cpu_seconds(pid)
        threads0 = thread_cpu_seconds(pid)
        replies0, gc0 = _replies(api), _read_gc(gc_file)
        t0 = time.monotonic()
        time.sleep(max(1.0, int(seconds) - 1.0))
        cpu1, helper1 = tree_cpu_seconds(pid)
        threads1 = thread_cpu_seconds(pid)
        replies1, gc1 = _replies(api), _read_gc(gc_file)
        t1 = time.monotonic()
        bot_rss, helper_rss = tree_peak_rss_bytes(pid)
        record.wait(timeout=seconds + 60)
        if bot.proc.poll() is not None:
            raise RuntimeError(f"bot exited early:\n{bot.output[-3000:]}")
        if replies1 >= updates:
            raise RuntimeError(f"{config.name}: the {updates} updates ran out; raise --updates")
        bot.proc.send_signal(signal.SIGTERM)
    finally:
        bot.stop()
        api.stop()
        gc_file.unlink(missing_ok=True)
    profile = Profile(
        config.name,
        replies1 - replies0,
        cpu1 - cpu0,
        helper1 - helper0,
        t1 - t0,
        gc=[b - a for a, b in zip(gc0, gc1, strict=True)],
        rss_mb=bot_rss / 2**20,
        helper_rss_mb=helper_rss / 2**20,
        rate=rate,
    )
    profile.thread_cpu = {t: c - threads0.get(t, 0.0) for t, c in threads1.items()}
    profile.thread_cpu[HELPER] = profile.helper_cpu_s
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        profile.samples[(thread_of(frames, pid), *classify(frames, pid))] += int(count)
    return profile


def table(profiles: list[Profile]) -> str:
    """One column per configuration: µs per update per part (share times CPU per update)."""
    parts = [p.parts() for p in profiles]
    keys: dict[tuple[str, str], float] = {}
    for values in parts:
        for key, us in values.items():
            keys[key] = max(keys.get(key, 0.0), us)
    names = [p.config for p in profiles]
    rows = [
        "| part | " + " | ".join(f"{n} µs/update" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]

    def line(label: str, values: list[str], bold: bool = False) -> None:
        if bold:
            label, values = f"**{label}**", [f"**{v}**" if v else v for v in values]
        rows.append(f"| {label} | " + " | ".join(values) + " |")

    line("CPU per update, process tree", [f"{p.cpu_us:.0f}" for p in profiles], True)
    line(
        "each window (round)",
        [" / ".join(f"{w:.0f}" for w in p.windows) for p in profiles],
    )
    for group in (APP, OTEL):
        line(group, [f"{sum(u for k, u in v.items() if k[0] == group):.0f}" for v in parts])
        ordered = sorted((k for k in keys if k[0] == group), key=lambda k: -keys[k])
        for key in ordered:
            if keys[key] < 0.5:
                continue
            line("&nbsp;&nbsp;" + key[1], [f"{v[key]:.0f}" if key in v else "" for v in parts])
    line(
        "of which garbage collection (gc.callbacks, inside the parts above)",
        [f"{sum(p.gc[1::2]) / p.updates * 1e6:.0f}" if p.updates else "" for p in profiles],
    )
    for gen in range(3):
        line(
            f"&nbsp;&nbsp;generation {gen}: µs per update (collections per 1,000 updates)",
            [
                f"{p.gc[2 * gen + 1] / p.updates * 1e6:.0f} "
                f"({p.gc[2 * gen] / p.updates * 1000:.1f})"
                if p.updates
                else ""
                for p in profiles
            ],
        )
    line(
        "window: updates (updates/s)",
        [f"{p.updates} ({p.updates / p.seconds:.0f})" for p in profiles],
    )
    line(
        "py-spy samples (per update at its rate, µs)",
        [
            f"{p.total} ({p.total / p.rate / p.updates * 1e6:.0f})" if p.updates else ""
            for p in profiles
        ],
    )
    line(
        "RSS MB, bot + helper (peak)", [f"{p.rss_mb:.0f} + {p.helper_rss_mb:.0f}" for p in profiles]
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", "--configs", dest="configs", default="otelbot")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved windows per configuration, pooled"
    )
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--updates", type=int, default=0, help="queued (default: enough)")
    parser.add_argument("--out-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="the bot calls gc.freeze() 2 s after it polls (BENCH_GC_FREEZE): what full "
        "collections of the start-up heap cost",
    )
    args = parser.parse_args(argv)
    chosen = onecpu.configs(e2e.split_names(args.configs, onecpu.NAMES))
    updates = args.updates or int((args.seconds + args.warmup + 10) * 1500)
    receiver = Receiver(onecpu.OTHER_CPU)
    pooled: dict[str, Profile] = {}
    try:
        for round_no in range(1, args.rounds + 1):
            for config in chosen:
                slug = "".join(c if c.isalnum() else "-" for c in config.name)
                out = args.out_dir / f"otelbot-parts-{slug}-{round_no}.txt"
                profile = measure(
                    config,
                    receiver,
                    args.seconds,
                    args.warmup,
                    args.rate,
                    updates,
                    out,
                    args.gc_freeze,
                )
                print(
                    f"  round {round_no}/{args.rounds} {config.name}: {profile.updates} "
                    f"updates in {profile.seconds:.1f} s, {profile.cpu_us:.0f} µs CPU/update "
                    f"(tree), {profile.total} samples (collapsed stacks: {out})",
                    file=sys.stderr,
                    flush=True,
                )
                if config.name in pooled:
                    pooled[config.name].add(profile)
                else:
                    profile.windows.append(profile.cpu_us)
                    pooled[config.name] = profile
    finally:
        receiver.close()
    profiles = list(pooled.values())
    print(table(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
