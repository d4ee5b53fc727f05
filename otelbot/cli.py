"""``otelbot``: the project's command line.

    otelbot demo [--duration 60] [--html out/demo-report.html] [--otlp-endpoint URL]
                 [--ui HOST:PORT] [--keep]
                 [--framework aiogram|ptb]
    otelbot watch [--otlp-http HOST:PORT] [--otlp-grpc HOST:PORT] [--ui HOST:PORT] ...

``demo`` runs the demo bot under ``opentelemetry-instrument`` with ``otelbot-agent`` beside
it, drives updates at it and prints what the telemetry shows (docs/demo.md).
Exit codes: 0 ok, 1 no finding arrived or the token leaked, 2 the demo
could not run (one line says why), e.g. without its packages:
``otelbot demo: the demo needs extra packages (missing: …): pip install 'otelbot[demo]'``.

``watch`` receives OTLP from a bot (and an agent) on this machine and serves a live page
with handlers, traces and findings (docs/watch.md).

Nothing optional is imported before a subcommand has checked that its extra is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from otelbot.scripts import check_extra, report_missing_module
from otelbot.testing import defaults
from otelbot.watch.options import add_arguments as add_watch_arguments
from otelbot.watch.options import address

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_CANNOT_RUN = 2


def _demo(args: argparse.Namespace) -> int:
    # The demo's bot and agent run as child processes, so their packages are checked here
    # too, not only the ones this process imports.
    if not check_extra("otelbot demo", "the demo", "demo"):
        return EXIT_CANNOT_RUN
    try:
        from rich.console import Console

        from otelbot.demo.analysis import analyse
        from otelbot.demo.render import print_report, write_html
        from otelbot.demo.run import BOT_DIRS, DemoError, DemoOptions, close_watch, run_demo
    except ModuleNotFoundError as exc:
        return report_missing_module("otelbot demo", "the demo", "demo", exc)

    # Not a terminal (CI, a pipe, a file): wide enough for the report's tables.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    opts = DemoOptions(
        duration=args.duration,
        small=args.small,
        html=Path(args.html),
        otlp_endpoint=args.otlp_endpoint,
        progress=not args.no_progress,
        ui=args.ui,
        keep=args.keep,
        bot_dir=BOT_DIRS[args.framework],
    )
    if args.framework == "ptb" and importlib.util.find_spec("telegram") is None:
        console.print(
            "[red]otelbot demo: --framework ptb needs python-telegram-bot: "
            "pip install 'python-telegram-bot>=20'[/]",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_CANNOT_RUN
    if args.pg_dsn:
        opts.pg_dsn = args.pg_dsn
    if args.redis_url:
        opts.redis_url = args.redis_url
    try:
        observed = run_demo(opts, console)
    except DemoError as exc:
        console.print(f"[red]otelbot demo: {exc}[/]", highlight=False, soft_wrap=True)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        console.print("[yellow]otelbot demo: interrupted[/]")
        return EXIT_CANNOT_RUN
    report = analyse(observed)
    console.print()
    print_report(report, console)
    write_html(report, opts.html)
    console.print(f"\nHTML report: [bold]{opts.html.resolve()}[/]", highlight=False)
    close_watch(observed, console, keep=opts.keep)
    complete = bool(report.findings) or report.limited is not None
    clean = report.token is None or report.token.clean
    return EXIT_OK if complete and clean else EXIT_INCOMPLETE


def _watch(args: argparse.Namespace) -> int:
    if not check_extra("otelbot watch", "watch", "watch"):
        return EXIT_CANNOT_RUN
    try:
        from otelbot.watch.cli import run
    except ModuleNotFoundError as exc:
        return report_missing_module("otelbot watch", "watch", "watch", exc)
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otelbot",
        description="otelbot's command line. The bot itself needs none: it runs under "
        "opentelemetry-instrument; the sidecar is otelbot-agent.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the demo bot with its built-in problems and print what otelbot shows about them",
    )
    demo.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    demo.add_argument(
        "--html",
        default="out/demo-report.html",
        help="where to write the HTML report (default out/demo-report.html)",
    )
    demo.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="send the telemetry to this OTLP/HTTP endpoint (a real collector, "
        "e.g. http://localhost:4318) instead of the demo's own otelbot watch",
    )
    demo.add_argument(
        "--pg-dsn",
        help=f"PostgreSQL DSN (default ${defaults.PG_DSN_VARIABLE} or {defaults.DEFAULT_PG_DSN})",
    )
    demo.add_argument(
        "--redis-url",
        help=f"Redis URL (default ${defaults.REDIS_URL_VARIABLE} or {defaults.DEFAULT_REDIS_URL})",
    )
    demo.add_argument(
        "--small",
        action="store_true",
        help="small data and agent thresholds, for a run of a few seconds",
    )
    demo.add_argument("--no-progress", action="store_true", help="no live progress display")
    demo.add_argument(
        "--ui",
        type=address,
        metavar="HOST:PORT",
        help="the live page (otelbot watch) on this loopback address "
        "(default 127.0.0.1:4320, or a free port when that is taken)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="after the report, leave the live page up until Ctrl+C",
    )
    demo.add_argument(
        "--framework",
        choices=("aiogram", "ptb"),
        default="aiogram",
        help="the demo bot written with aiogram 3 (default) or python-telegram-bot 20+ (ptb)",
    )
    watch = sub.add_parser(
        "watch",
        help="a local OTLP receiver with a live page: handlers, traces and findings, no backend",
    )
    add_watch_arguments(watch)
    args = parser.parse_args(argv)
    if args.command == "watch":
        return _watch(args)
    if args.command == "demo":
        if args.duration <= 0:
            parser.error("--duration must be positive")
        if args.keep and args.otlp_endpoint:
            parser.error("--keep keeps the demo's own page; with --otlp-endpoint there is none")
        return _demo(args)
    return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
