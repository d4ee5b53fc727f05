"""The column(s) a missing index should have, from the statements that filter the table.

    >>> from otelbot.agent.index_columns import Statement, TableColumns, choose, normalize
    >>> st = Statement.parse(normalize("SELECT * FROM events WHERE chat_ref = 'x'"), 6)
    >>> table = TableColumns("public", "events", {"id": "id", "chat_ref": "chat_ref"})
    >>> choose(table, [st], "pg_stat_statements").columns
    ('chat_ref',)

Statements come from ``pg_stat_statements`` (weight: calls) or, without it, from what the
agent saw in ``pg_stat_activity`` across polls (weight: times seen), kept in
:class:`SeenStatements`, a bounded memory per table name. Texts are normalized on arrival
(literals out, ``otelbot.core.sql.sanitize``), so no value is ever stored or reported.

The choice: only columns the catalog says the table has and that lead no valid index
count. The leading column is the one filtered by the most weight (calls or sightings);
ties go to an equality over a range (a btree serves the columns after a range poorly),
then to the more selective column (more distinct values, from ``pg_stats`` when the agent
may read it). The heaviest statement filtering
that column decides the rest: its other equality columns (most distinct first) and then
one range column join the index when they are AND-ed with it in the same WHERE clause,
so one index serves that statement whole and, by its leading column, the others.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from otelbot.agent.where import TableFilter, filters
from otelbot.core.sql import sanitize

__all__ = ["IndexChoice", "SeenStatements", "Statement", "TableColumns", "choose", "normalize"]

MAX_TEXT = 1000  # characters of a statement kept and reported
MAX_COLUMNS = 3  # columns in a suggested index

_IN_LIST = re.compile(r"\bIN\s*\(\s*\?(?:\s*,\s*\?)+\s*\)", re.IGNORECASE)


def normalize(query: str) -> str:
    """A statement without literals or comments, on one line, ``IN (?, ?, ?)`` as ``IN (?)``
    (one entry however long the list)."""
    text = " ".join(sanitize(query).split())
    return _IN_LIST.sub("IN (?)", text)[:MAX_TEXT]


@dataclass(frozen=True)
class Statement:
    text: str  # normalized
    weight: int  # calls, or times seen
    filters: tuple[TableFilter, ...]

    @classmethod
    def parse(cls, text: str, weight: int) -> Statement:
        return cls(text, weight, tuple(filters(text)))


@dataclass(frozen=True)
class TableColumns:
    """What the catalog says about a table."""

    schema: str
    table: str
    columns: Mapping[str, str]  # name -> quoted for SQL
    distinct: Mapping[str, float] = field(default_factory=dict)  # estimated distinct values
    indexed: frozenset[str] = frozenset()  # columns that lead a valid index


@dataclass(frozen=True)
class IndexChoice:
    columns: tuple[str, ...]
    quoted: tuple[str, ...]
    statement: str  # the heaviest statement the index serves, normalized
    reason: str  # why these columns, for the evidence


@dataclass
class _Use:
    statement: Statement
    equal: list[str]
    range: list[str]


def _uses(table: TableColumns, statements: Iterable[Statement]) -> list[_Use]:
    uses: list[_Use] = []
    for st in statements:
        for f in st.filters:
            if f.table != table.table or f.schema not in (None, table.schema):
                continue
            eq = [c for c in f.equal if c in table.columns and c not in table.indexed]
            rg = [
                c for c in f.range if c in table.columns and c not in table.indexed and c not in eq
            ]
            if eq or rg:
                uses.append(_Use(st, eq, rg))
    return uses


def _amount(weight: int, source: str) -> str:
    if source == "pg_stat_statements":
        return f"{weight} call{'s' if weight != 1 else ''}"
    return f"seen {weight} time{'s' if weight != 1 else ''}"


def choose(table: TableColumns, statements: Iterable[Statement], source: str) -> IndexChoice | None:
    """The index columns for ``table``, or None when no statement filters it on a column
    that could use one. ``source`` names where the statements came from."""
    uses = _uses(table, statements)
    if not uses:
        return None
    weight: dict[str, int] = {}
    equal: set[str] = set()
    counted: set[tuple[str, str]] = set()
    for u in uses:
        equal.update(u.equal)
        for c in (*u.equal, *u.range):
            if (c, u.statement.text) not in counted:  # a statement counts once per column
                counted.add((c, u.statement.text))
                weight[c] = weight.get(c, 0) + u.statement.weight

    def rank(c: str) -> tuple[int, bool, float, str]:
        # distinct values say how selective an equality is, not a range
        return (weight[c], c in equal, table.distinct.get(c, 0.0), c)

    ranked = sorted(weight, key=rank, reverse=True)
    lead = ranked[0]
    top = max(
        (u for u in uses if lead in u.equal or lead in u.range),
        key=lambda u: (u.statement.weight, len(u.equal) + len(u.range)),
    )
    columns = [lead]
    if lead in top.equal:
        others = [c for c in top.equal if c != lead]
        others.sort(key=lambda c: table.distinct.get(c, 0.0), reverse=True)  # stable
        columns += others
        if top.range:
            columns.append(top.range[0])
    columns = columns[:MAX_COLUMNS]

    n = len({u.statement.text for u in uses if lead in u.equal or lead in u.range})
    reason = (
        f"{lead} is compared with a value in the WHERE clause of {n} statement"
        f"{'s' if n != 1 else ''} seen in {source} ({_amount(weight[lead], source)}) "
        "and leads no index"
    )
    if len(columns) > 1:
        reason += (
            f"; {' and '.join(columns[1:])} {'is' if len(columns) == 2 else 'are'} AND-ed "
            f"with it in the same WHERE clause of the busiest of them, so one index on "
            f"({', '.join(columns)}) serves that statement whole"
        )
    rivals = [c for c in ranked[1:] if c not in columns]
    if rivals:
        rival = rivals[0]
        if weight[lead] > weight[rival]:
            why = "filtered more often"
        elif lead in equal and rival not in equal:
            why = "compared for equality, not a range"
        elif table.distinct.get(lead, 0.0) > table.distinct.get(rival, 0.0):
            why = (
                f"more selective: about {table.distinct[lead]:.0f} distinct values against "
                f"{table.distinct.get(rival, 0.0):.0f}"
            )
        else:
            why = "as often and as selective; the first by name"
        reason += f"; chosen over {rival} ({_amount(weight[rival], source)}): {why}"
    return IndexChoice(
        tuple(columns), tuple(table.columns[c] for c in columns), top.statement.text, reason
    )


class SeenStatements:
    """Statements seen in ``pg_stat_activity``, normalized, counted, per table name.

    Bounded: ``tables`` table names, ``per_table`` statements each, the least recently
    seen dropped first. A session's statement counts once per run: again when it is still
    active at the next poll (a long statement weighs more), not while the session sits idle
    showing its last statement.
    """

    def __init__(self, tables: int = 256, per_table: int = 16) -> None:
        self._max_tables = tables
        self._max_per_table = per_table
        # table name -> normalized text -> (times seen, parsed statement)
        self._by_table: OrderedDict[str, OrderedDict[str, Statement]] = OrderedDict()
        self._runs: dict[int, float | None] = {}  # pid -> query_start at the last poll

    def observe_sessions(self, sessions: Iterable[tuple[int, float | None, bool, str]]) -> None:
        """One poll of ``(pid, query_start, active, query)``."""
        runs: dict[int, float | None] = {}
        for pid, started, active, query in sessions:
            runs[pid] = started
            if active or pid not in self._runs or self._runs[pid] != started:
                self.observe(query)
        self._runs = runs

    def observe(self, query: str) -> None:
        text = normalize(query)
        if "where" not in text.lower():
            return
        parsed = Statement.parse(text, 1)
        for name in {f.table for f in parsed.filters}:
            per = self._by_table.get(name)
            if per is None:
                per = self._by_table[name] = OrderedDict()
                if len(self._by_table) > self._max_tables:
                    self._by_table.popitem(last=False)
            else:
                self._by_table.move_to_end(name)
            known = per.get(text)
            per[text] = (
                parsed if known is None else Statement(text, known.weight + 1, known.filters)
            )
            per.move_to_end(text)
            if len(per) > self._max_per_table:
                per.popitem(last=False)

    def statements(self, table: str) -> list[Statement]:
        """What was seen filtering a table of this name (any schema)."""
        return list(self._by_table.get(table, {}).values())
