"""What a collector produces (samples and findings) and the interface every collector follows."""

from __future__ import annotations

import asyncio
import enum
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otelbot import semconv

AttributeValue = str | int | float | bool


class Tier(str, enum.Enum):
    """How often a piece of data is collected (config: ``intervals``)."""

    FAST = "fast"  # process, runtime, database counters, activity, Redis
    SLOW = "slow"  # sizes, tables, indexes, statements
    ADVICE = "advice"  # index findings


ALL_TIERS = frozenset(Tier)


@dataclass(frozen=True)
class Sample:
    """One data point of a catalogue metric."""

    metric: semconv.Metric
    value: float
    attributes: Mapping[str, AttributeValue]


@dataclass(frozen=True)
class Finding:
    """Something a human should act on. Exported as an OTel log record with ``event_name``."""

    event_name: str
    object: str  # what it is about: an index, a table, a session, a process
    evidence: str  # why the agent thinks so, with numbers
    suggestion: str  # the statement or action to take; the agent never executes it
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.event_name, self.object)


@dataclass(frozen=True)
class Failure:
    """A part of a collector that failed this round; the other parts still ran."""

    collector: str  # value of otelbot.collector, e.g. "postgresql.tables"
    error_type: str
    message: str


@dataclass
class Collection:
    samples: list[Sample] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)  # per otelbot.collector value
    target_up: bool = True  # False: the target is unreachable (drives the backoff)
    skipped_tiers: frozenset[Tier] = frozenset()  # tiers that could not run, retry soon

    def add(self, metric: semconv.Metric, value: Any, **attributes: AttributeValue) -> None:
        if value is None:
            return
        self.samples.append(Sample(metric, float(value), attributes))

    def add_with(
        self, metric: semconv.Metric, value: Any, attributes: Mapping[str, AttributeValue]
    ) -> None:
        if value is None:
            return
        self.samples.append(Sample(metric, float(value), attributes))

    def add_up(
        self,
        metric: semconv.Metric,
        attributes: Mapping[str, AttributeValue],
        error: str | None = None,
    ) -> None:
        """The target's ``*.up`` sample: 1, or 0 with ``error.type`` when ``error`` is given;
        then the target is down (``target_up`` False: the pipeline backs off)."""
        if error is None:
            self.add_with(metric, 1, attributes)
            return
        self.add_with(metric, 0, {**attributes, semconv.ERROR_TYPE: error})
        self.target_up = False


class Collector:
    """One target of one kind: the bot process, a PostgreSQL database, a Redis instance.

    ``collect`` never raises for a target problem: it reports it in the returned
    ``Collection`` (``up`` metric, ``failures``) so the other collectors keep going.
    """

    kind: str = ""  # registry name: process, runtime, postgresql, redis

    @property
    def target(self) -> str:
        """A printable name for the target, never containing a password."""
        return self.kind

    async def collect(self, tiers: frozenset[Tier]) -> Collection:
        raise NotImplementedError

    async def check(self) -> str:
        """Try the target once. Return a short ok description; raise ``CheckError`` if not."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


class CheckError(Exception):
    """A target failed its check; the message says what is wrong and how to fix it."""


def error_type(exc: BaseException) -> str:
    """A low-cardinality error.type for a target failure: auth, network, timeout or the class."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | socket.timeout):
        return "timeout"
    name = type(exc).__name__
    lowered = name.lower()
    if "password" in lowered or "authorization" in lowered or "authentication" in lowered:
        return "auth"
    if "querycanceled" in lowered or "timeout" in lowered or "lockNotAvailable".lower() in lowered:
        return "timeout"
    if isinstance(exc, ConnectionError | OSError | EOFError) or "connection" in lowered:
        return "network"
    return name


def describe_error(exc: BaseException) -> str:
    """The first line of an error's message (``timed out`` for a timeout), for logs and
    ``check``; callers scrub secrets from it."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
