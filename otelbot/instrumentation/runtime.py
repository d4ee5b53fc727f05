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
(``otelbot.runtime.stats_file``, docs/runtime-stats-file.md) once per
``stats_interval`` (1 s) and the agent turns them into metrics: the bot then exports
none of the process, ``cpython.gc.*`` or event-loop metrics itself. It still exports
``otelbot.gc.pause.duration``, because the file holds only pause totals and maxima and
the distribution can't be rebuilt outside the process. A directory that can't be used
gives one warning and the bot exports everything itself.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from otelbot.core.errors import internal_error
from otelbot.core.patching import OtelbotInstrumentor
from otelbot.runtime.metrics import LAG_INTERVAL, STATS_INTERVAL, RuntimeMetrics
from otelbot.runtime.stats_file import StatsFile


class RuntimeInstrumentor(OtelbotInstrumentor):
    """GC, event-loop and process metrics, or the runtime stats file for the agent.

    ``instrument(meter_provider=..., lag_interval=0.5, stats_interval=1.0)``.
    """

    _instruments: Collection[str] = ()
    _metrics: RuntimeMetrics | None = None

    def _instrument(self, **kwargs: Any) -> None:
        metrics = None
        try:
            _tracer, meter = self.tracer_and_meter(**kwargs)
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
