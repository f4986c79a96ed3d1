"""A pickle reader for record frames that does no more than a record needs.

``SocketHandler.makePickle`` (and ``SocketSink``) send ``pickle.dumps(dict, 1)`` of a
record's attributes: a dict of strings, numbers, ``None``, and whatever ``extra=``
fields held (lists, tuples, nested dicts, bytes). :func:`load_record` interprets the
pickle opcodes that such values produce (protocols 0 to 5) itself, instead of trusting
``pickle.Unpickler`` with bytes from the network:

* no global is ever looked up, except the two that protocol 1 and 2 use to spell
  ``bytes`` (``_codecs.encode`` and ``builtins.bytes``), which are run here by hand;
  ``REDUCE``, ``BUILD``, ``INST``, ``OBJ``, ``NEWOBJ``, extensions and persistent ids
  are refused, so nothing is imported or called;
* a budget bounds the work: opcodes (``max_nodes``), container nesting (``max_depth``)
  and the *expanded* size of the result (``max_size``, in bytes of text plus 8 per
  value; an integer's digits count as text). The expanded size counts a memo
  reference as the size of what it refers to, as it is built, so a memo bomb — a few
  kilobytes of references that stand for 10^12 list items, or for as many integers of
  160 digits — is refused after at most ``max_size`` worth of references, in time
  linear in the frame;
* a container cannot change once a memo reference to it was taken, so sizes counted
  at reference time stay true and no cycle can be built;
* dict keys that are not ``str`` become their ``repr`` (``str`` hashing is randomised;
  crafted int or tuple keys that all collide would make the dict quadratic), sets
  become lists, and integers are limited to 64 bytes.

Anything else raises :class:`FrameError` (a ``ValueError``).

A record whose pickle is a flat dict of strings and numbers (what ``makePickle``
sends) is first tried by the fast path of ``_flat``, which proves that shape in one
scan and then lets the C unpickler build it; everything else is interpreted here.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass
from typing import Any

from ._flat import read_flat

__all__ = ["FrameError", "Limits", "interpret", "load_record"]


class FrameError(ValueError):
    """A frame that is not an acceptable record pickle."""


@dataclass(frozen=True)
class Limits:
    """The budget of one frame's decoding."""

    #: opcodes interpreted (every value, reference and container operation)
    max_nodes: int = 200_000
    #: containers nested in containers
    max_depth: int = 32
    #: expanded size of the result: bytes of text (an integer's digits too) plus 8 per value
    max_size: int = 8 * 1024 * 1024


_MAX_LONG_BYTES = 64
_MAX_DIGITS = 160
_MAX_MEMO = 1 << 32

_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_i32 = struct.Struct("<i").unpack_from
_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_u64 = struct.Struct("<Q").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from

_MARK = object()
_ENCODE = object()  # the _codecs.encode global (protocol < 3 bytes)
_BYTES = object()  # the builtins.bytes global (protocol < 3 empty bytes)
_SET = object()  # builtins.set / frozenset (protocol < 4 sets): read as lists
_SAFE_GLOBALS = {
    ("_codecs", "encode"): _ENCODE,
    ("codecs", "encode"): _ENCODE,
    ("__builtin__", "bytes"): _BYTES,
    ("builtins", "bytes"): _BYTES,
    ("__builtin__", "set"): _SET,
    ("builtins", "set"): _SET,
    ("__builtin__", "frozenset"): _SET,
    ("builtins", "frozenset"): _SET,
}
_CALLABLE = (_ENCODE, _BYTES, _SET)
_REFUSED = {
    b"R"[0]: "REDUCE",
    b"b"[0]: "BUILD",
    b"i"[0]: "INST",
    b"o"[0]: "OBJ",
    0x81: "NEWOBJ",
    0x92: "NEWOBJ_EX",
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    b"P"[0]: "PERSID",
    b"Q"[0]: "BINPERSID",
    0x96: "BYTEARRAY8",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}


def load_record(data: bytes, limits: Limits = Limits()) -> dict[str, Any]:
    """Decode one pickled record dict (the frame body, without its length prefix).

    Returns a dict with ``str`` keys whose values are ``str``, ``int``, ``float``,
    ``bool``, ``None``, ``bytes``, lists, tuples and such dicts. Raises
    :class:`FrameError` for anything else, for a frame over ``limits``, and for
    malformed bytes; runs in time linear in ``len(data)``.
    """
    flat = read_flat(data, limits.max_nodes, limits.max_size)
    if flat is not None:  # the common record, proven flat (see _flat)
        return flat
    return interpret(data, limits)


def interpret(data: bytes, limits: Limits = Limits()) -> dict[str, Any]:
    """:func:`load_record` without its fast path: every frame interpreted opcode by
    opcode within ``limits`` (same results, same errors)."""
    try:
        result = _Reader(data, limits).run()
    except FrameError:
        raise
    except (IndexError, struct.error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise FrameError(f"malformed pickle: {exc}") from None
    except RecursionError:  # repr() of a non-str key nested past the recursion limit
        raise FrameError("pickle nested too deeply to read") from None
    if type(result) is not dict:
        raise FrameError(f"expected a pickled dict, got {type(result).__name__}")
    return result


def _int_size(value: int) -> int:
    """8 plus at least the characters ``repr(value)`` takes: a 160-digit integer is
    written as 160 characters, and memo references repeat it at the cost of one."""
    return 10 + (value.bit_length() * 1234 >> 12)  # 1234 / 4096 > log10(2)


# the expanded size of the ints of the inline opcodes, at their widest
_BININT1_SIZE = _int_size(0xFF)
_BININT2_SIZE = _int_size(0xFFFF)
_BININT_SIZE = _int_size(-(2**31))

_CONTAINERS = (list, dict, tuple)
#: values that need no depth or marker check when they go into a container
_SCALARS = frozenset((str, int, float, bool, type(None), bytes))
_STR = frozenset((str,))


class _Reader:
    __slots__ = ("data", "depths", "limits", "marks", "memo", "pos", "sealed", "size", "sizes")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.limits = limits
        self.pos = 0
        self.memo: dict[int, Any] = {}
        # id(container) -> nesting depth; containers stay alive (on the stack or in
        # the memo) while the frame is read, so their ids are stable
        self.depths: dict[int, int] = {}
        # id(container) -> expanded size, computed when a reference to it is taken
        self.sizes: dict[int, int] = {}
        # ids of containers a memo reference was taken to: they can no longer change
        self.sealed: set[int] = set()
        # stack positions of the MARKs (checked when popped: a MARK can be moved)
        self.marks: list[int] = []
        self.size = 0

    # -- sizes ------------------------------------------------------------------------

    def _charge(self, n: int) -> None:
        self.size += n
        if self.size > self.limits.max_size:
            raise FrameError(f"record larger than {self.limits.max_size} bytes once expanded")

    def _expanded(self, obj: Any) -> int:
        """The expanded size of ``obj``; a container's is computed once, when a
        reference to it is first taken: by then nothing can change it any more
        (changing a container needs a reference to it, which seals it)."""
        t = type(obj)
        if t is str or t is bytes:
            return 8 + len(obj)
        if t is int:
            return _int_size(obj)
        if t not in _CONTAINERS:
            return 8
        # children before parents, without recursion: max_depth may be set past
        # Python's recursion limit
        sizes = self.sizes
        todo = [obj]
        while todo:
            top = todo[-1]
            if id(top) in sizes:
                todo.pop()
                continue
            values = top.values() if type(top) is dict else top
            pending = [v for v in values if type(v) in _CONTAINERS and id(v) not in sizes]
            if pending:
                todo += pending
                continue
            todo.pop()
            size = 8
            for v in values:
                size += sizes[id(v)] if type(v) in _CONTAINERS else self._expanded(v)
            if type(top) is dict:
                size += sum(8 + len(k) for k in top)
            sizes[id(top)] = size
        return sizes[id(obj)]

    def _new(self, obj: Any) -> Any:
        self.depths[id(obj)] = 1
        self._charge(8)
        return obj

    def _adopt(self, parent: Any, children: list[Any]) -> None:
        """Check that ``children`` may go into ``parent`` (a container)."""
        pid = id(parent)
        if pid in self.sealed:
            raise FrameError("a container changed after a reference to it was taken")
        depths = self.depths
        depth = depths[pid]
        for child in children:
            t = type(child)
            if t is list or t is dict or t is tuple:
                d = depths.get(id(child), 1) + 1
                if d > depth:
                    depth = d
            elif child is _MARK or child is _ENCODE or child is _BYTES or child is _SET:
                raise FrameError("a pickle MARK or global used as a value")
        if depth > self.limits.max_depth:
            raise FrameError(f"containers nested deeper than {self.limits.max_depth}")
        depths[pid] = depth

    def _scalar(self, value: Any) -> Any:
        if type(value) is str or type(value) is bytes:
            self._charge(8 + len(value))
        elif type(value) is int:
            self._charge(_int_size(value))
        else:
            self._charge(8)
        return value

    # -- reading ----------------------------------------------------------------------

    def _take(self, n: int) -> bytes:
        pos = self.pos
        end = pos + n
        if n < 0 or end > len(self.data):
            raise FrameError("pickle data truncated")
        self.pos = end
        return self.data[pos:end]

    def _line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise FrameError("pickle data truncated (no end of line)")
        line = self.data[self.pos : end]
        self.pos = end + 1
        return line

    def _pop_mark(self, stack: list[Any]) -> list[Any]:
        if not self.marks:
            raise FrameError("pickle MARK missing")
        i = self.marks.pop()
        if i >= len(stack) or stack[i] is not _MARK:
            raise FrameError("pickle MARK moved")
        items = stack[i + 1 :]
        del stack[i:]
        return items

    @staticmethod
    def _int_text(text: bytes) -> int:
        text = text.strip()
        if text.endswith(b"L"):
            text = text[:-1]
        if len(text) > _MAX_DIGITS:
            raise FrameError("integer too large")
        return int(text)

    def _long_bytes(self, n: int) -> int:
        if n > _MAX_LONG_BYTES:
            raise FrameError("integer too large")
        return int.from_bytes(self._take(n), "little", signed=True)

    @staticmethod
    def _memo_key(key: int) -> int:
        if not 0 <= key < _MAX_MEMO:
            raise FrameError("memo index out of range")
        return key

    def _get(self, key: int) -> Any:
        try:
            obj = self.memo[key]
        except KeyError:
            raise FrameError(f"memo reference {key} to nothing") from None
        t = type(obj)
        if t is list or t is dict or t is tuple:
            self.sealed.add(id(obj))
        self._charge(self._expanded(obj))
        return obj

    def _set_items(self, target: Any, items: list[Any]) -> None:
        if type(target) is not dict:
            raise FrameError("SETITEM(S) on a value that is not a dict")
        if len(items) % 2:
            raise FrameError("SETITEMS with an odd number of items")
        if id(target) in self.sealed:
            raise FrameError("a container changed after a reference to it was taken")
        keys, values = items[::2], items[1::2]
        if not _SCALARS.issuperset(map(type, values)):
            self._adopt(target, values)  # containers (or worse) among the values
        if _STR.issuperset(map(type, keys)):
            target.update(zip(keys, values, strict=True))
            return
        for key, value in zip(keys, values, strict=True):
            if type(key) is not str:
                key = repr(key)
                self._charge(len(key))
            target[key] = value

    def _append(self, target: Any, items: list[Any]) -> None:
        if type(target) is not list:
            raise FrameError("APPEND(S) on a value that is not a list")
        self._adopt(target, items)
        target.extend(items)

    def _tuple(self, items: list[Any]) -> tuple[Any, ...]:
        t = tuple(items)
        if not items:
            return self._scalar(t)  # type: ignore[no-any-return]
        self.depths[id(t)] = 1
        self._charge(8)
        self._adopt(t, items)
        return t

    def run(self) -> Any:
        data = self.data
        stack: list[Any] = []
        push = stack.append
        max_nodes = self.limits.max_nodes
        max_size = self.limits.max_size
        memo = self.memo
        end = len(data)
        nodes = 0
        pos = 0
        size = 0
        # The opcodes of a protocol 1 record dict are read inline, with the position
        # and the size in locals; every other opcode syncs them and calls _other.
        # Reading past the end raises IndexError or struct.error: a FrameError.
        while True:
            nodes += 1
            if nodes > max_nodes:
                raise FrameError(f"more than {max_nodes} pickle operations")
            op = data[pos]
            pos += 1
            if op == 0x58:  # X BINUNICODE
                (n,) = _unpack_u32(data, pos)
                pos += 4
                stop = pos + n
                if stop > end:
                    raise FrameError("pickle data truncated")
                text = str(data[pos:stop], "utf-8", "surrogatepass")
                push(text)
                pos = stop
                size += 8 + n
                if size > max_size:
                    self.size = size
                    self._charge(0)
                if pos + 1 < end and data[pos] == 0x71:  # BINPUT, as makePickle follows
                    memo[data[pos + 1]] = text
                    pos += 2
            elif op == 0x4E:  # N NONE
                push(None)
                size += 8
            elif op == 0x4B:  # K BININT1
                push(data[pos])
                pos += 1
                size += _BININT1_SIZE
            elif op == 0x47:  # G BINFLOAT
                push(_unpack_f64(data, pos)[0])
                pos += 8
                size += 8
            elif op == 0x4C:  # L LONG (thread ids in protocol 1)
                nl = data.find(b"\n", pos, pos + _MAX_DIGITS + 3)
                if nl < 0:
                    raise FrameError("LONG without an end of line, or too large")
                value = self._int_text(data[pos:nl])
                push(value)
                pos = nl + 1
                size += _int_size(value)
            elif op == 0x4D:  # M BININT2
                push(_unpack_u16(data, pos)[0])
                pos += 2
                size += _BININT2_SIZE
            elif op == 0x4A:  # J BININT
                push(_unpack_i32(data, pos)[0])
                pos += 4
                size += _BININT_SIZE
            elif op == 0x71:  # q BINPUT
                memo[data[pos]] = stack[-1]
                pos += 1
            elif op == 0x28:  # ( MARK
                self.marks.append(len(stack))
                push(_MARK)
            elif op == 0x75:  # u SETITEMS
                self.size = size
                items = self._pop_mark(stack)
                if not stack:
                    raise FrameError("SETITEMS without a dict")
                self._set_items(stack[-1], items)
                size = self.size
            elif op == 0x7D:  # } EMPTY_DICT
                self.size = size
                push(self._new({}))
                size = self.size
            elif op == 0x2E:  # . STOP
                if len(stack) != 1 or stack[0] is _MARK:
                    raise FrameError("pickle stack not one value at STOP")
                self.size = size
                self._charge(0)
                return stack[0]
            else:
                self.pos = pos
                self.size = size
                self._other(op, stack)
                pos = self.pos
                size = self.size
                if size > max_size:
                    self._charge(0)

    def _other(self, op: int, stack: list[Any]) -> None:
        push = stack.append
        pop = stack.pop
        if op == 0x73:  # s SETITEM
            value = pop()
            key = pop()
            self._set_items(stack[-1], [key, value])
        elif op == 0x5D:  # ] EMPTY_LIST
            push(self._new([]))
        elif op == 0x29:  # ) EMPTY_TUPLE
            push(self._scalar(()))
        elif op == 0x74:  # t TUPLE
            push(self._tuple(self._pop_mark(stack)))
        elif op == 0x65:  # e APPENDS
            items = self._pop_mark(stack)
            self._append(stack[-1], items)
        elif op == 0x61:  # a APPEND
            value = pop()
            self._append(stack[-1], [value])
        elif op == 0x72:  # r LONG_BINPUT
            self.memo[_unpack_u32(self._take(4))[0]] = stack[-1]
        elif op == 0x68:  # h BINGET
            push(self._get(self._take(1)[0]))
        elif op == 0x6A:  # j LONG_BINGET
            push(self._get(_unpack_u32(self._take(4))[0]))
        elif op == 0x80:  # PROTO
            if self._take(1)[0] > 5:
                raise FrameError("unsupported pickle protocol")
        elif op == 0x95:  # FRAME: a length hint only
            self._take(8)
        elif op == 0x8C:  # SHORT_BINUNICODE
            n = self._take(1)[0]
            push(self._scalar(str(self._take(n), "utf-8", "surrogatepass")))
        elif op == 0x8D:  # BINUNICODE8
            (n,) = _unpack_u64(self._take(8))
            push(self._scalar(str(self._take(n), "utf-8", "surrogatepass")))
        elif op == 0x94:  # MEMOIZE
            self.memo[len(self.memo)] = stack[-1]
        elif op == 0x70:  # p PUT
            self.memo[self._memo_key(self._int_text(self._line()))] = stack[-1]
        elif op == 0x67:  # g GET
            push(self._get(self._int_text(self._line())))
        elif op == 0x88:  # NEWTRUE
            push(self._scalar(True))
        elif op == 0x89:  # NEWFALSE
            push(self._scalar(False))
        elif op == 0x49:  # I INT (also protocol 0/1 booleans: I01 / I00)
            line = self._line()
            if line == b"01":
                push(self._scalar(True))
            elif line == b"00":
                push(self._scalar(False))
            else:
                push(self._scalar(self._int_text(line)))
        elif op == 0x4C:  # L LONG
            push(self._scalar(self._int_text(self._line())))
        elif op == 0x8A:  # LONG1
            push(self._scalar(self._long_bytes(self._take(1)[0])))
        elif op == 0x8B:  # LONG4
            push(self._scalar(self._long_bytes(_unpack_i32(self._take(4))[0])))
        elif op == 0x46:  # F FLOAT
            push(self._scalar(float(self._line())))
        elif op == 0x56:  # V UNICODE
            push(self._scalar(self._line().decode("raw-unicode-escape")))
        elif op == 0x53:  # S STRING (protocol 0, repr-quoted)
            text = self._line().strip()
            if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b'"', b"'"):
                raise FrameError("malformed STRING")
            push(self._scalar(codecs.escape_decode(text[1:-1])[0].decode("ascii")))
        elif op == 0x54:  # T BINSTRING
            (n,) = _unpack_i32(self._take(4))
            push(self._scalar(self._take(n).decode("ascii")))
        elif op == 0x55:  # U SHORT_BINSTRING
            push(self._scalar(self._take(self._take(1)[0]).decode("ascii")))
        elif op == 0x43:  # C SHORT_BINBYTES
            push(self._scalar(self._take(self._take(1)[0])))
        elif op == 0x42:  # B BINBYTES
            (n,) = _unpack_u32(self._take(4))
            push(self._scalar(self._take(n)))
        elif op == 0x8E:  # BINBYTES8
            (n,) = _unpack_u64(self._take(8))
            push(self._scalar(self._take(n)))
        elif op == 0x85:  # TUPLE1
            push(self._tuple([pop()]))
        elif op == 0x86:  # TUPLE2
            b = pop()
            push(self._tuple([pop(), b]))
        elif op == 0x87:  # TUPLE3
            c = pop()
            b = pop()
            push(self._tuple([pop(), b, c]))
        elif op == 0x64:  # d DICT
            items = self._pop_mark(stack)
            d = self._new({})
            self._set_items(d, items)
            push(d)
        elif op == 0x6C:  # l LIST
            items = self._pop_mark(stack)
            lst = self._new([])
            self._append(lst, items)
            push(lst)
        elif op in (0x8F, 0x91):  # EMPTY_SET, FROZENSET: kept as lists (no hashing)
            lst = self._new([])
            if op == 0x91:
                self._append(lst, self._pop_mark(stack))
            push(lst)
        elif op == 0x90:  # ADDITEMS
            items = self._pop_mark(stack)
            self._append(stack[-1], items)
        elif op == 0x30:  # 0 POP
            if pop() is _MARK:
                raise FrameError("POP of a MARK")
        elif op == 0x31:  # 1 POP_MARK
            self._pop_mark(stack)
        elif op == 0x32:  # 2 DUP
            obj = stack[-1]
            if obj is _MARK:
                raise FrameError("DUP of a MARK")
            if type(obj) in _CONTAINERS:
                self.sealed.add(id(obj))
            self._charge(self._expanded(obj))
            push(obj)
        elif op == 0x63:  # c GLOBAL
            module = self._line().decode("ascii", "replace")
            name = self._line().decode("ascii", "replace")
            push(self._global(module, name))
        elif op == 0x93:  # STACK_GLOBAL
            name = pop()
            module = pop()
            push(self._global(str(module), str(name)))
        elif op == 0x52 and len(stack) >= 2 and any(stack[-2] is f for f in _CALLABLE):
            args = pop()
            func = pop()
            if func is _SET:
                push(self._set_call(args))
            else:
                push(self._scalar(self._bytes_call(args, func)))
        elif op in _REFUSED:
            raise FrameError(f"pickle opcode {_REFUSED[op]} is not allowed in a record frame")
        else:
            raise FrameError(f"unknown pickle opcode 0x{op:02x}")

    def _global(self, module: str, name: str) -> Any:
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise FrameError(f"global {module}.{name} is not allowed in a record frame")
        return found

    def _set_call(self, args: Any) -> list[Any]:
        lst: list[Any] = self._new([])
        if type(args) is not tuple or len(args) > 1:
            raise FrameError("set() arguments are not one list")
        if args:
            if type(args[0]) is not list:
                raise FrameError("set() arguments are not one list")
            self._append(lst, args[0])
        return lst

    @staticmethod
    def _bytes_call(args: Any, func: Any) -> bytes:
        if type(args) is not tuple:
            raise FrameError("REDUCE arguments are not a tuple")
        if func is _BYTES:
            if args:
                raise FrameError("bytes() with arguments is not allowed in a record frame")
            return b""
        if len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1"):
            raise FrameError("_codecs.encode is only allowed as protocol 1 bytes")
        return args[0].encode("latin-1")
