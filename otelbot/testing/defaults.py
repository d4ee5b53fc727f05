"""The bot token and the local PostgreSQL and Redis that the tests, the demo and the
benchmarks use, written once::

    from otelbot.testing.defaults import BOT_TOKEN, pg_dsn, redis_url

    asyncpg.connect(pg_dsn())       # $OTELBOT_TEST_PG_DSN, else postgres@127.0.0.1:5432/test

``scripts/services`` starts the servers and writes the ``OTELBOT_TEST_*`` variables to
``.services/env``; without them, the defaults are the servers it would have started.
"""

from __future__ import annotations

import os
import secrets

PG_DSN_VARIABLE = "OTELBOT_TEST_PG_DSN"
REDIS_URL_VARIABLE = "OTELBOT_TEST_REDIS_URL"
#: A PostgreSQL server that preloads pg_stat_statements (scripts/services starts one).
PG_STATEMENTS_DSN_VARIABLE = "OTELBOT_TEST_PG_STATEMENTS_DSN"

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: The bot id of every test token; redaction keeps it (``/bot123456789:REDACTED/...``).
BOT_ID = "123456789"
#: A token shaped like a real one. Tests scan every exported byte for it.
BOT_TOKEN = BOT_ID + ":AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"

_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def pg_dsn() -> str:
    """The test PostgreSQL: ``$OTELBOT_TEST_PG_DSN`` or the local default."""
    return os.environ.get(PG_DSN_VARIABLE) or DEFAULT_PG_DSN


def redis_url() -> str:
    """The test Redis: ``$OTELBOT_TEST_REDIS_URL`` or the local default."""
    return os.environ.get(REDIS_URL_VARIABLE) or DEFAULT_REDIS_URL


def pg_statements_dsn() -> str | None:
    """The PostgreSQL with pg_stat_statements preloaded, when scripts/services made one."""
    return os.environ.get(PG_STATEMENTS_DSN_VARIABLE) or None


def random_bot_token() -> str:
    """A fresh token of the test bot's id, for a run whose exported bytes are scanned for it."""
    return BOT_ID + ":AA" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(33))
