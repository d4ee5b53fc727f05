"""Findings out: one shape for every detector (DESIGN.md, "Findings").

A finding leaves the bot three ways: an OTel log record (severity WARN, event name
``otelbot.bot.<kind>``, the example update's trace and span id), an ``otelbot.finding``
event on the example update's span (so the trace shows it), and one count in
``otelbot.findings`` {kind, handler}. The same (kind, handler, object) is sent at most once
per ``OTELBOT_FINDINGS_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from otelbot import __version__, semconv
from otelbot.core import config
from otelbot.core.errors import internal_error
from otelbot.core.fastmetrics import create_instrument
from otelbot.diagnosis.notes import CodeLocation

log = logging.getLogger("otelbot.findings")

SCOPE = "otelbot.diagnosis"


@dataclass
class Finding:
    """What a detector found. ``summary`` is the one sentence the log record's body
    starts with; ``evidence`` holds the numbers; ``suggestion`` the fix."""

    event: str
    handler: str | None
    object: str
    summary: str
    evidence: str
    suggestion: str
    code: CodeLocation | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.event, self.handler or "", self.object)

    def body(self) -> str:
        return f"{self.summary} {self.evidence}. Suggested: {self.suggestion}"

    def record_attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            semconv.FINDING_OBJECT: self.object,
            semconv.FINDING_EVIDENCE: self.evidence,
            semconv.FINDING_SUGGESTION: self.suggestion,
        }
        if self.handler:
            attrs[semconv.TELEGRAM_HANDLER] = self.handler
        if self.code is not None:
            attrs[semconv.CODE_FUNCTION_NAME] = self.code.function
            attrs[semconv.CODE_FILE_PATH] = self.code.file
            attrs[semconv.CODE_LINE_NUMBER] = self.code.line
        for key, value in self.attributes.items():
            if value is not None:
                attrs[key] = value
        return attrs


class Reporter:
    """Sends findings: log record, span event, counter; rate-limited per key."""

    def __init__(
        self,
        meter: Any,
        logger_provider: Any = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from opentelemetry import _logs

        provider = logger_provider or _logs.get_logger_provider()
        self._logger = provider.get_logger(SCOPE, __version__)
        self._counter = create_instrument(meter, semconv.OTELBOT_FINDINGS)
        self.interval = (
            interval
            if interval is not None
            else config.number(semconv.FINDINGS_INTERVAL_SETTING.name, 300.0)
        )
        self._clock = clock
        self._sent: dict[tuple[str, str, str], float] = {}
        self.sent: list[Finding] = []  # the last few, for tests and `otelbot demo`

    def report(self, finding: Finding, span: Any = None) -> bool:
        """Send ``finding`` unless the same one went out less than an interval ago;
        ``span`` is the example update's span (still open). True when sent."""
        now = self._clock()
        last = self._sent.get(finding.key)
        if last is not None and now - last < self.interval:
            return False
        self._sent[finding.key] = now
        if len(self._sent) > 10_000:  # bounded: forget the oldest half
            for key in sorted(self._sent, key=self._sent.__getitem__)[:5_000]:
                del self._sent[key]
        attrs = finding.record_attributes()
        try:
            context = None
            if span is not None and span.get_span_context().is_valid:
                context = trace.set_span_in_context(span)
                if span.is_recording():
                    event = {semconv.FINDING_KIND: finding.event}
                    event.update(attrs)
                    span.add_event(semconv.SPAN_EVENT_FINDING, event)
            self._logger.emit(
                event_name=finding.event,
                body=finding.body(),
                severity_number=_WARN,
                severity_text="WARN",
                attributes=attrs,
                context=context,
            )
        except Exception as exc:
            internal_error("findings: log record", exc)
        counted: dict[str, Any] = {semconv.FINDING_KIND: finding.event}
        if finding.handler:
            counted[semconv.TELEGRAM_HANDLER] = finding.handler
        self._counter.add(1, counted)
        log.debug("%s [%s] %s", finding.event, finding.handler or "-", finding.body())
        self.sent.append(finding)
        del self.sent[:-100]
        return True


def _warn() -> Any:
    from opentelemetry._logs import SeverityNumber

    return SeverityNumber.WARN


_WARN = _warn()
