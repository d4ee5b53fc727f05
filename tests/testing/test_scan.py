"""token_forms / token_leaks: every form a leaked bot token takes is found."""

from __future__ import annotations

import pytest

from otelbot.testing.scan import token_forms, token_leaks

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SECRET = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_the_forms() -> None:
    assert token_forms(TOKEN) == {
        "token": TOKEN,
        "URL-encoded token": "123456789%3A" + SECRET,
        "URL-encoded token (lower case)": "123456789%3a" + SECRET,
        "secret part": SECRET,
    }


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"url.full=https://api.telegram.org/bot123456789:REDACTED/getMe", []),
        (f"GET /bot{TOKEN}/getMe".encode(), ["token", "secret part"]),
        (
            f"/tg/123456789%3A{SECRET}".encode(),
            ["URL-encoded token", "secret part"],
        ),
        (f"?t=123456789%3a{SECRET}", ["URL-encoded token (lower case)", "secret part"]),
        (b"\x00\xff" + SECRET.encode() + b"\xfe", ["secret part"]),
    ],
)
def test_leaks_found_in_bytes_and_text(data: bytes | str, found: list[str]) -> None:
    assert token_leaks(data, TOKEN) == found


def test_not_a_token() -> None:
    with pytest.raises(ValueError):
        token_forms("no colon")
