"""The token scan of an end-to-end run: everything the receiver got, accepted or rejected,
and everything the bot printed."""

from __future__ import annotations

from otelbot.testing.otlp_receiver import OtlpReceiver
from otelbot.testing.scan import token_leaks


def assert_token_nowhere(receiver: OtlpReceiver, output: str, token: str) -> None:
    """Traces, metrics and logs arrived (the scan reads real data of every signal), every
    export was accepted, and no form of ``token`` is in any byte received nor in ``output``."""
    assert receiver.spans(), "no span arrived"
    assert receiver.points(), "no metric point arrived"
    assert receiver.logs(), "log export is on, but no log record arrived"
    assert receiver.rejected == 0, f"{receiver.rejected} exports were rejected as undecodable"
    leaks = token_leaks(receiver.raw_bytes(), token)
    assert not leaks, f"exported telemetry holds the bot token: {', '.join(leaks)}"
    leaks = token_leaks(output, token)
    assert not leaks, f"the bot printed the token: {', '.join(leaks)}:\n{output}"
