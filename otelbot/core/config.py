"""The ``OTELBOT_*`` environment variables the instrumentation reads (see docs/configuration.md)."""

from __future__ import annotations

import logging
import os


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def trace_get_updates() -> bool:
    """OTELBOT_TRACE_GET_UPDATES: trace getUpdates long polls (off: metrics only)."""
    return env_flag("OTELBOT_TRACE_GET_UPDATES")


def capture_ids() -> bool:
    """OTELBOT_CAPTURE_IDS: put update, chat and user ids on spans (never on metrics)."""
    return env_flag("OTELBOT_CAPTURE_IDS")


def capture_query_text() -> bool:
    """OTELBOT_CAPTURE_QUERY_TEXT: record sanitized SQL / Redis command text (default on)."""
    return env_flag("OTELBOT_CAPTURE_QUERY_TEXT", True)


def runtime_dir() -> str | None:
    """OTELBOT_RUNTIME_DIR: where the runtime stats file is kept for the agent."""
    return os.environ.get("OTELBOT_RUNTIME_DIR") or None


def light_spans() -> bool:
    """OTELBOT_LIGHT_SPANS: otelbot's spans without the SDK's per-span cost (default on)."""
    return env_flag("OTELBOT_LIGHT_SPANS", True)


def fast_metrics() -> bool:
    """OTELBOT_FAST_METRICS: otelbot's own aggregation of its instruments (default on)."""
    return env_flag("OTELBOT_FAST_METRICS", True)


def findings() -> bool:
    """OTELBOT_FINDINGS: the bot-side detectors (default on; ``off`` turns them all off)."""
    return env_flag("OTELBOT_FINDINGS", True)


_warned: set[str] = set()


def number(name: str, default: float, minimum: float = 0.0) -> float:
    """A numeric ``OTELBOT_*`` setting; a value that is not a number (or is below
    ``minimum``) is reported once on the ``otelbot`` logger and the default is used."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or value != value or value < minimum:
        if name not in _warned:
            _warned.add(name)
            logging.getLogger("otelbot").warning(
                "%s=%r is not a number >= %s; using %s", name, raw, minimum, default
            )
        return default
    return value
