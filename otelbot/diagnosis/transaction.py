"""Transactions held open across a wait that is not the database's: between BEGIN and
COMMIT/ROLLBACK on one connection the handler awaited a Bot API call, another HTTP
call, or spent more than ``OTELBOT_TRANSACTION_IDLE_MS`` without a statement on that
connection. Meanwhile the transaction keeps its locks and its pool connection.

asyncpg's ``conn.transaction()`` sends BEGIN and COMMIT through ``Connection.execute``,
so they are noted like any statement. A call counts only when it lies wholly between two
statements of the transaction (one running alongside it, under ``asyncio.gather``, does
not keep it open).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from otelbot import semconv
from otelbot.core import config
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import API, HTTP, SQL, Op, UpdateNotes
from otelbot.diagnosis.report import Finding

_SETTING = "OTELBOT_TRANSACTION_IDLE_MS"
_DEFAULT_MS = 100.0

_BEGIN = frozenset(("BEGIN", "START"))
_END = frozenset(("COMMIT", "END", "ROLLBACK", "ABORT"))

_SUGGESTION = (
    "finish the transaction before calling Telegram or another service: do the database "
    "work, COMMIT, then send (or call first and open the transaction with the answer); "
    "a transaction open across a network call holds its locks and its pool connection "
    "for as long as the call takes"
)
_IDLE_SUGGESTION = (
    "keep only database work between BEGIN and COMMIT: move what the handler waits for "
    "(other services, computation, sleeps) before BEGIN or after COMMIT"
)


class _Transaction:
    """One transaction on one connection: its BEGIN and the statements since."""

    __slots__ = ("begin", "gaps", "last_end", "table")

    def __init__(self, begin: Op) -> None:
        self.begin = begin
        self.last_end = begin.end
        self.gaps: list[tuple[float, float]] = []  # between consecutive statements
        self.table: str | None = None

    def statement(self, op: Op) -> None:
        if op.start > self.last_end:
            self.gaps.append((self.last_end, op.start))
        self.last_end = max(self.last_end, op.end)
        if self.table is None and op.extra[2]:
            self.table = op.extra[2]


class _Held:
    """A closed transaction and what it waited for."""

    __slots__ = ("awaited", "ending", "held", "idle", "table")

    def __init__(self, held: float, ending: str, table: str | None) -> None:
        self.held = held
        self.ending = ending  # COMMIT, ROLLBACK, ...
        self.table = table
        self.idle = 0.0  # longest gap without a statement and without a call in it
        self.awaited: dict[tuple[str, str], list[float]] = {}  # (kind, name) -> durations


class TransactionsHeldOpen(Detector):
    event = semconv.EVENT_TRANSACTION_HELD_OPEN

    def __init__(self) -> None:
        self.idle = config.number(_SETTING, _DEFAULT_MS, minimum=1.0) / 1000.0

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        closed = _transactions(update.ops)
        if not closed:
            return
        waits = sorted(
            (op for op in update.ops if op.kind == API or op.kind == HTTP),
            key=lambda op: op.start,
        )
        starts = [op.start for op in waits]
        worst: dict[str, _Held] = {}  # object -> the longest-held example
        for tx, end in closed:
            held = _Held(end.end - tx.begin.start, end.extra[1], tx.table)
            for gap_start, gap_end in tx.gaps:
                covered = False
                for op in waits[bisect_left(starts, gap_start) :]:
                    if op.start >= gap_end:
                        break
                    if op.end <= gap_end:
                        held.awaited.setdefault((op.kind, op.shape), []).append(op.end - op.start)
                        covered = True
                if not covered:
                    held.idle = max(held.idle, gap_end - gap_start)
            if not held.awaited and held.idle <= self.idle:
                continue
            key = _object(held.awaited, held.idle > self.idle)
            if key not in worst or worst[key].held < held.held:
                worst[key] = held
        for key, held in worst.items():
            found(self._finding(update, key, held))

    def _finding(self, update: UpdateNotes, key: str, held: _Held) -> Finding:
        parts = []
        for (kind, name), durations in held.awaited.items():
            what = "Bot API call" if kind == API else "HTTP call"
            parts.append(f"{len(durations)} {what}(s) {name} ({sum(durations) * 1000:.1f} ms)")
        if held.idle > self.idle:
            parts.append(f"{held.idle * 1000:.0f} ms without database work")
        evidence = (
            f"a transaction was held open {held.held * 1000:.1f} ms (BEGIN to "
            f"{held.ending}) while the handler awaited " + ", ".join(parts)
        )
        attributes: dict[str, object] = {semconv.DB_SYSTEM_NAME: semconv.DB_SYSTEM_POSTGRESQL}
        if held.table:
            attributes[semconv.DB_COLLECTION_NAME] = held.table
        methods = sorted(name for kind, name in held.awaited if kind == API)
        if len(methods) == 1:
            attributes[semconv.TELEGRAM_API_METHOD] = methods[0]
        return Finding(
            self.event,
            update.handler,
            key,
            f"{update.handler} holds a database transaction open while it waits for "
            f"{_waited_for(held.awaited, held.idle > self.idle)}:",
            evidence,
            _SUGGESTION if held.awaited else _IDLE_SUGGESTION,
            code=update.handler_code,
            attributes=attributes,
        )


def _transactions(ops: Iterable[Op]) -> list[tuple[_Transaction, Op]]:
    """Every transaction begun and ended within ``ops``, with its ending statement."""
    open_: dict[int, _Transaction] = {}
    closed: list[tuple[_Transaction, Op]] = []
    for op in ops:
        if op.kind != SQL or not op.extra:
            continue
        connection, operation = op.extra[0], op.extra[1]
        tx = open_.get(connection)
        if tx is None:
            if operation in _BEGIN:
                open_[connection] = _Transaction(op)
            continue
        tx.statement(op)
        if operation in _END and not _to_savepoint(operation, op.shape):
            del open_[connection]
            closed.append((tx, op))
    return closed


def _to_savepoint(operation: str, shape: str) -> bool:
    """ROLLBACK TO SAVEPOINT ends a nested block, not the transaction."""
    return operation == "ROLLBACK" and shape[8:].lstrip().upper().startswith("TO ")


def _object(awaited: dict[tuple[str, str], list[float]], idle: bool) -> str:
    """What the finding is about: the calls awaited (sorted), or the idle wait."""
    names = sorted({name for _kind, name in awaited})
    if idle and not names:
        return "idle"
    return ", ".join(names)


def _waited_for(awaited: dict[tuple[str, str], list[float]], idle: bool) -> str:
    kinds = {kind for kind, _name in awaited}
    words = []
    if API in kinds:
        words.append("Telegram")
    if HTTP in kinds:
        words.append("another HTTP service")
    if idle and not words:
        words.append("something other than the database")
    return " and ".join(words)
