"""``otelbot watch``: run the receivers and the page until Ctrl+C, with a live terminal view
(rich) when stdout is a terminal, else (or with ``--no-tui``) one log line every
``--log-interval`` seconds::

    otelbot watch                          # OTLP on 127.0.0.1:4318 (HTTP) and :4317 (gRPC)
    opentelemetry-instrument python bot.py # sends there with no configuration
    # page: http://127.0.0.1:4320/

Exit codes: 0 stopped by Ctrl+C/SIGTERM, 2 cannot run (an address in use, a remote
address without --allow-remote and a token); one line says why.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from otelbot.watch import views
from otelbot.watch.options import options
from otelbot.watch.server import Watch

EXIT_OK = 0
EXIT_CANNOT_RUN = 2
PROG = "otelbot watch"


def status_line(watch: Watch) -> str:
    s = views.summary(watch.store)
    worst = sorted(views.handlers(watch.store), key=lambda r: -r["p95_ms"])[:3]
    slow = ", ".join(f"{r['handler']} p95 {r['p95_ms']:.1f}ms" for r in worst) or "no updates yet"
    return (
        f"{PROG}: {s['updates_per_second']:.2f} updates/s, {len(s['services'])} service(s), "
        f"{s['findings']} finding(s), {watch.store.span_count} spans kept; {slow}"
    )


def _table(watch: Watch) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = views.summary(watch.store)
    head = Text.assemble(
        (f"{PROG}  ", "bold"),
        (watch.ui_url, "bold cyan"),
        f"   {s['updates_per_second']:.2f} updates/s   ",
        (f"{s['findings']} finding(s)", "yellow" if s["findings"] else ""),
        f"   {watch.store.span_count} spans kept   RSS {s['watch_rss_bytes'] / 1048576:.0f} MiB",
    )
    table = Table(expand=True)
    for name in ("service", "handler"):
        table.add_column(name)
    for name in ("count", "errors", "avg ms", "p95 ms", "p99 ms"):
        table.add_column(name, justify="right")
    for r in views.handlers(watch.store)[:20]:
        table.add_row(
            r["service"],
            r["handler"],
            str(r["count"]),
            str(r["errors"]),
            f"{r['avg_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
        )
    latest = views.findings(watch.store)[:5]
    lines = [Text(f"! {f['event']} {f['handler']}: {f['summary']}", "yellow") for f in latest]
    return Group(head, table, *lines)


async def _serve(watch: Watch, tui: bool, log_interval: float) -> int:
    try:
        await watch.start()
    except (OSError, RuntimeError) as exc:
        print(f"{PROG}: cannot listen: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    where = [f"page {watch.ui_url}"]
    if watch.http_port:
        where.append(f"OTLP/HTTP {watch.http_endpoint}")
    if watch.grpc_port:
        assert watch.options.otlp_grpc is not None
        where.append(f"OTLP/gRPC {watch.options.otlp_grpc[0]}:{watch.grpc_port}")
    print(f"{PROG}: listening: {'; '.join(where)}; Ctrl+C to stop", flush=True)
    try:
        if tui:
            from rich.live import Live

            with Live(_table(watch), refresh_per_second=1, screen=False) as live:
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(stop.wait(), 1.0)
                    except asyncio.TimeoutError:
                        watch.store.trim()
                        live.update(_table(watch))
        else:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), log_interval)
                except asyncio.TimeoutError:
                    watch.store.trim()
                    print(status_line(watch), flush=True)
    finally:
        await watch.stop()
    print(f"{PROG}: stopped", flush=True)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    if isinstance(opts, str):
        print(f"{PROG}: {opts}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if opts.otlp_grpc is not None:
        try:
            import grpc  # noqa: F401
        except ImportError:
            print(
                f"{PROG}: gRPC receiver off: grpcio is not installed (pip install "
                "'otelbot[watch]'); OTLP/HTTP still works",
                file=sys.stderr,
            )
            opts.otlp_grpc = None
    watch = Watch(opts)
    tui = sys.stdout.isatty() and not args.no_tui
    return asyncio.run(_serve(watch, tui, args.log_interval))
