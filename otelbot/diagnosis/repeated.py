"""Repeated statements (N+1): the same SQL statement, Redis command or Bot API method
issued at least ``OTELBOT_N_PLUS_ONE_MIN`` times in one update, usually from a loop.

The line of the bot's code is looked up by :func:`otelbot.diagnosis.notes.note` when a
shape's count reaches the threshold (once per shape and update), so nothing is walked
for an update that never repeats itself.
"""

from __future__ import annotations

from otelbot import semconv
from otelbot.core import config
from otelbot.diagnosis import notes
from otelbot.diagnosis.engine import Detector, Found
from otelbot.diagnosis.notes import API, REDIS, SQL, UpdateNotes
from otelbot.diagnosis.report import Finding

_SETTING = "OTELBOT_N_PLUS_ONE_MIN"
_DEFAULT = 5

_WHAT = {SQL: "SQL statement", REDIS: "Redis command", API: "Bot API call"}

# Transaction control repeats with every transaction; the statements inside are what count.
_TRANSACTION_CONTROL = frozenset(
    ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE")
)

_SQL_SUGGESTION = {
    "INSERT": "insert the rows with one statement (`executemany`, `copy_records_to_table`, or "
    "`INSERT ... SELECT * FROM unnest($1, $2)`) instead of one INSERT per item",
    "UPDATE": "change every item with one statement (`WHERE id = ANY($1)`, or "
    "`UPDATE ... FROM unnest($1, $2)`) instead of one UPDATE per item",
    "DELETE": "delete every item with one statement (`WHERE id = ANY($1)`) instead of one "
    "DELETE per item",
}
_SUGGESTION = {
    SQL: "fetch the rows with one query (`WHERE id = ANY($1)` with the list of ids, or a "
    "JOIN) instead of one query per item",
    REDIS: "read the keys in one round trip (MGET / HMGET) or send the loop's commands "
    "in one pipeline",
    API: "make the calls through a queue that keeps to Telegram's rate limits (about 1 message per "
    "second per chat, 30 per second overall) instead of a loop of calls in one update",
}
_PIPELINE_SUGGESTION = "queue the whole loop's commands in one pipeline instead of one per item"


class _Repeat:
    __slots__ = ("count", "operation", "seconds", "table")

    def __init__(self, operation: str, table: str | None) -> None:
        self.count = 0
        self.seconds = 0.0
        self.operation = operation
        self.table = table


class RepeatedStatements(Detector):
    event = semconv.EVENT_N_PLUS_ONE

    def __init__(self) -> None:
        self.minimum = int(config.number(_SETTING, _DEFAULT, minimum=2))
        notes.repeat_threshold = self.minimum
        self.with_text = config.capture_query_text()

    def on_update(self, update: UpdateNotes, found: Found) -> None:
        repeated = update.repeated_at
        if not repeated:  # no shape reached the threshold: the usual case, nothing to do
            return
        seen: dict[tuple[str, str], _Repeat] = {}
        for op in update.ops:
            if op.shape not in repeated or op.kind not in _WHAT:
                continue
            if op.kind == SQL and op.extra and op.extra[1] in _TRANSACTION_CONTROL:
                continue
            entry = seen.get((op.kind, op.shape))
            if entry is None:
                sql = op.extra if op.kind == SQL and op.extra else ("", "", None)
                entry = seen[(op.kind, op.shape)] = _Repeat(sql[1], sql[2])
            entry.count += 1
            entry.seconds += op.end - op.start
        for (kind, shape), entry in seen.items():
            if entry.count >= self.minimum:
                found(self._finding(update, kind, shape, entry))

    def _finding(self, update: UpdateNotes, kind: str, shape: str, entry: _Repeat) -> Finding:
        duration = update.duration
        seconds = entry.seconds
        share = min(seconds / duration, 1.0) if duration > 0 else 1.0
        evidence = (
            f"{entry.count} times in one update, {seconds * 1000:.1f} ms in total: "
            f"{share:.0%} of the update's {duration * 1000:.1f} ms"
        )
        attributes: dict[str, object] = {}
        if kind == SQL:
            if self.with_text:
                attributes[semconv.DB_QUERY_TEXT] = shape
            if entry.table:
                attributes[semconv.DB_COLLECTION_NAME] = entry.table
            attributes[semconv.DB_SYSTEM_NAME] = semconv.DB_SYSTEM_POSTGRESQL
        elif kind == REDIS:
            attributes[semconv.DB_SYSTEM_NAME] = semconv.DB_SYSTEM_REDIS
            if self.with_text:
                attributes[semconv.DB_QUERY_TEXT] = shape
        else:
            attributes[semconv.TELEGRAM_API_METHOD] = shape
        if kind == REDIS and shape == semconv.SPAN_REDIS_PIPELINE:
            suggestion = _PIPELINE_SUGGESTION
        elif kind == SQL:
            suggestion = _SQL_SUGGESTION.get(entry.operation, _SUGGESTION[SQL])
        else:
            suggestion = _SUGGESTION[kind]
        return Finding(
            self.event,
            update.handler,
            shape,
            f"{update.handler} repeats the {_WHAT[kind]} `{shape}`:",
            evidence,
            suggestion,
            code=update.repeated_at.get(shape) or update.handler_code,
            attributes=attributes,
        )
