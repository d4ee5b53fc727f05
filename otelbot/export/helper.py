"""The span export helper process: reads span batches from the bot on stdin and sends them
over OTLP.

    python -I -m otelbot.export.helper      # started by otelbot.export.offload, not by hand

Frames on stdin are ``FRAME_HEADER`` (kind, payload length) then the payload: ``SPANS``
carries one ``otelbot.export.rows`` batch, ``FLUSH`` asks for ``ok`` on stdout once
everything before it was sent. At EOF the exporter is shut down (it sends what it holds)
and the helper exits.

Over HTTP/protobuf (the default) the rows are written to OTLP directly
(``otelbot.export.otlp.encode_rows``, no span objects) and sent by
``otelbot.export.http_send``, a small sender on the standard library that reads the same
``OTEL_EXPORTER_OTLP_*`` settings and retries as the SDK's exporter does: the helper then
imports neither the SDK's exporter nor ``requests`` nor protobuf (~17 MB RSS instead of
~37 MB). Where a setting only ``requests`` honours is set (a proxy variable, a credential
provider, a ``.netrc``: ``http_send.needs_sdk_client``), the rows
are sent by the SDK's HTTP client (``otelbot.export.otlp_http``) instead. Over gRPC
(``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``) the SDK's ``ReadableSpan``s are rebuilt and sent by
the SDK's gRPC ``OTLPSpanExporter``. Every way, the collector receives the same OTLP
content as from the in-process exporter. At DEBUG (the bot's ``otelbot`` logger) the
helper says which way it sends.

The helper ends when the bot closes the pipe, never on an interrupt: SIGINT is ignored
(the bot starts it in its own session, so a terminal's Ctrl+C does not reach it anyway),
and what it holds is sent at EOF; SIGTERM still ends it at once. It writes its log lines
to stderr (the bot's), at the level given by ``--log-level``, and says once when the OTLP
endpoint stops taking spans and once when it takes them again
(``otelbot.export.endpoint_state``), instead of the SDK's lines at every export.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import sys
from typing import Any

from otelbot.export.rows import read_batch, read_rows

logger = logging.getLogger("otelbot")

FRAME_HEADER = struct.Struct("<cI")  # frame kind, payload length
SPANS = b"S"
FLUSH = b"F"


def rebuild(payload: bytes) -> list[Any]:
    """The SDK spans a marshalled batch describes."""
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util import BoundedList
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import (
        Link,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
    )

    batch = read_batch(payload)
    resources = [Resource(attrs, schema_url or None) for attrs, schema_url in batch.resources]
    scopes = [
        None if s is None else InstrumentationScope(s[0], s[1], s[2], s[3]) for s in batch.scopes
    ]

    def attributes(values: Any, dropped: int) -> Any:
        if not dropped:
            return values
        bounded = BoundedAttributes(maxlen=None, attributes=values, immutable=False)
        bounded.dropped = dropped
        return bounded

    def bounded(items: list[Any], dropped: int) -> Any:
        if not dropped:
            return items
        out: Any = BoundedList(None)
        out.extend(items)
        out.dropped = dropped
        return out

    spans = []
    for row in batch.rows:
        context = SpanContext(
            row.trace_id,
            row.span_id,
            False,
            TraceFlags(row.trace_flags),
            TraceState(list(row.trace_state)) if row.trace_state else None,
        )
        parent = row.parent
        parent_context = (
            None
            if parent is None
            else SpanContext(parent[0], parent[1], parent[2], TraceFlags(parent[3]))
        )
        spans.append(
            ReadableSpan(
                row.name,
                context=context,
                parent=parent_context,
                resource=resources[row.resource],
                attributes=attributes(row.attributes, row.dropped_attributes),
                events=bounded(
                    [Event(n, attributes(a, d), t) for n, t, a, d in row.events],
                    row.dropped_events,
                ),
                links=bounded(
                    [
                        Link(SpanContext(t, i, r, TraceFlags(f)), attributes(a, d))
                        for t, i, r, f, a, d in row.links
                    ],
                    row.dropped_links,
                ),
                kind=SpanKind(row.kind),
                status=Status(StatusCode(row.status_code), row.status_description),
                start_time=row.start,
                end_time=row.end,
                instrumentation_scope=scopes[row.scope],
            )
        )
    return spans


def _protocol() -> str:
    return (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _standard_exporter() -> Any:
    """The SDK exporter for the configured protocol: otelbot's HTTP one (the SDK's client
    with otelbot's encoder), or the SDK's gRPC one."""
    if _protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from otelbot.export.otlp_http import OtlpHttpSpanExporter

    return OtlpHttpSpanExporter()


def spans_of(payload: bytes, rows_ok: bool) -> Any:
    """What the exporter takes for one batch: its rows (``rows_ok``: an exporter that
    encodes them itself) or the SDK spans rebuilt from them."""
    return read_rows(payload) if rows_ok else rebuild(payload)


class LeanSink:
    """Over HTTP/protobuf: each batch's rows encoded by ``otelbot.export.otlp`` and sent by
    ``otelbot.export.http_send``; the endpoint lines said from the sender's results."""

    def __init__(self) -> None:
        from otelbot.export import endpoint_state, http_send
        from otelbot.export.otlp import encode_rows

        self.sender = http_send.HttpSender(http_send.settings_from_env())
        self._encode = encode_rows
        self._state = endpoint_state.watch("traces", self.sender.endpoint)

    def export(self, payload: bytes) -> None:
        batch = read_rows(payload)
        sent = self.sender.send(self._encode(batch.resources, batch.scopes, batch.rows))
        if sent.ok:
            self._state.exported()
        else:
            self._state.reason = sent.reason
            self._state.failed(len(batch))

    def shutdown(self) -> None:
        self.sender.close()


class SdkSink:
    """Through the SDK's exporter for the protocol, watched for the endpoint lines."""

    def __init__(self) -> None:
        from otelbot.export import endpoint

        endpoint.install()
        self.inner = _standard_exporter()
        self._rows_ok = getattr(self.inner, "fast", False)
        self._exporter = endpoint.WatchedSpanExporter(self.inner)

    def export(self, payload: bytes) -> None:
        self._exporter.export(spans_of(payload, self._rows_ok))

    def shutdown(self) -> None:
        self._exporter.shutdown()


def open_sink() -> LeanSink | SdkSink:
    """Where the batches go: the lean sender over HTTP/protobuf unless a setting needs the
    SDK's client; the SDK's exporter otherwise."""
    from otelbot.export.http_send import needs_sdk_client

    protocol = _protocol()
    needs = needs_sdk_client() if protocol == "http/protobuf" else None
    if protocol == "http/protobuf" and needs is None:
        lean = LeanSink()
        logger.debug(
            "otelbot export helper: sending spans to %s with otelbot.export.http_send",
            lean.sender.endpoint,
        )
        return lean
    sdk = SdkSink()
    logger.debug(
        "otelbot export helper: sending spans with the SDK's exporter %s.%s (%s)",
        type(sdk.inner).__module__,
        type(sdk.inner).__name__,
        f"{needs} is set" if needs else f"protocol {protocol}",
    )
    return sdk


def _setup_logging(argv: list[str]) -> None:
    level = logging.WARNING
    for arg in argv:
        if arg.startswith("--log-level="):
            try:
                level = int(arg.split("=", 1)[1])
            except ValueError:
                pass
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("otelbot")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Read batches from stdin until EOF; send each over OTLP (``open_sink``)."""
    # An interrupt is for the bot: this process ends when the bot closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _setup_logging(sys.argv[1:] if argv is None else argv)
    sink = open_sink()
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    try:
        while True:
            header = stdin.read(FRAME_HEADER.size)
            if len(header) < FRAME_HEADER.size:
                break
            kind, size = FRAME_HEADER.unpack(header)
            payload = stdin.read(size)
            if len(payload) < size:
                break
            if kind == SPANS:
                try:
                    sink.export(payload)
                except Exception as exc:
                    logger.warning("otelbot export helper: batch dropped: %s", exc)
            elif kind == FLUSH:
                stdout.write(b"ok\n")
                stdout.flush()
    finally:
        sink.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
