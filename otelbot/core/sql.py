"""SQL text for telemetry: literals out, operation and table in.

    >>> from otelbot.core.sql import summarize, sanitize
    >>> sanitize("SELECT * FROM users WHERE id = $1 AND name = 'bob' LIMIT 10")
    'SELECT * FROM users WHERE id = $1 AND name = ? LIMIT ?'
    >>> shape = summarize("insert into public.orders (id, total) values ($1, 9.5)")
    >>> shape.operation, shape.collection, shape.span_name
    ('INSERT', 'public.orders', 'INSERT public.orders')

What is recorded is the query as written with its ``$n`` placeholders kept; quoted
strings, dollar-quoted strings and numbers become ``?`` and comments are dropped (they
can hold anything, sqlcommenter tags included). The work is a single regex pass; callers
on a hot path cache the result per query string.

PostgreSQL error messages quote the offending value (``invalid input syntax for type
integer: "abc"``); :func:`sanitize_error_message` replaces quoted parts by ``?``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["QueryShape", "sanitize", "sanitize_error_message", "summarize"]

# One alternation, tried left to right at each position. Strings and comments come first
# so that nothing inside them is seen as a word or a number; a string or comment left
# open at the end of the text runs to the end (nothing of it leaks).
_TOKENS = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<ident>"(?:[^"]|"")*(?:"|\Z))
    | (?P<string>
          [eE]'(?:[^'\\]|\\.|'')*(?:'|\Z)
        | (?:[bBxXnN]|[uU]&)?'(?:[^']|'')*(?:'|\Z)
        | \$\$.*?(?:\$\$|\Z)
        | \$(?P<tag>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)\$
          .*?(?:\$(?P=tag)\$|\Z)
      )
    | (?P<param>\$\d+)
    | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
    | (?P<number>0[xX][0-9A-Fa-f_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<punct>[().,;])
    """,
    re.VERBOSE | re.DOTALL,
)

_ERROR_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
# asyncpg's own encoding errors name the argument and show its repr:
#   invalid input for query argument $1: 'abc' (an integer is required ...)
_ERROR_ARGUMENT = re.compile(r"(query argument \$\d+: ).*?( \(|$)", re.DOTALL)

# Statements whose table comes right after a keyword sequence.
_AFTER = {
    "INSERT": ("INTO",),
    "DELETE": ("FROM",),
    "MERGE": ("INTO",),
}
# Words that may sit between the keyword and the table name.
_SKIP_BEFORE_TABLE = frozenset(
    {
        "ONLY",
        "TABLE",
        "IF",
        "NOT",
        "EXISTS",
        "UNLOGGED",
        "TEMP",
        "TEMPORARY",
        "LOCAL",
        "GLOBAL",
        "CONCURRENTLY",
    }
)
_DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"})


@dataclass(frozen=True)
class QueryShape:
    """What telemetry records about one query: never its values."""

    operation: str | None  # "SELECT", "INSERT", ... (upper case)
    collection: str | None  # the first table, as written ("public.users", '"Users"')
    text: str  # the sanitized query text

    @property
    def span_name(self) -> str:
        """``{operation} {table}``, ``{operation}`` alone, or ``postgresql`` for neither."""
        if self.operation is None:
            return "postgresql"
        if self.collection is None:
            return self.operation
        return self.operation + " " + self.collection


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "string" or kind == "number":
        return "?"
    if kind == "comment":
        return ""
    return match.group()


def sanitize(query: str) -> str:
    """The query with literals replaced by ``?`` and comments removed; ``$n`` kept."""
    return _TOKENS.sub(_replace, query).strip()


def sanitize_error_message(message: str) -> str:
    """An error message with the values it quotes replaced by ``?``.

    Pass the primary message only: a PostgreSQL error's DETAIL (``Key (id)=(1) already
    exists``, ``Failing row contains (...)``) holds row values unquoted.
    """
    if "query argument $" in message:
        message = _ERROR_ARGUMENT.sub(r"\1?\2", message)
    if '"' not in message and "'" not in message:
        return message
    return _ERROR_QUOTED.sub("?", message)


# ----------------------------------------------------------------------------- summarize


def _name_at(
    tokens: list[tuple[str, str]], raw: list[str], i: int, from_clause: bool
) -> str | None:
    """A possibly schema-qualified name starting at ``i``, as written; None for a
    sub-query or, in a FROM clause, a function call."""
    if i >= len(tokens) or tokens[i][0] not in ("word", "ident"):
        return None
    parts = [raw[i]]
    i += 1
    while (
        i + 1 < len(tokens)
        and tokens[i] == ("punct", ".")
        and tokens[i + 1][0] in ("word", "ident")
    ):
        parts.append(raw[i + 1])
        i += 2
    if from_clause and i < len(tokens) and tokens[i] == ("punct", "("):
        return None  # FROM generate_series(1, 3)
    return ".".join(parts)


def _table_after(
    tokens: list[tuple[str, str]], raw: list[str], i: int, from_clause: bool = False
) -> str | None:
    while i < len(tokens) and tokens[i][0] == "word" and tokens[i][1] in _SKIP_BEFORE_TABLE:
        i += 1
    return _name_at(tokens, raw, i, from_clause)


def _find_at_depth0(
    tokens: list[tuple[str, str]], start: int, words: frozenset[str] | tuple[str, ...]
) -> int:
    depth = 0
    for i in range(start, len(tokens)):
        kind, text = tokens[i]
        if kind == "punct":
            if text == "(":
                depth += 1
            elif text == ")":
                depth -= 1
            elif text == ";" and depth == 0:
                return -1
        elif kind == "word" and depth == 0 and text in words:
            return i
    return -1


def _collection(tokens: list[tuple[str, str]], raw: list[str], op: str, i: int) -> str | None:
    """The table of the statement whose operation word is at ``i``."""
    if op == "SELECT":
        j = _find_at_depth0(tokens, i + 1, ("FROM",))
        return None if j < 0 else _table_after(tokens, raw, j + 1, from_clause=True)
    if op in _AFTER:
        j = _find_at_depth0(tokens, i + 1, _AFTER[op])
        return None if j < 0 else _table_after(tokens, raw, j + 1)
    if op in ("UPDATE", "COPY", "TRUNCATE", "TABLE", "LOCK", "VACUUM", "ANALYZE"):
        return _table_after(tokens, raw, i + 1)
    if op in ("CREATE", "DROP", "ALTER"):
        j = i + 1
        while j < len(tokens) and tokens[j][0] == "word" and tokens[j][1] in _SKIP_BEFORE_TABLE:
            if tokens[j][1] == "TABLE":
                return _table_after(tokens, raw, j + 1)
            j += 1
        k = _find_at_depth0(tokens, i + 1, ("INDEX",))
        if k >= 0:  # CREATE [UNIQUE] INDEX ... ON table
            on = _find_at_depth0(tokens, k + 1, ("ON",))
            return None if on < 0 else _table_after(tokens, raw, on + 1)
    return None


def summarize(query: str) -> QueryShape:
    """Operation, first table and sanitized text of a query (the first statement's)."""
    text = sanitize(query)
    matches = [m for m in _TOKENS.finditer(query) if m.lastgroup != "comment"]
    # Keywords are matched upper-cased; names are reported as written (``raw``).
    raw = [m.group() for m in matches]
    pairs = [
        (kind, m.group().upper() if kind == "word" else m.group())
        for m in matches
        for kind in (m.lastgroup or "",)
    ]
    i = 0
    while i < len(pairs) and pairs[i] == ("punct", "("):
        i += 1  # (SELECT ...) UNION (SELECT ...)
    if i >= len(pairs) or pairs[i][0] != "word":
        return QueryShape(None, None, text)
    op = pairs[i][1]
    if op == "WITH":
        main = _find_at_depth0(pairs, i + 1, _DML)
        if main < 0:
            return QueryShape(op, None, text)
        i, op = main, pairs[main][1]
    elif op == "EXPLAIN":
        inner = _find_at_depth0(pairs, i + 1, _DML | {"WITH"})
        if inner >= 0 and pairs[inner][1] == "WITH":
            inner = _find_at_depth0(pairs, inner + 1, _DML)
        table = None if inner < 0 else _collection(pairs, raw, pairs[inner][1], inner)
        return QueryShape(op, table, text)
    return QueryShape(op, _collection(pairs, raw, op, i), text)
