"""Runs the demo: services, schema, fake Bot API, the instrumented bot, the agent, the load,
a live progress display, and the report at the end.

Problems a user can cause (PostgreSQL or Redis unreachable, a command missing, the bot not
starting) raise ``DemoError`` with one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from otelbot import semconv
from otelbot.demo.analysis import Observed
from otelbot.demo.fake_api import FloodControlledBotApi
from otelbot.demo.load import LoadDriver, update_mix
from otelbot.testing import defaults
from otelbot.testing.otlp_receiver import ReceivedPoint, decode_metrics
from otelbot.testing.processes import Child, ChildError, sibling_command
from otelbot.watch.embedded import EmbeddedWatch
from otelbot.watch.options import Address, WatchOptions, is_loopback
from otelbot.watch.store import WatchStore

#: The demo bot ships inside the package (package data), so a wheel install has it too.
BOT_DIR = Path(__file__).resolve().parent / "bot"
#: The same bot per framework (`otelbot demo --framework`); both use bot/schema.sql.
BOT_DIRS = {"aiogram": BOT_DIR, "ptb": BOT_DIR.parent / "bot_ptb"}
SCHEMA = BOT_DIR / "schema.sql"
SERVICE_NAME = "otelbot-demo-bot"
#: Where the live page is served unless --ui says otherwise (a free port if taken).
DEFAULT_UI: Address = ("127.0.0.1", 4320)
#: The run's telemetry stays on the page as long as it is up (--keep).
WATCH_RETENTION = 24 * 3600.0
WATCH_MAX_SPANS = 500_000


class DemoError(Exception):
    """Something the user can fix; the message is the one line to show."""


@dataclass(frozen=True)
class Sizes:
    """How big the demo data is, and the agent thresholds that go with it."""

    customers: int
    orders_per_customer: int
    promo_codes: int
    users: int
    missing_index_min_seq_scans: int
    unused_index_window: float
    #: The bot's detector settings the demo changes (documented OTELBOT_* settings, see
    #: docs/findings.md), so that a run of seconds, not hours, shows every finding.
    bot_settings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_run(cls, small: bool) -> Sizes:
        if small:
            # The unused-index window outlasts the quiet seconds at the end of a run (no
            # load, so no scans): only indexes no query uses are named.
            return cls(200, 10, 20_000, 40, 5, 5.0, _SMALL_BOT_SETTINGS)
        return cls(500, 20, 60_000, 60, 20, 6.0, _BOT_SETTINGS)

    def agent_settings(self) -> dict[str, str]:
        """The agent.yaml keys the demo sizes to its data (``agent_config`` writes them)."""
        return {
            "intervals": "fast 1s, slow 2s, advice 3s",
            "unused_index_window": f"{self.unused_index_window:g}s",
            "missing_index_min_seq_scans": str(self.missing_index_min_seq_scans),
            "missing_index_min_rows": str(self.promo_codes // 4),
        }


# Memory: judged over seconds, not ten minutes (the demo bot leaks about 2 MB/s), so
# that a run of 15 s names the leak too.
_BOT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("OTELBOT_MEMORY_WINDOW", "8"),
    ("OTELBOT_MEMORY_GROWTH_MB", "8"),
    ("OTELBOT_MEMORY_TRACE_SECONDS", "2"),
)
# A 10 s run: a 4 s memory window, and a cache judged after 20 reads (a 10 s run has 40).
_SMALL_BOT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("OTELBOT_MEMORY_WINDOW", "4"),
    ("OTELBOT_MEMORY_GROWTH_MB", "4"),
    ("OTELBOT_MEMORY_TRACE_SECONDS", "2"),
    ("OTELBOT_CACHE_MIN_READS", "20"),
)


def documented_settings() -> set[str]:
    """Every OTELBOT_* setting of the bot's detectors in the catalogue (docs/findings.md)."""
    names = {semconv.FINDINGS_SETTING.name, semconv.FINDINGS_INTERVAL_SETTING.name}
    for f in semconv.all_findings():
        names.update(s.name for s in f.settings)
    return names


@dataclass
class DemoOptions:
    duration: float = 60.0
    small: bool = False
    html: Path = Path("out/demo-report.html")
    otlp_endpoint: str | None = None
    pg_dsn: str = field(default_factory=defaults.pg_dsn)
    redis_url: str = field(default_factory=defaults.redis_url)
    bot_dir: Path = BOT_DIR
    progress: bool = True
    #: The live page's address; None: DEFAULT_UI, or a free port when that is taken.
    ui: Address | None = None
    #: Leave the page (and watch) up after the report, until Ctrl+C.
    keep: bool = False


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or ''}".rstrip(":")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- services


async def _load_schema(dsn: str, sql: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except Exception as exc:
        raise DemoError(
            f"PostgreSQL is not reachable at {_where(dsn)} ({_first_line(exc)}): start it "
            "(in a checkout scripts/services does) or point the demo at it with --pg-dsn or "
            "OTELBOT_TEST_PG_DSN"
        ) from None
    try:
        await conn.execute(sql)
    except Exception as exc:
        raise DemoError(
            f"cannot load the demo schema into {_where(dsn)}: {_first_line(exc)}; "
            "the role needs CREATE on the database"
        ) from None
    finally:
        await conn.close()


def load_schema(opts: DemoOptions, sizes: Sizes) -> None:
    path = SCHEMA
    sql = Template(path.read_text()).substitute(
        customers=sizes.customers,
        orders_per_customer=sizes.orders_per_customer,
        promo_codes=sizes.promo_codes,
    )
    asyncio.run(_load_schema(opts.pg_dsn, sql))


def reset_cache(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
        keys = list(client.scan_iter("otelbot_demo:*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception as exc:
        raise DemoError(
            f"Redis is not reachable at {_where(url)} ({_first_line(exc)}): start it "
            "(in a checkout scripts/services does) or point the demo at it with --redis-url or "
            "OTELBOT_TEST_REDIS_URL"
        ) from None
    finally:
        client.close()


# --------------------------------------------------------------------------- processes


def _command(name: str) -> str:
    found = sibling_command(name)
    if not found:
        raise DemoError(
            f"the `{name}` command is not installed beside {sys.executable}: "
            "pip install 'otelbot[demo]'"
        )
    return found


def _otel_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BSP_MAX_QUEUE_SIZE": "20000",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def agent_config(
    path: Path, opts: DemoOptions, sizes: Sizes, pid: int, runtime_dir: Path, state_file: Path
) -> None:
    """Short intervals so a one-minute run gets many polls and advice rounds; thresholds
    sized to the demo data (docs/agent.md has every key)."""
    path.write_text(f"""\
intervals: {{fast: 1s, slow: 2s, advice: 3s}}
export_interval: 1s
state_file: {state_file}
log_level: WARNING
process: {{enabled: true, pid: {pid}}}
runtime: {{enabled: true, dir: {runtime_dir}, frozen_after: 10s}}
postgresql:
  databases: [{{name: demo, dsn: "{opts.pg_dsn}"}}]
  unused_index_window: {sizes.agent_settings()["unused_index_window"]}
  missing_index_min_seq_scans: {sizes.agent_settings()["missing_index_min_seq_scans"]}
  missing_index_min_rows: {sizes.agent_settings()["missing_index_min_rows"]}
redis:
  instances: [{{name: cache, url: "{opts.redis_url}"}}]
health: {{enabled: false}}
""")


# --------------------------------------------------------------------------- progress


class ProgressView:
    """The live display: a bar for the load, and what has arrived so far."""

    def __init__(self, console: Console, duration: float, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("driving updates", total=duration)
        self.stats: Callable[[], list[tuple[str, str]]] = list
        self._live: Live | None = None

    def step(self, label: str) -> None:
        if self.enabled:
            self.console.print(f"[green]✓[/] {label}")

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._live = Live(
                self._render(), console=self.console, refresh_per_second=4, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def update(self, elapsed: float, description: str | None = None) -> None:
        self.bar.update(self.task, completed=elapsed, description=description)
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        stats = self.stats()
        for i in range(0, len(stats), 3):
            row = []
            for label, value in stats[i : i + 3]:
                row.append(f"[dim]{label}[/] [bold]{value}[/]")
            table.add_row(*row)
        return Group(self.bar, table)


# --------------------------------------------------------------------------- the run


def run_demo(opts: DemoOptions, console: Console) -> Observed:
    """Run everything and return what was observed. Raises ``DemoError``."""
    sizes = Sizes.for_run(opts.small)
    instrument = _command("opentelemetry-instrument")
    agent_cmd = _command("otelbot-agent")
    view = ProgressView(console, opts.duration, opts.progress)
    if opts.ui is not None and not is_loopback(opts.ui[0]):
        raise DemoError(
            f"--ui {opts.ui[0]}:{opts.ui[1]} is not a loopback address; the demo's page "
            "binds to loopback only (from another machine: ssh -L 4320:127.0.0.1:4320)"
        )

    load_schema(opts, sizes)
    view.step(
        f"demo schema loaded into {_where(opts.pg_dsn)} (schema otelbot_demo: "
        f"{sizes.promo_codes} promo codes, {sizes.customers * sizes.orders_per_customer} "
        "orders)"
    )
    reset_cache(opts.redis_url)
    view.step(f"Redis at {_where(opts.redis_url)} ready")

    token = defaults.random_bot_token()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otelbot-demo-")))
        runtime_dir = work / "runtime"
        runtime_dir.mkdir()
        watch: EmbeddedWatch | None = None
        if opts.otlp_endpoint:
            endpoint = opts.otlp_endpoint
        else:
            watch = start_watch(opts)
            stack.push(_stop_on_error(watch))  # after a good run it serves the report's data
            endpoint = watch.http_endpoint
            console.print(f"live page: {watch.ui_url}", highlight=False, soft_wrap=True)
        api = FloodControlledBotApi(token, groups_only=True, max_poll_wait=0.5)
        api.start()
        stack.callback(api.stop)
        view.step(
            f"fake Bot API on {api.base_url}; OTLP to "
            f"{endpoint if opts.otlp_endpoint else 'otelbot watch at ' + endpoint}"
        )

        env = _otel_env(endpoint)
        bot_env = {
            **env,
            "BOT_TOKEN": token,
            "BOT_API_BASE": api.base_url,
            "PG_DSN": opts.pg_dsn,
            "REDIS_URL": opts.redis_url,
            "OTELBOT_RUNTIME_DIR": str(runtime_dir),
            **dict(sizes.bot_settings),
        }
        bot_dir = copy_bot(opts.bot_dir, work)
        bot = stack.enter_context(
            Child([instrument, sys.executable, str(bot_dir)], env=bot_env, cwd=work, name="bot")
        )
        _wait_for_line(bot, "demo bot polling", 60)
        view.step(f"demo bot running under opentelemetry-instrument (pid {bot.proc.pid})")

        driver = LoadDriver(api, update_mix(sizes.promo_codes), sizes.users)
        driver.one_of_each()  # every handler runs once before the agent's first advice poll
        _wait_until(lambda: api.pending_updates == 0, 15)
        time.sleep(1.5)

        config = work / "agent.yaml"
        agent_config(config, opts, sizes, bot.proc.pid, runtime_dir, work / "agent-state.json")
        agent = stack.enter_context(
            Child([agent_cmd, "run", "--config", str(config)], env=env, cwd=work, name="agent")
        )
        time.sleep(0.5)
        if agent.proc.poll() is not None:
            raise DemoError(
                f"otelbot-agent exited at start ({agent.proc.returncode}): {agent.tail(3)}"
            )
        view.step("otelbot-agent running beside it (process, runtime file, PostgreSQL, Redis)")

        def stats() -> list[tuple[str, str]]:
            out = [
                ("updates sent", str(driver.total_sent)),
                ("handled", str(api.delivered_updates)),
                ("Bot API calls", str(len(api.state.calls))),
                ("429s", str(api.floods)),
            ]
            if watch is not None:
                out += [
                    ("spans", str(watch.store.received["spans"])),
                    ("findings", str(len(watch.store.findings))),
                ]
            return out

        view.stats = stats
        with view:
            driver.run(opts.duration, tick=lambda elapsed: view.update(elapsed))
            view.update(opts.duration, "finishing")
            _check_alive(bot, agent)
            # Let queued and in-flight updates finish (a broadcast waits out its 429s).
            _wait_until(lambda: api.pending_updates == 0, 20)
            time.sleep(3.0)
            if watch is not None:
                _wait_for_findings(watch, 10)
        bot.stop()  # SIGTERM: the SDK flushes what it holds
        agent.stop()
        time.sleep(0.5)
        if bot.proc.returncode not in (0, -signal.SIGTERM):
            console.print(f"[yellow]the bot exited with {bot.proc.returncode}:[/]\n{bot.tail()}")

        return Observed(
            duration=opts.duration,
            store=watch.store if watch else WatchStore(),
            points=tapped_points(watch) if watch else [],
            raw=watch.call(watch.tap.raw) if watch else b"",
            requests=watch.tap.requests if watch else 0,
            api_calls=api.calls(),
            api_floods=api.floods,
            sent=dict(driver.sent),
            outputs={"bot": bot.output, "agent": agent.output},
            token=token,
            otlp_endpoint=opts.otlp_endpoint,
            settings=dict(sizes.bot_settings),
            agent_settings=sizes.agent_settings(),
            watch=watch,
            page_url=watch.ui_url if watch else None,
            service=SERVICE_NAME,
        )


def copy_bot(source: Path, work: Path) -> Path:
    """The demo bot runs from a copy in the run's work directory, as a user's bot runs from
    its own directory: its code is then not under site-packages or otelbot/, where tools
    that name "the bot's own code" in a stack would take it for a library's."""
    target = work / "demo_bot"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _wait_for_line(c: Child, needle: str, timeout: float) -> None:
    try:
        c.wait_for_line(needle, timeout)
    except ChildError:
        if c.proc.poll() is not None:
            raise DemoError(
                f"the demo bot exited at start ({c.proc.returncode}):\n{c.tail()}"
            ) from None
        raise DemoError(f"the demo bot did not start within {timeout:.0f} s:\n{c.tail()}") from None


def _check_alive(*children: Child) -> None:
    for c in children:
        if c.proc.poll() is not None:
            raise DemoError(
                f"the {c.name} exited during the run ({c.proc.returncode}):\n{c.tail()}"
            )


def _wait_for_findings(watch: EmbeddedWatch, timeout: float) -> None:
    wanted = {semconv.EVENT_MISSING_INDEX, semconv.EVENT_UNUSED_INDEX}
    _wait_until(
        lambda: wanted <= watch.call(lambda: {f.event for f in watch.store.findings}),
        timeout,
    )


# --------------------------------------------------------------------------- watch


def start_watch(opts: DemoOptions) -> EmbeddedWatch:
    """watch on a free OTLP/HTTP port and the page's address; DemoError when --ui's
    address cannot be had (the default one falls back to a free port)."""
    ui = opts.ui or DEFAULT_UI
    options = WatchOptions(
        otlp_http=("127.0.0.1", 0),
        otlp_grpc=None,
        ui=ui,
        retention=WATCH_RETENTION,
        max_spans=WATCH_MAX_SPANS,
    )
    try:
        return EmbeddedWatch(options, ui_fallback=opts.ui is None).start()
    except OSError as exc:
        raise DemoError(
            f"cannot serve the live page on {ui[0]}:{ui[1]} ({exc.strerror or exc}): "
            "pick another address with --ui HOST:PORT"
        ) from None


def _stop_on_error(watch: EmbeddedWatch) -> Callable[..., bool]:
    def exit_(exc_type: object, *_: object) -> bool:
        if exc_type is not None:
            watch.stop()
        return False

    return exit_


def tapped_points(watch: EmbeddedWatch) -> list[ReceivedPoint]:
    """Every metric point watch received (its store keeps each series' newest only)."""
    bodies = watch.call(lambda: list(watch.tap.bodies["metrics"]))
    points: list[ReceivedPoint] = []
    for body in bodies:
        try:
            points.extend(decode_metrics(body))
        except Exception:  # watch refused it too (400): nothing to count
            continue
    return points


def close_watch(observed: Observed, console: Console, keep: bool = False) -> None:
    """Stop the demo's watch; with ``keep``, first leave its page up until Ctrl+C."""
    watch = observed.watch
    if watch is None:
        return
    try:
        if keep:
            console.print(
                f"the live page stays up at {watch.ui_url} with this run's data: Ctrl+C to stop",
                highlight=False,
                soft_wrap=True,
            )
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        watch.stop()
