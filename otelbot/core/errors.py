"""Errors: otelbot's own are contained (logged once, never raised into the bot); the bot's
are recorded on its spans with the token redacted."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from opentelemetry.trace import Span, StatusCode

from otelbot.core.redaction import redact_text
from otelbot.semconv import ERROR_TYPE

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
