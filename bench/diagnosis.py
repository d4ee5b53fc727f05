"""What the detectors cost per sampled update, in the bot's process: ``python -m bench.diagnosis``.

One update as the instrumentations feed it (begin, one SQL, one Redis and one Bot API
operation noted, end with every detector of ``otelbot.diagnosis.engine.DETECTORS``), and
``note()`` alone, inside and outside an update. Best of several repeats (this kind of
machine is shared and noisy; the best is the least disturbed). The step timer's cost is
measured by ``python -m bench.steps``.
"""

from __future__ import annotations

import argparse
import time
import timeit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otelbot.diagnosis import engine, notes
from otelbot.diagnosis.notes import API, REDIS, SQL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    host = engine.Diagnosis(MeterProvider().get_meter("bench"))
    span = TracerProvider().get_tracer("bench").start_span("telegram.update message")

    def one_update() -> None:
        update = host.begin(span, "message")
        assert update is not None
        t = time.perf_counter()
        notes.note(SQL, "SELECT v FROM t WHERE id = $1", t, t + 0.001, (1, "SELECT", "t"))
        notes.note(REDIS, "INCR ?", t + 0.001, t + 0.0015, None)
        notes.note(API, "sendMessage", t + 0.002, t + 0.004, (0, None, None))
        host.end(update, "bench.echo", "handled")

    def best(statement: object) -> float:
        times = timeit.repeat(statement, number=args.number, repeat=args.repeat)  # type: ignore[arg-type]
        return min(times) / args.number * 1e6

    for _ in range(args.number):
        one_update()  # warm: the detectors' per-handler state exists
    per_update = best(one_update)
    outside = best(lambda: notes.note(SQL, "SELECT 1", 0.0, 0.001, None))
    print(
        f"one sampled update (begin, 3 operations noted, end; {len(host.detectors)} "
        f"detectors): {per_update:.1f} µs"
    )
    print(f"note() outside a sampled update: {outside:.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
