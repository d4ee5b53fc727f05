"""Light spans: otelbot's spans without the SDK's per-span machinery, same output.

The SDK's ``Tracer.start_span`` costs ~20-40 µs per span on this kind of machine: the
sampler call, a lock, a ``BoundedAttributes`` that validates every attribute the
instrumentation built (and cached) itself, a ``BoundedList`` for events, the processors'
``on_start``. otelbot makes four spans per update.

:class:`LightTracer` wraps an SDK ``Tracer``. When the outcome is certain to be what the
SDK would produce, it returns a :class:`LightSpan`: a plain object implementing the
OpenTelemetry API ``Span`` that collects attributes, events and status, and on ``end()``
hands the span processors the SDK's own ``ReadableSpan``, with the SDK's id generator,
sampler, resource and instrumentation scope. It can be made current like any span:
spans the bot's own code starts under it are its children (the SDK reads only the
parent's span context). Conditions, checked per span from a cache keyed on the
provider's processor tuple:

- every span processor's ``on_start`` and ``_on_ending`` do nothing (the SDK's batch and
  simple processors, otelbot's offload processor), so skipping them changes nothing;
- the span limits are the SDK defaults or wider (no attribute value truncation), and
  the SDK's own tracer metrics are off.

Sampling is the tracer's: for a child of a local span under the default ``ParentBased``
delegates the decision is the parent's sampled flag (the sampler is not called, as it
would only return that); otherwise the tracer's sampler is asked as the SDK asks it.
Anything else, or ``OTELBOT_LIGHT_SPANS=false``, uses ``Tracer.start_span`` unchanged.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from otelbot.core import config

try:  # the key the API stores the current span under
    from opentelemetry.trace.propagation import _SPAN_KEY as _KEY

    _SPAN_KEY: str | None = _KEY
except ImportError:  # pragma: no cover - an API without it: always the public lookup
    _SPAN_KEY = None

logger = logging.getLogger("otelbot")

_UNSET = Status(StatusCode.UNSET)
#: Smallest limits under which otelbot's spans are never cut (they carry < 20 attributes
#: and at most two events).
_MIN_ATTRIBUTES = 32
_MIN_EVENTS = 8


def enabled_by_env() -> bool:
    return config.light_spans()


def _noop_hooks() -> tuple[set[Any], set[Any]]:
    """``on_start`` and ``_on_ending`` implementations known to do nothing."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from otelbot.export.offload import OffloadSpanProcessor

    classes = (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor, OffloadSpanProcessor)
    starts = {cls.__dict__["on_start"] for cls in classes if "on_start" in cls.__dict__}
    endings = {cls.__dict__["_on_ending"] for cls in classes if "_on_ending" in cls.__dict__}
    return starts, endings


def _span_in(context: Any) -> Any:
    """``trace.get_current_span(context)`` without its ABC ``isinstance`` for the span
    types otelbot meets on every update (see ``_KNOWN_SPANS``)."""
    if _SPAN_KEY is not None:
        span = (context if context is not None else otel_context.get_current()).get(_SPAN_KEY)
        if span is None:
            return trace.INVALID_SPAN
        if type(span) in _KNOWN_SPANS:
            return span
    return trace.get_current_span(context)


def _child_flags(sampled: bool, random_trace_id: bool) -> TraceFlags:
    """The flags the SDK gives a span: sampled or not, and the parent's (or the id
    generator's) random-trace-id bit."""
    flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
    if random_trace_id:
        flags |= getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
    return TraceFlags(flags)


class LightTracer:
    """``start_span`` giving light spans where the SDK's result is certain; see the module
    text."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self._enabled = enabled_by_env()
        self._checked_for: Any = object()  # the processor tuple last checked
        self._fast = False
        self._follow_local_parent = False
        self._root_sampler: Any = None
        self._flags: dict[tuple[bool, bool], TraceFlags] = {}
        self.processor: Any = None
        self.offload: Any = None
        self.offload_for: Any = None  # the processor tuple ``offload`` was found in
        self.resource: Any = None
        self.scope: Any = None
        self.info: Any = None

    def _eligible(self) -> bool:
        tracer = self.tracer
        multi = getattr(tracer, "span_processor", None)
        processors = getattr(multi, "_span_processors", None)
        if processors is self._checked_for:
            return self._fast
        self._checked_for = processors
        self._fast = False
        self.offload = None
        if not self._enabled or processors is None:
            return False
        try:
            self._fast = self._check(tracer, multi, processors)
        except Exception as exc:  # an SDK whose internals differ: the standard path
            logger.debug("otelbot: light spans unavailable (%s)", exc)
            self._fast = False
        return self._fast

    def _check(self, tracer: Any, multi: Any, processors: Sequence[Any]) -> bool:
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

        if type(multi) is not SynchronousMultiSpanProcessor:
            return False
        starts, endings = _noop_hooks()
        for processor in processors:
            cls = type(processor)
            if getattr(cls, "on_start", None) not in starts:
                return False
            if getattr(cls, "_on_ending", None) not in endings:
                return False
        limits = tracer._span_limits
        if (
            limits.max_span_attribute_length is not None
            or limits.max_attribute_length is not None
            or (limits.max_span_attributes or 0) < _MIN_ATTRIBUTES
            or (limits.max_event_attributes or 0) < _MIN_ATTRIBUTES
            or (limits.max_events or 0) < _MIN_EVENTS
        ):
            return False
        if type(tracer._tracer_metrics).__name__ != "NoOpTracerMetrics":
            return False
        sampler = tracer.sampler
        self._follow_local_parent = (
            isinstance(sampler, ParentBased)
            and getattr(sampler, "_local_parent_sampled", None) is ALWAYS_ON
            and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
        )
        # For a root, the SDK's ParentBased hands the decision to its root sampler.
        root = getattr(sampler, "_root", None)
        self._root_sampler = root if type(sampler) is ParentBased and root is not None else sampler
        self.processor = multi
        # The offload processor alone (otelbot's default): it reads ended light spans
        # directly, no ReadableSpan in between.
        from otelbot.export.offload import OffloadSpanProcessor

        self.offload = (
            processors[0]
            if len(processors) == 1 and type(processors[0]) is OffloadSpanProcessor
            else None
        )
        self.offload_for = processors
        self.resource = tracer.resource
        self.scope = tracer._instrumentation_scope
        self.info = tracer.instrumentation_info
        return True

    def _flags_for(self, sampled: bool, random_trace_id: bool) -> TraceFlags:
        key = (sampled, random_trace_id)
        flags = self._flags.get(key)
        if flags is None:
            flags = self._flags[key] = _child_flags(sampled, random_trace_id)
        return flags

    def start_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        tracer = self.tracer
        if not self._eligible() or not tracer._is_enabled():
            return tracer.start_span(name, context=context, kind=kind, attributes=attributes)
        parent_span = _span_in(context)
        parent = parent_span.get_span_context()
        if self._follow_local_parent and parent.is_valid and not parent.is_remote:
            # ParentBased with its default local-parent delegates: the parent's decision.
            parent_flags = parent.trace_flags
            if not parent_flags.sampled:
                # Nothing of an unsampled trace is recorded or exported: the child is the
                # parent's non-recording span itself (no new id, no allocation). Only the
                # parent-id a propagator would send differs, and it names the same trace.
                if type(parent_span) is NonRecordingSpan:
                    return parent_span
                return NonRecordingSpan(parent)
            flags = self._flags_for(True, getattr(parent_flags, "random_trace_id", False))
            child = SpanContext(
                parent.trace_id,
                tracer.id_generator.generate_span_id(),
                False,
                flags,
                parent.trace_state,
            )
            return LightSpan(self, name, child, parent, kind, attributes)
        # A root, a remote parent or another sampler: ask the sampler, as the SDK does.
        parent_or_none: SpanContext | None = parent if parent.is_valid else None
        if parent_or_none is None:
            trace_id = tracer.id_generator.generate_trace_id()
            random_id = tracer.id_generator.is_trace_id_random()
            sampler = self._root_sampler
        else:
            trace_id = parent.trace_id
            random_id = getattr(parent.trace_flags, "random_trace_id", False)
            sampler = tracer.sampler
        result = sampler.should_sample(context, trace_id, name, kind, attributes, ())
        child = SpanContext(
            trace_id,
            tracer.id_generator.generate_span_id(),
            False,
            self._flags_for(result.decision.is_sampled(), random_id),
            result.trace_state,
        )
        if not result.decision.is_recording():
            return NonRecordingSpan(child)
        # The SDK gives the span the attributes the sampler returns.
        return LightSpan(self, name, child, parent_or_none, kind, result.attributes)


class LightSpan(trace.Span):
    """A recording span that becomes the SDK's ``ReadableSpan`` when it ends."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end",
        "_events",
        "_kind",
        "_name",
        "_owner",
        "_parent",
        "_start",
        "_status",
    )

    def __init__(
        self,
        owner: LightTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        self._owner = owner
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        # A copy: the instrumentations pass cached, shared dicts.
        self._attributes: dict[str, Any] = dict(attributes) if attributes else {}
        # No list until the first event (most spans have none): every object the span
        # holds while the update awaits counts towards the next garbage collection.
        self._events: list[Event] | tuple[()] = ()
        self._status = _UNSET
        self._end: int | None = None
        self._start = time_ns()

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end is not None:
            return
        if isinstance(value, list):
            value = tuple(value)
        self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if self._end is not None:
            return
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in (attributes or {}).items()}
        event = Event(name, clean, timestamp if timestamp is not None else time_ns())
        if isinstance(self._events, list):
            self._events.append(event)
        else:
            self._events = [event]

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        cls = type(exception)
        module = cls.__module__
        event = {
            "exception.type": (
                f"{module}.{cls.__qualname__}"
                if module and module != "builtins"
                else cls.__qualname__
            ),
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end = end_time if end_time is not None else time_ns()
        owner = self._owner
        offload = owner.offload
        # Still the only processor (one added since would be in a new tuple).
        if offload is not None and owner.processor._span_processors is owner.offload_for:
            offload.on_end_light(self, owner.resource, owner.scope)
            return
        owner.processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=owner.resource,
                attributes=self._attributes,
                events=tuple(self._events),
                kind=self._kind,
                status=self._status,
                start_time=self._start,
                end_time=end,
                instrumentation_info=owner.info,
                instrumentation_scope=owner.scope,
            )
        )

    # Read-only views as the SDK's spans have them (some code reads the current span's).
    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> SpanKind:
        return self._kind

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    @property
    def attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(self._attributes)

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    @property
    def status(self) -> Status:
        return self._status

    @property
    def start_time(self) -> int:
        return self._start

    @property
    def end_time(self) -> int | None:
        return self._end

    def __repr__(self) -> str:
        return f"LightSpan({self._name!r}, {self._context!r})"


def light_tracer(tracer: Any) -> Any:
    """A :class:`LightTracer` for an SDK tracer; other tracers (the API's no-op or proxy
    tracer, a vendor's) are returned as they are."""
    if isinstance(tracer, LightTracer):
        return tracer
    if not all(
        hasattr(tracer, a)
        for a in (
            "span_processor",
            "sampler",
            "id_generator",
            "_span_limits",
            "_instrumentation_scope",
        )
    ):
        return tracer
    return LightTracer(tracer)


#: Span classes returned as they are by ``_span_in`` (all implement the API ``Span``).
_KNOWN_SPANS = frozenset({LightSpan, NonRecordingSpan})
_KNOWN_SPANS |= {
    getattr(sdk_trace, name)
    for name in ("Span", "_Span")
    if isinstance(getattr(sdk_trace, name, None), type)
}
