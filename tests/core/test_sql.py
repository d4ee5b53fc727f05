"""SQL sanitizing and summarizing: what telemetry records about a query."""

from __future__ import annotations

import pytest

from otelbot.core.sql import sanitize, sanitize_error_message, summarize


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELECT * FROM users WHERE id = $1", "SELECT * FROM users WHERE id = $1"),
        (
            "SELECT * FROM users WHERE name = 'bob' LIMIT 10",
            "SELECT * FROM users WHERE name = ? LIMIT ?",
        ),
        ("SELECT 'it''s', E'a\\'b', $$dollar secret$$, $tag$ x $ y $tag$", "SELECT ?, ?, ?, ?"),
        ("SELECT 1.5, .5, 1e10, 2E-3, 0x1F, -7", "SELECT ?, ?, ?, ?, ?, -?"),
        ("SELECT x'FF', b'0101', U&'d\\0061t', N'n'", "SELECT ?, ?, ?, ?"),
        ('SELECT t1.c2, "Col 1", "a""b" FROM t1', 'SELECT t1.c2, "Col 1", "a""b" FROM t1'),
        ("SELECT '2020-01-01'::date, interval '1 day'", "SELECT ?::date, interval ?"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (?, ?, ?)"),
        ("SELECT $1::int, $12", "SELECT $1::int, $12"),
        ("SELECT 1 -- password 'hunter2'\nFROM t", "SELECT ? \nFROM t"),
        ("/* traceparent='00-abc' */ SELECT 1", "SELECT ?"),
        ("SELECT * FROM t WHERE s = 'never closed", "SELECT * FROM t WHERE s = ?"),
        ("SELECT $body$ never closed", "SELECT ?"),
    ],
)
def test_sanitize_replaces_literals_and_keeps_placeholders(query: str, expected: str) -> None:
    assert sanitize(query) == expected


@pytest.mark.parametrize(
    ("query", "operation", "collection"),
    [
        ("SELECT * FROM users WHERE id = $1", "SELECT", "users"),
        ("select id from users where id = $1", "SELECT", "users"),
        ("SELECT * FROM public.users", "SELECT", "public.users"),
        ('SELECT * FROM "MySchema"."Users"', "SELECT", '"MySchema"."Users"'),
        ("SELECT (SELECT max(a) FROM inner_t) FROM outer_t", "SELECT", "outer_t"),
        ("SELECT * FROM generate_series(1, 3)", "SELECT", None),
        ("SELECT * FROM (SELECT 1) AS s", "SELECT", None),
        ("SELECT 1", "SELECT", None),
        ("SELECT * FROM ONLY parent", "SELECT", "parent"),
        ("INSERT INTO orders (id, total) VALUES ($1, $2)", "INSERT", "orders"),
        ("insert into sales.orders values ($1)", "INSERT", "sales.orders"),
        ("UPDATE users SET name = $1 WHERE id = $2", "UPDATE", "users"),
        ('update only "Users" set x = 1', "UPDATE", '"Users"'),
        ("DELETE FROM sessions WHERE expires < now()", "DELETE", "sessions"),
        (
            "WITH recent AS (SELECT * FROM events WHERE t > $1) SELECT * FROM recent",
            "SELECT",
            "recent",
        ),
        (
            "WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved",
            "INSERT",
            "b",
        ),
        ("-- leading comment\n/* and another */ SELECT * FROM users", "SELECT", "users"),
        ("(SELECT a FROM x) UNION (SELECT a FROM y)", "SELECT", "x"),
        ("EXPLAIN (FORMAT JSON, VERBOSE) SELECT * FROM users", "EXPLAIN", "users"),
        ("CREATE TABLE IF NOT EXISTS otb_t (id int)", "CREATE", "otb_t"),
        ("DROP TABLE IF EXISTS otb_t", "DROP", "otb_t"),
        ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", "CREATE", "t"),
        ("TRUNCATE TABLE logs", "TRUNCATE", "logs"),
        ("BEGIN", "BEGIN", None),
        ("SELECT 1; DELETE FROM users", "SELECT", None),
        ("", None, None),
        ("  ;", None, None),
    ],
)
def test_summarize_finds_operation_and_table(
    query: str, operation: str | None, collection: str | None
) -> None:
    shape = summarize(query)
    assert (shape.operation, shape.collection) == (operation, collection)


def test_span_name_is_operation_and_table() -> None:
    assert summarize("select * from users").span_name == "SELECT users"
    assert summarize("SELECT now()").span_name == "SELECT"
    assert summarize("").span_name == "postgresql"


def test_summarize_text_is_sanitized() -> None:
    shape = summarize("UPDATE users SET name = 'Alice' WHERE id = 42")
    assert shape.text == "UPDATE users SET name = ? WHERE id = ?"


def test_words_inside_strings_are_not_keywords() -> None:
    shape = summarize("SELECT 'x FROM secret' FROM real_table")
    assert shape.collection == "real_table"
    assert "secret" not in shape.text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'invalid input syntax for type integer: "abc"',
            "invalid input syntax for type integer: ?",
        ),
        ('invalid input value for enum mood: "sad"', "invalid input value for enum mood: ?"),
        (
            "invalid input for query argument $1: 'abc' (an integer is required (got type str))",
            "invalid input for query argument $1: ? (an integer is required (got type str))",
        ),
        (
            "invalid input for query argument $2: [1, 2, 3] (expected str, got list)",
            "invalid input for query argument $2: ? (expected str, got list)",
        ),
        ("division by zero", "division by zero"),
    ],
)
def test_error_messages_lose_quoted_values(message: str, expected: str) -> None:
    assert sanitize_error_message(message) == expected
