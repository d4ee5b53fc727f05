"""What every otelbot instrumentor shares: patching, error containment, instruments.

Hot-path rule: nothing here allocates per call except what a span needs. Instruments,
tracers and attribute sets are built once, at ``instrument()`` time or on first sight of a
new key, never per operation.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import Span, StatusCode

from otelbot import __version__
from otelbot.instrumentation.fastmetrics import fast_instrument
from otelbot.instrumentation.redaction import redact_text
from otelbot.semconv import ERROR_TYPE, Metric

logger = logging.getLogger("otelbot")

_logged: set[str] = set()


def log_once(key: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
    """Log a message the first time ``key`` is seen; later calls are silent."""
    if key in _logged:
        return
    _logged.add(key)
    logger.log(level, redact_text(message % args if args else message))


def internal_error(where: str, exc: BaseException) -> None:
    """An exception inside otelbot itself: logged once per place, never raised into the bot."""
    log_once(
        "internal:" + where,
        "otelbot: internal error in %s, telemetry for it is skipped: %s: %s",
        where, type(exc).__name__, exc,
    )


def error_type(exc: BaseException) -> str:
    """The ``error.type`` value of an exception: its fully qualified class name."""
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return module + "." + cls.__qualname__


def record_exception(span: Span, exc: BaseException, *, message: str | None = None) -> None:
    """Record an exception on a span with the token redacted from message and stack.

    The SDK's own ``record_exception`` would record ``str(exc)`` and the stack verbatim;
    aiohttp puts the request URL (with the token) in both.
    """
    if not span.is_recording():
        return
    text = redact_text(str(exc) if message is None else message)
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    original = str(exc)
    if message is not None and original:
        # The stack's last line repeats str(exc); the caller's message is the cleaned one.
        stack = stack.replace(original, message)
    stack = redact_text(stack)
    span.add_event(
        "exception",
        {
            "exception.type": error_type(exc),
            "exception.message": text,
            "exception.stacktrace": stack,
        },
    )
    span.set_attribute(ERROR_TYPE, error_type(exc))
    span.set_status(StatusCode.ERROR, text)


def create_instrument(meter: metrics.Meter, metric: Metric, callbacks: Any = None) -> Any:
    """The instrument a catalogue entry describes: for counters, up-down counters and
    histograms otelbot's own aggregation when the provider allows it (``fastmetrics``),
    else the SDK's instrument."""
    kind = metric.instrument
    if kind in ("counter", "updowncounter", "histogram"):
        fast = fast_instrument(meter, kind, metric.name, metric.unit, metric.description,
                               metric.buckets)
        if fast is not None:
            return fast
    if kind == "counter":
        return meter.create_counter(metric.name, metric.unit, metric.description)
    if kind == "updowncounter":
        return meter.create_up_down_counter(metric.name, metric.unit, metric.description)
    if kind == "histogram":
        try:
            return meter.create_histogram(
                metric.name, metric.unit, metric.description,
                explicit_bucket_boundaries_advisory=list(metric.buckets or ()) or None,
            )
        except TypeError:  # API older than 1.23 has no advisory
            return meter.create_histogram(metric.name, metric.unit, metric.description)
    if kind == "gauge":
        if callbacks is not None:
            return meter.create_observable_gauge(
                metric.name, callbacks, metric.unit, metric.description
            )
        return meter.create_gauge(metric.name, metric.unit, metric.description)
    if kind == "observable_counter":
        return meter.create_observable_counter(
            metric.name, callbacks, metric.unit, metric.description
        )
    if kind == "observable_updowncounter":
        return meter.create_observable_up_down_counter(
            metric.name, callbacks, metric.unit, metric.description
        )
    raise ValueError(f"unknown instrument kind {kind!r} for {metric.name}")


def guarded_async(original: Any, begin: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
                  end: Callable[[Any, Any, BaseException | None], None], where: str) -> Any:
    """Wrap an async method with telemetry that can never break it.

    ``begin(self, args, kwargs)`` runs before the call and returns what ``end(state,
    result, exc)`` gets after it (``exc`` is the exception the call raised, re-raised
    unchanged). An error inside ``begin`` or ``end`` is logged once and the call goes on
    as if uninstrumented.
    """

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            state = begin(self, args, kwargs)
        except Exception as exc:
            internal_error(where + " start", exc)
            return await original(self, *args, **kwargs)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            try:
                end(state, None, exc)
            except Exception as inner:
                internal_error(where + " end", inner)
            raise
        try:
            end(state, result, None)
        except Exception as inner:
            internal_error(where + " end", inner)
        return result

    return wrapper


def guarded_sync(original: Any, begin: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
                 end: Callable[[Any, Any, BaseException | None], None], where: str) -> Any:
    """``guarded_async`` for a plain (blocking) method."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            state = begin(self, args, kwargs)
        except Exception as exc:
            internal_error(where + " start", exc)
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            try:
                end(state, None, exc)
            except Exception as inner:
                internal_error(where + " end", inner)
            raise
        try:
            end(state, result, None)
        except Exception as inner:
            internal_error(where + " end", inner)
        return result

    return wrapper


class Patches:
    """Replaces attributes on classes and puts the originals back on ``restore()``."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, make: Callable[[Any], Any],
             inherited: bool = False) -> None:
        """Replace ``owner.name`` by ``make(original)``; a missing attribute is skipped.

        With ``inherited``, an attribute owner only inherits is wrapped on owner itself
        (and removed again on restore), leaving the base class untouched.
        """
        own = name in owner.__dict__
        original = owner.__dict__.get(name) if own else (
            getattr(owner, name, None) if inherited else None)
        if original is None:
            return
        replacement = make(original)
        replacement.__otelbot_original__ = original
        setattr(owner, name, replacement)
        self._saved.append((owner, name, original if own else _INHERITED))

    def restore(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


_INHERITED = object()


class OtelbotInstrumentor(BaseInstrumentor):
    """Base for otelbot's instrumentors: a tracer, a meter and a patch list."""

    _instruments: Collection[str] = ()
    #: The contrib entry point that would instrument the same library (skipped by the distro).
    replaces_contrib: str | None = None

    def __init__(self) -> None:
        super().__init__()
        # BaseInstrumentor is a singleton and __init__ runs on every call: keep the patch
        # list of the instance so `XInstrumentor().uninstrument()` restores what it patched.
        if not hasattr(self, "patches"):
            self.patches = Patches()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def telemetry(self, **kwargs: Any) -> tuple[trace.Tracer, metrics.Meter]:
        name = type(self).__module__
        tracer = trace.get_tracer(name, __version__, kwargs.get("tracer_provider"))
        meter = metrics.get_meter(name, __version__, kwargs.get("meter_provider"))
        return tracer, meter

    def _uninstrument(self, **kwargs: Any) -> None:
        self.patches.restore()
