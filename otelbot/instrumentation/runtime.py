"""Runtime metrics of the bot process: garbage collector, event loop, memory, CPU.

    import asyncio
    from otelbot.instrumentation.runtime import RuntimeInstrumentor

    async def main() -> None:
        await asyncio.sleep(1)

    RuntimeInstrumentor().instrument()    # opentelemetry-instrument does this for you
    asyncio.run(main())                   # the loop is watched from its first iteration
    RuntimeInstrumentor().uninstrument()

What is measured:

- GC: a ``gc.callbacks`` hook times every collection (``otelbot.gc.pause.duration``) and
  counts collections, collected and uncollectable objects per generation
  (``cpython.gc.*``, observable counters; counted from ``instrument()`` on).
- Event loop: a callback scheduled with ``loop.call_later`` every ``lag_interval``
  seconds (0.5) records ``otelbot.asyncio.loop.lag``: how late it ran, or the longest
  single loop iteration since the previous sample if that is larger, so a handler
  that blocks the loop for 200 ms yields a sample of at least 0.2 s whatever the phase
  of the timer. ``otelbot.asyncio.tasks`` is the number of tasks alive on the loop.
  The loop is found by hooking ``BaseEventLoop.run_forever`` (``asyncio.run``,
  ``run_until_complete``) and ``asyncio.Runner.run``; ``instrument()`` called inside a
  running loop watches that loop at once. One loop is watched at a time.
  uvloop (best effort): its loop is picked up through ``asyncio.Runner`` (``uvloop.run``,
  ``asyncio.run(..., loop_factory=uvloop.new_event_loop)``) or when ``instrument()``
  runs inside it; the per-iteration measurement needs the stock selector loop, so under
  uvloop the lag is the timer's lateness only.
- Process: ``process.memory.usage`` / ``.virtual``, ``process.cpu.time``,
  ``process.thread.count``, ``process.unix.file_descriptor.count``, read from
  ``/proc/self`` (Linux) or psutil, only when the metric reader collects.

With ``OTELBOT_RUNTIME_DIR`` set, the numbers go into the runtime stats file
(``otelbot.instrumentation.stats_file``, docs/runtime-stats-file.md) once per
``stats_interval`` (1 s) and the agent turns them into metrics: the bot then exports
none of the process, ``cpython.gc.*`` or event-loop metrics itself. It still exports
``otelbot.gc.pause.duration``, because the file holds only pause totals and maxima and
the distribution can't be rebuilt outside the process. A directory that can't be used
gives one warning and the bot exports everything itself.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import atexit
import functools
import gc
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otelbot import semconv
from otelbot.instrumentation._base import (
    OtelbotInstrumentor,
    Patches,
    create_instrument,
    internal_error,
    log_once,
)
from otelbot.instrumentation.config import runtime_dir
from otelbot.instrumentation.stats_file import GENERATIONS, StatsFile

LAG_INTERVAL = 0.5
STATS_INTERVAL = 1.0
#: Pauses waiting to be recorded into the histogram (normally emptied every tick).
_PENDING_LIMIT = 4096

_GENERATION_ATTRIBUTES = tuple({semconv.CPYTHON_GC_GENERATION: g} for g in range(GENERATIONS))
_CPU_USER = {semconv.PROCESS_CPU_MODE: "user"}
_CPU_SYSTEM = {semconv.PROCESS_CPU_MODE: "system"}


# --------------------------------------------------------------------------- GC


class GcStats:
    """Per-generation totals kept by the ``gc.callbacks`` hook, since ``instrument()``.

    The hook runs inside every collection, on whatever thread triggered it, possibly
    while that thread holds a lock of the metrics SDK; so it only updates these lists
    and queues the pause, and ``flush()`` records the queued pauses later, from the
    event loop tick or the metric reader's collection.
    """

    __slots__ = (
        "_flushing", "collected", "collections", "pause_max", "pause_total", "pending",
        "uncollectable",
    )

    def __init__(self) -> None:
        self.collections = [0] * GENERATIONS
        self.collected = [0] * GENERATIONS
        self.uncollectable = [0] * GENERATIONS
        self.pause_total = [0.0] * GENERATIONS
        self.pause_max = [0.0] * GENERATIONS
        self.pending: list[list[float]] = [[] for _ in range(GENERATIONS)]
        self._flushing = threading.Lock()

    def make_callback(self) -> Callable[[str, dict[str, int]], None]:
        """The ``gc.callbacks`` entry: two clock reads and a few list stores per collection."""
        collections = self.collections
        collected = self.collected
        uncollectable = self.uncollectable
        pause_total = self.pause_total
        pause_max = self.pause_max
        pending = self.pending
        clock = time.perf_counter
        last = GENERATIONS - 1
        started = clock()

        def on_gc(phase: str, info: dict[str, int]) -> None:
            nonlocal started
            if phase == "start":
                started = clock()
                return
            try:
                pause = clock() - started
                gen = info["generation"]
                if gen > last:
                    gen = last
                collections[gen] += 1
                collected[gen] += info["collected"]
                uncollectable[gen] += info["uncollectable"]
                pause_total[gen] += pause
                if pause > pause_max[gen]:
                    pause_max[gen] = pause
                queue = pending[gen]
                if len(queue) < _PENDING_LIMIT:
                    queue.append(pause)
            except Exception as exc:
                internal_error("runtime.gc_callback", exc)

        return on_gc

    def flush(self, histogram: Any) -> None:
        """Record the queued pauses into ``otelbot.gc.pause.duration``."""
        if not self._flushing.acquire(blocking=False):
            return  # another thread is flushing
        try:
            for gen in range(GENERATIONS):
                queue = self.pending[gen]
                if not queue:
                    continue
                self.pending[gen] = []
                attributes = _GENERATION_ATTRIBUTES[gen]
                for pause in queue:
                    histogram.record(pause, attributes)
        finally:
            self._flushing.release()


# --------------------------------------------------------------------------- process


class ProcessProbe:
    """The bot's own memory, threads and file descriptors, from ``/proc/self``."""

    _page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    @classmethod
    def create(cls) -> ProcessProbe | None:
        """A probe for this platform: /proc, else psutil, else ``None``."""
        if os.path.exists("/proc/self/statm"):
            return cls()
        try:
            return PsutilProbe()
        except Exception:
            return None

    def memory(self) -> tuple[int, int]:
        """(resident, virtual) bytes."""
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * self._page, int(fields[0]) * self._page

    def threads(self) -> int:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        # Fields after the ")" that closes the command name start at field 3 (state);
        # num_threads is field 20.
        return int(data[data.rindex(b")") + 2:].split()[17])

    def file_descriptors(self) -> int:
        return len(os.listdir("/proc/self/fd"))


class PsutilProbe(ProcessProbe):
    """The same numbers through psutil, where there is no /proc."""

    def __init__(self) -> None:
        import psutil  # optional: only needed off Linux

        self._process = psutil.Process()

    def memory(self) -> tuple[int, int]:
        info = self._process.memory_info()
        return int(info.rss), int(info.vms)

    def threads(self) -> int:
        return int(self._process.num_threads())

    def file_descriptors(self) -> int:
        return int(self._process.num_fds())


# --------------------------------------------------------------------------- event loop


class LoopMonitor:
    """Watches one event loop: a periodic ``call_later`` tick plus, on selector loops, the
    duration of every loop iteration (time from the selector returning to the next
    ``select()``), so that a blocked loop is measured in full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float,
                 on_tick: Callable[[LoopMonitor, float], None]) -> None:
        self.loop = loop
        self.interval = interval
        self._on_tick = on_tick
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = False
        #: perf_counter when the selector last returned / longest iteration since the tick
        self.returned = time.perf_counter()
        self.worst = 0.0
        self._selector: Any = None
        self._select: Any = None

    def start(self) -> None:
        self._wrap_selector()
        self._schedule()

    def stop(self) -> None:
        self._stopped = True
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        selector, self._selector = self._selector, None
        if selector is not None and vars(selector).get("select") is self._select:
            del selector.select

    def _schedule(self) -> None:
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        if self._stopped:
            return
        try:
            lag = self.loop.time() - self._due
            worst, self.worst = self.worst, 0.0
            if worst > lag:
                lag = worst
            self._on_tick(self, lag if lag > 0.0 else 0.0)
        except Exception as exc:
            internal_error("runtime.loop_tick", exc)
        if not self._stopped:
            self._schedule()

    def _wrap_selector(self) -> None:
        # Stock selector loops only; the wrapper is an instance attribute of this loop's
        # selector, so other loops and the selector classes are untouched.
        selector: Any = getattr(self.loop, "_selector", None)
        original = getattr(selector, "select", None)
        own = getattr(selector, "__dict__", None)
        if original is None or own is None or "select" in own:
            return
        clock = time.perf_counter
        monitor = self

        def select(timeout: float | None = None) -> Any:
            entered = clock()
            if entered - monitor.returned > monitor.worst:
                monitor.worst = entered - monitor.returned
            events = original(timeout)
            monitor.returned = clock()
            return events

        selector.select = select
        self._selector = selector
        self._select = select


# --------------------------------------------------------------------------- the whole


class RuntimeMetrics:
    """Everything one ``instrument()`` sets up; ``stop()`` undoes it."""

    def __init__(self, meter: Meter, lag_interval: float, stats_interval: float) -> None:
        self.meter = meter
        self.lag_interval = lag_interval
        self.stats_interval = stats_interval
        self.active = False
        self.gc = GcStats()
        self._gc_callback = self.gc.make_callback()
        self.stats: StatsFile | None = None
        self.monitor: LoopMonitor | None = None
        self._monitor_lock = threading.Lock()
        self.patches = Patches()
        self.lag_last = 0.0  # largest lag sample since the last stats-file write
        self.lag_max = 0.0
        self.tasks = 0
        self._lag_histogram: Any = None
        self._tasks_gauge: Any = None
        self._pause_histogram = create_instrument(meter, semconv.OTELBOT_GC_PAUSE_DURATION)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        directory = runtime_dir()
        if directory is not None:
            self.stats = _open_stats_file(directory, self.stats_interval)
        if self.stats is None:
            self._create_in_process_instruments()
        else:
            atexit.register(self._close_stats)
        self.active = True
        gc.callbacks.append(self._gc_callback)
        self.patches.wrap(asyncio.base_events.BaseEventLoop, "run_forever", self._wrap_run_forever)
        runner = getattr(asyncio, "Runner", None)  # Python 3.11+
        if runner is not None:
            self.patches.wrap(runner, "run", self._wrap_runner_run)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.attach(loop)

    def stop(self) -> None:
        self.active = False
        try:
            gc.callbacks.remove(self._gc_callback)
        except ValueError:
            pass
        self.patches.restore()
        with self._monitor_lock:
            monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.stop()
        self.gc.flush(self._pause_histogram)
        if self.stats is not None:
            atexit.unregister(self._close_stats)
            self._close_stats()

    def _close_stats(self) -> None:
        stats = self.stats
        if stats is not None:
            stats.close()

    # ---------------------------------------------------------------- event loop

    def attach(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start watching ``loop`` unless another live loop is watched; True if started."""
        with self._monitor_lock:
            if not self.active or loop.is_closed():  # a closed loop: run_forever raises
                return False
            current = self.monitor
            if current is not None:
                if current.loop is loop or not current.loop.is_closed():
                    return False
                current.stop()
            interval = self.stats_interval if self.stats is not None else self.lag_interval
            monitor = LoopMonitor(loop, interval, self._on_tick)
            monitor.start()
            self.monitor = monitor
            return True

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._monitor_lock:
            monitor = self.monitor
            if monitor is None or monitor.loop is not loop:
                return
            self.monitor = None
        monitor.stop()

    def _safe_attach(self, loop: Any) -> bool:
        try:
            return self.attach(loop)
        except Exception as exc:
            internal_error("runtime.attach", exc)
            return False

    def _safe_detach(self, loop: Any) -> None:
        try:
            self.detach(loop)
        except Exception as exc:
            internal_error("runtime.detach", exc)

    def _wrap_run_forever(self, original: Callable[..., Any]) -> Callable[..., Any]:
        metrics = self

        @functools.wraps(original)
        def run_forever(loop: Any, *args: Any, **kwargs: Any) -> Any:
            attached = metrics._safe_attach(loop)
            try:
                return original(loop, *args, **kwargs)
            finally:
                if attached:
                    metrics._safe_detach(loop)

        return run_forever

    def _wrap_runner_run(self, original: Callable[..., Any]) -> Callable[..., Any]:
        metrics = self

        @functools.wraps(original)
        def run(runner: Any, *args: Any, **kwargs: Any) -> Any:
            loop = None
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # not inside a loop, where run() would refuse to start
                try:
                    loop = runner.get_loop()  # creates the loop the way run() would
                except RuntimeError:
                    pass  # a closed runner: run() raises its own error
            attached = loop is not None and metrics._safe_attach(loop)
            try:
                return original(runner, *args, **kwargs)
            finally:
                if attached:
                    metrics._safe_detach(loop)

        return run

    def _on_tick(self, monitor: LoopMonitor, lag: float) -> None:
        if lag > self.lag_max:
            self.lag_max = lag
        if lag > self.lag_last:
            self.lag_last = lag
        self.tasks = tasks = len(asyncio.all_tasks(monitor.loop))
        if self._lag_histogram is not None:
            self._lag_histogram.record(lag)
            self._tasks_gauge.set(tasks)
        self.gc.flush(self._pause_histogram)
        if self.stats is not None:
            self.write_stats()

    def write_stats(self) -> None:
        stats = self.stats
        if stats is None:
            return
        gc_stats = self.gc
        stats.write(
            time.time(), gc_stats.collections, gc_stats.collected, gc_stats.uncollectable,
            gc_stats.pause_total, gc_stats.pause_max, self.lag_last, self.lag_max, self.tasks,
        )
        self.lag_last = 0.0

    # ---------------------------------------------------------------- in-process metrics

    def _create_in_process_instruments(self) -> None:
        meter = self.meter
        self._lag_histogram = create_instrument(meter, semconv.OTELBOT_ASYNCIO_LOOP_LAG)
        self._tasks_gauge = create_instrument(meter, semconv.OTELBOT_ASYNCIO_TASKS)
        gc_stats = self.gc
        observed: list[tuple[semconv.Metric, Callable[[], list[Observation]]]] = [
            (semconv.CPYTHON_GC_COLLECTIONS, self._observe_collections),
            (semconv.CPYTHON_GC_COLLECTED_OBJECTS, lambda: _per_generation(gc_stats.collected)),
            (semconv.CPYTHON_GC_UNCOLLECTABLE_OBJECTS,
             lambda: _per_generation(gc_stats.uncollectable)),
            (semconv.PROCESS_CPU_TIME, _observe_cpu),
        ]
        probe = ProcessProbe.create()
        if probe is None:
            log_once("runtime.no_probe", "otelbot: neither /proc nor psutil is available; "
                     "process memory, thread and file descriptor metrics are off")
        else:
            observed += [
                (semconv.PROCESS_MEMORY_USAGE, lambda: [Observation(probe.memory()[0])]),
                (semconv.PROCESS_MEMORY_VIRTUAL, lambda: [Observation(probe.memory()[1])]),
                (semconv.PROCESS_THREAD_COUNT, lambda: [Observation(probe.threads())]),
                (semconv.PROCESS_OPEN_FILE_DESCRIPTOR_COUNT,
                 lambda: [Observation(probe.file_descriptors())]),
            ]
        for metric, read in observed:
            create_instrument(meter, metric, [self._observer(metric.name, read)])

    def _observer(
        self, name: str, read: Callable[[], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """An observable callback: silent after uninstrument, never raises into the SDK."""
        where = "runtime.observe " + name

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            try:
                return list(read())
            except Exception as exc:
                internal_error(where, exc)
                return ()

        return observe

    def _observe_collections(self) -> list[Observation]:
        # Pauses queued by the GC hook are recorded here too, so that a bot without a
        # running event loop still exports them; histograms recorded during the
        # callbacks are part of this same collection.
        self.gc.flush(self._pause_histogram)
        return _per_generation(self.gc.collections)


def _per_generation(values: list[int]) -> list[Observation]:
    return [Observation(values[g], _GENERATION_ATTRIBUTES[g]) for g in range(GENERATIONS)]


def _observe_cpu() -> list[Observation]:
    times = os.times()
    return [Observation(times.user, _CPU_USER), Observation(times.system, _CPU_SYSTEM)]


def _open_stats_file(directory: str, interval: float) -> StatsFile | None:
    try:
        return StatsFile.create(directory, interval)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except Exception as exc:
        internal_error("runtime.stats_file", exc)
        return None
    log_once(
        "runtime_dir:" + directory,
        "otelbot: OTELBOT_RUNTIME_DIR=%s is not usable (%s), so the bot exports its runtime "
        "metrics itself; create the directory and make it writable by the bot's user, or "
        "unset the variable",
        directory, reason,
    )
    return None


class RuntimeInstrumentor(OtelbotInstrumentor):
    """GC, event-loop and process metrics, or the runtime stats file for the agent.

    ``instrument(meter_provider=..., lag_interval=0.5, stats_interval=1.0)``.
    """

    _instruments: Collection[str] = ()
    _metrics: RuntimeMetrics | None = None

    def _instrument(self, **kwargs: Any) -> None:
        metrics = None
        try:
            _tracer, meter = self.telemetry(**kwargs)
            metrics = RuntimeMetrics(
                meter,
                float(kwargs.get("lag_interval", LAG_INTERVAL)),
                float(kwargs.get("stats_interval", STATS_INTERVAL)),
            )
            metrics.start()
        except Exception as exc:
            internal_error("runtime.instrument", exc)
            if metrics is not None:
                metrics.stop()
            return
        self._metrics = metrics

    def _uninstrument(self, **kwargs: Any) -> None:
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            metrics.stop()
        super()._uninstrument(**kwargs)

    @property
    def stats_file(self) -> StatsFile | None:
        """The open stats file, if the bot is in stats-file mode."""
        return self._metrics.stats if self._metrics is not None else None
