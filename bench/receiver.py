"""The benchmark's OTLP receiver, run as its own process (like a collector beside the bot).

    python -m bench.receiver --port 4318

It is ``otelbot.testing.otlp_receiver.OtlpReceiver`` without raw-byte keeping, counting
spans instead of keeping them (a long benchmark would otherwise hold every span).
Commands on stdin, one per line, each answered with one line on stdout:
``count`` -> ``<spans> <requests>``, ``down`` (stop listening; connections kept alive
are answered 503), ``up`` (listen and accept again).
"""

from __future__ import annotations

import argparse
import sys

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otelbot.testing.otlp_receiver import OtlpReceiver


class CountingReceiver(OtlpReceiver):
    """Decodes every trace export (so a broken one is refused) but keeps only counts."""

    def ingest(self, signal: str, body: bytes) -> None:
        if signal != "traces":
            with self._cond:
                self._store(body)
            return
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        count = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with self._cond:
            self.span_count += count
            self._store(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    receiver = CountingReceiver(http_port=args.port, grpc_port=None, keep_raw=False).start()
    print(f"listening {receiver.http_port}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "count":
            print(f"{receiver.span_count} {receiver.requests}", flush=True)
        elif command == "down":
            # Refuse on connections the exporter keeps alive, and stop listening.
            receiver.refuse_status = 503
            receiver.stop()
            print("down", flush=True)
        elif command == "up":
            receiver._http_port = receiver.http_port
            receiver.start()
            receiver.refuse_status = None
            print("up", flush=True)
        elif command == "quit":
            break
    receiver.stop()


if __name__ == "__main__":
    main()
