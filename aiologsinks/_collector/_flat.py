"""The fast path of the record pickle reader: a flat dict, proven flat before it is read.

``SocketHandler.makePickle`` (and ``SocketSink``) send ``pickle.dumps(dict, 1)`` of a
record whose values are almost always strings, numbers, booleans and ``None``. For
such a record the pickle is one short grammar: an optional ``PROTO``, ``EMPTY_DICT``,
then groups of ``MARK (key value)* SETITEMS`` (or one ``key value SETITEM``), then
``STOP``; every key a ``BINUNICODE``, every value a ``BINUNICODE``, ``NONE``,
``BININT1/2``, ``BININT``, ``BINFLOAT``, ``NEWTRUE``/``NEWFALSE``, ``I01``/``I00``, a
``LONG`` of at most 20 decimal digits or a ``LONG1`` of at most 8 bytes; strings may be
followed by ``BINPUT`` or by ``LONG_BINPUT`` with an index below a quarter of its
position.

:func:`read_flat` walks the opcodes once, hopping over string bodies by their length
prefixes, and only when the whole frame is exactly that grammar does it let the C
``pickle.loads`` build the dict. That is safe because of what the grammar leaves out:
no global and no call (``GLOBAL``, ``REDUCE``...) so nothing is imported or run; no
memo reference (``GET``) so the result is a tree; no container but the one dict, so
nothing nested and nothing hashed but ``str`` keys (whose hashing is seeded); memo
indexes bounded by the frame's size, so the unpickler's memo array stays small. The C
unpickler reads the same opcodes with the same widths, so it sees the stream that was
checked. Its work and its result are linear in the frame.

Anything else — a memo reference, a list, bytes, a frame too large to bound by its
size — returns ``None``, and the budgeted interpreter of ``_unpickle`` reads the
frame. For a frame both accept they build the same dict; :func:`read_flat` accepts a
frame only when its size alone proves it within the interpreter's node and size
budgets (one opcode per byte at most, and 8 bytes of expanded size per opcode plus the
text, an integer's digits included: at most 9 per byte of the frame), so the fast path
never accepts what the interpreter would refuse.
"""

from __future__ import annotations

import pickle
import re
import struct
from typing import Any

__all__ = ["read_flat"]

_unpack_u32 = struct.Struct("<I").unpack_from
#: a canonical protocol 0/1 LONG (``repr(int)`` then ``L``): the C unpickler reads it
#: with base 0, the interpreter with base 10; they agree on these digits
_long = re.compile(rb"L-?(?:0|[1-9][0-9]{0,19})L?\n").match


def _widths() -> bytes:
    table = bytearray(256)
    for opcode, width in (
        (0x4E, 1),  # N NONE
        (0x4B, 2),  # K BININT1
        (0x4D, 3),  # M BININT2
        (0x4A, 5),  # J BININT
        (0x47, 9),  # G BINFLOAT
        (0x88, 1),  # NEWTRUE
        (0x89, 1),  # NEWFALSE
    ):
        table[opcode] = width
    return bytes(table)


#: the length of each fixed-width scalar opcode (0: not one)
_WIDTH = _widths()
_X, _Q, _R, _L, _I, _LONG1 = 0x58, 0x71, 0x72, 0x4C, 0x49, 0x8A


def read_flat(data: bytes, max_nodes: int, max_size: int) -> dict[str, Any] | None:
    """The record dict of ``data`` when it is a flat record pickle (see the module
    docstring) that the budgets ``max_nodes`` and ``max_size`` certainly admit;
    ``None`` otherwise. Never raises; time linear in ``len(data)``."""
    n = len(data)
    # every opcode takes a byte at least: n bounds the operations, and 8 bytes per
    # operation plus the text bounds the expanded size
    if n > max_nodes or 9 * n + 8 > max_size:
        return None
    width = _WIDTH
    u32 = _unpack_u32
    pos = 0
    try:
        if data[0] == 0x80:  # PROTO
            if data[1] > 5:
                return None
            pos = 2
        if data[pos] != 0x7D:  # EMPTY_DICT
            return None
        pos += 1
        if data[pos] == _Q:
            pos += 2
        while True:
            op = data[pos]
            if op == 0x28:  # MARK: pairs up to SETITEMS
                pos += 1
                end = 0x75
            elif op == _X:  # one pair, then SETITEM
                end = 0x73
            elif op == 0x2E:  # STOP
                break
            else:
                return None
            while data[pos] == _X:
                # the key
                pos += 5 + u32(data, pos + 1)[0]
                op = data[pos]
                if op == _Q:
                    pos += 2
                    op = data[pos]
                elif op == _R:
                    if u32(data, pos + 1)[0] > pos >> 2:
                        return None
                    pos += 5
                    op = data[pos]
                # the value
                if op == _X:
                    pos += 5 + u32(data, pos + 1)[0]
                    op = data[pos]
                    if op == _Q:
                        pos += 2
                    elif op == _R:
                        if u32(data, pos + 1)[0] > pos >> 2:
                            return None
                        pos += 5
                elif width[op]:
                    pos += width[op]
                elif op == _L:
                    match = _long(data, pos)
                    if match is None:
                        return None
                    pos = match.end()
                elif op == _I:  # protocol 0/1 booleans
                    if data[pos + 1 : pos + 4] not in (b"01\n", b"00\n"):
                        return None
                    pos += 4
                elif op == _LONG1:
                    if data[pos + 1] > 8:
                        return None
                    pos += 2 + data[pos + 1]
                else:
                    return None
                if end == 0x73:
                    break
            if data[pos] != end:
                return None
            pos += 1
    except (IndexError, struct.error):  # a length beyond the frame: truncated
        return None
    if pos + 1 != n:  # bytes after STOP: the interpreter decides
        return None
    try:
        # the frame is the grammar above, within the budgets: see the module docstring
        result = pickle.loads(data)  # noqa: S301
    except Exception:  # noqa: BLE001 - bad UTF-8, say: the interpreter names the error
        return None
    if type(result) is not dict:  # (the grammar only builds one)
        return None
    return result
