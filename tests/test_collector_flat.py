"""The collector's fast paths: flat record pickles read by C once proven flat, and
records as ``makePickle`` sends them rebuilt without converting every field.

Whatever a fast path accepts must come out exactly as the general path makes it from
the same input; whatever it is not sure of goes to the general path.
"""

from __future__ import annotations

import copy
import logging
import logging.handlers
import pickle
import random
import struct
import sys
from typing import Any

import pytest

from aiologsinks import SocketSink
from aiologsinks._collector._daemon import LineFormatter
from aiologsinks._collector._flat import read_flat
from aiologsinks._collector._records import _as_sent, _convert, _extras, rebuild
from aiologsinks._collector._unpickle import FrameError, Limits, interpret, load_record

LIMITS = Limits()
FORMAT = logging.Formatter(
    "%(asctime)s.%(msecs)03d %(created)f %(relativeCreated)f %(levelname)s %(levelno)d "
    "%(name)s %(pathname)s %(filename)s %(module)s %(lineno)d %(funcName)s %(process)d "
    "%(processName)s %(thread)d %(threadName)s %(message)s"
)


def flat(body: bytes) -> dict[str, Any] | None:
    return read_flat(body, LIMITS.max_nodes, LIMITS.max_size)


def make_pickle(record: logging.LogRecord) -> bytes:
    """The frame body the stdlib ``SocketHandler`` sends for ``record``."""
    handler = logging.handlers.SocketHandler("127.0.0.1", 0)
    try:
        return handler.makePickle(record)[4:]
    finally:
        handler.close()


def records() -> list[logging.LogRecord]:
    def record(msg: str, args: Any = None, level: int = logging.INFO, **extra: Any) -> Any:
        r = logging.LogRecord("app.web", level, "/srv/app/views.py", 42, msg, args, None)
        r.__dict__.update(extra)
        return r

    try:
        raise KeyError("boom\nline two")
    except KeyError:
        failed = record("failed: %s", ("x",), logging.ERROR, exc_info=sys.exc_info())
        failed.exc_info = sys.exc_info()
    stack = record("with stack", stack_info="Stack (most recent call last):\n  File 'x'")
    many = record("many extras", **{f"field_{i}": i for i in range(1500)})  # > 1000: batches
    many_str = record("many text extras", **{f"k{i}": f"v{i}" for i in range(300)})
    return [
        record("GET /items/%d 200 in %.1f ms", (7, 3.25)),
        record("plain"),
        record(
            "extras",
            request_id="r-1",
            user=None,
            ok=True,
            bad=False,
            n=-5,
            big=2**40,
            huge=-(2**63),
            ratio=0.5,
            nan=float("nan"),
            inf=float("inf"),
        ),
        record("unicode: żółć 日本語 🎉 \u2028 \x1b[31m red"),
        record("lone surrogate: \udcff"),
        record("x" * 300),  # beyond one byte of length
        record("y" * 70_000),  # beyond two bytes of length
        record(""),
        failed,
        stack,
        many,
        many_str,
        record("one extra", **{"": "empty key"}),
    ]


def same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Same keys in the same order, values of the same types and reprs (NaN too)."""
    assert a is not None
    return [(k, type(v), repr(v)) for k, v in a.items()] == [
        (k, type(v), repr(v)) for k, v in b.items()
    ]


def lines(fields: dict[str, Any]) -> tuple[str, str]:
    r = rebuild(dict(fields), now=0.0)
    return FORMAT.format(r), LineFormatter().format(r)


@pytest.mark.parametrize("index", range(len(records())))
def test_socket_handler_frames_take_the_fast_path_and_match_the_interpreter(index: int) -> None:
    body = make_pickle(records()[index])
    got = flat(body)
    assert got is not None, "a SocketHandler frame of scalars must take the fast path"
    slow = interpret(body)
    assert same(got, slow)
    assert lines(got) == lines(slow)
    assert same(load_record(body), slow)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_reads_the_same_with_or_without_the_fast_path(protocol: int) -> None:
    for r in records()[:10]:
        d = dict(r.__dict__, msg=r.getMessage(), args=None, exc_info=None)
        body = pickle.dumps(d, protocol)
        assert same(load_record(body), d) and same(interpret(body), d)
        if protocol in (1, 2, 3):
            assert flat(body) is not None


async def test_socket_sink_frames_take_the_fast_path() -> None:
    sink = SocketSink("127.0.0.1", 9)
    try:
        r = records()[2]
        body = sink.makePickle(r)[4:]
    finally:
        await sink.aclose()
    got = flat(body)
    assert same(got, interpret(body))


@pytest.mark.parametrize(
    "extra",
    [
        {"payload": b"\x00bytes"},
        {"tags": ["a", "b"]},
        {"point": (1, 2)},
        {"ctx": {"user": {"id": 1}}},
        {"empty": ()},
        {"s": {1, 2}},
        {"big": 2**100},  # LONG beyond 20 digits
    ],
)
def test_containers_bytes_and_huge_ints_go_to_the_interpreter(extra: dict[str, Any]) -> None:
    r = records()[1]
    r.__dict__.update(extra)
    body = make_pickle(r)
    assert flat(body) is None
    assert same(load_record(body), interpret(body))


def test_a_shared_string_goes_to_the_interpreter() -> None:
    shared = "".join(["sha", "red"])  # one object twice: the pickle refers to its memo
    body = pickle.dumps({"msg": "m", "a": shared, "b": shared}, 1)
    assert b"h" in body[body.index(b"shared") :]
    assert flat(body) is None
    assert load_record(body) == {"msg": "m", "a": "shared", "b": "shared"}


def frame_of(*parts: bytes) -> bytes:
    return b"}q\x00(" + b"".join(parts) + b"u."


def s(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # far memo indexes (the C unpickler would allocate twice the index)
        (frame_of(s("msg"), b"r" + struct.pack("<I", 50_000_000), s("v")), {"msg": "v"}),
        (frame_of(s("msg"), s("v"), b"r" + struct.pack("<I", 2**32 - 1)), {"msg": "v"}),
        (frame_of(s("msg"), b"p50000000\n", s("v")), {"msg": "v"}),
        # a memo reference (to a string: read, the size of what it refers to counted)
        (frame_of(s("a"), s("b"), b"q\x01", s("c"), b"h\x01"), {"a": "b", "c": "b"}),
        # non-canonical LONG (the C unpickler reads it with base 0), INT other than bools
        (frame_of(s("n"), b"L010L\n"), {"n": 10}),
        (frame_of(s("n"), b"L 5L\n"), {"n": 5}),
        (frame_of(s("n"), b"I42\n"), {"n": 42}),
        # a key that is not a string (ints can be crafted to collide)
        (frame_of(b"J\x01\x00\x00\x00", s("v")), {"1": "v"}),
        # bytes after STOP
        (frame_of(s("msg"), s("v")) + b"junk", {"msg": "v"}),
        # a LONG1 of 9 bytes
        (frame_of(s("n"), b"\x8a\x09" + b"\x01" * 9), {"n": int.from_bytes(b"\x01" * 9, "little")}),
    ],
)
def test_look_alikes_go_to_the_interpreter(body: bytes, expected: dict[str, Any]) -> None:
    assert flat(body) is None
    assert load_record(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        frame_of(s("msg"), b"X\xff\xff\xff\x7f"),  # a string longer than the frame
        frame_of(s("msg"), b"X\x02\x00\x00\x00\xff\xfe"),  # not UTF-8
        frame_of(s("msg"), s("v"))[:-1],  # no STOP
        b"}(" + s("msg") + s("v") + b".",  # no SETITEMS
        frame_of(s("msg")),  # a key without a value
        b"}" + s("msg") + s("v") + b"u.",  # SETITEMS without MARK
        b"\x80\x06}.",  # an unknown protocol
        frame_of(s("msg"), b"cos\nsystem\n"),  # a global
        frame_of(s("me"), b"h\x00"),  # the dict in itself
    ],
)
def test_malformed_look_alikes_are_frame_errors(body: bytes) -> None:
    assert flat(body) is None
    with pytest.raises(FrameError):
        load_record(body)


def test_frames_too_large_to_bound_by_their_size_go_to_the_interpreter() -> None:
    body = pickle.dumps({f"k{i}": None for i in range(40)}, 1)
    assert read_flat(body, len(body), 9 * len(body) + 8) is not None
    assert read_flat(body, len(body) - 1, 10**9) is None
    assert read_flat(body, 10**9, 9 * len(body) + 7) is None
    # and the interpreter applies the budget
    with pytest.raises(FrameError, match="more than 50 pickle operations"):
        load_record(body, Limits(max_nodes=50))


def test_text_that_spells_opcodes_is_only_text() -> None:
    evil = "cos\nsystem\n(S'touch /tmp/x'\ntR.q\x00r\xff\xff\xff\xffh\x00"
    body = pickle.dumps({"msg": evil, "name": "u."}, 1)
    assert flat(body) == {"msg": evil, "name": "u."}


def test_mutated_frames_are_read_as_the_interpreter_reads_them_or_passed_to_it() -> None:
    # a seeded fuzz: flips, truncations, inserted opcodes and rewritten lengths of real
    # frames; the fast path must accept only what the interpreter reads identically
    rng = random.Random(15)
    seeds = [make_pickle(r) for r in records()[:4]]
    seeds.append(pickle.dumps({"msg": "m", "n": 2**40, "t": True, "k": -1}, 1))
    seeds.append(pickle.dumps({"msg": "m", "n": 2**40, "t": True, "k": -1}, 2))
    opcodes = b"XqrhjgpNKMJGL\x88\x89I\x8a(ust.}])e\x85\x86\x87cR\x93\x94\x95\x8c"
    accepted = 0
    for _ in range(10_000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(body))
            action = rng.randrange(5)
            if action == 0:
                body[i] = rng.randrange(256)
            elif action == 1:
                body[i] = rng.choice(opcodes)
            elif action == 2:
                body[i:i] = bytes([rng.choice(opcodes)]) + rng.randbytes(rng.randint(0, 5))
            elif action == 3:
                del body[i:]
                if not body:
                    body += b"."
            else:
                body[i : i + 4] = struct.pack("<I", rng.choice([0, 1, 2, 255, 2**31, len(body)]))
        data = bytes(body)
        fast = flat(data)
        if fast is None:
            continue
        accepted += 1
        assert same(fast, interpret(data)), data
        assert all(type(k) is str for k in fast)
        assert {type(v) for v in fast.values()} <= {str, int, float, bool, type(None)}
    assert accepted > 300  # the fuzz reached the fast path often enough to mean something


# -- rebuilding records as sent -------------------------------------------------------

ODD_VALUES: list[Any] = [
    None, "", "None", "ok", "x\ny", "\x1b[31m", "tab\there", "\u202e", 0, -1, 5, 2**70,
    True, False, 0.0, -0.0, 1e308, float("nan"), float("inf"), -1.0, 999.9, 1000.0,
    1700000000.5, "1700000000.5", "40", [1], (1, "a"), {"a": 1}, b"x",
]  # fmt: skip
FIELDS = [
    "msg", "args", "name", "levelno", "levelname", "created", "msecs", "relativeCreated",
    "lineno", "pathname", "filename", "module", "process", "thread", "exc_info", "exc_text",
    "stack_info", "funcName", "threadName", "processName", "taskName", "request_id",
    "getMessage",
]  # fmt: skip


def converted(fields: dict[str, Any], now: float) -> dict[str, Any]:
    d = copy.deepcopy(fields)
    _convert(d, now)
    _extras(d)
    return d


def test_records_as_sent_are_rebuilt_as_the_full_conversion_rebuilds_them() -> None:
    bases = [interpret(make_pickle(r)) for r in records()[:13]]
    for i, base in enumerate(bases):  # all but the two with text to escape
        assert _as_sent(dict(base)) is (i not in (3, 4)), i
    rng = random.Random(15)
    fast = 0
    for i in range(3000):
        d = dict(rng.choice(bases))
        for _ in range(rng.choice((0, 1, 1, 2))):
            key = rng.choice(FIELDS)
            if rng.random() < 0.2:
                d.pop(key, None)
            else:
                d[key] = rng.choice(ODD_VALUES)
        expected = converted(d, now=123.5)
        fast += _as_sent(copy.deepcopy(d))
        got = rebuild(copy.deepcopy(d), now=123.5).__dict__
        assert same(got, expected), (i, d)
    assert fast > 1000  # the variants reached the fast path often enough to mean something
