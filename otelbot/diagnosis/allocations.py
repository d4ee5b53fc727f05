"""Where live memory was allocated, per line of the bot's own code: tracemalloc snapshots
tallied by the innermost frame of the bot's code, compared, and the lines resolved to
the function (and handler) they belong to.

    import tracemalloc
    from otelbot.diagnosis.allocations import Allocations, grown

    tracemalloc.start(10)
    before = Allocations.of(tracemalloc.take_snapshot())
    ...                                                   # the bot runs
    after = Allocations.of(tracemalloc.take_snapshot())
    tracemalloc.stop()
    for site in grown(before, after):                     # largest growth first
        print(site.file, site.line, site.size, site.blocks)

Only sizes, block counts and code locations are kept, never the objects' values.
Tallying walks every live traceback once (``Snapshot.statistics("traceback")``), so it
costs time in proportion to the traced allocations: it is meant for a short traced
window, not for every update.
"""

from __future__ import annotations

import ast
import functools
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from otelbot.diagnosis.notes import is_bot_code

Line = tuple[str, int]  # (file, line)


class Site(NamedTuple):
    """How much more memory was held at one line of the bot's code at the end than at
    the start; ``stack`` is the bot's frames of one traceback there, innermost first."""

    file: str
    line: int
    size: int
    blocks: int
    stack: tuple[Line, ...]


@dataclass
class Allocations:
    """One snapshot's live memory per innermost bot-code line (``None``: no bot frame)."""

    sites: dict[Line | None, list[int]] = field(default_factory=dict)  # [size, count]
    stacks: dict[Line, tuple[Line, ...]] = field(default_factory=dict)
    total: int = 0
    _largest: dict[Line, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, snapshot: tracemalloc.Snapshot) -> Allocations:
        out = cls()
        raw = getattr(snapshot.traces, "_traces", None)
        if raw is None:  # not CPython's layout: the public (slower) grouping
            for stat in snapshot.statistics("traceback"):
                frames = tuple((f.filename, f.lineno) for f in reversed(stat.traceback))
                out._add(frames, stat.size, stat.count)
            return out
        # (domain, size, frames most recent first, total frames); one frames tuple per
        # distinct traceback in a snapshot, so they are grouped by identity first.
        sizes: dict[int, list[Any]] = {}
        for trace in raw:
            frames = trace[2]
            tally = sizes.get(id(frames))
            if tally is None:
                sizes[id(frames)] = [frames, trace[1], 1]
            else:
                tally[1] += trace[1]
                tally[2] += 1
        for frames, size, count in sizes.values():
            out._add(frames, size, count)
        return out

    def _add(self, frames: tuple[Line, ...], size: int, count: int) -> None:
        own = tuple(frame for frame in frames if is_bot_code(frame[0]))
        key = own[0] if own else None
        tally = self.sites.get(key)
        if tally is None:
            self.sites[key] = [size, count]
        else:
            tally[0] += size
            tally[1] += count
        self.total += size
        if key is not None and size > self._largest.get(key, -1):
            self._largest[key] = size
            self.stacks[key] = own


def grown(before: Allocations, after: Allocations) -> list[Site]:
    """The bot-code lines holding more memory in ``after`` than in ``before``, largest
    growth first."""
    out = []
    for key, (size, count) in after.sites.items():
        if key is None:
            continue
        was = before.sites.get(key, (0, 0))
        if size > was[0]:
            stack = after.stacks.get(key, (key,))
            out.append(Site(key[0], key[1], size - was[0], count - was[1], stack))
    out.sort(key=lambda s: s.size, reverse=True)
    return out


# ---------------------------------------------------------------- code locations


class Function(NamedTuple):
    qualname: str  # as ``co_qualname`` spells it ("outer.<locals>.inner")
    first_line: int  # as ``co_firstlineno``: the first decorator's line if decorated
    last_line: int


def function_at(file: str, line: int) -> Function | None:
    """The innermost function (``def`` / ``async def``) of ``file`` holding ``line``."""
    best = None
    for function in _functions(file):
        if function.first_line <= line <= function.last_line and (
            best is None or function.first_line >= best.first_line
        ):
            best = function
    return best


@functools.lru_cache(maxsize=64)
def _functions(file: str) -> tuple[Function, ...]:
    try:
        with open(file, "rb") as f:
            tree = ast.parse(f.read(), file)
    except (OSError, SyntaxError, ValueError):
        return ()
    out: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out.append(Function(name, first, child.end_lineno or child.lineno))
                visit(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return tuple(out)
