"""``python -m otelbot.testing.fake_bot_api`` driven exactly as its ``--help`` and
docs/testing.md say: the documented curl calls, run (with urllib) against the command, then
a bot's own calls, and what the control endpoints report about them."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "otelbot.testing.fake_bot_api"]
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
DOCUMENTED_HOST = "127.0.0.1:8081"


@dataclass(frozen=True)
class Curl:
    """One documented ``curl -s URL [-d BODY]`` call."""

    path: str
    body: Any  # the decoded JSON body, None for a GET

    @classmethod
    def parse(cls, command: str) -> Curl:
        args = shlex.split(command)
        assert args[:2] == ["curl", "-s"], command
        url = args[2]
        assert url.startswith(DOCUMENTED_HOST + "/"), url
        body = None
        if len(args) > 3:
            assert args[3] == "-d" and len(args) == 5, command
            body = json.loads(args[4])
        return cls(url.removeprefix(DOCUMENTED_HOST), body)


def documented_calls(text: str) -> list[Curl]:
    """The curl commands in ``text``; a command goes on while its quotes are open."""
    calls: list[Curl] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip().startswith("curl "):
            continue
        command = line.strip()
        while True:
            try:
                shlex.split(command)
                break
            except ValueError:  # a quoted body continues on the next line
                command += "\n" + next(lines)
        calls.append(Curl.parse(command))
    return calls


def request(
    base: str, path: str, body: Any = None, raw: bytes | None = None, as_bot: bool = False
) -> tuple[int, Any]:
    """POST when there is a body, else GET. A control call's JSON goes labelled as a form,
    as ``curl -d`` sends it; a bot's call says it is JSON, as a Bot API client does."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if as_bot else {}
    req = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [*COMMAND, "--port", "0", "--token", TOKEN, "--max-poll-wait", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        match = re.fullmatch(r"fake Bot API listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_help_and_docs_show_the_same_control_calls() -> None:
    help_text = subprocess.run(
        [*COMMAND, "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    in_help = documented_calls(help_text)
    in_docs = documented_calls((ROOT / "docs" / "testing.md").read_text())
    assert [c.path for c in in_help] == [
        "/_control/updates",
        "/_control/script",
        "/_control/calls?method=sendMessage",
        "/_control/status",
    ]
    assert in_docs == in_help


def test_the_documented_control_calls_drive_a_bot(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = server
    updates, script, calls, status = documented_calls((ROOT / "docs" / "testing.md").read_text())

    assert request(base, updates.path, updates.body) == (200, {"queued": 2})
    assert request(base, script.path, script.body) == (200, {"ok": True, "scripted": 2})
    assert request(base, status.path) == (200, {"pending": 2, "delivered": 0, "calls": 0})

    # The bot's side: the queued updates arrive through getUpdates.
    code, got = request(base, f"/bot{TOKEN}/getUpdates", {"timeout": 0}, as_bot=True)
    assert code == 200 and got["ok"] is True
    message, callback = got["result"]
    assert message["message"]["text"] == "/start"
    assert message["message"]["from"]["id"] == 42
    assert message["message"]["entities"][0]["type"] == "bot_command"
    assert callback["callback_query"]["data"] == "buy:1"
    assert callback["callback_query"]["from"]["id"] == 42

    # The scripted replies, in order, then normal ones.
    send = f"/bot{TOKEN}/sendMessage"
    code, got = request(base, send, {"chat_id": 42, "text": "one"}, as_bot=True)
    assert code == 429 and got["parameters"] == {"retry_after": 3}, got
    assert got["description"] == "Too Many Requests: retry after 3"
    code, got = request(base, send, {"chat_id": 42, "text": "two"}, as_bot=True)
    assert (code, got["error_code"]) == (403, 403)
    assert got["description"] == "Forbidden: bot was blocked by the user"
    code, got = request(base, send, {"chat_id": 42, "text": "three"}, as_bot=True)
    assert code == 200 and got["result"]["text"] == "three"

    code, log = request(base, calls.path)
    assert code == 200
    assert [(c["method"], c["params"]["text"], c["token_ok"]) for c in log] == [
        ("sendMessage", "one", True),
        ("sendMessage", "two", True),
        ("sendMessage", "three", True),
    ]
    assert request(base, status.path) == (200, {"pending": 0, "delivered": 2, "calls": 4})

    # Ctrl+C ends it quietly.
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and err == "", err


def test_a_wrong_token_gets_401(server: tuple[subprocess.Popen[str], str]) -> None:
    _, base = server
    code, got = request(base, "/bot1:wrong/getMe")
    assert (code, got["description"]) == (401, "Unauthorized")


@pytest.mark.parametrize(
    ("path", "raw", "says"),
    [
        ("/_control/updates", b"not json", "the body is not JSON"),
        ("/_control/updates", b'{"updates": [{"kind": "photo"}]}', "unknown update kind"),
        ("/_control/updates", b'{"updates": [{"kind": "raw"}]}', "a raw update needs"),
        ("/_control/script", b'{"faults": []}', '"method" is required'),
        (
            "/_control/script",
            b'{"method": "getMe", "faults": [{"kind": "boom"}]}',
            "unknown fault kind 'boom'",
        ),
        (
            "/_control/script",
            b'{"method": "getMe", "faults": [{"kind": "flood", "retry": 3}]}',
            "unknown fault field(s): retry",
        ),
    ],
)
def test_a_bad_control_call_says_what_is_wrong(
    server: tuple[subprocess.Popen[str], str], path: str, raw: bytes, says: str
) -> None:
    _, base = server
    code, got = request(base, path, raw=raw)
    assert code == 400 and got["ok"] is False
    assert got["description"].startswith(says), got
    assert request(base, "/_control/status")[1]["pending"] == 0  # nothing half-queued
