"""Detector tests end to end: a test bot from ``tests/diagnosis/bots`` under the real
``opentelemetry-instrument``, fed commands through the fake Bot API, its findings read as
they arrive over OTLP at the test receiver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedLog
from otelbot.testing.processes import Child
from tests.e2e._run import otel_env, run_instrumented

BOTS = Path(__file__).resolve().parent / "bots"
UPDATE_SPAN = "telegram.update message"


@dataclass
class BotRun:
    bot: Child
    api: FakeBotApi
    receiver: OtlpReceiver
    sent: int = 0

    def send(self, *commands: str, user_id: int = 5001) -> None:
        """Push one message update per command (in one getUpdates answer)."""
        self.api.push_updates(
            [self.api.message_update(c, user_id=user_id + i) for i, c in enumerate(commands)]
        )
        self.sent += len(commands)

    def wait_handled(self, timeout: float = 60.0) -> None:
        """Until every update sent so far has its span at the receiver."""
        self.receiver.wait_for(lambda r: len(r.spans(UPDATE_SPAN)) >= self.sent, timeout)

    def findings(self, event: str | None = None, handler: str | None = None) -> list[ReceivedLog]:
        return [
            log
            for log in self.receiver.logs()
            if log.event_name.startswith("otelbot.bot.")
            and (event is None or log.event_name == event)
            and (
                handler is None or str(log.attributes.get("telegram.handler", "")).endswith(handler)
            )
        ]


def _handler(log: ReceivedLog) -> str:
    return str(log.attributes.get("telegram.handler", ""))


@contextmanager
def findings_bot(
    name: str,
    api: FakeBotApi,
    receiver: OtlpReceiver,
    token: str,
    pg_dsn: str,
    redis_url: str,
    **env: str,
) -> Iterator[BotRun]:
    """Run ``tests/diagnosis/bots/<name>.py`` under opentelemetry-instrument until it polls."""
    environment = otel_env(
        receiver,
        f"findings-{name}",
        BOT_TOKEN=token,
        BOT_API_BASE=api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
        OTEL_BLRP_SCHEDULE_DELAY="100",
        **env,
    )
    with run_instrumented(BOTS / f"{name}.py", environment) as bot:
        bot.wait_for_line("polling", 60)
        yield BotRun(bot, api, receiver)
