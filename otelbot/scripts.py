"""Console-script entry points that check their extra before importing it.

``pip install otelbot`` installs both commands, but each needs packages from an extra. Run
without it, a command prints one line naming the extra and exits 2, instead of a traceback::

    $ otelbot-agent --help
    otelbot-agent: the agent needs extra packages (missing: PyYAML): pip install 'otelbot[agent]'

The packages each extra brings are read from the installed distribution's metadata, so
pyproject.toml stays the one list. This module imports only the standard library.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

DISTRIBUTION = "otelbot"
EXIT_MISSING_EXTRA = 2

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?[^;]*(?:;(.*))?")
_ONLY_EXTRA = re.compile(r"\s*extra\s*==\s*[\"']([^\"']+)[\"']\s*")


def extra_packages(extra: str) -> list[str] | None:
    """The distributions ``otelbot[extra]`` installs, with the extras it includes expanded;
    None when otelbot itself is not installed (run from a source tree). Requirements with a
    condition other than the extra (a platform marker) are left out."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    found: list[str] = []
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for line in requires:
            match = _REQUIREMENT.fullmatch(line)
            marker = _ONLY_EXTRA.fullmatch(match.group(3) or "") if match else None
            if match is None or marker is None or marker.group(1) != current:
                continue
            name, extras = match.group(1), match.group(2)
            if name.lower() == DISTRIBUTION:
                pending.extend(e.strip() for e in (extras or "").split(",") if e.strip())
            elif name not in found:
                found.append(name)
    return found


def missing_packages(extra: str) -> list[str] | None:
    """Which of the extra's distributions are not installed (None: unknown, see above)."""
    wanted = extra_packages(extra)
    if wanted is None:
        return None
    missing = []
    for name in wanted:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def needs_extra_line(prog: str, what: str, extra: str, missing: list[str]) -> str:
    """The one line a command prints when its extra is not installed."""
    detail = f" (missing: {', '.join(missing)})" if missing else ""
    return f"{prog}: {what} needs extra packages{detail}: pip install 'otelbot[{extra}]'"


def check_extra(prog: str, what: str, extra: str) -> bool:
    """True when the extra's packages are installed (or that cannot be told); otherwise
    print the one line to stderr and return False."""
    missing = missing_packages(extra)
    if not missing:
        return True
    print(needs_extra_line(prog, what, extra, missing), file=sys.stderr)
    return False


def report_missing_module(prog: str, what: str, extra: str, exc: ModuleNotFoundError) -> int:
    """For an import of the extra's code that failed: print the one line and return the exit
    code when the failure is an absent package of the extra; re-raise anything else (a
    missing otelbot module is a bug, not a missing extra)."""
    missing = missing_packages(extra)
    top = (exc.name or "").split(".")[0]
    if missing is None and top and top != DISTRIBUTION:
        missing = [top]  # not installed as a distribution: name the module instead
    if not missing:
        raise exc
    print(needs_extra_line(prog, what, extra, missing), file=sys.stderr)
    return EXIT_MISSING_EXTRA


def agent() -> int:
    """``otelbot-agent``: :func:`otelbot.agent.cli.main` once its packages import."""
    try:
        from otelbot.agent.cli import main
    except ModuleNotFoundError as exc:
        return report_missing_module("otelbot-agent", "the agent", "agent", exc)
    return main()
