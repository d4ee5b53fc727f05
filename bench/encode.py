"""OTLP trace encoding, µs per span: the SDK's encoder against otelbot's (otelbot.export.otlp).

python -m bench.encode [--batch N] [--rounds R] [--repeat K] [--json]

The spans are what otelbot's instrumentations make for one update of the one-CPU
workload, four per update with six attributes each (update, SELECT, INCR, sendMessage),
``--batch`` of them (512: the batch processor's default batch), made by a real SDK
``TracerProvider`` (SDK spans) and by otelbot's ``LightTracer`` (light spans, and the SDK
spans they become at ``end()`` when the exporter is not the offload one). Rows are what the
export helper receives (``otelbot.export.rows``). Each way is timed K times per round,
interleaved, R rounds; the median round is printed, in µs per span:

- ``sdk``: ``encode_spans(spans).SerializePartialToString()``, what the SDK's OTLP
  exporters do (and what otelbot's in-process path did before otelbot_otlp);
- ``ours spans``: ``otelbot.export.otlp.encode_spans`` on the same SDK spans (what
  ``otelbot_otlp`` does on one CPU);
- ``ours light``: the same on the light spans themselves;
- ``ours rows``: ``read_rows`` + ``encode_rows`` on one marshalled batch (the export
  helper's work per batch today);
- ``rebuild + sdk``: ``rebuild`` + the SDK's encoder (the helper's work before, and still
  over gRPC).

Every way's bytes are checked equal to the SDK's first. The machine is shared: compare
ways within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from otelbot.core.lightspan import LightTracer
from otelbot.export.helper import rebuild
from otelbot.export.otlp import encode_rows, encode_spans
from otelbot.export.rows import SpanBatch, read_rows

UPDATE = {
    "telegram.update.type": "message",
    "telegram.handler": "bot.echo",
    "telegram.chat.type": "private",
    "messaging.system": "telegram",
    "messaging.operation.type": "process",
}
SELECT = {
    "db.system.name": "postgresql",
    "db.query.text": "SELECT $1",
    "db.namespace": "test",
    "server.address": "127.0.0.1",
    "server.port": 5432,
    "db.operation.name": "SELECT",
}
INCR = {
    "db.system.name": "redis",
    "db.operation.name": "INCR",
    "server.address": "127.0.0.1",
    "server.port": 6379,
    "db.query.text": "INCR ?",
    "db.namespace": "0",
}
SEND = {
    "telegram.api.method": "sendMessage",
    "http.request.method": "POST",
    "server.address": "127.0.0.1",
    "server.port": 8081,
    "http.response.status_code": 200,
    "url.full": "http://127.0.0.1:8081/bot123456:REDACTED/sendMessage",
}


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _update(tracer: Any, update_id: int) -> list[Any]:
    """One update's four spans (the light tracer's objects when ``tracer`` is light)."""
    root = tracer.start_span(
        "telegram.update message",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        attributes={"telegram.update.id": update_id, **UPDATE},
    )
    made = [root]
    with trace.use_span(root, end_on_exit=True):
        for name, attributes in (
            ("SELECT test", SELECT),
            ("INCR", INCR),
            ("telegram.api sendMessage", SEND),
        ):
            span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
            span.end()
            made.append(span)
    return made


def make_spans(batch: int) -> tuple[list[Any], list[Any], list[Any], Any]:
    """(SDK spans, light spans, the SDK spans the light ones became, the light tracer)."""
    resource = Resource.create({"service.name": "bench-encode"})
    sdk_provider = TracerProvider(resource=resource)
    sdk_kept = _Keep()
    sdk_provider.add_span_processor(SimpleSpanProcessor(sdk_kept))
    sdk_tracer = sdk_provider.get_tracer("otelbot.aiogram", "0.1")
    light_provider = TracerProvider(resource=resource)
    light_kept = _Keep()
    light_provider.add_span_processor(SimpleSpanProcessor(light_kept))
    light = LightTracer(light_provider.get_tracer("otelbot.aiogram", "0.1"))
    light_spans: list[Any] = []
    for i in range(batch // 4):
        _update(sdk_tracer, i)
        light_spans += _update(light, i)
    return sdk_kept.spans, light_spans, light_kept.spans, light


def ways(batch: int) -> dict[str, Callable[[], bytes]]:
    sdk_spans, light_spans, light_as_sdk, _light = make_spans(batch)
    rows = SpanBatch()
    for span in sdk_spans:
        rows.add(span)
    payload = rows.payload()

    def from_rows() -> bytes:
        raw = read_rows(payload)
        return encode_rows(raw.resources, raw.scopes, raw.rows)

    found: dict[str, Callable[[], bytes]] = {
        "sdk": lambda: sdk_encode(sdk_spans).SerializePartialToString(),
        "ours spans": lambda: encode_spans(sdk_spans),
        "ours light": lambda: encode_spans(light_spans),
        "ours rows": from_rows,
        "rebuild + sdk": lambda: sdk_encode(rebuild(payload)).SerializePartialToString(),
    }
    expected = found["sdk"]()
    for name, way in found.items():
        if name != "ours light" and way() != expected:
            raise SystemExit(f"{name}: bytes differ from the SDK encoder's")
    order = {s.get_span_context().span_id: i for i, s in enumerate(light_spans)}
    light_as_sdk.sort(key=lambda s: order[s.context.span_id])  # they ended leaves first
    if encode_spans(light_spans) != sdk_encode(light_as_sdk).SerializePartialToString():
        raise SystemExit("ours light: bytes differ from the SDK encoder's")
    return found


def measure(batch: int, rounds: int, repeat: int) -> dict[str, float]:
    found = ways(batch)
    per_round: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(rounds):
        for name, way in found.items():
            start = time.perf_counter()
            for _ in range(repeat):
                way()
            per_round[name].append((time.perf_counter() - start) / repeat / batch * 1e6)
    return {name: statistics.median(values) for name, values in per_round.items()}


def table(result: dict[str, float]) -> str:
    """The measured ways as a Markdown table, with their speed against the SDK's."""
    sdk = result["sdk"]
    rows = ["| encoding | µs per span | speed against the SDK's |", "|---|---:|---:|"]
    for name, value in result.items():
        rows.append(f"| {LABELS.get(name, name)} | {value:.2f} | {sdk / value:.1f}x |")
    return "\n".join(rows)


LABELS = {
    "sdk": "the SDK's encoder (`encode_spans(...).SerializePartialToString()`)",
    "ours spans": "otelbot's, from SDK spans (`otelbot_otlp`)",
    "ours light": "otelbot's, from light spans",
    "ours rows": "otelbot's, from the helper's rows (unmarshalling included)",
    "rebuild + sdk": "the helper before: spans rebuilt from rows, the SDK's encoder",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OTELBOT_LIGHT_SPANS", "true")
    result = measure(args.batch, args.rounds, args.repeat)
    if args.json:
        print(json.dumps({"batch": args.batch, "rounds": args.rounds, "us_per_span": result}))
        return 0
    sdk = result["sdk"]
    print(f"OTLP encoding, µs per span (median of {args.rounds} rounds, batches of {args.batch})")
    for name, value in result.items():
        print(f"  {name:<14} {value:7.2f}   {sdk / value:5.1f}x the SDK's speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
