"""Errors: otelbot's own are contained (logged once, never raised into the bot); the bot's
are recorded on otelbot's spans without the data they may carry::

    from opentelemetry import trace

    from otelbot.core.errors import record_exception

    span = trace.get_tracer("example").start_span("work")
    try:
        {}["missing"]
    except KeyError as exc:
        record_exception(span, exc)  # event "exception", error.type "KeyError", status ERROR
    span.end()

A recorded exception carries its type, its message as the instrumentation of the library
that raised it cleans it (``register_cleaner``: Redis errors lose the keys and values
redis-py and scripts put in them, PostgreSQL errors keep their primary message with quoted
values as ``?``), with bot tokens and known token secrets redacted, and a stack trace of
frames (file, line, function) and chained exceptions, each cleaned the same way. The stack
trace never holds a line of source code: the bot's source lines hold literals (keys,
phone numbers, a token written in the code) that no cleaner of messages can know about.

The cleaners apply wherever otelbot records the exception: a Redis error that a handler
lets through is recorded on the Redis span and again on the update span, cleaned on both.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import Span, StatusCode

from otelbot.core.redaction import redact_text
from otelbot.semconv import ERROR_TYPE

logger = logging.getLogger("otelbot")

_logged: set[str] = set()

#: How an exception's message is said without the data its library may put in it.
MessageCleaner = Callable[[BaseException], str]

# Exception class -> its cleaner, registered by the instrumentation of the library that
# raises it while that instrumentation is on.
_cleaners: dict[type[BaseException], MessageCleaner] = {}

# Chained exceptions shown in a stack trace, newest first (Python shows them all).
_MAX_CHAIN = 8
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


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
        where,
        type(exc).__name__,
        exc,
    )


def error_type(exc: BaseException) -> str:
    """The ``error.type`` value of an exception: its fully qualified class name."""
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return module + "." + cls.__qualname__


def register_cleaner(kind: type[BaseException], cleaner: MessageCleaner) -> None:
    """Record exceptions of class ``kind`` (and subclasses) with ``cleaner(exc)`` as their
    message, on every span otelbot records them on."""
    _cleaners[kind] = cleaner


def unregister_cleaner(kind: type[BaseException]) -> None:
    _cleaners.pop(kind, None)


def safe_message(exc: BaseException) -> str:
    """The message otelbot records for ``exc``: cleaned, tokens redacted."""
    for kind, cleaner in list(_cleaners.items()):
        if isinstance(exc, kind):
            try:
                return redact_text(cleaner(exc))
            except Exception as inner:
                # Unsure what the message holds: record none.
                internal_error("exception message of " + kind.__name__, inner)
                return ""
    try:
        return redact_text(str(exc))
    except Exception:  # an exception whose __str__ fails
        return ""


def format_stack(exc: BaseException, message: str | None = None) -> str:
    """A stack trace of ``exc`` in Python's layout, its chained exceptions included, with
    safe messages (``message`` for ``exc`` itself) and no source lines."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            current = None
        else:
            current = current.__context__
    parts: list[str] = []
    for index in range(len(chain) - 1, -1, -1):  # oldest first, as Python prints them
        item = chain[index]
        if item.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            for frame, line in traceback.walk_tb(item.__traceback__):
                code = frame.f_code
                parts.append(f'  File "{code.co_filename}", line {line}, in {code.co_name}\n')
        text = message if index == 0 and message is not None else safe_message(item)
        parts.append(error_type(item) + (": " + text if text else "") + "\n")
        if index:
            parts.append(_CAUSE if chain[index - 1].__cause__ is item else _CONTEXT)
    return redact_text("".join(parts))


def record_exception(span: Span, exc: BaseException, *, message: str | None = None) -> None:
    """Record an exception on a span: an ``exception`` event, ``error.type``, the status.

    ``message`` replaces the exception's own (the caller knows better what it may hold);
    otherwise it is ``safe_message(exc)``. The SDK's own ``record_exception`` would record
    ``str(exc)`` and the stack with its source lines verbatim; aiohttp puts the request
    URL (with the token) in both, redis-py the failing command.
    """
    if not span.is_recording():
        return
    text = safe_message(exc) if message is None else redact_text(message)
    kind = error_type(exc)
    span.add_event(
        "exception",
        {
            "exception.type": kind,
            "exception.message": text,
            "exception.stacktrace": format_stack(exc, text),
        },
    )
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(StatusCode.ERROR, text)
