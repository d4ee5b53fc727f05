"""Bot-token redaction, applied where a value is first recorded.

A Telegram bot token is ``<bot id>:<secret>``. Everything otelbot records keeps the bot
id and replaces the secret: ``/bot123456:REDACTED/sendMessage``.
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
_PATH_REPLACEMENT = r"\1:" + TOKEN_PLACEHOLDER
_TEXT_REPLACEMENT = r"\1:" + TOKEN_PLACEHOLDER

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


def redact_path(path: str) -> str:
    """Redact a token in a URL path: ``/bot1:abc/getMe`` -> ``/bot1:REDACTED/getMe``, and a
    full-length token anywhere else in it (``/webhook/<token>``)."""
    if "/bot" in path:
        path = _PATH_TOKEN.sub(_PATH_REPLACEMENT, path)
    if ":" in path or "%3" in path:
        path = _TEXT_TOKEN.sub(_TEXT_REPLACEMENT, path)
    return path


def redact_text(text: str) -> str:
    """Redact tokens anywhere in free text (messages, stack traces, log lines, URLs)."""
    if ":" not in text and "%3" not in text:
        return text
    if "/bot" in text:
        text = _PATH_TOKEN.sub(_PATH_REPLACEMENT, text)
    return _TEXT_TOKEN.sub(_TEXT_REPLACEMENT, text)


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
