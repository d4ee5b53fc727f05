"""The state behind otelbot's endpoint lines, without the SDK: whether one signal's exports
get through, and what was lost while they did not.

    from otelbot.export import endpoint_state
    traces = endpoint_state.watch("traces", "http://collector:4318/v1/traces")
    traces.reason = "Connection refused"  # what went wrong, short
    traces.failed(512)  # the first failure: "otelbot: cannot export spans to ... (Connection
                        #   refused); dropping spans until the endpoint takes them again"
    traces.exported()   # "otelbot: http://collector:4318/v1/traces takes spans again; ..."

``otelbot.export.endpoint`` drives these from the SDK's exporters (its ``Watched*`` wrappers
and the filter on the SDK's lines); the span export helper drives them from its own
OTLP/HTTP sender (``otelbot.export.http_send``) without importing the SDK. One state per
signal per process, shared by both; the lines go to the ``otelbot.export.endpoint`` logger.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("otelbot.export.endpoint")

#: signal -> what its items are called in our lines.
ITEMS = {"traces": "spans", "metrics": "data points", "logs": "log records"}

_prefix = "otelbot: "
_back_level = logging.WARNING


class EndpointState:
    """Whether one signal's exports get through, and what was lost while they did not."""

    __slots__ = (
        "_lock",
        "_queue_full_said",
        "endpoint",
        "failed_exports",
        "items",
        "lost",
        "reason",
    )

    def __init__(self, signal: str) -> None:
        self.items = ITEMS[signal]
        self.endpoint = "the OTLP endpoint"
        self.failed_exports = 0  # in the current outage; 0: exports get through
        self.lost = 0
        self.reason: str | None = None  # why the last export failed, short
        self._queue_full_said = False
        self._lock = threading.Lock()

    def exported(self) -> None:
        with self._lock:
            failed, lost = self.failed_exports, self.lost
            if not failed:
                return
            self.failed_exports = self.lost = 0
            self.reason = None
        log.log(
            _back_level,
            "%s%s takes %s again; %d export%s had failed, %d %s were not delivered",
            _prefix,
            self.endpoint,
            self.items,
            failed,
            "" if failed == 1 else "s",
            lost,
            self.items,
        )

    def failed(self, items: int) -> None:
        with self._lock:
            self.failed_exports += 1
            self.lost += items
            failed, lost = self.failed_exports, self.lost
        if failed == 1:
            log.warning(
                "%scannot export %s to %s (%s); dropping %s until the endpoint takes them again",
                _prefix,
                self.items,
                self.endpoint,
                self.reason or "the export failed",
                self.items,
            )
        else:
            log.debug(
                "%s%s still does not take %s: %d failed exports, %d %s not delivered so far",
                _prefix,
                self.endpoint,
                self.items,
                failed,
                lost,
                self.items,
            )

    def dropped_from_queue(self) -> None:
        """One item the SDK's batch processor dropped because its queue was full: counted
        in the outage; with the endpoint up (but slower than the bot), said once."""
        with self._lock:
            if self.failed_exports:
                self.lost += 1
                return
            if self._queue_full_said:
                return
            self._queue_full_said = True
        log.warning(
            "%sthe export queue of %s is full (%s takes them slower than they come); "
            "dropping %s (said once)",
            _prefix,
            self.items,
            self.endpoint,
            self.items,
        )


STATES = {signal: EndpointState(signal) for signal in ITEMS}
#: Signals whose exports are watched; the SDK line filter hides the SDK's lines only for these.
WATCHED: set[str] = set()


def configure(prefix: str = "otelbot: ", back_level: int = logging.WARNING) -> None:
    """``prefix`` starts our lines (the agent's log handler adds its own); ``back_level`` is
    the level of the line said when an endpoint takes data again."""
    global _prefix, _back_level
    _prefix = prefix
    _back_level = back_level


def watch(signal: str, endpoint: object = None) -> EndpointState:
    """The state of ``signal``, now watched; ``endpoint`` (a URL) names it in the lines."""
    found = STATES[signal]
    if isinstance(endpoint, str) and endpoint:
        found.endpoint = endpoint
    WATCHED.add(signal)
    return found
