"""Reading WHERE clauses for the missing-index column, and choosing the column: the
statement shapes bots write (asyncpg ``$n``, ORMs' aliases, ``ANY``, ``IN``), and the ones
that must not yield a column."""

from __future__ import annotations

import pytest

from otelbot.agent.index_columns import (
    SeenStatements,
    Statement,
    TableColumns,
    choose,
    normalize,
)
from otelbot.agent.where import TableFilter, filters


def cols(statement: str) -> list[tuple[str | None, str, tuple[str, ...], tuple[str, ...]]]:
    return [(f.schema, f.table, f.equal, f.range) for f in filters(normalize(statement))]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM events WHERE chat_ref = $1", [(None, "events", ("chat_ref",), ())]),
        (
            "select id from public.events e where e.chat_ref = $1 and e.created_at >= $2",
            [("public", "events", ("chat_ref",), ("created_at",))],
        ),
        (
            "SELECT * FROM events AS ev WHERE ev.kind = ANY($1::int[]) AND $2 > ev.at",
            [(None, "events", ("kind",), ("at",))],
        ),
        (
            "SELECT * FROM events WHERE events.kind IN (1, 2, 3) AND at BETWEEN $1 AND $2",
            [(None, "events", ("kind",), ("at",))],
        ),
        (
            "SELECT * FROM public.events WHERE public.events.chat_ref = 'x'",
            [("public", "events", ("chat_ref",), ())],
        ),
        (
            'SELECT * FROM "Events" WHERE "ChatRef" = $1',
            [(None, "Events", ("ChatRef",), ())],
        ),
        (
            "UPDATE events SET seen = true WHERE chat_ref = $1 RETURNING id",
            [(None, "events", ("chat_ref",), ())],
        ),
        (
            "DELETE FROM events WHERE created_at < now() - interval '7 days'",
            [(None, "events", (), ("created_at",))],
        ),
        (  # a join: qualified columns go to their tables, the ON condition is not a filter
            "SELECT * FROM events e JOIN chats c ON c.id = e.chat_id "
            "WHERE e.kind = $1 AND c.owner = $2",
            [(None, "events", ("kind",), ()), (None, "chats", ("owner",), ())],
        ),
        (  # sub-queries and CTEs are blocks of their own
            "WITH recent AS (SELECT * FROM events WHERE at > $1) "
            "SELECT * FROM recent WHERE chat_ref IN (SELECT ref FROM chats WHERE owner = $2)",
            [
                (None, "events", (), ("at",)),
                (None, "chats", ("owner",), ()),
                (None, "recent", ("chat_ref",), ()),
            ],
        ),
        (  # an OR over one column is an equality on it
            "SELECT * FROM events WHERE (chat_ref = $1 OR chat_ref = $2) AND kind = $3",
            [(None, "events", ("chat_ref", "kind"), ())],
        ),
    ],
)
def test_columns_compared_with_values(statement: str, expected: list[object]) -> None:
    assert cols(statement) == expected


@pytest.mark.parametrize(
    "statement",
    [
        # unqualified columns with two tables: which table is not certain
        "SELECT * FROM events, chats WHERE kind = $1",
        "SELECT * FROM events JOIN chats ON chats.id = events.chat_id WHERE kind = $1",
        # not a plain column against a value
        "SELECT * FROM events WHERE lower(name) = $1",
        "SELECT * FROM events WHERE kind <> $1 AND name LIKE $2 AND at IS NULL",
        "SELECT * FROM events WHERE kind NOT IN (1, 2)",
        "SELECT * FROM events WHERE NOT kind = $1",
        "SELECT * FROM events WHERE a = b",
        "SELECT * FROM events WHERE a = $1 OR b = $2",
        # a qualifier that names nothing in FROM (the table is hidden behind its alias)
        "SELECT * FROM events e WHERE events.kind = $1",
        "SELECT * FROM (SELECT * FROM events) s WHERE s.kind = $1",
        "INSERT INTO events (kind) VALUES ($1)",
    ],
)
def test_no_column_when_not_certain(statement: str) -> None:
    assert [c for c in cols(statement) if c[1] == "events"] == []


def test_values_never_reach_the_text() -> None:
    secret = "sk-live-4f9a0c"
    texts = [
        f"SELECT * FROM events WHERE token = '{secret}' AND n IN (17, 18, 19)",
        f"SELECT * FROM events WHERE token = E'{secret}\\''",
        f"SELECT * FROM events WHERE token = $q${secret}$q$",
        f"SELECT * FROM events WHERE token = '{secret}",  # cut off by track_activity_query_size
        f"SELECT * FROM events /* {secret} */ WHERE token = $1 -- {secret}",
    ]
    for text in texts:
        normalized = normalize(text)
        assert secret not in normalized and "17" not in normalized, normalized
        assert cols(text)[0][2][0] == "token"
    assert normalize(texts[0]) == "SELECT * FROM events WHERE token = ? AND n IN (?)"


def table(**extra: object) -> TableColumns:
    names = ("id", "chat_ref", "kind", "created_at", "note")
    return TableColumns("public", "events", {n: n for n in names}, **extra)  # type: ignore[arg-type]


def test_the_most_called_column_leads_and_the_reason_says_why() -> None:
    statements = [
        Statement.parse(normalize("SELECT * FROM events WHERE chat_ref = $1"), 900),
        Statement.parse(normalize("SELECT * FROM events WHERE kind = $1"), 40),
    ]
    choice = choose(table(), statements, "pg_stat_statements")
    assert choice is not None
    assert choice.columns == ("chat_ref",)
    assert choice.statement == "SELECT * FROM events WHERE chat_ref = $1"
    assert "chosen over kind (40 calls): filtered more often" in choice.reason


def test_equal_calls_go_to_the_more_selective_column() -> None:
    statements = [
        Statement.parse(normalize("SELECT * FROM events WHERE kind = $1"), 10),
        Statement.parse(normalize("SELECT * FROM events WHERE chat_ref = $1"), 10),
    ]
    choice = choose(table(distinct={"kind": 3, "chat_ref": 2500}), statements, "x")
    assert choice is not None and choice.columns == ("chat_ref",)
    assert "more selective: about 2500 distinct values against 3" in choice.reason


def test_and_ed_columns_make_one_index_equalities_first() -> None:
    st = Statement.parse(
        normalize("SELECT * FROM events WHERE created_at > $1 AND chat_ref = $2 AND kind = $3"), 5
    )
    choice = choose(table(distinct={"kind": 4, "chat_ref": 900}), [st], "pg_stat_statements")
    assert choice is not None
    # chat_ref and kind weigh the same; chat_ref is more selective; the range comes last
    assert choice.columns == ("chat_ref", "kind", "created_at")


def test_columns_leading_an_index_or_unknown_to_the_catalog_are_skipped() -> None:
    st = Statement.parse(
        normalize("SELECT * FROM events WHERE kind = $1 AND nosuch = $2 AND note = $3"), 5
    )
    choice = choose(table(indexed=frozenset({"kind"})), [st], "pg_stat_statements")
    assert choice is not None and choice.columns == ("note",)
    only_indexed = Statement.parse(normalize("SELECT * FROM events WHERE kind = $1"), 5)
    assert choose(table(indexed=frozenset({"kind"})), [only_indexed], "x") is None
    other_schema = Statement.parse(normalize("SELECT * FROM audit.events WHERE note = $1"), 5)
    assert choose(table(), [other_schema], "x") is None


def test_seen_statements_count_runs_not_idle_polls_and_stay_bounded() -> None:
    seen = SeenStatements(tables=2, per_table=2)
    q = "SELECT * FROM events WHERE chat_ref = 'a'"
    seen.observe_sessions([(10, 1.0, False, q)])
    seen.observe_sessions([(10, 1.0, False, q)])  # the same idle session: not again
    seen.observe_sessions([(10, 2.0, False, q.replace("'a'", "'b'"))])  # a new run
    seen.observe_sessions([(11, 5.0, True, q)])
    seen.observe_sessions([(11, 5.0, True, q)])  # still running: counts each poll
    [st] = seen.statements("events")
    assert st.text == "SELECT * FROM events WHERE chat_ref = ?"
    assert st.weight == 4
    for i in range(3):
        seen.observe(f"SELECT * FROM events WHERE c{i} = 1")
    assert len(seen.statements("events")) == 2
    for name in ("a", "b", "c"):
        seen.observe(f"SELECT * FROM {name} WHERE x = 1")
    assert seen.statements("events") == [] and len(seen.statements("c")) == 1
    assert TableFilter(None, "c", ("x",), ()) in seen.statements("c")[0].filters
