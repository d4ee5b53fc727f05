"""``otelbot watch``'s arguments and options; standard library only, so ``otelbot --help``
works before the [watch] extra is checked."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass

Address = tuple[str, int]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class WatchOptions:
    otlp_http: Address | None = ("127.0.0.1", 4318)
    otlp_grpc: Address | None = ("127.0.0.1", 4317)
    ui: Address = ("127.0.0.1", 4320)
    retention: float = 1800.0
    max_spans: int = 50_000
    forward: str | None = None
    token: str | None = None


TOKEN_VARIABLE = "OTELBOT_WATCH_TOKEN"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(text: str) -> float:
    """``30m``, ``2h``, ``90s``, ``45`` (seconds) as seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 2h or 90s: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:4318), got {text!r}")
    return host.strip("[]"), int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--otlp-http",
        type=address,
        default=("127.0.0.1", 4318),
        metavar="HOST:PORT",
        help="OTLP/HTTP (protobuf) receiver (default 127.0.0.1:4318)",
    )
    parser.add_argument(
        "--otlp-grpc",
        type=address,
        default=("127.0.0.1", 4317),
        metavar="HOST:PORT",
        help="OTLP/gRPC receiver (default 127.0.0.1:4317; needs grpcio)",
    )
    parser.add_argument("--no-grpc", action="store_true", help="no gRPC receiver")
    parser.add_argument(
        "--ui",
        type=address,
        default=("127.0.0.1", 4320),
        metavar="HOST:PORT",
        help="the page and /api (default 127.0.0.1:4320)",
    )
    parser.add_argument(
        "--retention",
        type=duration,
        default=1800.0,
        metavar="DURATION",
        help="how long telemetry is kept (default 30m)",
    )
    parser.add_argument(
        "--max-spans",
        type=int,
        default=50_000,
        help="spans kept at most; the oldest traces go first (default 50000)",
    )
    parser.add_argument(
        "--forward",
        metavar="URL",
        help="also send every export, unchanged, to this OTLP/HTTP endpoint "
        "(a collector, e.g. http://collector:4318)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow addresses other than loopback (then a token is required)",
    )
    parser.add_argument(
        "--token",
        help=f"access token for the page, the API and the receivers (default ${TOKEN_VARIABLE})",
    )
    parser.add_argument("--no-tui", action="store_true", help="plain log lines, no live table")
    parser.add_argument(
        "--log-interval",
        type=duration,
        default=10.0,
        metavar="DURATION",
        help="how often the plain log line is printed (default 10s)",
    )


def options(args: argparse.Namespace) -> WatchOptions | str:
    """The options, or the one line saying why watch cannot run with these arguments."""
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    addresses = [args.ui, args.otlp_http] + ([] if args.no_grpc else [args.otlp_grpc])
    remote = [f"{h}:{p}" for h, p in addresses if not is_loopback(h)]
    if remote and not args.allow_remote:
        return (
            f"{', '.join(remote)} is not a loopback address: anyone who reaches it would "
            "see your bot's telemetry; add --allow-remote and a token "
            f"(--token or ${TOKEN_VARIABLE}) if that is what you want"
        )
    if remote and not token:
        return f"--allow-remote needs an access token (--token or ${TOKEN_VARIABLE})"
    if args.max_spans < 1:
        return "--max-spans must be at least 1"
    return WatchOptions(
        otlp_http=args.otlp_http,
        otlp_grpc=None if args.no_grpc else args.otlp_grpc,
        ui=args.ui,
        retention=args.retention,
        max_spans=args.max_spans,
        forward=args.forward,
        token=token,
    )
