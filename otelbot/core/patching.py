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

An instrumentor patches its library when the bot imports it, not before: under
``opentelemetry-instrument`` every installed library's instrumentor is loaded, and
importing python-telegram-bot, pyTelegramBotAPI and aiogram into a bot that uses one of
them would cost tens of megabytes (``_ImportWatcher``).

Hot-path rule: nothing here allocates per call except what a span needs. Instruments,
tracers and attribute sets are built once, at ``instrument()`` time or on first sight of a
new key, never per operation.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from types import ModuleType
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


#: The module a bot imports, per distribution an instrumentor names in ``_instruments``.
LIBRARY_MODULES = {
    "aiogram": "aiogram",
    "aiohttp": "aiohttp",
    "asyncpg": "asyncpg",
    "httpx": "httpx",
    "pyTelegramBotAPI": "telebot",
    "python-telegram-bot": "telegram",
    "redis": "redis",
}


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Runs callbacks right after a watched top-level module has been executed.

    It sits first in ``sys.meta_path`` while something is watched. For a watched name it
    asks the other finders for the spec and wraps that spec's loader's ``exec_module`` on
    the loader instance (its type stays the same), so the callbacks run once the module
    is complete, before the ``import`` statement returns to the bot. A callback's error is
    otelbot's, logged once; the import goes on.
    """

    def __init__(self) -> None:
        self.pending: dict[str, list[Callable[[], None]]] = {}
        self.lock = threading.RLock()

    def watch(self, module: str, callback: Callable[[], None]) -> None:
        with self.lock:
            if module in sys.modules:
                _run(callback, module)
                return
            self.pending.setdefault(module, []).append(callback)
            if self not in sys.meta_path:
                sys.meta_path.insert(0, self)

    def forget(self, callback: Callable[[], None]) -> None:
        with self.lock:
            for module, callbacks in list(self.pending.items()):
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    del self.pending[module]
            self._leave_if_idle()

    def _leave_if_idle(self) -> None:
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.pending:
            return None
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            try:
                original(module)
            finally:
                try:
                    del loader.exec_module  # the instance attribute: the class's again
                except AttributeError:
                    pass
            with self.lock:
                callbacks = self.pending.pop(fullname, [])
                self._leave_if_idle()
            for callback in callbacks:
                _run(callback, fullname)

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):
            return spec  # a loader that takes no attributes: the module goes unwatched
        return spec


def _run(callback: Callable[[], None], module: str) -> None:
    try:
        callback()
    except Exception as error:
        internal_error(f"instrumenting {module} on import", error)


_watcher = _ImportWatcher()


def _library_module(requirements: Collection[str]) -> str | None:
    for requirement in requirements:
        name = requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()
        if name in LIBRARY_MODULES:
            return LIBRARY_MODULES[name]
    return None


def _on_import(instrument: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(instrument)
    def deferred(self: OtelbotInstrumentor, **kwargs: Any) -> None:
        module = _library_module(self.instrumentation_dependencies())
        if module is None or module in sys.modules:
            self._patched = True
            instrument(self, **kwargs)
            return

        def now() -> None:
            self._pending = None
            self._patched = True
            instrument(self, **kwargs)

        self._pending = now
        _watcher.watch(module, now)

    return deferred


def _unless_pending(uninstrument: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(uninstrument)
    def undo(self: OtelbotInstrumentor, **kwargs: Any) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            _watcher.forget(pending)
        if self._patched:
            self._patched = False
            uninstrument(self, **kwargs)

    undo.__otelbot_guarded__ = True  # type: ignore[attr-defined]
    return undo


class OtelbotInstrumentor(BaseInstrumentor):
    """Base for otelbot's instrumentors: a tracer, a meter and a patch list.

    A subclass's ``_instrument`` runs when the library its ``_instruments`` names (one of
    ``LIBRARY_MODULES``) is imported, at once if it already is; its ``_uninstrument`` runs
    only if ``_instrument`` did.
    """

    _instruments: Collection[str] = ()
    _pending: Callable[[], None] | None = None
    _patched = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_instrument" in cls.__dict__:
            cls._instrument = _on_import(cls.__dict__["_instrument"])
        uninstrument = cls.__dict__.get("_uninstrument", cls._uninstrument)
        if not getattr(uninstrument, "__otelbot_guarded__", False):
            cls._uninstrument = _unless_pending(uninstrument)  # type: ignore[method-assign]

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
