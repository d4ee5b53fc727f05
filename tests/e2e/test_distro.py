"""The distro under the real ``opentelemetry-instrument``: contrib duplicates skipped with one
log line, and OTEL_PYTHON_DISABLED_INSTRUMENTATIONS working with otelbot's names."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelbot.testing.fake_bot_api import FakeBotApi
from otelbot.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests._require import module
from tests.e2e._run import otel_env, run_instrumented

SCRIPT = Path(__file__).parent / "bots" / "one_of_each.py"
#: The script's own last span (bots/one_of_each.py): when it has arrived, so has every span
#: the script ended before it.
CONTROL = "one_of_each done"
pytestmark = pytest.mark.e2e


def run(
    receiver: OtlpReceiver, api: FakeBotApi, token: str, pg_dsn: str, redis_url: str, **extra: str
) -> str:
    env = otel_env(
        receiver,
        "distro-test",
        BOT_TOKEN=token,
        BOT_API_BASE=api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
        **extra,
    )
    with run_instrumented(SCRIPT, env) as proc:
        proc.wait(30)  # exited, and so has the export helper
    assert proc.proc.returncode == 0, proc.output
    receiver.wait_for(lambda r: r.spans(CONTROL), 20)
    return proc.output


def library_spans(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    return [s for s in receiver.spans() if s.name != CONTROL]


def test_contrib_installed_is_skipped_with_one_log_line(
    otlp_receiver: OtlpReceiver,
    fake_bot_api: FakeBotApi,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    module("opentelemetry.instrumentation.asyncpg", "contrib, in the [dev] extra")
    output = run(
        otlp_receiver,
        fake_bot_api,
        bot_token,
        pg_dsn,
        redis_url,
        OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="false",
    )
    lines = [line for line in output.splitlines() if "skipped the contrib" in line]
    assert len(lines) == 1, output
    for name in ("aiohttp-client", "aiohttp-server", "asyncpg", "redis"):
        assert name in lines[0]
    spans = library_spans(otlp_receiver)
    assert sorted(s.name for s in spans) == ["GET", "SELECT", "telegram.api getMe"]
    assert {s.scope.split(".")[0] for s in spans} == {"otelbot"}


def test_disabling_one_otelbot_instrumentation_lets_contrib_take_it(
    otlp_receiver: OtlpReceiver,
    fake_bot_api: FakeBotApi,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    module("opentelemetry.instrumentation.redis", "contrib, in the [dev] extra")
    run(
        otlp_receiver,
        fake_bot_api,
        bot_token,
        pg_dsn,
        redis_url,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="otelbot_redis",
    )
    # With OTel logging on, the line goes to the exported logs.
    records = otlp_receiver.wait_for(
        lambda r: [x for x in r.logs() if "skipped the contrib" in str(x.body)], 10
    )
    assert len(records) == 1
    line = str(records[0].body)
    assert "redis" not in line and "asyncpg" in line
    scopes = {s.name: s.scope for s in otlp_receiver.spans()}
    assert scopes["SELECT"].startswith("otelbot.")
    redis_scopes = [s.scope for s in otlp_receiver.spans() if s.name == "GET"]
    assert redis_scopes == ["opentelemetry.instrumentation.redis"]


def test_disabling_all_of_otelbot_leaves_the_bot_alone(
    otlp_receiver: OtlpReceiver,
    fake_bot_api: FakeBotApi,
    bot_token: str,
    pg_dsn: str,
    redis_url: str,
) -> None:
    disabled = ",".join(
        [
            "otelbot_aiohttp_client",
            "otelbot_aiohttp_server",
            "otelbot_asyncpg",
            "otelbot_redis",
            "otelbot_aiogram",
            "otelbot_runtime",
            "aiohttp-client",
            "aiohttp-server",
            "asyncpg",
            "redis",
        ]
    )
    env = otel_env(
        otlp_receiver,
        "distro-test",
        BOT_TOKEN=bot_token,
        BOT_API_BASE=fake_bot_api.base_url,
        PG_DSN=pg_dsn,
        REDIS_URL=redis_url,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=disabled,
    )
    with run_instrumented(SCRIPT, env) as proc:
        proc.wait(30)  # exited, and so has the export helper
    assert proc.proc.returncode == 0 and "done" in proc.output
    # Export works in this very process: the control span arrives. Only then is it
    # meaningful that nothing else did (a late span would have arrived before it).
    otlp_receiver.wait_for(lambda r: r.spans(CONTROL), 20)
    assert [s.name for s in otlp_receiver.spans()] == [CONTROL]


def _helper_pays() -> bool:
    from otelbot.export.cpus import budget, helper_pays

    return helper_pays(budget().cpus)


@pytest.mark.parametrize(
    ("chosen", "processor"),
    [
        # otelbot's default: OTLP encoded in a helper process from two CPUs on, otelbot_otlp
        # (a BatchSpanProcessor) in the bot's process on one (tests/export/test_cpus.py)
        (None, "OffloadSpanProcessor" if _helper_pays() else "BatchSpanProcessor"),
        ("otlp", "BatchSpanProcessor"),  # the SDK's exporter in the bot's process, when chosen
    ],
)
def test_trace_exporter_default_and_choice(
    otlp_receiver: OtlpReceiver,
    tmp_path: Path,
    chosen: str | None,
    processor: str,
) -> None:
    script = tmp_path / "which.py"
    script.write_text(
        "from opentelemetry import trace\n"
        "provider = trace.get_tracer_provider()\n"
        "print('processors', [type(p).__name__ for p in"
        " provider._active_span_processor._span_processors])\n"
        "with trace.get_tracer('which').start_as_current_span('one span'):\n"
        "    pass\n"
    )
    extra = {"OTEL_TRACES_EXPORTER": chosen} if chosen else {}
    env = otel_env(otlp_receiver, "distro-test", **extra)
    with run_instrumented(script, env) as proc:
        proc.wait(30)  # exited, and so has the export helper
    assert proc.proc.returncode == 0, proc.output
    assert f"processors ['{processor}']" in proc.output
    spans = otlp_receiver.wait_for(lambda r: r.spans(), 10)
    assert [s.name for s in spans] == ["one span"]
