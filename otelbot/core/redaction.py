"""Bot-token redaction, applied where a value is first recorded::

    from otelbot.core.redaction import redact_path, redact_text

    redact_path("/bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe")
    # -> "/bot123456:REDACTED/getMe"; the secret is now known:
    redact_text("retrying with AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw")
    # -> "retrying with REDACTED"

A Telegram bot token is ``<bot id>:<secret>``. Everything otelbot records keeps the bot
id and replaces the secret: ``/bot123456:REDACTED/sendMessage``. A token is recognised by
its shape (a Bot API path, or an id and a long secret in free text); once otelbot has seen
one (there, or from aiogram's ``Bot``, see ``remember_token``), its secret part alone is
redacted too wherever it appears later: a bot that logs or raises with the bare secret
exports ``REDACTED`` in its place. That costs one substring search per known secret, and
only where text is redacted (error and log paths, and once per distinct URL or route).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

from otelbot.semconv import TOKEN_PLACEHOLDER

# In a URL path, anything after "/bot<id>:" up to the next slash is the token, whatever its
# length (local Bot API servers and tests use short ones). ':' may be percent-encoded.
_PATH_TOKEN = re.compile(r"(/bot\d+)(?::|%3[aA])[^/?#]*")
# In free text (exception messages, stack traces, log lines) a token is an id followed by a
# long secret; requiring the length keeps "12:30" and similar intact.
_TEXT_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])(\d{3,20})(?::|%3[aA])[A-Za-z0-9_-]{20,}")
_SECRET_SHAPE = re.compile(r"[A-Za-z0-9_-]+")
_SEPARATOR = re.compile(r":|%3[aA]")
# A secret shorter than this (local test servers use "x" or "test") is not remembered: it
# would redact ordinary words. Real ones are 35 characters.
_MIN_KNOWN_SECRET = 16
_MAX_KNOWN_SECRETS = 32

#: The secret parts of the tokens seen so far, redacted without their "<id>:" too. A tuple,
#: replaced whole, so readers in other threads never see it change under them.
_known_secrets: tuple[str, ...] = ()

# Query keys whose values are credentials (the same set OpenTelemetry scrubs, plus ours).
SENSITIVE_QUERY_KEYS = frozenset(
    {
        "awsaccesskeyid",
        "signature",
        "sig",
        "x-goog-signature",
        "token",
        "secret",
        "password",
        "api_key",
        "apikey",
        "access_token",
    }
)


def remember_token(token: str) -> None:
    """Learn the secret part of a bot token (``<bot id>:<secret>``, the colon possibly
    percent-encoded), so that ``redact_text`` removes it wherever it appears, even alone.

    Cheap enough to call on every sight of a token: a known one costs a tuple scan.
    """
    global _known_secrets
    parts = _SEPARATOR.split(token, maxsplit=1)
    if len(parts) != 2:
        return
    bot_id, secret = parts
    if (
        secret in _known_secrets
        or len(secret) < _MIN_KNOWN_SECRET
        or len(_known_secrets) >= _MAX_KNOWN_SECRETS
        or not bot_id.isdigit()
        or not _SECRET_SHAPE.fullmatch(secret)
    ):
        return
    # Longest first: a secret that contains another is replaced whole.
    _known_secrets = tuple(sorted((*_known_secrets, secret), key=len, reverse=True))


def _redact_match(match: re.Match[str]) -> str:
    remember_token(match.group(0).removeprefix("/bot"))
    return match.group(1) + ":" + TOKEN_PLACEHOLDER


def redact_path(path: str) -> str:
    """Redact a token in a URL path: ``/bot1:abc/getMe`` -> ``/bot1:REDACTED/getMe``, a
    full-length token anywhere else in it (``/webhook/<token>``), and a known secret."""
    if "/bot" in path:
        path = _PATH_TOKEN.sub(_redact_match, path)
    if ":" in path or "%3" in path:
        path = _TEXT_TOKEN.sub(_redact_match, path)
    return _redact_known(path)


def redact_text(text: str) -> str:
    """Redact tokens anywhere in free text (messages, stack traces, log lines, URLs), and
    the secret part of every token seen so far."""
    if ":" in text or "%3" in text:
        if "/bot" in text:
            text = _PATH_TOKEN.sub(_redact_match, text)
        text = _TEXT_TOKEN.sub(_redact_match, text)
    return _redact_known(text)


def _redact_known(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, TOKEN_PLACEHOLDER)
    return text


def redact_url(url: str) -> str:
    """Make a URL safe to record: no userinfo, no bot token, no credential query values."""
    scheme_end = url.find("://")
    if scheme_end >= 0:
        rest_start = scheme_end + 3
        slash = url.find("/", rest_start)
        authority = url[rest_start:] if slash < 0 else url[rest_start:slash]
        if "@" in authority:
            authority = "REDACTED:REDACTED@" + authority.rsplit("@", 1)[1]
            url = url[:rest_start] + authority + ("" if slash < 0 else url[slash:])
    query_start = url.find("?")
    if query_start >= 0:
        base, query = url[:query_start], url[query_start + 1 :]
        fragment = ""
        if "#" in query:
            query, fragment = query.split("#", 1)
            fragment = "#" + fragment
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SENSITIVE_QUERY_KEYS for k, _ in pairs):
            query = urlencode(
                [
                    (k, TOKEN_PLACEHOLDER if k.lower() in SENSITIVE_QUERY_KEYS else v)
                    for k, v in pairs
                ]
            )
        url = base + "?" + query + fragment
    return redact_text(url)
