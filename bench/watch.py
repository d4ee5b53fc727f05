"""``otelbot watch`` under load: its CPU share and RSS while a bot sends full traces.

python -m bench.watch [--rate 1000] [--seconds 30] [--max-spans 50000]

Starts ``otelbot watch --no-tui`` (free ports) and sends it, over OTLP/HTTP protobuf,
``--rate`` updates a second, each a trace of four spans (the update, a SELECT, a Redis GET,
a ``sendMessage``) with the attributes otelbot puts on them, in batches of 512 spans as the
SDK's batch processor does; meanwhile it reads /api/summary, /api/handlers and /api/traces
every 2 s, as an open page does. Prints watch's CPU share (CPU seconds / wall seconds), its
RSS at the end, the spans it kept and whether every export was accepted on time.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otelbot.testing.processes import Child, free_port

SPANS_PER_UPDATE = 4
BATCH_SPANS = 512
SQL = "SELECT * FROM users WHERE id = $1"
HANDLERS = ("__main__.start", "__main__.profile", "__main__.buy", "__main__.help")


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _update(now_ns: int, rng: random.Random) -> list[Span]:
    trace_id, root = rng.randbytes(16), rng.randbytes(8)
    handler = rng.choice(HANDLERS)
    took = int(rng.uniform(2, 40) * 1e6)
    root_span = Span(
        trace_id=trace_id,
        span_id=root,
        name="telegram.update message",
        kind=Span.SPAN_KIND_CONSUMER,
        start_time_unix_nano=now_ns - took,
        end_time_unix_nano=now_ns,
        attributes=[
            _kv("telegram.handler", handler),
            _kv("telegram.update.type", "message"),
            _kv("telegram.chat.type", "private"),
            _kv("telegram.ingress", "polling"),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR if rng.random() < 0.01 else 0),
    )
    sql = [_kv("db.system.name", "postgresql"), _kv("db.query.text", SQL)]
    redis = [_kv("db.system.name", "redis"), _kv("db.query.text", "GET ?")]
    api = [
        _kv("telegram.api.method", "sendMessage"),
        _kv("http.response.status_code", 200),
        _kv("url.full", "https://api.telegram.org/bot123:REDACTED/sendMessage"),
    ]
    children = [("SELECT users", sql), ("GET", redis), ("telegram.api sendMessage", api)]
    spans = [root_span]
    step = took // 4
    for i, (name, attrs) in enumerate(children):
        start = now_ns - took + i * step
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=rng.randbytes(8),
                parent_span_id=root,
                name=name,
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + step,
                attributes=attrs,
            )
        )
    return spans


def _body(updates: int, rng: random.Random) -> bytes:
    now = time.time_ns()
    spans = [s for _ in range(updates) for s in _update(now, rng)]
    resource = {"attributes": [_kv("service.name", "bench-bot")]}
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _poll_page(ui: int, stop: threading.Event) -> None:
    while not stop.wait(2.0):
        for path in ("/api/summary", "/api/handlers", "/api/traces?limit=30", "/api/health"):
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}{path}", timeout=10) as r:
                r.read()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch")
    parser.add_argument("--rate", type=int, default=1000, help="updates per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-spans", type=int, default=50_000)
    args = parser.parse_args()
    http, grpc, ui = free_port(), free_port(), free_port()
    cmd = [
        sys.executable, "-m", "otelbot.cli", "watch", "--no-tui", "--log-interval", "1h",
        "--otlp-http", f"127.0.0.1:{http}", "--otlp-grpc", f"127.0.0.1:{grpc}",
        "--ui", f"127.0.0.1:{ui}", "--max-spans", str(args.max_spans),
    ]  # fmt: skip
    rng = random.Random(1)
    per_batch = BATCH_SPANS // SPANS_PER_UPDATE
    interval = per_batch / args.rate
    sent = late = refused = 0
    with Child(cmd, name="otelbot-watch") as watch:
        watch.wait_for_line("listening", 30)
        pid = watch.proc.pid
        stop = threading.Event()
        poller = threading.Thread(target=_poll_page, args=(ui, stop), daemon=True)
        poller.start()
        cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
        next_at = wall0
        while time.monotonic() - wall0 < args.seconds:
            body = _body(per_batch, rng)
            request = urllib.request.Request(
                f"http://127.0.0.1:{http}/v1/traces",
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                refused += response.status != 200
            sent += per_batch
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                late += 1
        wall = time.monotonic() - wall0
        cpu = _cpu_seconds(pid) - cpu0
        rss = _rss(pid)
        stop.set()
        with urllib.request.urlopen(f"http://127.0.0.1:{ui}/api/health", timeout=10) as r:
            health = r.read().decode()
    print(
        f"watch at {sent / wall:.0f} updates/s ({sent * SPANS_PER_UPDATE / wall:.0f} spans/s) "
        f"for {wall:.1f} s: CPU {cpu / wall:.1%} of one core, RSS {rss / 1048576:.0f} MiB "
        f"(span cap {args.max_spans}); {refused} export(s) refused, {late} batch(es) sent late"
    )
    print(f"health: {health}")
    return 0 if refused == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
