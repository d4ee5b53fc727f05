"""Span export with the OTLP encoding in a helper process, off the bot's GIL (the default
on two or more CPUs).

    OTEL_TRACES_EXPORTER=otelbot_offload opentelemetry-instrument python bot.py
    OTEL_TRACES_EXPORTER=otlp opentelemetry-instrument python bot.py  # the SDK's exporter
    opentelemetry-instrument python bot.py    # by the CPUs the process may use (cpus.py)

An in-process exporter encodes in the batch processor's thread, in Python, holding the GIL
the event loop needs (the SDK's encoder builds protobuf objects per span, ~10 times what
otelbot's ``otelbot.export.otlp`` costs: bench/encode.py). With ``otelbot_offload`` (what
otelbot's distro picks where the process may use two CPUs or more, unless
``OTEL_TRACES_EXPORTER`` says otherwise: ``otelbot.export.cpus``) ``OffloadSpanProcessor``
flattens each ended span into a row (``otelbot.export.rows``) and writes batches,
``marshal``-ed, to a pipe; the helper process (``otelbot.export.helper``, started on first
use) writes them to OTLP with otelbot's encoder and sends them with its own stdlib
OTLP/HTTP sender (``otelbot.export.http_send``; the SDK's client behind a proxy, a
credential provider or a .netrc; over gRPC: rebuilds the SDK's ``ReadableSpan`` objects for
the SDK's exporter).

Memory stays bounded: when the helper falls behind (collector down, retries) the pipe
fills, the writer thread waits, and spans over the queue size are dropped, as the batch
processor does with the standard exporter. If the helper dies, it is started again on the
next batch (at most once per 5 s), but not while the bot shuts down.

The helper runs in a session of its own, so the terminal's Ctrl+C (SIGINT to the
foreground process group) reaches the bot only: the helper keeps what it holds until the
bot closes the pipe at shutdown, sends it, and exits. It logs at the level the bot's
``otelbot`` logger had when it started, and says when the OTLP endpoint is down and back
(``otelbot.export.endpoint``).
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otelbot.export.helper import FLUSH, FRAME_HEADER, SPANS
from otelbot.export.rows import SpanBatch

logger = logging.getLogger("otelbot")

_RESTART_EVERY = 5.0


def _helper_command() -> list[str]:
    # -I: the helper must not load opentelemetry-instrument's sitecustomize (PYTHONPATH)
    # and instrument, or offload, itself.
    level = logging.getLogger("otelbot").getEffectiveLevel()
    return [sys.executable, "-I", "-m", "otelbot.export.helper", f"--log-level={level}"]


class OffloadSpanExporter(SpanExporter):
    """A ``SpanExporter`` that passes batches to the OTLP-encoding helper process."""

    def __init__(self, command: Sequence[str] | None = None, **_: Any) -> None:
        self._command = list(command) if command else None  # None: _helper_command()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._last_start = 0.0
        self._closed = False
        #: Set when the bot shuts down: a helper that died then is not started again.
        self.stopping = False

    def _helper(self) -> subprocess.Popen[bytes] | None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        now = time.monotonic()
        if proc is not None:
            if self.stopping:
                return None
            logger.warning(
                "otelbot: the span export helper exited (%s); restarting it", proc.returncode
            )
            if now - self._last_start < _RESTART_EVERY:
                return None
        self._last_start = now
        env = {k: v for k, v in os.environ.items() if k != "OTEL_TRACES_EXPORTER"}
        self._proc = subprocess.Popen(
            self._command or _helper_command(),  # at start: the bot's log level by then
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            start_new_session=True,  # not in the terminal's process group: no Ctrl+C
        )
        return self._proc

    def _send(self, kind: bytes, payload: bytes) -> subprocess.Popen[bytes] | None:
        proc = self._helper()
        if proc is None or proc.stdin is None:
            return None
        try:
            proc.stdin.write(FRAME_HEADER.pack(kind, len(payload)) + payload)
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return None
        return proc

    def send_payload(self, payload: bytes) -> bool:
        """Hand one marshalled batch to the helper; False when it could not take it."""
        with self._lock:
            return not self._closed and self._send(SPANS, payload) is not None

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            batch = SpanBatch()
            for span in spans:
                batch.add(span)
            payload = batch.payload()
        except Exception as exc:  # never break the bot
            logger.warning("otelbot: could not hand spans to the export helper: %s", exc)
            return SpanExportResult.FAILURE
        with self._lock:
            ok = self._send(SPANS, payload) is not None
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the helper has sent everything handed to it so far."""
        with self._lock:
            proc = self._send(FLUSH, b"") if self._proc is not None else None
            if proc is None or proc.stdout is None:
                return self._proc is None
            return _read_ack(proc, timeout_millis / 1000)

    def shutdown(self) -> None:
        """Close the pipe; the helper sends what it holds and exits (waited for ~10 s)."""
        with self._lock:
            self.stopping = True
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "10")) + 2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class OffloadSpanProcessor(SpanProcessor):
    """The span processor the SDK configurator puts in front of ``OffloadSpanExporter``
    (instead of the ``BatchSpanProcessor``).

    A batch processor's thread runs Python for every span while the event loop waits for
    the GIL (after each socket write the loop thread must take it back, and a busy thread
    gives it up only every ``sys.getswitchinterval()``, 5 ms). This processor flattens an
    ended span on the thread that ends it (a few µs, no hand-over), ``marshal``s full
    batches there (C), and leaves its thread only the pipe writes, which release the GIL.
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, ``OTEL_BSP_SCHEDULE_DELAY`` and
    ``OTEL_BSP_MAX_QUEUE_SIZE`` mean what they mean for the batch processor; spans over
    the queue size are dropped (and counted in the log).
    """

    def __init__(self, exporter: OffloadSpanExporter) -> None:
        self._exporter = exporter
        self._max_batch = max(1, int(_env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)))
        self._delay = max(0.01, _env_number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000)
        self._max_queue = max(self._max_batch, int(_env_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)))
        self._batch = SpanBatch()
        self._lock = threading.Lock()
        self._frames: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued = 0
        self.dropped = 0
        self._wake = threading.Event()
        self._sending = threading.Lock()
        self._stopped = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="OtelbotOffloadWriter", daemon=True)
        self._thread.start()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        context = span._context
        if context is None or not context.trace_flags.sampled or self._stopped:
            return
        self._add(span, False, None, None)

    def on_end_light(self, span: Any, resource: Any, scope: Any) -> None:
        """``on_end`` for a light span, without building the SDK's ``ReadableSpan``."""
        if not span._context.trace_flags.sampled or self._stopped:
            return
        self._add(span, True, resource, scope)

    def _add(self, span: Any, light: bool, resource: Any, scope: Any) -> None:
        try:
            with self._lock:
                batch = self._batch
                if light:
                    batch.add_light(span, resource, scope)
                else:
                    batch.add(span)
                if len(batch) < self._max_batch:
                    return
                self._batch = SpanBatch()
            self._enqueue(batch)
        except Exception as exc:
            logger.warning("otelbot: a span could not be queued for export: %s", exc)

    def _take_partial(self) -> SpanBatch | None:
        with self._lock:
            batch = self._batch
            if not len(batch):
                return None
            self._batch = SpanBatch()
        return batch

    def _enqueue(self, batch: SpanBatch) -> None:
        count = len(batch)
        if self._queued + count > self._max_queue:
            self.dropped += count
            if self.dropped == count:
                logger.warning(
                    "otelbot: span export queue full (the collector or the "
                    "export helper is slow); dropping spans"
                )
            return
        self._frames.append((batch.payload(), count))
        self._queued += count
        self._wake.set()

    def _send_queued(self) -> None:
        with self._sending:
            while self._frames:
                payload, count = self._frames.popleft()
                self._queued -= count
                self._exporter.send_payload(payload)

    def _run(self) -> None:
        while not self._stopped:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            try:
                if not woken:
                    partial = self._take_partial()
                    if partial is not None:
                        self._enqueue(partial)
                self._send_queued()
            except Exception as exc:
                logger.warning("otelbot: span export writer: %s", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if os.getpid() != self._pid:  # a forked child has no writer thread
            return False
        partial = self._take_partial()
        if partial is not None:
            self._enqueue(partial)
        self._send_queued()
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._stopped:
            return
        self._exporter.stopping = True
        self.force_flush(int(_env_number("OTEL_EXPORTER_OTLP_TIMEOUT", 10) * 1000))
        self._stopped = True
        self._wake.set()
        self._thread.join(5)
        self._exporter.shutdown()


def export_processor(exporter: SpanExporter) -> SpanProcessor:
    """The SDK configurator's ``export_span_processor``: an ``OffloadSpanProcessor`` for
    the offload exporter (the helper watches the endpoint), the standard
    ``BatchSpanProcessor`` for any other exporter, watched for one line when its endpoint
    is down and one when it is back (``otelbot.export.endpoint``)."""
    if isinstance(exporter, OffloadSpanExporter):
        return OffloadSpanProcessor(exporter)
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otelbot.export.endpoint import WatchedSpanExporter

    return BatchSpanProcessor(WatchedSpanExporter(exporter))


def _read_ack(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    assert proc.stdout is not None
    done = threading.Event()
    result: list[bytes] = []

    def read() -> None:
        assert proc.stdout is not None
        result.append(proc.stdout.readline())
        done.set()

    threading.Thread(target=read, daemon=True).start()
    return done.wait(timeout) and result[0] == b"ok\n"
