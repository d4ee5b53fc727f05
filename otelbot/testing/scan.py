"""Scanning exported bytes for a bot token in every form it can leak in::

    from otelbot.testing.scan import token_leaks

    assert not token_leaks(receiver.raw_bytes(), token)   # [] or the forms found

A token leaks whole (``123:AAH…``), URL-encoded as a URL path or query carries it
(``123%3AAAH…``), or as its secret part alone, without the ``<id>:`` the redaction keeps.
"""

from __future__ import annotations

from urllib.parse import quote


def token_forms(token: str) -> dict[str, str]:
    """The forms of ``token`` to look for, by name: whole, URL-encoded (``%3A`` and
    ``%3a``) and the secret part after the colon."""
    _bot_id, colon, secret = token.partition(":")
    if not colon or not secret:
        raise ValueError("a bot token looks like <bot id>:<secret>")
    encoded = quote(token, safe="")
    return {
        "token": token,
        "URL-encoded token": encoded,
        "URL-encoded token (lower case)": encoded.replace("%3A", "%3a"),
        "secret part": secret,
    }


def token_leaks(data: bytes | str, token: str) -> list[str]:
    """The names of the forms of ``token`` found in ``data``; empty when it holds none."""
    forms = token_forms(token).items()
    if isinstance(data, bytes):
        return [name for name, form in forms if form.encode() in data]
    return [name for name, form in forms if form in data]
