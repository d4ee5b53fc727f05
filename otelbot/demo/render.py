"""The demo report as rich renderables: printed to the terminal, and recorded into one
self-contained HTML file (inline styles, no external assets)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from otelbot.demo.analysis import MB, Report

SPARK = "▁▂▃▄▅▆▇█"
HTML_WIDTH = 160


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.1f}" if seconds < 0.1 else f"{seconds * 1000:.0f}"


def _bar(offset: float, duration: float, total: float, width: int = 30) -> Text:
    if total <= 0:
        return Text("")
    start = int(offset / total * width)
    length = max(1, round(duration / total * width))
    return Text(" " * start + "█" * min(length, width - start), style="cyan")


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    spread = high - low or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / spread * len(SPARK)))] for v in values)


def _section(title: str) -> Rule:
    return Rule(f"[bold]{title}", align="left", style="blue")


def _summary_figures(report: Report) -> str:
    """The dashboard figures watch's /api/summary gives for the demo bot, in one line."""
    s = report.summary
    if not s:
        return ""
    parts = [f"{s['updates_processed']} updates processed"]
    if s.get("avg_response_ms") is not None:
        parts.append(
            f"average response {s['avg_response_ms']:.1f} ms, p95 {s['p95_response_ms']:.1f} ms"
        )
    if s.get("memory_bytes"):
        parts.append(f"memory {s['memory_bytes'] / MB:.0f} MB")
    ratio = (s.get("cache") or {}).get("hit_ratio")
    if ratio is not None:
        parts.append(f"cache hit ratio {ratio:.0%}")
    parts.append(f"{s['findings']} findings")
    return ", ".join(parts)


def renderables(report: Report) -> Iterator[RenderableType]:
    summary = (
        f"{report.duration:.0f} s of load: {report.updates_sent} updates sent, "
        f"{report.updates_traced} traced; received {report.spans} spans, "
        f"{report.points} metric points, {report.logs} log records"
    )
    figures = _summary_figures(report)
    if figures:
        summary += f"\nwatch's summary: {figures}"
    if report.page_url:
        summary += f"\nlive page (otelbot watch): {report.page_url}"
    yield Panel(summary, title="[bold]otelbot demo report", border_style="green")
    if report.limited:
        yield Text(report.limited, style="yellow")

    settings = ", ".join(f"{k}={v}" for k, v in report.settings.items()) or "none (defaults)"
    yield Text(f"demo settings: {settings}", style="dim")
    if report.agent_settings:
        agent = ", ".join(f"{k} {v}" for k, v in report.agent_settings.items())
        yield Text(f"demo agent.yaml: {agent}", style="dim")

    yield _section("Problems found (findings from the bot's detectors and the agent)")
    if report.findings:
        problems = Table(show_lines=True, expand=True)
        problems.add_column("finding", style="bold", no_wrap=True)
        problems.add_column("handler", style="magenta", no_wrap=True)
        problems.add_column("object", overflow="fold", ratio=2)
        problems.add_column("evidence", overflow="fold", ratio=4)
        problems.add_column("suggestion", style="green", overflow="fold", ratio=3)
        problems.add_column("code", no_wrap=True)
        for f in report.findings:
            problems.add_row(
                f.kind, f.handler or "—", f.object, f.evidence, f.suggestion, f.code or "—"
            )
        yield problems
    elif report.limited:
        yield Text("look for the findings in your backend: the telemetry went there", style="dim")
    else:
        yield Text("no findings received", style="dim")
    if report.other_findings:
        yield Text(
            f"({report.other_findings} findings about other schemas of the same "
            "database not shown)",
            style="dim",
        )

    yield _section("Update latency per handler (telegram.update spans)")
    latency = Table()
    for col in ("handler", "updates", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        latency.add_column(col, justify="left" if col == "handler" else "right")
    for h in report.latency:
        latency.add_row(
            h.handler, str(h.updates), str(h.errors), _ms(h.p50), _ms(h.p95), _ms(h.p99), _ms(h.max)
        )
    yield latency if report.latency else Text("no update spans received", style="dim")

    yield _section(f"Slowest trace ({report.slowest_handler or 'none'})")
    if report.slowest:
        total = report.slowest[0].duration
        waterfall = Table(box=None, padding=(0, 1))
        waterfall.add_column("span")
        waterfall.add_column("start ms", justify="right")
        waterfall.add_column("ms", justify="right")
        waterfall.add_column("", no_wrap=True)
        waterfall.add_column("detail", style="dim", overflow="fold", max_width=70)
        for row in report.slowest:
            waterfall.add_row(
                "  " * row.depth + row.name,
                _ms(row.offset),
                _ms(row.duration),
                _bar(row.offset, row.duration, total),
                row.detail,
            )
        yield waterfall
    else:
        yield Text("no traces received", style="dim")

    yield _section("Bot API calls per method")
    api = Table()
    for col in ("method", "calls", "errors", "flood waits (429)", "p95 ms"):
        api.add_column(col, justify="left" if col == "method" else "right")
    for a in report.api:
        api.add_row(
            a.method,
            str(a.calls),
            str(a.errors),
            f"[red]{a.flood_waits}[/]" if a.flood_waits else "0",
            _ms(a.p95),
        )
    yield api

    yield _section("Database statements by total time (db.query.text)")
    statements = Table()
    statements.add_column("statement", overflow="fold", ratio=1)
    for col in ("calls", "total ms", "mean ms", "p95 ms"):
        statements.add_column(col, justify="right")
    statements.add_column("handler", style="magenta")
    for s in report.statements:
        statements.add_row(
            s.text, str(s.calls), _ms(s.total), _ms(s.mean), _ms(s.p95), ", ".join(s.handlers)
        )
    yield statements if report.statements else Text("no SQL spans received", style="dim")

    yield _section("Cache (otelbot.cache.requests)")
    cache = Table()
    for col in ("reads", "hits", "misses", "hit ratio"):
        cache.add_column(col, justify="left" if col == "reads" else "right")
    for c in report.cache:
        cache.add_row(
            c.what, str(c.hits), str(c.misses), f"{c.ratio:.0%}" if c.ratio is not None else "—"
        )
    yield cache if report.cache else Text("no cache metrics received", style="dim")

    yield _section("Runtime: event loop and garbage collector")
    rt = report.runtime
    if rt is not None:
        lag = f"{rt.loop_lag_max:.3f} s" if rt.loop_lag_max is not None else "—"
        lines = [
            f"event-loop lag max: [bold]{lag}[/] [dim]({rt.loop_lag_source or 'no data'})[/]",
            f"GC: {rt.gc_collections} collections, {rt.gc_pause_total * 1000:.1f} ms paused "
            f"in all, longest pause {_ms(rt.gc_pause_max)} ms "
            "[dim](otelbot.gc.pause.duration)[/]",
        ]
        if rt.tasks_max is not None:
            lines.append(f"asyncio tasks, most at once: {rt.tasks_max:.0f}")
        yield Text.from_markup("\n".join(lines))

    yield _section("Memory trend (process.memory.usage, bot process)")
    mem = report.memory
    if mem is not None:
        values = [v for _, v in mem.samples]
        yield Text.from_markup(
            f"[cyan]{sparkline(values)}[/]\n{mem.first / MB:.1f} MB -> {mem.last / MB:.1f} MB "
            f"(peak {mem.peak / MB:.1f} MB, {mem.per_minute / MB:+.1f} MB/min over "
            f"{len(mem.samples)} samples)"
        )
    else:
        yield Text("no memory samples received", style="dim")

    yield _section("Active users (telegram.users.active)")
    if report.users:
        users = Table()
        for col in ("window", "now", "most"):
            users.add_column(col, justify="left" if col == "window" else "right")
        for g in report.users:
            users.add_row(g.what, f"{g.last:.0f}", f"{g.max:.0f}")
        yield users
    else:
        yield Text("no active-user metrics received", style="dim")

    yield _section("Database connections")
    conns = report.connections
    if conns.pool or conns.server:
        table = Table()
        table.add_column("connections")
        table.add_column("source", style="dim")
        table.add_column("now", justify="right")
        table.add_column("most", justify="right")
        for g in conns.pool:
            table.add_row(g.what, "db.client.connection.* (bot)", f"{g.last:.0f}", f"{g.max:.0f}")
        for g in conns.server:
            table.add_row(g.what, "postgresql.* (agent)", f"{g.last:.0f}", f"{g.max:.0f}")
        yield table
    else:
        yield Text("no connection metrics received", style="dim")

    token = report.token
    if token is not None:
        if token.clean and token.requests:
            yield Text.from_markup(
                f"[green]✓ the bot token appeared nowhere in the telemetry[/] (scanned "
                f"{token.requests} OTLP requests, {token.bytes_scanned / 1024:.0f} kB, and "
                f"{token.output_chars} characters of the bot's and agent's output)"
            )
        elif token.clean:
            yield Text.from_markup(
                f"[green]✓ the bot token appeared nowhere in the bot's and agent's output[/] "
                f"({token.output_chars} characters; the OTLP data went elsewhere, not scanned)"
            )
        else:
            yield Text.from_markup(
                f"[red bold]✗ the bot token was found in: {', '.join(token.found_in)}[/]"
            )


def print_report(report: Report, console: Console) -> None:
    for part in renderables(report):
        console.print(part)


def write_html(report: Report, path: Path) -> None:
    recorder = Console(
        file=io.StringIO(),
        record=True,
        width=HTML_WIDTH,
        force_terminal=True,
        color_system="truecolor",
    )
    print_report(report, recorder)
    path.parent.mkdir(parents=True, exist_ok=True)
    recorder.save_html(str(path), inline_styles=True, clear=True)
