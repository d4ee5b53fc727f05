"""Everything one ``RuntimeInstrumentor.instrument()`` sets up: the GC hook, the watched
event loop, the process metrics, or the runtime stats file (see
``otelbot.instrumentation.runtime`` for what is measured)."""

from __future__ import annotations

import asyncio
import asyncio.base_events
import atexit
import functools
import gc
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otelbot import semconv
from otelbot.core.config import runtime_dir
from otelbot.core.errors import internal_error, log_once
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.patching import Patches
from otelbot.runtime.gc import GcStats, per_generation
from otelbot.runtime.loop import LoopMonitor
from otelbot.runtime.process import ProcessProbe, observe_cpu
from otelbot.runtime.stats_file import StatsFile

LAG_INTERVAL = 0.5
STATS_INTERVAL = 1.0


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
            time.time(),
            gc_stats.collections,
            gc_stats.collected,
            gc_stats.uncollectable,
            gc_stats.pause_total,
            gc_stats.pause_max,
            self.lag_last,
            self.lag_max,
            self.tasks,
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
            (semconv.CPYTHON_GC_COLLECTED_OBJECTS, lambda: per_generation(gc_stats.collected)),
            (
                semconv.CPYTHON_GC_UNCOLLECTABLE_OBJECTS,
                lambda: per_generation(gc_stats.uncollectable),
            ),
            (semconv.PROCESS_CPU_TIME, observe_cpu),
        ]
        probe = ProcessProbe.create()
        if probe is None:
            log_once(
                "runtime.no_probe",
                "otelbot: neither /proc nor psutil is available; "
                "process memory, thread and file descriptor metrics are off",
            )
        else:
            observed += [
                (semconv.PROCESS_MEMORY_USAGE, lambda: [Observation(probe.memory()[0])]),
                (semconv.PROCESS_MEMORY_VIRTUAL, lambda: [Observation(probe.memory()[1])]),
                (semconv.PROCESS_THREAD_COUNT, lambda: [Observation(probe.threads())]),
                (
                    semconv.PROCESS_OPEN_FILE_DESCRIPTOR_COUNT,
                    lambda: [Observation(probe.file_descriptors())],
                ),
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
        return per_generation(self.gc.collections)


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
        directory,
        reason,
    )
    return None
