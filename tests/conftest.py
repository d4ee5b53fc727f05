"""Shared fixtures: real PostgreSQL and Redis (from scripts/services; also a PostgreSQL with
pg_stat_statements), in-memory telemetry, the fake Bot API and the OTLP receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otelbot.testing import defaults
from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.memory import MemoryTelemetry
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests._require import missing


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test database (scripts/services exports OTELBOT_TEST_PG_DSN)."""
    return defaults.pg_dsn()


@pytest.fixture(scope="session")
def pg_statements_dsn() -> str:
    """A PostgreSQL that preloads pg_stat_statements: the private cluster scripts/services
    starts (OTELBOT_TEST_PG_STATEMENTS_DSN). Without it the test skips, or fails under CI."""
    dsn = defaults.pg_statements_dsn()
    if dsn is None:
        missing(
            f"{defaults.PG_STATEMENTS_DSN_VARIABLE} is not set: scripts/services (make test "
            "runs it) starts a PostgreSQL with pg_stat_statements preloaded and exports it"
        )
    return dsn


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (scripts/services exports OTELBOT_TEST_REDIS_URL)."""
    return defaults.redis_url()


@pytest.fixture(scope="session")
def bot_token() -> str:
    """A token shaped like a real one. Tests scan every exported byte for it."""
    return defaults.BOT_TOKEN


@pytest.fixture
def telemetry() -> Iterator[MemoryTelemetry]:
    t = MemoryTelemetry()
    yield t
    t.shutdown()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP receiver (HTTP and gRPC) on loopback; what the exporters send lands here."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def fake_bot_api(bot_token: str) -> Iterator[FakeBotApi]:
    """Our fake Telegram Bot API on loopback, in its own thread and event loop."""
    api = FakeBotApi(bot_token, max_poll_wait=0.5).start()
    yield api
    api.stop()
