"""The collector's parts: the budgeted pickle reader, record rebuilding, the channels."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiologsinks._collector._channels import ReceiverLimits
from aiologsinks._collector._receiver import Receiver
from aiologsinks._collector._records import clean, clean_block, merge_args, rebuild
from aiologsinks._collector._unpickle import FrameError, Limits, load_record

# -- the pickle reader -------------------------------------------------------------------


def record_dict(**extra: Any) -> dict[str, Any]:
    r = logging.LogRecord("app.db", logging.INFO, "/srv/db.py", 7, "query %s", ("x",), None)
    r.__dict__.update(extra)
    d = dict(r.__dict__)
    d.update(msg=r.getMessage(), args=None, exc_info=None)
    return d


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_reads_what_make_pickle_writes_in_every_protocol(protocol: int) -> None:
    d = record_dict(
        request_id="r-1",
        payload=b"\x00\xffbytes",
        empty=b"",
        sizes=[1, 2**40, -3, 1.5, None, True, False],
        point=(1, (2, 3)),
        nested={"a": {"b": [1]}},
        shared=[[1, 2]] * 3,
    )
    assert load_record(pickle.dumps(d, protocol)) == d


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_refuses_every_global_and_call(protocol: int) -> None:
    class Evil:
        def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            return (os.system, ("echo pwned",))

    for value in (Evil(), logging.LogRecord, print, Exception("x"), bytearray(b"x")):
        with pytest.raises(FrameError, match="not allowed"):
            load_record(pickle.dumps({"msg": value}, protocol))


def memo_bomb(levels: int, width: int) -> bytes:
    """A pickle of memo references: level i is a list of ``width`` references to
    level i-1, so the result stands for width**levels items."""
    out = bytearray(b"\x80\x02}q\x00(X\x03\x00\x00\x00msgq\x01]q\x02(")
    out += b"N" * width + b"e"
    for level in range(1, levels):
        out += b"0]r" + struct.pack("<I", level + 2) + b"("
        out += (b"j" + struct.pack("<I", level + 1)) * width + b"e"
    out += b"u."
    return bytes(out)


def test_memo_bomb_is_refused_by_its_expanded_size() -> None:
    bomb = memo_bomb(levels=6, width=100)  # 10**12 items in about 3 KB
    assert len(bomb) < 8192
    with pytest.raises(FrameError, match=r"larger than .* once expanded"):
        load_record(bomb)
    # the same shape within budget is read, references and all
    small = load_record(memo_bomb(levels=2, width=10))
    assert small["msg"] == [[None] * 10] * 10


def test_cycles_depth_and_operation_budget() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(FrameError, match="changed after a reference"):
        load_record(pickle.dumps({"msg": loop}, 1))
    deep: list[Any] = []
    inner = deep
    for _ in range(40):
        inner.append([])
        inner = inner[0]
    with pytest.raises(FrameError, match="nested deeper than 32"):
        load_record(pickle.dumps({"msg": deep}, 1))
    assert load_record(pickle.dumps({"msg": deep}, 1), Limits(max_depth=50))["msg"] == deep
    with pytest.raises(FrameError, match="more than 100 pickle operations"):
        load_record(pickle.dumps({"msg": list(range(200))}, 1), Limits(max_nodes=100))


def test_malformed_pickles_are_frame_errors() -> None:
    for data in (
        b"",
        b"\x80\x05garbage",
        b"}(X\xff\xff\xff\x7f.",  # a string longer than the frame
        b"r\xff\xff\xff\x7f.",  # a memo index far away, nothing on the stack
        b"]q\x00h\x05.",  # a reference to nothing
        b"(N.",
        pickle.dumps(["a", "list"], 1),
        b"\x8a\xff" + b"\x01" * 255 + b".",  # an int of 255 bytes
    ):
        with pytest.raises(FrameError):
            load_record(data)


def test_a_far_memo_index_costs_nothing() -> None:
    # the stdlib's C Unpickler, even with find_class refusing everything, grows its
    # memo array to twice the index: 7 bytes with index 5*10**7 cost it 776 MB of RSS
    for index in (50_000_000, 2**32 - 1):
        assert load_record(b"}r" + struct.pack("<I", index) + b".") == {}


def test_non_string_keys_become_their_repr_and_sets_become_lists() -> None:
    # int keys can be crafted to collide in a dict's hash table; str hashing is seeded
    colliding = {i * (2**61 - 1): i for i in range(50)}
    got = load_record(pickle.dumps({"msg": "m", "k": colliding, "s": {1}}, 1))
    assert got["k"] == {repr(k): v for k, v in colliding.items()}
    assert got["s"] == [1]


# -- rebuilding records -------------------------------------------------------------------


def test_rebuilt_record_formats_as_at_the_source() -> None:
    original = logging.LogRecord("app", logging.ERROR, "/srv/a.py", 3, "n=%d", (5,), None)
    original.request_id = "abc"
    d = dict(original.__dict__)
    d.update(msg=original.getMessage(), args=None)
    rebuilt = rebuild(d)
    fmt = logging.Formatter("%(asctime)s.%(msecs)03d %(process)d %(funcName)s %(message)s")
    assert fmt.format(rebuilt) == fmt.format(original)
    assert rebuilt.request_id == "abc"  # type: ignore[attr-defined]


def test_fields_from_http_handler_are_typed_and_merged() -> None:
    d = {"name": "web", "msg": "%s has %d items", "args": "('cart', 3)", "levelno": "40",
         "levelname": "ERROR", "created": "1700000000.25", "msecs": "250.0", "lineno": "12",
         "exc_text": "None", "exc_info": "None", "process": "77"}  # fmt: skip
    r = rebuild(d)
    assert r.getMessage() == "cart has 3 items"
    assert (r.levelno, r.created, r.msecs, r.lineno, r.process) == (
        40,
        1700000000.25,
        250.0,
        12,
        77,
    )
    assert r.exc_text is None and r.args is None


def test_bad_standard_fields_get_safe_values() -> None:
    r = rebuild({"severity": 3, "created": float("nan"), "levelno": [1], "getMessage": "x"},
                now=1000.5)  # fmt: skip
    assert (r.created, r.levelno, r.levelname, r.name) == (1000.5, logging.INFO, "INFO", "root")
    assert r.getMessage() == ""  # the method was not shadowed
    assert r.getMessage_ == "x" and r.severity == 3  # type: ignore[attr-defined]
    logging.Formatter("%(asctime)s %(msecs)d %(message)s").format(r)


def test_merge_refuses_expansions_beyond_the_budget() -> None:
    assert merge_args("%d items", (3,)) == "3 items"
    assert merge_args("%(a)s-%(a)s", {"a": "x"}) == "x-x"
    assert merge_args("%999999999d", (1,)) == "%999999999d (1,)"
    assert merge_args("%*d", (10**9, 1)) == "%*d (1000000000, 1)"
    many = "%(a)s" * 200
    assert merge_args(many, {"a": "x" * 10_000}).startswith(many)  # 2 MB: not merged
    assert merge_args("%s %s", (1,)) == "%s %s (1,)"


def test_text_cannot_forge_lines_or_send_escapes() -> None:
    assert clean("a\nb\r\x1b[31m\u2028\u202e\t") == "a\\nb\\r\\x1b[31m\\u2028\\u202e\t"
    assert clean("plain") == "plain"
    assert (
        clean_block("Traceback\n  File\x07\nError") == "    Traceback\n      File\\x07\n    Error"
    )


# -- channels ---------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got: list[tuple[str, dict[str, Any]]] = []
    limits = ReceiverLimits(max_frame=4096, max_connections=3, idle_timeout=0.3, read_timeout=0.3)
    rx = Receiver(tcp=0, syslog=0, http=0, limits=limits, on_record=lambda c, f: got.append((c, f)))
    rx.got = got  # type: ignore[attr-defined]
    async with rx:
        yield rx


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, 1)
    return struct.pack(">L", len(data)) + data


async def test_frame_size_is_checked_before_the_body(receiver: Receiver) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.ports["tcp"])
    writer.write(struct.pack(">L", 4097))  # the length alone: no body sent
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    assert receiver.counts["tcp"].invalid == 1


async def test_connection_limit_timeouts_and_honest_sender(receiver: Receiver) -> None:
    port = receiver.ports["tcp"]
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    partial_reader, partial = await asyncio.open_connection("127.0.0.1", port)
    partial.write(frame({"msg": "never finished"})[:20])
    await partial.drain()
    await receiver.wait_for(lambda r: r.connections == 3)
    over_reader, over = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(over_reader.read(), 5) == b""  # refused: limit is 3
    # idle and slow connections are closed by the timeouts; then an honest one is served
    assert await asyncio.wait_for(partial_reader.read(), 5) == b""
    for r, _ in idle:
        assert await asyncio.wait_for(r.read(), 5) == b""
    await receiver.wait_for(lambda r: r.connections == 0)
    _, honest = await asyncio.open_connection("127.0.0.1", port)
    honest.write(frame({"msg": "served"}))
    await honest.drain()
    await receiver.wait_for(lambda r: r.counts["tcp"].received == 1)
    for w in (honest, partial, over, *(w for _, w in idle)):
        w.close()
    counts = receiver.counts["tcp"]
    assert (counts.refused, counts.timeouts, counts.invalid) == (1, 3, 1)
    await receiver.wait_for(lambda r: r.connections == 0)
    assert receiver.buffered == 0


async def test_syslog_lf_framing_and_octet_counting(receiver: Receiver) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", receiver.ports["syslog"])
    writer.write(b"<14>one\n<14>two\n")  # rsyslog-style LF framing; the last LF settles
    await writer.drain()
    await receiver.wait_for(lambda r: r.counts["syslog_tcp"].received == 2)
    writer.write(b"9 <14>three")
    await writer.drain()
    await receiver.wait_for(lambda r: r.counts["syslog_tcp"].received == 3)
    writer.close()
    await writer.wait_closed()
    msgs = [f["msg"] for c, f in receiver.got]  # type: ignore[attr-defined]
    assert msgs == ["one", "two", "three"]


async def http(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
         b"Connection: close\r\n\r\n{nope", 400),
        (b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 4001\r\n"
         b"Connection: close\r\n\r\n" + b"[" * 2000 + b"1" + b"]" * 2000, 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\xff\xfe\xfd", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (b"DELETE /?msg=x HTTP/1.1\r\nConnection: close\r\n\r\n", 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET /?" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 431),
    ],
)  # fmt: skip
async def test_http_answers_4xx_never_500(receiver: Receiver, raw: bytes, status: int) -> None:
    answer = await http(receiver.ports["http"], raw)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert receiver.counts["http"].invalid == 1
    assert await http(receiver.ports["http"], b"GET /?msg=ok HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert receiver.counts["http"].received == 1
    await receiver.wait_for(lambda r: r.connections == 0)
    assert receiver.buffered == 0


# -- back-pressure ------------------------------------------------------------------------


async def test_slow_sinks_pause_reading_instead_of_growing_memory() -> None:
    import aiologsinks as als
    from aiologsinks._collector._daemon import Settings, _Collector

    class SlowSink(als.Sink):
        def __init__(self) -> None:
            super().__init__()
            self.got: list[str] = []

        async def emit_batch(self, records: Any) -> None:
            await asyncio.sleep(0.0003 * len(records))  # a slow disk, not synchronisation
            self.got.extend(r.getMessage() for r in records)

    sink = SlowSink()
    dispatcher = als.Dispatcher(sink, queue_size=200, lane_size=200, batch_size=100)
    dispatcher.start()
    collector = _Collector(dispatcher, Settings(tcp=0))
    collector.CHECK_EVERY = 50
    await collector.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", collector.ports["tcp"])
        writer.write(b"".join(frame({"msg": f"r{i}"}) for i in range(1500)))
        await writer.drain()
        await collector.wait_for(lambda r: r.counts["tcp"].received == 1500, timeout=60)
        writer.close()
        await dispatcher.flush()
    finally:
        await collector.aclose()
        stats = await dispatcher.aclose()
    assert collector.pauses >= 1  # it stopped reading while the sink caught up
    assert sink.got == [f"r{i}" for i in range(1500)]
    assert stats.lost == 0
