"""Span export in the bot's process with each span encoded when it ends (the default on one
CPU, ``otelbot_otlp``).

    OTEL_TRACES_EXPORTER=otelbot_otlp opentelemetry-instrument python bot.py
    OTEL_TRACES_EXPORTER=otlp opentelemetry-instrument python bot.py   # SDK processor + exporter

Behind the SDK's ``BatchSpanProcessor`` an ended span waits in the queue as a
``ReadableSpan`` (its ``SpanContext``, attribute dict, event list: objects the garbage
collector tracks) until its batch is exported, 512 spans or 5 s later: long enough to be
moved to the oldest generation, so that full collections come about twice as often. On one
CPU that was otelbot's largest single cost (docs/performance.md, ``python -m bench.parts``).

``EncodingSpanProcessor`` writes a span's OTLP ``Span`` message (``otelbot.export.otlp``)
on the thread that ends it and queues the bytes; the span itself is gone at once. The queue
holds ``bytes`` and, per span, a one-byte key into a small table of the (resource, scope)
pairs seen, kept by identity: nothing in it is tracked by the garbage collector. A
background thread puts the queued messages into requests (grouped as the SDK's encoder
groups spans: the same bytes) and sends them with ``OtlpHttpSpanExporter.export_encoded``:
the SDK's HTTP client, retries, compression, size limit and log lines, behind
``otelbot.export.endpoint.WatchedSpanExporter`` for the one-line "endpoint down / back"
messages. Light spans (``otelbot.core.lightspan``) are encoded as they are, without the
``ReadableSpan`` the SDK's processors need, when this processor is the only one.

``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512), ``OTEL_BSP_SCHEDULE_DELAY`` (5000 ms) and
``OTEL_BSP_MAX_QUEUE_SIZE`` (2048) mean what they mean for the SDK's batch processor; a
span that finds the queue full is dropped and counted (``dropped``), and said once as the
endpoint module says the batch processor's drops. Only sampled spans are exported.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import weakref
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from otelbot.core.errors import internal_error
from otelbot.export.otlp import encode_light_span, encode_request, encode_sdk_span
from otelbot.export.otlp_http import EncodedSpans, OtlpHttpSpanExporter

logger = logging.getLogger("otelbot")

#: (resource, scope) pairs one segment of the queue can name (its keys are one byte).
_PAIRS_PER_SEGMENT = 256


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class _Segment:
    """Queued span messages, and the key of each in this segment's (resource, scope)
    table; a new segment starts when the table is full."""

    __slots__ = ("index", "keys", "messages", "pairs")

    def __init__(self) -> None:
        self.pairs: list[tuple[Any, Any]] = []
        #: id(resource) ^ id(scope) -> key; the pair at that key is checked by identity
        self.index: dict[int, int] = {}
        self.messages: list[bytes] = []
        self.keys = bytearray()

    def key_of(self, resource: Any, scope: Any) -> int | None:
        """The key of (resource, scope), added if new; None when the table is full."""
        pairs = self.pairs
        key = self.index.get(id(resource) ^ id(scope))
        if key is not None:
            pair = pairs[key]
            if pair[0] is resource and pair[1] is scope:
                return key
        for key, (r, s) in enumerate(pairs):  # two pairs on one index entry: rare
            if r is resource and s is scope:
                return key
        if len(pairs) >= _PAIRS_PER_SEGMENT:
            return None
        key = len(pairs)
        pairs.append((resource, scope))
        self.index[id(resource) ^ id(scope)] = key
        return key


class EncodingSpanProcessor(SpanProcessor):
    """Encodes each sampled span when it ends, queues the bytes, and sends them in batches
    from a background thread; see the module text."""

    def __init__(self, exporter: OtlpHttpSpanExporter, sender: SpanExporter | None = None) -> None:
        """``sender`` is what ``export`` is called on with an ``EncodedSpans`` batch: the
        exporter itself, or a ``WatchedSpanExporter`` around it."""
        self._exporter = exporter
        self._sender = sender if sender is not None else exporter
        #: as the SDK's batch processor names its exporter (what it calls ``export`` on)
        self.span_exporter = self._sender
        #: the endpoint lines' state, told of each span dropped from a full queue
        self._endpoint = getattr(self._sender, "_state", None)
        self._max_batch = max(1, int(_env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)))
        self._delay = max(0.01, _env_number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000)
        self._max_queue = max(self._max_batch, int(_env_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)))
        self.dropped = 0
        self._stopped = False
        self._start()
        if hasattr(os, "register_at_fork"):
            again = weakref.WeakMethod(self._start)

            def in_child() -> None:
                start = again()
                if start is not None:
                    start()

            os.register_at_fork(after_in_child=in_child)

    def _start(self) -> None:
        """A fresh queue and worker thread (at first, and in a forked child)."""
        self._lock = threading.Lock()
        self._segments: collections.deque[_Segment] = collections.deque([_Segment()])
        self._queued = 0
        self._wake = threading.Event()
        self._exporting = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="OtelbotEncodedSpanExport", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ the bot's threads

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        context = span._context
        if context is None or not context.trace_flags.sampled or self._stopped:
            return
        try:
            message = encode_sdk_span(span)
            self._add(span._resource, span._instrumentation_scope, message)
        except Exception as exc:  # never into the bot
            internal_error("span export (encoding a span)", exc)

    def on_end_light(self, span: Any, resource: Any, scope: Any) -> None:
        """``on_end`` for a light span, without building the SDK's ``ReadableSpan``."""
        if not span._context.trace_flags.sampled or self._stopped:
            return
        try:
            self._add(resource, scope, encode_light_span(span))
        except Exception as exc:
            internal_error("span export (encoding a span)", exc)

    def _add(self, resource: Any, scope: Any, message: bytes) -> None:
        wake = False
        with self._lock:
            if self._queued >= self._max_queue:
                self.dropped += 1
                full = True
            else:
                full = False
                segment = self._segments[-1]
                key = segment.key_of(resource, scope)
                if key is None:
                    segment = _Segment()
                    self._segments.append(segment)
                    key = segment.key_of(resource, scope)
                segment.messages.append(message)
                segment.keys.append(key)  # type: ignore[arg-type]
                self._queued += 1
                wake = self._queued >= self._max_batch
        if full:
            self._said_dropped()
        elif wake and not self._wake.is_set():
            self._wake.set()

    def _said_dropped(self) -> None:
        if self._endpoint is not None:
            self._endpoint.dropped_from_queue()  # counted in an outage, else said once
        elif self.dropped == 1:
            logger.warning(
                "otelbot: the span export queue is full (the OTLP endpoint takes spans "
                "slower than they come); dropping spans"
            )

    # ------------------------------------------------------------------ the export thread

    def _take(self, count: int) -> list[tuple[Any, Any, bytes]]:
        """Up to ``count`` queued spans, oldest first, as (resource, scope, message)."""
        taken: list[tuple[Any, Any, bytes]] = []
        with self._lock:
            segments = self._segments
            while len(taken) < count and self._queued:
                segment = segments[0]
                n = min(count - len(taken), len(segment.messages))
                pairs = segment.pairs
                messages = segment.messages[:n]
                keys = segment.keys[:n]
                del segment.messages[:n], segment.keys[:n]
                self._queued -= n
                taken += [(*pairs[k], m) for k, m in zip(keys, messages, strict=True)]
                if not segment.messages:
                    if len(segments) > 1:
                        segments.popleft()
                    else:  # empty: forget the pairs (and their objects) until seen again
                        segment.pairs = []
                        segment.index = {}
        return taken

    def _export(self, everything: bool) -> None:
        """Send full batches, and with ``everything`` the last partial one too."""
        with self._exporting:
            while self._queued and (everything or self._queued >= self._max_batch):
                batch = self._take(self._max_batch)
                if not batch:
                    break
                # The triples go before the send (which may take seconds, with retries):
                # nothing of the batch but its bytes lives long enough to be promoted.
                try:
                    encoded = EncodedSpans(encode_request(batch), len(batch))
                except Exception as exc:
                    internal_error("span export (encoding a batch)", exc)
                    continue
                finally:
                    del batch
                token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
                try:
                    # The watcher reads only the batch's length; the exporter sends its bytes.
                    self._sender.export(encoded)  # type: ignore[arg-type]
                except Exception as exc:
                    internal_error("span export (sending a batch)", exc)
                finally:
                    detach(token)

    def _run(self) -> None:
        while not self._stopped:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            if self._stopped:
                break
            try:
                # Woken: a batch is full. Else the delay passed: whatever is queued.
                self._export(everything=not woken)
            except Exception as exc:
                internal_error("span export (worker)", exc)

    # ------------------------------------------------------------------------- lifecycle

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything queued (from this thread); False after shutdown."""
        if self._stopped:
            return False
        try:
            self._export(everything=True)
        except Exception as exc:
            internal_error("span export (flush)", exc)
            return False
        return True

    def shutdown(self) -> None:
        """Send everything queued, stop the thread, shut the exporter down."""
        if self._stopped:
            return
        self._stopped = True  # spans ending from now on are not taken
        self._wake.set()
        self._thread.join(_env_number("OTEL_EXPORTER_OTLP_TIMEOUT", 10) + 2)
        try:
            self._export(everything=True)
        except Exception as exc:
            internal_error("span export (shutdown)", exc)
        self._sender.shutdown()


def export_processor(exporter: SpanExporter) -> SpanProcessor:
    """The SDK configurator's ``export_span_processor``: an ``EncodingSpanProcessor`` for
    otelbot's OTLP/HTTP exporter (where it can send encoded requests), else what
    ``otelbot.export.offload.export_processor`` gives (the offload processor for the
    offload exporter, the SDK's ``BatchSpanProcessor`` for any other). Both watched for
    the endpoint lines."""
    if isinstance(exporter, OtlpHttpSpanExporter) and exporter.fast:
        from otelbot.export.endpoint import WatchedSpanExporter

        return EncodingSpanProcessor(exporter, WatchedSpanExporter(exporter))
    from otelbot.export import offload

    return offload.export_processor(exporter)
