"""otelbot.testing.processes.Child: the wrapper the tests, the demo and the benchmarks start
children with."""

from __future__ import annotations

import sys
import textwrap

import pytest

from otelbot.testing.processes import Child, ChildError


def python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]


def test_waits_for_a_line_and_reads_what_it_prints_while_stopping() -> None:
    child = Child(
        python("""
            import signal, sys, time
            def bye(*_):
                print("flushed on SIGTERM")
                sys.exit(0)
            signal.signal(signal.SIGTERM, bye)
            print("starting", file=sys.stderr)
            print("listening 4242")
            time.sleep(60)
        """),
        name="server",
    )
    with child:
        assert child.wait_for_line("listening", timeout=30) == "listening 4242"
    assert child.proc.returncode == 0
    assert child.lines == ["starting\n", "listening 4242\n", "flushed on SIGTERM\n"]


def test_an_exit_before_the_line_is_an_error_with_its_output() -> None:
    with Child(python("print('no such table'); raise SystemExit(3)"), name="bot") as child:
        with pytest.raises(ChildError, match=r"bot exited \(3\) without printing 'polling'"):
            child.wait_for_line("polling", timeout=60)
    assert "no such table" in child.output


def test_silence_is_an_error_after_the_timeout() -> None:
    with Child(python("import time; time.sleep(60)"), name="quiet") as child:
        with pytest.raises(ChildError, match="quiet did not print 'ready'"):
            child.wait_for_line("ready", timeout=0.5)


def test_ask_writes_a_line_and_returns_the_answer() -> None:
    code = """
        import sys
        for line in sys.stdin:
            print(line.strip().upper(), flush=True)
    """
    with Child(python(code), stdin=True) as child:
        assert child.ask("count") == "COUNT"
        assert child.ask("down") == "DOWN"


def test_wait_returns_when_the_processes_it_started_have_finished_too() -> None:
    # Like the span export helper: a process the child starts, writing to the same output,
    # still working after the child itself has exited.
    code = """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1); print('late')"])
        print("child done")
    """
    with Child(python(code), name="bot") as child:
        assert child.wait(30) == 0
        assert child.lines == ["child done\n", "late\n"]
