"""The call a frame is making: ``time.sleep`` for a frame of the bot's code stopped in
``time.sleep(0.15)``.

    frame = sys._current_frames()[loop_thread]      # innermost first
    where = bot_frame(frame)                        # the bot's innermost frame
    called(where.f_code, where.f_lasti)             # "time.sleep", or None

A stack read from another thread shows no frame for a C function (``time.sleep``,
``socket.recv``, ``sorted``), and a library's frames say little to the bot's owner; the
call the bot's own line made is what names the cause. It is read from the source: the
instruction the frame stopped at is a call (or an ``await``), its position in the line
covers the call's expression, and the callee is that expression's function part, as
written (``self.client.get``, ``json.dumps``). Found once per (code, instruction) and
kept; a line whose source can't be read names no call.
"""

from __future__ import annotations

import ast
import dis
import linecache
from types import CodeType

_CALLS = frozenset(
    dis.opmap[name] for name in ("CALL", "CALL_FUNCTION_EX", "SEND") if name in dis.opmap
)
_MAX_CACHED = 4096

# Keyed by id(): hashing a code object hashes its bytecode and constants. Each entry
# holds its code object, so the id can't be reused while the entry lives.
_call_offsets: dict[int, tuple[CodeType, frozenset[int]]] = {}
_callees: dict[tuple[int, int], tuple[CodeType, str | None]] = {}


def call_offsets(code: CodeType) -> frozenset[int]:
    """Byte offsets of the call and await instructions in ``code`` (kept per code)."""
    entry = _call_offsets.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    raw = code.co_code
    offsets = frozenset(i for i in range(0, len(raw), 2) if raw[i] in _CALLS)
    if len(_call_offsets) >= _MAX_CACHED:
        _call_offsets.clear()
    _call_offsets[id(code)] = (code, offsets)
    return offsets


def called(code: CodeType, lasti: int) -> str | None:
    """The function a frame of ``code`` stopped at byte offset ``lasti`` is calling (or
    awaiting), as its source spells it; None when it is not in a call."""
    if lasti < 0 or lasti not in call_offsets(code):
        return None
    key = (id(code), lasti)
    entry = _callees.get(key)
    if entry is not None and entry[0] is code:
        return entry[1]
    name = _callee(code, lasti)
    if len(_callees) >= _MAX_CACHED:
        _callees.clear()
    _callees[key] = (code, name)
    return name


def _callee(code: CodeType, lasti: int) -> str | None:
    try:
        positions = list(code.co_positions())
        line, end_line, column, end_column = positions[lasti // 2]
    except (IndexError, ValueError):
        return None
    if line is None or end_line is None or column is None or end_column is None:
        return None
    lines = linecache.getlines(code.co_filename)
    if not lines or end_line > len(lines):
        return None
    # Positions count UTF-8 bytes.
    chunk = [text.encode() for text in lines[line - 1 : end_line]]
    if len(chunk) == 1:
        source = chunk[0][column:end_column]
    else:
        source = chunk[0][column:] + b"".join(chunk[1:-1]) + chunk[-1][:end_column]
    try:
        node: ast.AST = ast.parse(source.decode().strip(), mode="eval").body
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    if isinstance(node, ast.Await):
        node = node.value
    if not isinstance(node, ast.Call):
        return None
    name = ast.unparse(node.func)
    return name if len(name) <= 80 else name[:77] + "..."
