"""`otelbot demo --keep`: the page the demo prints at its start is served by watch with the
run's data, and stays up after the report until Ctrl+C, which ends the demo cleanly."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

from otelbot.demo.run import SERVICE_NAME
from tests.e2e._run import ROOT

pytestmark = pytest.mark.e2e

URL_LINE = re.compile(r"^live page: (http://127\.0\.0\.1:\d+/)$")
KEPT_LINE = "the live page stays up at "


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))


def _wait_for(lines: queue.Queue[str], seen: list[str], match: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if match(line):
            return line
    raise AssertionError("not printed in time; the output so far:\n" + "\n".join(seen))


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_keep_serves_the_run_on_the_page_until_ctrl_c(
    tmp_path: Path, pg_dsn: str, redis_url: str
) -> None:
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "otelbot"),
            "demo",
            "--duration",
            "5",
            "--small",
            "--no-progress",
            "--html",
            str(tmp_path / "report.html"),
            "--pg-dsn",
            pg_dsn,
            "--redis-url",
            redis_url,
            "--ui",
            "127.0.0.1:0",
            "--keep",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        first = _wait_for(lines, seen, URL_LINE.match, 60)
        url = URL_LINE.fullmatch(first).group(1)  # type: ignore[union-attr]
        kept = _wait_for(lines, seen, lambda line: KEPT_LINE in line, 150)
        assert url in kept and "Ctrl+C" in kept
        report = "\n".join(seen)
        assert f"live page (otelbot watch): {url}" in report

        # After the report, with the bot and the agent gone, the page still has the run.
        summary = _get(url + "api/summary")
        bot = summary["services"][SERVICE_NAME]
        assert bot["updates_processed"] > 0 and bot["findings"] > 0, summary
        findings = _get(url + "api/findings")
        events = {f["event"] for f in findings}
        assert "otelbot.bot.n_plus_one" in events, events
        assert proc.poll() is None

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, "\n".join(seen) + (tmp_path / "stderr.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stderr.close()
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "api/health", timeout=5)
