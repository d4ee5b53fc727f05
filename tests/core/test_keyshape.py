"""Cache key shapes: every variable part of a key becomes ``?``, its words stay."""

from __future__ import annotations

import pytest

from otelbot.core import keyshape
from otelbot.core.keyshape import MAX_SHAPES, OTHER, cached_key_shape, key_shape


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        # Words the code spells stay as written.
        ("user:settings", "user:settings"),
        ("cache/menu.json", "cache/menu.json"),
        ("rate_limit:global", "rate_limit:global"),
        ("Config:HTTP:Settings", "Config:HTTP:Settings"),
        ("weird::", "weird::"),
        ("", ""),
        # Ids, counters and numbers, alone or inside a word.
        ("profile:42:settings", "profile:?:settings"),
        ("user_17:cart", "user_?:cart"),
        ("{user42}:cart", "{?}:cart"),
        ("v2:menu", "?:menu"),
        ("chat:-1001234567890", "chat:-?"),
        # Timestamps: epoch seconds, nanoseconds, fractions, ISO dates and times.
        ("price:5001:1700000000123456789", "price:?:?"),
        ("t:1700000000.5", "t:?.?"),
        ("day:2024-05-01", "day:?"),
        ("rate:2024-05-01T12:30:00Z:user_17", "rate:?:user_?"),
        ("at:2024-05-01 12:30:00.123+02:00:x", "at:?:x"),
        # UUIDs, hex digests (with or without digits), base64-like and mixed-case tokens.
        ("session:550e8400-e29b-41d4-a716-446655440000", "session:?"),
        ("session:abcdefab-cdef-abcd-efab-cdefabcdefab", "session:?"),
        ("etag:9f86d081884c7d659a2feaa0c55ad015", "etag:?"),
        ("hash:deadbeefcafe", "hash:?"),
        ("tok:aGVsbG8", "tok:?"),
        ("x:userName", "x:?"),
        # E-mail addresses, whole; free text with a space; non-ASCII letters.
        ("mail:john_doe@example.com:inbox", "mail:?:inbox"),
        ("search:hello world", "search:?"),
        ("u:Привет", "u:?"),
        # A word of 33 letters or more is not a name.
        ("k:" + "z" * 33, "k:?"),
        ("k:" + "z" * 32, "k:" + "z" * 32),
    ],
)
def test_key_shapes(key: str, shape: str) -> None:
    assert key_shape(key) == shape
    assert key_shape(key.encode()) == shape


def test_plain_words_are_not_over_shaped() -> None:
    # Not hex when shorter than 8 or with a letter past f; a capital first letter is a name.
    for key in ("user:settings", "feed:beef", "hash:deadbeefs", "Menu:Main", "lang:en"):
        assert key_shape(key) == key


def test_keys_that_are_not_text_are_one_variable_part() -> None:
    assert key_shape(42) == "?"
    assert key_shape(4.5) == "?"
    assert key_shape(memoryview(b"profile:7")) == "profile:?"
    assert key_shape(b"user:\xff\xfe") == "user:?"


def test_a_long_key_is_cut_and_the_word_at_the_cut_is_variable() -> None:
    shape = key_shape("list:" + "abc:" * 100)
    assert shape.endswith(":? …")
    assert len(shape) <= keyshape.MAX_KEY + 2
    assert key_shape("a" * 300) == "? …"


def test_cached_shapes_are_bounded_then_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyshape, "_shapes", {})
    monkeypatch.setattr(keyshape, "_by_key", {})
    words = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "eta")
    for i in range(MAX_SHAPES):
        key = f"k:{words[i % 10]}:{words[i // 10 % 10]}:{words[i // 100]}:{i}"
        assert cached_key_shape(key) == key.rsplit(":", 1)[0] + ":?"
    assert cached_key_shape("new:shape:1") == OTHER
    # Shapes already given out stay what they were.
    assert cached_key_shape("k:alpha:alpha:alpha:123456") == "k:alpha:alpha:alpha:?"
    assert len(keyshape._shapes) == MAX_SHAPES
