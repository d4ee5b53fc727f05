"""Patching with error containment: what every otelbot instrumentor shares::

    import json

    from otelbot.core.patching import Patches, guarded_sync


    def start(encoder, args, kwargs):  # before the call; returns the call's state
        return len(args[0])


    def end(state, result, exc):  # after it, with its result or its exception
        print("encoded", state, "items")


    patches = Patches()
    patches.wrap(json.JSONEncoder, "encode", lambda f: guarded_sync(f, start, end, "json"))
    json.dumps([1, 2])  # prints "encoded 2 items"
    patches.restore()

``Patches`` replaces methods and puts the originals back; ``guarded_async`` /
``guarded_sync`` wrap a call with telemetry that can never break it. Every instrumentation
names its hooks ``start`` and ``end`` (``start_update`` / ``end_update`` where a module
has several), and keeps what ``start`` hands to ``end`` in a small slotted class.

Hot-path rule: nothing here allocates per call except what a span needs. Instruments,
tracers and attribute sets are built once, at ``instrument()`` time or on first sight of a
new key, never per operation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otelbot import __version__
from otelbot.core.errors import internal_error


def guarded_async(
    original: Any,
    start: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
    end: Callable[[Any, Any, BaseException | None], None],
    where: str,
) -> Any:
    """Wrap an async method with telemetry that can never break it.

    ``start(self, args, kwargs)`` runs before the call and returns what ``end(state,
    result, exc)`` gets after it (``exc`` is the exception the call raised, re-raised
    unchanged). An error inside ``start`` or ``end`` is logged once and the call goes on
    as if uninstrumented.
    """

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            state = start(self, args, kwargs)
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


def guarded_sync(
    original: Any,
    start: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
    end: Callable[[Any, Any, BaseException | None], None],
    where: str,
) -> Any:
    """``guarded_async`` for a plain (blocking) method."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            state = start(self, args, kwargs)
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

    def wrap(
        self, owner: Any, name: str, make: Callable[[Any], Any], inherited: bool = False
    ) -> None:
        """Replace ``owner.name`` by ``make(original)``; a missing attribute is skipped.

        With ``inherited``, an attribute owner only inherits is wrapped on owner itself
        (and removed again on restore), leaving the base class untouched.
        """
        own = name in owner.__dict__
        original = (
            owner.__dict__.get(name) if own else (getattr(owner, name, None) if inherited else None)
        )
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

    def __init__(self) -> None:
        super().__init__()
        # BaseInstrumentor is a singleton and __init__ runs on every call: keep the patch
        # list of the instance so `XInstrumentor().uninstrument()` restores what it patched.
        if not hasattr(self, "patches"):
            self.patches = Patches()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def tracer_and_meter(self, **kwargs: Any) -> tuple[trace.Tracer, metrics.Meter]:
        name = type(self).__module__
        tracer = trace.get_tracer(name, __version__, kwargs.get("tracer_provider"))
        meter = metrics.get_meter(name, __version__, kwargs.get("meter_provider"))
        return tracer, meter

    def _uninstrument(self, **kwargs: Any) -> None:
        self.patches.restore()
