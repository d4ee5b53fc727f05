"""Which columns a statement's WHERE clauses compare with values, per table it reads.

    >>> from otelbot.agent.where import filters
    >>> filters("SELECT * FROM public.events e WHERE e.chat_ref = $1 AND e.at > $2")
    [TableFilter(schema='public', table='events', equal=('chat_ref',), range=('at',))]

The input is a statement already stripped of its literals (``otelbot.core.sql.sanitize``:
``?`` for values, ``$n`` kept), so nothing here sees a value. What counts is a top-level
(AND-ed) comparison of a bare column with something that reads no other column: ``=``,
``IN (...)``, ``= ANY(...)`` are equalities; ``<``, ``<=``, ``>``, ``>=``, ``BETWEEN`` ranges.
A column is tied to its table by the table's name or alias, or, unqualified, when the
query block reads a single table; anything less certain is left out (a wrong column in a
suggested index costs more trust than no column). Sub-queries, CTEs and UNIONs are blocks of
their own. ``lower(col) = ?``, ``col <> ?``, ``LIKE``, ``IS NULL`` and ORs over different
columns are not index keys a plain index would serve, so they are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TableFilter", "filters"]


@dataclass(frozen=True)
class TableFilter:
    """The columns one WHERE clause compares with values, for one table it reads."""

    schema: str | None  # as written; None when unqualified
    table: str
    equal: tuple[str, ...]  # col = v, col IN (...), col = ANY (...)
    range: tuple[str, ...]  # col < v, col >= v, col BETWEEN v AND w


_TOKENS = re.compile(
    r"""
      (?P<ident>"(?:[^"]|"")*"?)
    | (?P<value>\$\d+|\?|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
    | (?P<op>[-+*/<>=~!@#%^&|`]+|::)
    | (?P<punct>[().,;\[\]:])
    """,
    re.VERBOSE,
)
_CMP = frozenset({"=", "<", ">", "<=", ">="})
_QUERY = frozenset({"select", "with", "values"})
_SET_OPS = frozenset({"union", "intersect", "except"})
# Where a FROM list or a WHERE clause ends.
_END = frozenset(
    {
        "where",
        "group",
        "order",
        "limit",
        "offset",
        "having",
        "window",
        "returning",
        "for",
        "fetch",
        "on",  # INSERT ... SELECT ... ON CONFLICT
    }
)
_JOIN = frozenset({"join", "inner", "left", "right", "full", "outer", "cross", "natural"})
_NOT_ALIAS = _END | _JOIN | _SET_OPS | {"using", "set", "as", "lateral", "tablesample", "only"}
# Words that are values on their own, never a column (reserved in PostgreSQL).
_CONSTANTS = frozenset(
    {
        "null",
        "true",
        "false",
        "current_date",
        "current_time",
        "current_timestamp",
        "localtime",
        "localtimestamp",
        "current_user",
        "session_user",
        "user",
    }
)
# Words that may stand in a value: those, and keywords of literal syntax and type names
# (``interval ?``, ``? AT TIME ZONE ?``, ``= ANY (...)``).
_VALUE_WORDS = _CONSTANTS | frozenset(
    {
        "interval",
        "array",
        "any",
        "some",
        "all",
        "at",
        "time",
        "zone",
        "with",
        "without",
        "date",
        "timestamp",
        "timestamptz",
    }
)

Token = tuple[str, str]  # (kind, text); words lower-cased, quoted names unquoted


class Group:
    """A parenthesized part of a statement."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Item] = []

    def is_query(self) -> bool:
        first = self.items[0] if self.items else None
        return isinstance(first, tuple) and first[0] == "word" and first[1] in _QUERY


Item = Token | Group


@dataclass
class _Ref:
    schema: str | None
    name: str | None  # None: a sub-query or a function in FROM
    alias: str | None


def filters(statement: str) -> list[TableFilter]:
    """Per query block and table, the columns its WHERE clause compares with values."""
    out: list[TableFilter] = []
    for part in _split(_tree(statement), lambda t: t == ("punct", ";")):
        _statement(part, out)
    return out


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    for m in _TOKENS.finditer(text):
        kind = m.lastgroup or ""
        value = m.group()
        if kind == "word":
            value = value.lower()
        elif kind == "ident":
            value = value[1:].removesuffix('"').replace('""', '"')
        elif (
            kind == "op"
            and len(value) > 1
            and value[-1] in "+-"
            and not any(c in "~!@#%^&|`" for c in value)
        ):
            # PostgreSQL's rule: "<=-" is "<=" then "-" (a sign), unless a custom operator
            head = value.rstrip("+-")
            if head:
                out.append((kind, head))
                value = value[len(head) :]
        out.append((kind, value))
    return out


def _tree(text: str) -> list[Item]:
    root = Group()
    stack = [root]
    for tok in _tokens(text):
        if tok == ("punct", "("):
            group = Group()
            stack[-1].items.append(group)
            stack.append(group)
        elif tok == ("punct", ")"):
            if len(stack) > 1:
                stack.pop()
        else:
            stack[-1].items.append(tok)
    return root.items


def _split(items: list[Item], at: Callable[[Token], bool]) -> list[list[Item]]:
    parts: list[list[Item]] = [[]]
    for it in items:
        if isinstance(it, tuple) and at(it):
            parts.append([])
        else:
            parts[-1].append(it)
    return [p for p in parts if p]


def _is_word(it: Item, *words: str) -> bool:
    return isinstance(it, tuple) and it[0] == "word" and it[1] in words


def _statement(items: list[Item], out: list[TableFilter]) -> None:
    _subqueries(items, out)
    for block in _split(items, lambda t: t[0] == "word" and t[1] in _SET_OPS):
        _block(block, out)


def _subqueries(items: list[Item], out: list[TableFilter]) -> None:
    for it in items:
        if isinstance(it, Group):
            if it.is_query():
                _statement(it.items, out)
            else:
                _subqueries(it.items, out)


def _block(items: list[Item], out: list[TableFilter]) -> None:
    start = next(
        (
            i
            for i, it in enumerate(items)
            if _is_word(it, "select", "update", "delete", "insert", "values")
        ),
        -1,
    )
    if start < 0:
        return
    kind = items[start][1]  # type: ignore[index]
    refs: list[_Ref] = []
    if kind == "insert":
        select = next((i for i in range(start, len(items)) if _is_word(items[i], "select")), -1)
        if select < 0:
            return
        start, kind = select, "select"
    # FROM / USING come before WHERE (which may hold IS DISTINCT FROM)
    where = _find(items, start + 1, ("where",))
    head = items[:where] if where >= 0 else items
    if kind == "select":
        frm = _find(head, start + 1, ("from",))
        if frm < 0:
            return
        refs = _from_list(head, frm + 1)
    elif kind == "update":
        ref, i = _table_ref(head, start + 1)
        if ref is None:
            return
        refs = [ref]
        frm = _find(head, i, ("from",))
        if frm >= 0:
            refs += _from_list(head, frm + 1)
    elif kind == "delete":
        frm = _find(head, start + 1, ("from",))
        if frm < 0:
            return
        ref, i = _table_ref(head, frm + 1)
        if ref is None:
            return
        refs = [ref]
        using = _find(head, i, ("using",))
        if using >= 0:
            refs += _from_list(head, using + 1)
    else:
        return
    if where < 0:
        return
    end = next(
        (i for i in range(where + 1, len(items)) if _is_word(items[i], *_END, *_SET_OPS)),
        len(items),
    )
    found: dict[int, tuple[list[str], list[str]]] = {}
    for conjunct in _conjuncts(items[where + 1 : end]):
        pred = _predicate(conjunct)
        if pred is None:
            continue
        parts, equal = pred
        owner = _owner(parts, refs)
        if owner is None:
            continue
        eq, rg = found.setdefault(owner, ([], []))
        column = parts[-1]
        target = eq if equal else rg
        if column not in target:
            target.append(column)
    for index, (eq, rg) in found.items():
        ref = refs[index]
        assert ref.name is not None
        rg = [c for c in rg if c not in eq]
        out.append(TableFilter(ref.schema, ref.name, tuple(eq), tuple(rg)))


def _find(items: list[Item], start: int, words: tuple[str, ...]) -> int:
    for i in range(start, len(items)):
        if _is_word(items[i], *words):
            return i
    return -1


def _name(items: list[Item], i: int) -> tuple[list[str], int]:
    """A dotted name starting at ``i``: its parts and the index after it."""
    parts: list[str] = []
    while i < len(items):
        it = items[i]
        if not (isinstance(it, tuple) and it[0] in ("word", "ident")):
            break
        parts.append(it[1])
        i += 1
        if i + 1 < len(items) and items[i] == ("punct", "."):
            i += 1
            continue
        break
    return parts, i


def _table_ref(items: list[Item], i: int) -> tuple[_Ref | None, int]:
    """One FROM item at ``i``: a table (or a sub-query / function) with its alias."""
    while i < len(items) and _is_word(items[i], "only", "lateral"):
        i += 1
    if i >= len(items):
        return None, i
    ref: _Ref
    if isinstance(items[i], Group):
        ref, i = _Ref(None, None, None), i + 1
    else:
        parts, i = _name(items, i)
        if not parts:
            return None, i
        if i < len(items) and isinstance(items[i], Group):  # a function: generate_series(...)
            ref, i = _Ref(None, None, None), i + 1
        else:
            schema = parts[-2] if len(parts) >= 2 else None
            ref = _Ref(schema, parts[-1], None)
    if i < len(items) and items[i] == ("op", "*"):  # FROM ONLY t *
        i += 1
    if i < len(items) and _is_word(items[i], "as"):
        i += 1
    it = items[i] if i < len(items) else None
    if isinstance(it, tuple) and (
        it[0] == "ident" or (it[0] == "word" and it[1] not in _NOT_ALIAS)
    ):
        ref.alias = it[1]
        i += 1
        if i < len(items) and isinstance(items[i], Group):  # column aliases
            i += 1
    return ref, i


def _from_list(items: list[Item], i: int) -> list[_Ref]:
    refs: list[_Ref] = []
    expect = True
    while i < len(items):
        it = items[i]
        if _is_word(it, *_END, *_SET_OPS, "set"):
            if _is_word(it, "on") and refs:
                i = _skip_condition(items, i + 1)
                continue
            break
        if _is_word(it, *_JOIN) or it == ("punct", ","):
            expect = True
            i += 1
        elif _is_word(it, "using"):
            i += 2  # USING (columns)
        elif expect:
            ref, i = _table_ref(items, i)
            if ref is None:
                break
            refs.append(ref)
            expect = False
        else:
            i += 1
    return refs


def _skip_condition(items: list[Item], i: int) -> int:
    """Past a join's ON condition: to the next join, comma or clause."""
    while i < len(items):
        it = items[i]
        if it == ("punct", ",") or _is_word(it, *_JOIN, *_END, *_SET_OPS):
            break
        i += 1
    return i


def _conjuncts(items: list[Item]) -> list[list[Item]]:
    """The AND-ed parts of a condition; the AND of BETWEEN does not split, and a
    parenthesized AND (not a sub-query) is opened."""
    parts: list[list[Item]] = [[]]
    between = False
    for it in items:
        if _is_word(it, "between"):
            between = True
        elif _is_word(it, "and"):
            if between:
                between = False
            else:
                parts.append([])
                continue
        parts[-1].append(it)
    out: list[list[Item]] = []
    for part in parts:
        only = part[0] if len(part) == 1 else None
        if isinstance(only, Group) and not only.is_query():
            out += _conjuncts(only.items)
        elif part:
            out.append(part)
    return out


def _predicate(items: list[Item]) -> tuple[list[str], bool] | None:
    """``(column name parts, is equality)`` for a column compared with a value."""
    branches = _split(items, lambda t: t == ("word", "or"))
    if len(branches) > 1:
        # col = ? OR col = ?: an equality on col; ORs over different columns are not
        preds = [_predicate(b) for b in branches]
        first = preds[0]
        if first is not None and all(p == first for p in preds) and first[1]:
            return first
        return None
    only = items[0] if len(items) == 1 else None
    if isinstance(only, Group) and not only.is_query():
        return _predicate(only.items)
    for i, it in enumerate(items):
        if not isinstance(it, tuple):
            continue
        kind, text = it
        if kind == "op" and text in _CMP:
            left, right = items[:i], items[i + 1 :]
            equal = text == "="
            if equal and right and _is_word(right[0], "any", "some"):
                right = right[1:]
            parts = _column(left)
            if parts is not None and _is_value(right):
                return parts, equal
            parts = _column(right)
            if parts is not None and _is_value(left):
                return parts, equal
            return None
        if kind == "word" and text == "between":
            rest = [x for x in items[i + 1 :] if not _is_word(x, "and", "symmetric")]
            parts = _column(items[:i])
            return (parts, False) if parts is not None and _is_value(rest) else None
        if kind == "word" and text == "in":
            parts = _column(items[:i])
            rest = items[i + 1 :]
            if parts is not None and len(rest) == 1 and _is_value(rest):
                return parts, True
            return None
        if kind == "word" and text in ("not", "is", "like", "ilike", "similar", "overlaps"):
            return None
        if kind == "op" and text in ("<>", "!="):
            return None
    return None


def _column(items: list[Item]) -> list[str] | None:
    """The parts of a bare column reference (``col``, ``t.col``, ``s.t.col``), else None."""
    parts, end = _name(items, 0)
    if not parts or end != len(items) or len(parts) > 3:
        return None
    first = items[0]
    if (
        isinstance(first, tuple)
        and first[0] == "word"
        and len(parts) == 1
        and first[1] in _CONSTANTS
    ):
        return None
    return parts


def _is_value(items: list[Item]) -> bool:
    """Reads no column: parameters, literals, operators, casts, function calls,
    sub-queries."""
    if not items:
        return False
    i = 0
    while i < len(items):
        it = items[i]
        nxt = items[i + 1] if i + 1 < len(items) else None
        if isinstance(it, Group):
            if not (it.is_query() or _is_value(it.items)):
                return False
        elif it[0] in ("word", "ident"):
            if isinstance(nxt, Group):  # a function call: now(), lower(?), ARRAY(...)
                i += 2
                continue
            if not (it[0] == "word" and it[1] in _VALUE_WORDS):
                return False
        elif it == ("op", "::"):  # a cast: skip the type name
            i += 1
            while i < len(items) and (
                isinstance(items[i], Group)
                or items[i][0] in ("word", "ident")  # type: ignore[index]
                or items[i] in (("punct", "["), ("punct", "]"), ("punct", "."))
            ):
                i += 1
            continue
        i += 1
    return True


def _owner(parts: list[str], refs: list[_Ref]) -> int | None:
    """The index of the FROM item a column belongs to, when that is certain."""
    if len(parts) == 1:
        if len(refs) == 1 and refs[0].name is not None:
            return 0
        return None
    qualifier = parts[-2]
    schema = parts[-3] if len(parts) == 3 else None
    matches = [
        i
        for i, r in enumerate(refs)
        if r.name is not None
        and (
            (schema is None and r.alias == qualifier)
            or (
                r.alias is None
                and r.name == qualifier
                and (schema is None or r.schema in (None, schema))
            )
        )
    ]
    return matches[0] if len(matches) == 1 else None
