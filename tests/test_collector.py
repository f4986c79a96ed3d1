"""The collector's parts: the budgeted pickle reader, record rebuilding, the channels."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib.util
import json
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._collector import _channels, _http, _receiver
from aiologsinks._collector._channels import ReceiverLimits
from aiologsinks._collector._receiver import Receiver
from aiologsinks._collector._records import clean, clean_block, merge_args, rebuild
from aiologsinks._collector._unpickle import FrameError, Limits, load_record

from .conftest import require
from .helpers import has_ipv6_loopback

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


@pytest.mark.parametrize("protocol", [1, 2])
def test_integers_are_charged_by_their_digits(protocol: int) -> None:
    # 1,000 integers of 151 digits shared by memo reference: one reference costs a
    # few bytes of the frame and stands for 151,000 characters of output
    inner = [10**150 + i for i in range(1000)]
    bomb = pickle.dumps({"msg": "m", "bomb": [inner] * 60}, protocol)
    assert len(bomb) < 200_000
    with pytest.raises(FrameError, match=r"larger than .* once expanded"):
        load_record(bomb)
    assert load_record(pickle.dumps({"msg": "m", "ok": [inner] * 10}, protocol))["ok"][9] == inner


def nested_key_frame(depth: int) -> bytes:
    """A record whose one extra field has a dict key of tuples nested ``depth`` deep."""
    return b"\x80\x02}(X\x03\x00\x00\x00msgX\x01\x00\x00\x00x)" + b"\x85" * depth + b"Nu."


def nested_list_frame(depth: int) -> bytes:
    """A record whose field ``deep`` holds lists nested ``depth`` deep, then a memo
    reference to them (whose expanded size is then computed)."""
    body = b"\x80\x02}(X\x03\x00\x00\x00msgX\x01\x00\x00\x00xX\x04\x00\x00\x00deep"
    return body + b"]" * depth + b"a" * (depth - 1) + b"q\x00" + b"0" + b"h\x00" + b"u."


def test_nesting_past_the_recursion_limit_is_read_or_refused_never_raised() -> None:
    deep = Limits(max_depth=100_000)
    got = load_record(nested_list_frame(5000), deep)["deep"]
    for _ in range(4999):
        assert type(got) is list and len(got) == 1
        got = got[0]
    assert got == []
    with pytest.raises(FrameError, match="nested too deeply"):
        load_record(nested_key_frame(20_000), deep)
    with pytest.raises(FrameError, match="nested deeper than 32"):
        load_record(nested_list_frame(5000))


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
    long_key = "k" * 300
    assert merge_args(f"%({long_key})s", {long_key: 1}) == f"%({long_key})s {{{long_key!r}: 1}}"


@pytest.mark.timeout(20)
def test_unclosed_keys_are_not_scanned_again_for_each_argument() -> None:
    # one request's "%(" * n with n args: each spec scanned to the end of the message
    # took the loop for n² steps (37 s at n = 60,000, minutes at the frame bound)
    n = 300_000
    msg = "%(" * n
    assert merge_args(msg, [""] * n) == msg + " " + repr(("",) * n)[:4096] + "..."
    assert merge_args(msg, {"a": 1}) == msg + " {'a': 1}"


def test_text_cannot_forge_lines_or_send_escapes() -> None:
    assert clean("a\nb\r\x1b[31m\u2028\u202e\t") == "a\\nb\\r\\x1b[31m\\u2028\\u202e\t"
    assert clean("plain") == "plain"
    assert (
        clean_block("Traceback\n  File\x07\nError") == "    Traceback\n      File\\x07\n    Error"
    )


def test_extra_field_names_cannot_forge_lines_or_send_escapes() -> None:
    from aiologsinks._collector._daemon import LineFormatter

    forged = "k\n2031-01-01 00:00:00,000 [tcp] CRITICAL pay: forged \x1b[31m"
    as_sent = record_dict(**{forged: "v"})  # makePickle's dict: the fast rebuild
    from_http = {"name": "web", "msg": "m", forged: "v"}  # fields converted one by one
    for fields in (as_sent, from_http):
        line = LineFormatter().format(rebuild(load_record(pickle.dumps(fields, 1))))
        assert "\n" not in line and "\x1b" not in line, line
        assert line.endswith(" k\\n2031-01-01 00:00:00,000 [tcp] CRITICAL pay: forged \\x1b[31m=v")


# -- channels ---------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got: list[tuple[str, dict[str, Any]]] = []
    limits = ReceiverLimits(max_frame=4096, max_connections=3, idle_timeout=0.3, read_timeout=0.3)
    rx = Receiver(tcp=0, syslog=0, http=0, limits=limits, on_record=lambda c, f: got.append((c, f)))
    rx.got = got  # type: ignore[attr-defined]
    async with rx:
        yield rx


async def test_udp_listens_on_every_address_a_host_name_has_and_names_ipv6_peers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "localhost" is ::1 and 127.0.0.1 on most systems (::1 first), as a TCP listener
    # serves both: UDP bound ::1 alone, and DatagramHandler's IPv4 datagrams were lost
    require(has_ipv6_loopback(), "an IPv6 loopback (::1)")
    resolve = socket.getaddrinfo

    def both(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "dual.test":
            return resolve("::1", *args, **kwargs) + resolve("127.0.0.1", *args, **kwargs)
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", both)
    got: list[tuple[str, str]] = []

    class Peers(Receiver):
        def deliver(self, channel: str, fields: dict[str, Any], peer: str) -> None:
            got.append((channel, peer))

    # (UDP channels only: uvloop's TCP listener resolves names without socket's
    # getaddrinfo; both UDP channels bind through the same code)
    async with Peers(host="dual.test", udp=0) as rx:
        for n, (family, host) in enumerate(
            ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
        ):
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.bind((host, 0))
                data = pickle.dumps({"msg": "over " + host}, 1)
                sock.sendto(struct.pack(">L", len(data)) + data, (host, rx.ports["udp"]))
                port = sock.getsockname()[1]
            await rx.wait_for(lambda r: len(got) == n + 1, timeout=5)
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            assert got[-1] == ("udp", shown)


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


async def test_connection_limit_waiting_timeouts_and_honest_sender(receiver: Receiver) -> None:
    """Past max_connections (3) a connection waits, unread, for a slot, as many as the
    limit; past those it is refused. A waiting peer's frame, written at once, is
    received once the timeouts free the slots: it used to be reset at once, the frame
    lost uncounted (and a sender that closes each connection before the next lost
    records in a burst, its closed connections not read to their end yet)."""
    port = receiver.ports["tcp"]
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    partial_reader, partial = await asyncio.open_connection("127.0.0.1", port)
    partial.write(frame({"msg": "never finished"})[:20])
    await partial.drain()
    await receiver.wait_for(lambda r: r.connections == 3)
    over_reader, over = await asyncio.open_connection("127.0.0.1", port)
    over.write(frame({"msg": "waited"}))
    await over.drain()
    waiters = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await receiver.wait_for(lambda r: len(r._waiting) == 3)
    refused_reader, refused = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(refused_reader.read(), 5) == b""  # three wait already
    # idle and slow connections are closed by the timeouts; the waiting ones are served
    assert await asyncio.wait_for(partial_reader.read(), 5) == b""
    for r, _ in idle:
        assert await asyncio.wait_for(r.read(), 5) == b""
    await receiver.wait_for(lambda r: r.counts["tcp"].received == 1)
    assert receiver.got[-1][1]["msg"] == "waited"  # type: ignore[attr-defined]
    for r, _ in (*waiters, (over_reader, over)):
        assert await asyncio.wait_for(r.read(), 5) == b""  # served, then idle
    await receiver.wait_for(lambda r: r.connections == 0)
    _, honest = await asyncio.open_connection("127.0.0.1", port)
    honest.write(frame({"msg": "served"}))
    await honest.drain()
    await receiver.wait_for(lambda r: r.counts["tcp"].received == 2)
    for w in (honest, partial, over, refused, *(w for _, w in (*idle, *waiters))):
        w.close()
    counts = receiver.counts["tcp"]
    assert (counts.refused, counts.timeouts, counts.invalid) == (1, 6, 1)
    await receiver.wait_for(lambda r: r.connections == 0)
    assert receiver.buffered == 0 and not receiver._waiting


@pytest.mark.parametrize("channel", ["tcp", "http"])
async def test_a_graceful_shutdown_reads_what_waiting_connections_wrote(channel: str) -> None:
    """One slot, held by an idle peer; a second peer waits for it, its records
    written. A graceful shutdown reads them: it left the waiting connections paused,
    then dropped them as quiet, their records lost uncounted (an HTTP one was closed
    unanswered)."""
    got: list[tuple[str, dict[str, Any]]] = []
    limits = ReceiverLimits(max_connections=1)
    rx = Receiver(limits=limits, on_record=lambda c, f: got.append((c, f)), **{channel: 0})
    async with rx:
        port = rx.ports[channel]
        _, holder = await asyncio.open_connection("127.0.0.1", port)
        await rx.wait_for(lambda r: r.connections == 1)
        reader, waiter = await asyncio.open_connection("127.0.0.1", port)
        if channel == "tcp":
            waiter.write(b"".join(frame({"msg": f"waited {i}"}) for i in range(3)))
        else:
            body = urllib.parse.urlencode({"msg": "waited 0", "levelno": "20"}).encode()
            waiter.write(
                b"POST /log HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/x-www-form-urlencoded\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        await waiter.drain()
        await rx.wait_for(lambda r: len(r._waiting) == 1)
        await rx.aclose(grace=3)
    expected = 3 if channel == "tcp" else 1
    assert [f["msg"] for _, f in got] == [f"waited {i}" for i in range(expected)]
    if channel == "http":
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
    for writer in (holder, waiter):
        writer.close()


async def test_an_http_request_in_the_backlog_at_a_graceful_shutdown_is_answered() -> None:
    """A request sent on a connection the kernel accepted but the receiver had not read
    yet when the shutdown began: taken from the backlog, it was closed unread, and the
    input left unread turned the close into a reset (the record lost, nothing counted)."""
    got: list[str] = []
    async with Receiver(http=0, on_record=lambda c, f: got.append(f["msg"])) as rx:
        body = b"msg=backlogged&levelno=20"
        request = b"POST /log HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        # connected and sent with no turn of the loop in between: unread when the
        # shutdown begins
        peer = socket.create_connection(("127.0.0.1", rx.ports["http"]), timeout=5)
        with peer:
            peer.sendall(request)
            closing = asyncio.create_task(rx.aclose(grace=3))

            def read_all() -> bytes:
                answer = b""
                while data := peer.recv(65536):
                    answer += data
                return answer

            answer = await asyncio.to_thread(read_all)
            await asyncio.wait_for(closing, 5)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
    assert b"Connection: close" in answer
    assert got == ["backlogged"]
    assert (rx.counts["http"].received, rx.counts["http"].invalid) == (1, 0)


async def test_a_burst_of_one_at_a_time_connections_loses_nothing() -> None:
    """A sender that closes each connection before opening the next (SocketHandler's
    way, one record each): 1,000 in a burst, every record received. Closed
    connections whose end was not read yet held the 256 slots, and the burst's later
    ones were reset (5 to 64 records lost in three runs). A connection past the slots
    now waits for one, as many as there are slots."""
    got: list[tuple[str, dict[str, Any]]] = []
    async with Receiver(tcp=0, on_record=lambda c, f: got.append((c, f))) as rx:
        port = rx.ports["tcp"]

        def burst() -> None:
            for i in range(1000):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(frame({"msg": f"one {i}"}))

        await asyncio.to_thread(burst)
        await rx.wait_for(lambda r: r.counts["tcp"].received == 1000)
        assert rx.counts["tcp"].refused == 0
    assert sorted(int(f["msg"].split()[1]) for _, f in got) == list(range(1000))


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


@pytest.fixture
async def patient() -> AsyncIterator[Receiver]:
    """A receiver whose timeouts are far beyond what the test waits for: whatever it
    receives was framed, not cut off by a timeout."""
    got: list[tuple[str, dict[str, Any]]] = []
    limits = ReceiverLimits(max_frame=65536, idle_timeout=30, read_timeout=30)
    rx = Receiver(syslog=0, http=0, limits=limits, on_record=lambda c, f: got.append((c, f)))
    rx.got = got  # type: ignore[attr-defined]
    async with rx:
        yield rx


def syslog_msgs(rx: Receiver) -> list[str]:
    return [f["msg"] for c, f in rx.got if c == "syslog_tcp"]  # type: ignore[attr-defined]


async def syslog_peer(rx: Receiver, data: bytes) -> asyncio.StreamWriter:
    """A connection to ``rx``'s syslog TCP port that has sent ``data``."""
    _, writer = await asyncio.open_connection("127.0.0.1", rx.ports["syslog"])
    writer.write(data)
    await writer.drain()
    return writer


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("then_close", [False, True])
async def test_syslog_lf_a_continuation_line_stays_in_its_message_and_the_rest_go_on(
    patient: Receiver, then_close: bool
) -> None:
    writer = await syslog_peer(
        patient, b"<14>first line\n  continuation of first\n<14>second\n<14>third\n"
    )
    if then_close:  # the end of the connection ends the last message
        await shut(writer)
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 3, timeout=5)
    if not then_close:  # and the connection goes on
        writer.write(b"<14>fourth\r\n")
        await writer.drain()
        await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 4, timeout=5)
        await shut(writer)
    assert syslog_msgs(patient)[:3] == ["first line\n  continuation of first", "second", "third"]
    assert syslog_msgs(patient)[3:] == ([] if then_close else ["fourth"])
    assert patient.counts["syslog_tcp"].invalid == 0


async def test_syslog_a_first_message_holding_a_line_like_a_message_is_not_split_before_its_nul(
    patient: Receiver,
) -> None:
    # SysLogHandler's first message on a connection, its NUL in a later segment: the
    # logged text's "\n<0>..." must not become a record of its own (of any priority)
    _, writer = await asyncio.open_connection("127.0.0.1", patient.ports["syslog"])
    # (no LF at the end of the first segment: a pause after one would decide it)
    first = b"<11>user input:\n<0>forged emergency"
    writer.write(first)
    await writer.drain()
    await patient.wait_for(lambda r: r.buffered == len(first), timeout=5)
    writer.write(b"\nmore\x00<14>next\x00")
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 2, timeout=5)
    assert syslog_msgs(patient) == ["user input:\n<0>forged emergency\nmore", "next"]
    await shut(writer)


async def test_syslog_undecided_whole_lines_go_on_though_the_last_one_is_still_coming(
    patient: Receiver,
) -> None:
    # the framing decided by a pause though what arrived ends mid-line: the whole
    # lines are delivered (they waited for read_timeout, then went with the partial)
    writer = await syslog_peer(patient, b"<14>a\n<14>b\n<14>c\n<14>still being wri")
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 3, timeout=5)
    writer.write(b"tten\n")
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 4, timeout=5)
    assert syslog_msgs(patient) == ["a", "b", "c", "still being written"]
    await shut(writer)


async def test_syslog_undecided_connections_bursting_past_max_buffered_lose_nothing() -> None:
    # whole lines held for the framing decision are no partial frame: past
    # max_buffered, LF decides for the connection instead of it going with them
    got: list[str] = []
    limits = ReceiverLimits(max_frame=65536, max_buffered=131072, read_timeout=30)
    async with Receiver(syslog=0, limits=limits, on_record=lambda c, f: got.append(f["msg"])) as rx:
        writers = []
        for c in range(4):
            _, writer = await asyncio.open_connection("127.0.0.1", rx.ports["syslog"])
            writer.write(b"".join(b"<14>%d line %05d\n" % (c, i) for i in range(2800)))
            writers.append(writer)
        for writer in writers:
            await writer.drain()
        await rx.wait_for(lambda r: len(got) == 4 * 2800, timeout=10)
        counts = rx.counts["syslog_tcp"]
        assert (counts.invalid, counts.refused) == (0, 0)
        for writer in writers:
            await shut(writer)


async def test_syslog_undecided_a_trickling_peer_is_not_scanned_again_at_each_read(
    patient: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # many continuation lines, then one that starts like a message, then a byte per
    # read: each read searched every line again (seconds of the loop per 300 reads)
    calls = 0
    starts_like = _channels.starts_like

    def counted(buf: bytearray, at: int) -> bool:
        nonlocal calls
        calls += 1
        return starts_like(buf, at)

    monkeypatch.setattr(_channels, "starts_like", counted)
    _, writer = await asyncio.open_connection("127.0.0.1", patient.ports["syslog"])
    head = b"<14>x" + b"\na" * 2000 + b"\n<14>y"
    writer.write(head)
    await writer.drain()
    await patient.wait_for(lambda r: r.buffered == len(head), timeout=5)
    for n in range(1, 51):
        writer.write(b"z")
        await writer.drain()
        await patient.wait_for(
            lambda r: r.buffered >= len(head) + n or r.counts["syslog_tcp"].received, timeout=5
        )
    assert calls < 3 * 2000, calls  # (it was 2,000 per read)
    await shut(writer)
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 2, timeout=5)


def _only_conn(rx: Receiver) -> Any:
    (conn,) = rx._conns
    return conn


async def test_syslog_undecided_the_wait_for_the_framing_is_its_own(
    patient: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a timer armed by an earlier LF (the pause after a line) ended the wait a moment
    # after it began: a NUL coming soon after was too late, the message split
    monkeypatch.setattr(_channels, "_LF_SETTLE", 5.0)  # (no wait runs out in this test)
    writer = await syslog_peer(patient, b"<14>user said: hi\n")
    await patient.wait_for(lambda r: r.buffered == 18, timeout=5)
    armed = _only_conn(patient).settle
    writer.write(b"<0>forged")  # a line that starts like a message: the wait begins
    await writer.drain()
    await patient.wait_for(lambda r: r.buffered == 27, timeout=5)
    conn = _only_conn(patient)
    assert conn.deferred and conn.settle is not armed and armed.cancelled()
    writer.write(b"\x00")
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 1, timeout=5)
    assert syslog_msgs(patient) == ["user said: hi\n<0>forged"]
    await shut(writer)


async def test_syslog_undecided_the_wait_does_not_run_out_while_the_receiver_reads_nothing(
    patient: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # paused (its sinks behind), the receiver reads nothing: the NUL that decides may
    # be waiting in the socket, and the wait must not end for the peer meanwhile
    monkeypatch.setattr(_channels, "_LF_SETTLE", 5.0)  # (run out below, by hand)
    writer = await syslog_peer(patient, b"<14>user said: hi\n<0>forged")
    await patient.wait_for(lambda r: r.buffered == 27, timeout=5)
    conn = _only_conn(patient)
    patient.pause()
    writer.write(b"\x00")
    await writer.drain()
    # the wait runs out while paused (as its timer would): it begins again
    conn.settle.cancel()
    conn._settled()
    assert conn.deferred and conn.settle is not None
    assert patient.counts["syslog_tcp"].received == 0
    patient.resume()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 1, timeout=5)
    assert syslog_msgs(patient) == ["user said: hi\n<0>forged"]
    await shut(writer)


@pytest.mark.parametrize("grace", [0.0, 0.1])
async def test_syslog_at_the_receivers_close_whole_lines_go_on_and_nothing_is_forged(
    grace: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an LF connection's last line awaiting its pause is a message; an undecided
    # connection's lines may be one NUL message whose NUL is on its way: cut, it is
    # one invalid frame, never a record of the priority of its second line
    monkeypatch.setattr(_channels, "_LF_SETTLE", 0.05)
    got: list[str] = []
    limits = ReceiverLimits(idle_timeout=30, read_timeout=30)
    rx = Receiver(syslog=0, limits=limits, on_record=lambda c, f: got.append(f["msg"]))
    await rx.start()
    lf = await syslog_peer(rx, b"<14>a\n<14>b\n")
    await rx.wait_for(lambda r: r.counts["syslog_tcp"].received == 2, timeout=5)
    monkeypatch.setattr(_channels, "_LF_SETTLE", 5.0)  # no pause runs out from here
    lf.write(b"<14>last\n<")  # (and the first byte of the next: a partial one)
    await lf.drain()
    await rx.wait_for(lambda r: r.buffered == 10, timeout=5)
    nul = await syslog_peer(rx, b"<14>user said: hi\n<0>forged")
    await rx.wait_for(lambda r: r.buffered == 10 + 27, timeout=5)
    await rx.aclose(grace)
    assert got == ["a", "b", "last"]
    assert (rx.counts["syslog_tcp"].received, rx.counts["syslog_tcp"].invalid) == (3, 2)
    lf.close()
    nul.close()


async def test_syslog_lf_the_pause_after_a_line_does_not_run_out_while_the_receiver_reads_nothing(
    patient: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a traceback's next line waits unread in the socket while the receiver is paused:
    # the line before it must not be taken as ended meanwhile
    monkeypatch.setattr(_channels, "_LF_SETTLE", 0.05)
    _, writer = await asyncio.open_connection("127.0.0.1", patient.ports["syslog"])
    writer.write(b"<14>a\n<14>b\n")  # LF framing, decided
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 2, timeout=5)
    monkeypatch.setattr(_channels, "_LF_SETTLE", 5.0)  # (run out below, by hand)
    writer.write(b"<11>Traceback\n")
    await writer.drain()
    await patient.wait_for(lambda r: r.buffered == 14, timeout=5)
    conn = _only_conn(patient)
    patient.pause()
    writer.write(b'  File "x.py", line 1\n<14>after\n')
    await writer.drain()
    monkeypatch.setattr(_channels, "_LF_SETTLE", 0.05)  # (for the waits from here)
    conn.settle.cancel()
    conn._settled()  # the pause after the line runs out while paused: it begins again
    assert patient.counts["syslog_tcp"].received == 2 and conn.settle is not None
    patient.resume()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 4, timeout=5)
    assert syslog_msgs(patient)[2:] == ['Traceback\n  File "x.py", line 1', "after"]
    await shut(writer)


async def test_syslog_the_wait_begins_again_when_the_receiver_reads_again(
    patient: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what waited in the socket during a pause is read on the loop's next pass after
    # resume(): a timer due in the same pass would decide without it
    monkeypatch.setattr(_channels, "_LF_SETTLE", 5.0)  # (no wait runs out here)
    writer = await syslog_peer(patient, b"<14>user said: hi\n<0>forged")
    await patient.wait_for(lambda r: r.buffered == 27, timeout=5)
    conn = _only_conn(patient)
    patient.pause()
    waiting = conn.settle
    patient.resume()
    assert conn.deferred and waiting.cancelled() and conn.settle is not waiting
    writer.write(b"\x00")
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 1, timeout=5)
    assert syslog_msgs(patient) == ["user said: hi\n<0>forged"]
    await shut(writer)


async def test_syslog_lf_a_peer_closing_after_a_line_and_a_byte_of_the_next(
    patient: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as when the collector cuts it: the line is a message, the byte a partial one
    monkeypatch.setattr(_channels, "_LF_SETTLE", 0.05)
    _, writer = await asyncio.open_connection("127.0.0.1", patient.ports["syslog"])
    writer.write(b"<14>a\n<14>b\n")  # LF framing, decided
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 2, timeout=5)
    writer.write(b"<14>last\n<")
    await shut(writer)
    await patient.wait_for(lambda r: r.connections == 0, timeout=5)
    assert syslog_msgs(patient) == ["a", "b", "last"]
    assert patient.counts["syslog_tcp"].invalid == 1


async def test_syslog_a_partial_nul_message_is_not_searched_again_at_each_read(
    patient: Receiver,
) -> None:
    writer = await syslog_peer(patient, b"<14>first\x00<14>" + b"x" * 30_000)
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 1, timeout=5)
    await patient.wait_for(lambda r: r.buffered == 30_004, timeout=5)
    conn = _only_conn(patient)
    assert conn.framing == "nul" and conn.nul_free == 30_004  # the next read starts there
    writer.write(b"end\x00")
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 2, timeout=5)
    assert conn.nul_free == 0
    await shut(writer)


async def test_syslog_lf_a_lone_multi_line_message_is_delivered_while_its_peer_stays(
    patient: Receiver,
) -> None:
    # a forwarder that sent one traceback and idles, its connection open
    writer = await syslog_peer(
        patient, b"<11>app: failed\n  Traceback (most recent call last):\n    boom\n"
    )
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 1, timeout=5)
    assert syslog_msgs(patient) == ["app: failed\n  Traceback (most recent call last):\n    boom"]
    await shut(writer)


async def test_syslog_lf_a_message_start_split_across_reads_ends_the_message_before(
    patient: Receiver,
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", patient.ports["syslog"])
    first = b"<14>a\n  b\n<"  # "<" alone may be a continuation line's or a PRI's
    writer.write(first)
    await writer.drain()
    await patient.wait_for(lambda r: r.buffered == len(first), timeout=5)
    writer.write(b"14>c\n  d\n<14>e\n")
    await writer.drain()
    await patient.wait_for(lambda r: r.counts["syslog_tcp"].received == 3, timeout=5)
    assert syslog_msgs(patient) == ["a\n  b", "c\n  d", "e"]
    await shut(writer)


async def http(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    await shut(writer)
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
        # a digit to str.isdigit() once decoded as Latin-1 ("²"), not to int()
        (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\nConnection: close\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        # two lengths: which one frames the body is anybody's guess (RFC 9112 6.3)
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 300\r\n\r\nabc", 400),
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


async def test_http_a_head_request_is_answered_without_a_body_and_the_connection_goes_on(
    receiver: Receiver,
) -> None:
    # a body after the answer to HEAD is read by its client as the next answer
    answer = await http(
        receiver.ports["http"],
        b"HEAD /?msg=x HTTP/1.1\r\n\r\n" + b"GET /?msg=ok HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    head, sep, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and sep, answer
    assert b"\r\nAllow: GET, POST, PUT\r\n" in head + b"\r\n"
    assert rest.startswith(b"HTTP/1.1 200 "), answer
    assert (receiver.counts["http"].invalid, receiver.counts["http"].received) == (1, 1)


def statuses(answer: bytes) -> list[int]:
    # each answer's plain-text body ends with a bare LF
    return [int(ln.split(b" ")[1]) for ln in answer.split(b"\n") if ln[:9] == b"HTTP/1.1 "]


async def test_http_a_target_urlsplit_refuses_is_a_400_and_the_connection_goes_on(
    receiver: Receiver,
) -> None:
    answer = await http(
        receiver.ports["http"],
        b"GET //[/?msg=x HTTP/1.1\r\n\r\n"
        + b"GET http://[::1/?msg=y HTTP/1.1\r\n\r\n"
        + b"GET /?msg=ok HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert statuses(answer) == [400, 400, 200], answer
    assert b"malformed request target" in answer
    assert (receiver.counts["http"].invalid, receiver.counts["http"].received) == (2, 1)


def post(body: bytes, encoding: str | None, close: bool = False) -> bytes:
    head = (
        f"POST /log HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    if encoding is not None:
        head += f"Content-Encoding: {encoding}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


async def test_http_bodies_are_decoded_by_their_content_encoding_within_the_frame_limit(
    receiver: Receiver,
) -> None:
    def record(n: int) -> bytes:
        return json.dumps({"msg": f"r{n}"}).encode()

    deflated = zlib.compress(record(3))
    bomb = gzip.compress(b" " * 4096 * 64)  # about 300 bytes: the frame limit is 4096
    assert len(bomb) < 4096
    answer = await http(
        receiver.ports["http"],
        post(record(0), "identity")
        + post(gzip.compress(record(1)), "gzip")
        + post(gzip.compress(record(2)[:5]) + gzip.compress(record(2)[5:]), "x-gzip")
        + post(deflated, "deflate")
        + post(record(4), "br")
        + post(gzip.compress(record(5)), "gzip, gzip")
        + post(bomb, "gzip")
        + post(gzip.compress(record(6))[:-4], "gzip")  # cut short
        + post(gzip.compress(record(7)) + b"junk", "gzip")
        + post(record(8), None, close=True),
    )
    assert statuses(answer) == [200, 200, 200, 200, 415, 415, 413, 400, 400, 200], answer
    assert b"decoded" in answer  # the 413 says why a small body is too large
    msgs = [f["msg"] for c, f in receiver.got]  # type: ignore[attr-defined]
    assert msgs == ["r0", "r1", "r2", "r3", "r8"]
    assert receiver.counts["http"].invalid == 5
    assert receiver.buffered == 0


async def test_http_sink_with_gzip_delivers_to_the_collector(patient: Receiver) -> None:
    receiver = patient
    sink = als.HTTPSink(
        f"127.0.0.1:{receiver.ports['http']}", "/log", "POST", json_batch=True, gzip=True
    )
    logger = logging.getLogger("test_collector.gzip")
    logger.propagate = False
    async with als.install(sink, logger=logger, level=logging.INFO):
        for i in range(20):
            logger.info("record %d", i)
    await receiver.wait_for(lambda r: r.counts["http"].received == 20, timeout=5)
    msgs = [f["msg"] for c, f in receiver.got]  # type: ignore[attr-defined]
    assert sorted(msgs, key=lambda m: int(m.split()[1])) == [f"record {i}" for i in range(20)]
    assert receiver.counts["http"].invalid == 0


@pytest.mark.parametrize(
    ("headers", "keep_alive"),
    [
        (b"HTTP/1.1\r\nConnection: keep-alive, close", False),
        (b"HTTP/1.1\r\nConnection: Close\r\nConnection: keep-alive", False),
        (b"HTTP/1.0\r\nConnection: Keep-Alive, Upgrade", True),
        (b"HTTP/1.0\r\nConnection: keep-alive\r\nConnection: upgrade", True),
    ],
    ids=["list", "two-headers", "http10-list", "http10-two-headers"],
)
def test_the_connection_header_is_a_list_of_tokens(headers: bytes, keep_alive: bool) -> None:
    # it was compared as one string, the last of several headers winning: a request
    # saying close was kept alive
    request = _http.parse_head(b"GET /?msg=x " + headers, 4096)
    assert request.keep_alive is keep_alive


async def test_a_request_listing_close_among_connection_tokens_is_answered_and_closed(
    receiver: Receiver,
) -> None:
    raw = b"GET /?msg=x HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n"
    answer = await http(receiver.ports["http"], raw)  # read to the end: closed
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
    assert b"Connection: close" in answer


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 4_000_000 + b" HTTP/1.1\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n" + b"x" * 4_000_000, 413),
    ],
    ids=["head-too-large", "body-too-large"],
)
async def test_an_answer_given_while_the_peer_still_sends_reaches_it(
    receiver: Receiver, raw: bytes, status: int
) -> None:
    # answered and closed with the rest unread, the kernel resets the connection, and
    # a reset throws away the answer the peer has not read yet: the collector reads
    # and discards the rest (bounded) before it closes
    answer = await http(receiver.ports["http"], raw)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:60]
    await receiver.wait_for(lambda r: r.connections == 0)
    assert receiver.counts["http"].invalid == 1
    assert receiver.buffered == 0


async def test_a_peer_that_never_stops_sending_is_dropped_after_the_linger_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_channels, "_LINGER_MAX", 1.0)  # 10 s in service
    limits = ReceiverLimits(max_frame=4096, idle_timeout=30, read_timeout=30)
    async with Receiver(http=0, limits=limits, on_record=lambda c, f: None) as rx:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
        answered = loop.time()
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            # bounded: the collector drops the connection within its linger bound
            for _ in range(200_000):
                writer.write(chunk)
                await writer.drain()
                if reader.at_eof() or writer.transport.is_closing():
                    break
        await rx.wait_for(lambda r: r.connections == 0)
        assert loop.time() - answered < 8
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_slow_upload_answered_early_still_reads_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the linger ends when the peer goes quiet (or at its total bound), not at a fixed
    # time after the answer: an upload that goes on slowly past it is not reset
    monkeypatch.setattr(_channels, "_LINGER_QUIET", 0.5)
    limits = ReceiverLimits(max_frame=4096, idle_timeout=30, read_timeout=30)
    async with Receiver(http=0, limits=limits, on_record=lambda c, f: None) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: 50000\r\n\r\n")
        for _ in range(20):  # 2 s of upload, a piece every 0.1 s (a slow sender)
            writer.write(b"x" * 2500)
            await writer.drain()
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:60]
        await shut(writer)
        await rx.wait_for(lambda r: r.connections == 0)


async def test_what_follows_a_closing_request_is_dropped_at_once(receiver: Receiver) -> None:
    # bytes after a Connection: close request are never read as requests: held while
    # the connection lingers, they counted against max_buffered and kept honest
    # senders' uploads from being read
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.ports["http"])
    writer.write(b"GET /?msg=a HTTP/1.1\r\nConnection: close\r\n\r\n" + b"y" * 30_000)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
    assert receiver.buffered == 0  # the connection still open: the peer has not closed
    assert receiver.counts["http"].received == 1
    await shut(writer)


async def test_a_request_half_read_at_a_graceful_shutdown_is_answered_once() -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    async with Receiver(http=0, on_record=lambda c, f: got.append((c, f))) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
        body = urllib.parse.urlencode({"msg": "in flight", "levelno": "20"}).encode()
        writer.write(
            b"POST /log HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5]
        )
        await writer.drain()
        await rx.wait_for(lambda r: r.buffered == 5)
        closing = asyncio.create_task(rx.aclose(grace=3))

        async def told_to_close() -> None:
            while not any(c.half_closed for c in rx._conns):
                await asyncio.sleep(0)

        await asyncio.wait_for(told_to_close(), 5)
        writer.write(body[5:])  # the rest, after the shutdown began
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        await asyncio.wait_for(closing, 5)
        await shut(writer)
    # it was half-closed (FIN) with the request half read: the answer could not be
    # written after it, and the request was counted invalid though its record was taken
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
    assert b"Connection: close" in answer
    assert [f["msg"] for _, f in got] == ["in flight"]
    assert rx.counts["http"].invalid == 0


HEAD_ONLY = b"POST /log HTTP/1.1\r\nContent-Length: 6\r\n\r\n"


async def test_a_request_whose_body_is_late_at_a_graceful_shutdown_is_waited_for() -> None:
    # once its head was read, the request was nothing in the buffer: the drain took
    # the connection for quiet and dropped it, the record lost and nothing counted
    got: list[str] = []
    async with Receiver(http=0, on_record=lambda c, f: got.append(f["msg"])) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
        writer.write(HEAD_ONLY)
        await writer.drain()
        await rx.wait_for(lambda r: any(c.request is not None for c in r._conns))
        closing = asyncio.create_task(rx.aclose(grace=5))

        async def told_to_close() -> None:
            while not any(c.half_closed for c in rx._conns):
                await asyncio.sleep(0)

        await asyncio.wait_for(told_to_close(), 5)
        await asyncio.sleep(_receiver._QUIET * 1.6)  # a slow peer: its body comes late
        writer.write(b"msg=hi")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        await asyncio.wait_for(closing, 5)
        await shut(writer)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
    assert b"Connection: close" in answer
    assert got == ["hi"]
    assert (rx.counts["http"].received, rx.counts["http"].invalid) == (1, 0)


async def test_a_request_whose_body_does_not_come_is_cut_by_the_read_timeout() -> None:
    # read_timeout covers a started request: once the head was read, only the idle
    # timeout (30 s here) ended it, and it was not counted
    limits = ReceiverLimits(read_timeout=0.3, idle_timeout=30)
    async with Receiver(http=0, limits=limits, on_record=lambda c, f: None) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
        writer.write(HEAD_ONLY)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await shut(writer)
        counts = rx.counts["http"]
        assert (counts.timeouts, counts.invalid, counts.received) == (1, 1, 0)


async def test_a_request_cut_after_its_head_is_counted_invalid() -> None:
    # cut with part of its body read it was counted; cut right after its head it was not
    async with Receiver(http=0, on_record=lambda c, f: None) as rx:
        _, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
        writer.write(HEAD_ONLY)
        await writer.drain()
        await rx.wait_for(lambda r: any(c.request is not None for c in r._conns))
        await shut(writer)
        await rx.wait_for(lambda r: r.connections == 0)
        assert (rx.counts["http"].invalid, rx.counts["http"].timeouts) == (1, 0)


async def test_a_connection_made_while_paused_is_not_read_until_resumed() -> None:
    # uvloop, and asyncio on 3.10, start reading a connection after connection_made
    # has paused it: what it sent was read and delivered while the receiver was paused
    got: list[tuple[str, dict[str, Any]]] = []
    async with Receiver(http=0, udp=0, on_record=lambda c, f: got.append((c, f))) as rx:
        rx.pause()
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
        writer.write(b"GET /?msg=held HTTP/1.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await rx.wait_for(lambda r: r.connections == 1)
        # a datagram sent after the request: dropped (paused) once the loop has seen it,
        # by when it has seen the request's bytes too
        udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", rx.ports["udp"])
        )
        udp.sendto(frame({"msg": "dropped"}))
        await rx.wait_for(lambda r: r.counts["udp"].dropped == 1)
        udp.close()
        assert got == []
        rx.resume()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
        assert [f["msg"] for _, f in got] == ["held"]
        await shut(writer)


async def test_invalid_frames_do_not_keep_a_connection_from_idling(receiver: Receiver) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.ports["tcp"])

    async def junk() -> None:
        # an empty frame at a time, the next as soon as the last was counted
        sent = 0
        with contextlib.suppress(ConnectionError):
            while receiver.connections:
                writer.write(b"\x00\x00\x00\x00")
                await writer.drain()
                sent += 1
                await receiver.wait_for(
                    lambda r: r.counts["tcp"].invalid >= sent or not r.connections
                )

    sender = asyncio.get_running_loop().create_task(junk())
    await receiver.wait_for(lambda r: r.connections == 1)
    with contextlib.suppress(ConnectionResetError):  # (a reset when frames were unread)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the idle timeout
    await asyncio.wait_for(sender, 5)
    writer.close()
    counts = receiver.counts["tcp"]
    assert counts.timeouts == 1 and counts.invalid > 1 and counts.received == 0


async def test_a_frame_too_deep_to_read_is_one_invalid_frame_among_good_ones() -> None:
    got: list[str] = []
    limits = ReceiverLimits(unpickle=Limits(max_depth=100_000))
    async with Receiver(tcp=0, limits=limits, on_record=lambda c, f: got.append(f["msg"])) as rx:
        _, writer = await asyncio.open_connection("127.0.0.1", rx.ports["tcp"])
        bad = nested_key_frame(20_000)  # past the C recursion limit of every version
        good = [frame({"msg": f"g{i}"}) for i in range(16)]
        # one write: the bad frame is decoded in the same call as the good ones
        writer.write(b"".join(good[:5]) + struct.pack(">L", len(bad)) + bad + b"".join(good[5:15]))
        await writer.drain()
        await rx.wait_for(lambda r: r.counts["tcp"].received + r.counts["tcp"].invalid >= 16)
        writer.write(good[15])  # the connection goes on
        await writer.drain()
        await rx.wait_for(lambda r: r.counts["tcp"].received == 16)
        await shut(writer)
        assert rx.counts["tcp"].invalid == 1
    assert got == [f"g{i}" for i in range(16)]


async def test_a_frame_the_reader_fails_on_unforeseen_is_one_invalid_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def load(payload: bytes, limits: Limits) -> dict[str, Any]:
        if b"fatal" in payload:
            raise MemoryError
        return load_record(payload, limits)

    monkeypatch.setattr(_receiver, "load_record", load)
    got: list[str] = []
    async with Receiver(tcp=0, on_record=lambda c, f: got.append(f["msg"])) as rx:
        _, writer = await asyncio.open_connection("127.0.0.1", rx.ports["tcp"])
        names = ["a", "b", "fatal", "c", "d"]
        writer.write(b"".join(frame({"msg": name}) for name in names))  # one read
        await writer.drain()
        await rx.wait_for(lambda r: r.counts["tcp"].received + r.counts["tcp"].invalid >= 5)
        writer.write(frame({"msg": "e"}))  # the connection goes on
        await writer.drain()
        await rx.wait_for(lambda r: r.counts["tcp"].received == 5)
        await shut(writer)
        assert rx.counts["tcp"].invalid == 1
    assert got == ["a", "b", "c", "d", "e"]


async def _small_windows_peer(rx: Receiver) -> tuple[socket.socket, Any]:
    """An HTTP peer connected to ``rx`` and its connection there, with 4 KiB socket
    buffers on both sides: answers the peer does not read soon wait in the collector."""
    loop = asyncio.get_running_loop()
    peer = socket.socket()
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.setblocking(False)
        await loop.sock_connect(peer, ("127.0.0.1", rx.ports["http"]))
        await rx.wait_for(lambda r: r.connections == 1)
    except BaseException:
        peer.close()
        raise
    (conn,) = rx._conns
    assert conn.transport is not None
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return peer, conn


async def test_a_peer_that_reads_no_answers_is_not_read_until_it_does() -> None:
    got: list[str] = []
    async with Receiver(http=0, on_record=lambda c, f: got.append(f["msg"])) as rx:
        loop = asyncio.get_running_loop()
        peer, conn = await _small_windows_peer(rx)
        with peer:
            n = 20_000
            requests = b"".join(b"GET /?msg=%d HTTP/1.1\r\n\r\n" % i for i in range(n))
            sending = loop.create_task(loop.sock_sendall(peer, requests))
            # the answers wait in the collector's memory until the peer reads them:
            # it stops reading requests while they are more than the transport's limit
            await rx.wait_for(
                lambda r: (
                    not conn.transport.is_reading()  # type: ignore[union-attr]
                    or conn.transport.get_write_buffer_size() > 512 * 1024
                )  # type: ignore[union-attr]
            )
            assert conn.transport.get_write_buffer_size() < 256 * 1024
            assert conn.write_paused
            answers = bytearray()
            while answers.count(b"HTTP/1.1 200 ") < n:  # the peer reads: all are answered
                data = await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)
                assert data
                answers += data
            await asyncio.wait_for(sending, 5)
            assert conn.transport.is_reading()
    assert got == [str(i) for i in range(n)]


async def test_a_request_failing_unforeseen_on_a_peer_not_reading_frees_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kept-alive peer stops reading its answers, then sends a request the collector
    fails on unforeseen: the connection was closed the way that waits for the answers
    to be written, so it held the only slot for good (timeouts skip a closing
    connection) and the next client was never served. It is answered 400 and closed
    within the linger bound."""

    def records_of(request: Any, body: bytes) -> list[dict[str, Any]]:
        if "boom" in request.target:
            raise RuntimeError("a failure nobody foresaw")
        return real_records_of(request, body)

    real_records_of = _http.records_of
    monkeypatch.setattr(_http, "records_of", records_of)
    monkeypatch.setattr(_channels, "_LINGER_QUIET", 0.5)
    monkeypatch.setattr(_channels, "_LINGER_MAX", 1.0)
    got: list[str] = []
    limits = ReceiverLimits(max_connections=1, idle_timeout=30, read_timeout=30)
    async with Receiver(http=0, limits=limits, on_record=lambda c, f: got.append(f["msg"])) as rx:
        loop = asyncio.get_running_loop()
        peer, conn = await _small_windows_peer(rx)
        with peer:
            transport = conn.transport
            assert transport is not None
            sent = 0
            # requests until answers wait in the collector (more than the kernel
            # buffers still take), well below the limit at which it stops reading
            while transport.get_write_buffer_size() < 16384:
                await loop.sock_sendall(peer, b"GET /?msg=ok HTTP/1.1\r\n\r\n" * 20)
                sent += 20
                await rx.wait_for(lambda r, sent=sent: r.counts["http"].received == sent)
            assert not conn.write_paused
            await loop.sock_sendall(peer, b"GET /boom?msg=x HTTP/1.1\r\n\r\n")
            await rx.wait_for(lambda r: r.counts["http"].invalid == 1)
            reader, writer = await asyncio.open_connection("127.0.0.1", rx.ports["http"])
            writer.write(b"GET /?msg=next HTTP/1.1\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            await shut(writer)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
    assert got[-1] == "next"
    assert rx.counts["http"].invalid == 1


# -- back-pressure ------------------------------------------------------------------------


async def _behind_collector(
    delay: Callable[[Any], Awaitable[None]], settings: Any, size: int, batch: int, every: int
) -> tuple[Any, Any, Any]:
    """A started collector whose one sink awaits ``delay(records)`` before it keeps a
    batch's messages (bounds: ``size`` queue and lane, ``batch``; the collector checks
    its backlog every ``every`` records): ``(sink, dispatcher, collector)``."""
    import aiologsinks as als
    from aiologsinks._collector._daemon import _Collector

    class BehindSink(als.Sink):
        def __init__(self) -> None:
            super().__init__()
            self.got: list[str] = []

        async def emit_batch(self, records: Any) -> None:
            await delay(records)
            self.got.extend(r.getMessage() for r in records)

    sink = BehindSink()
    dispatcher = als.Dispatcher(sink, queue_size=size, lane_size=size, batch_size=batch)
    dispatcher.start()
    collector = _Collector(dispatcher, settings)
    collector.CHECK_EVERY = every
    await collector.start()
    return sink, dispatcher, collector


async def test_slow_sinks_pause_reading_instead_of_growing_memory() -> None:
    from aiologsinks._collector._daemon import Settings

    async def slow_disk(records: Any) -> None:
        await asyncio.sleep(0.0003 * len(records))  # a slow disk, not synchronisation

    sink, dispatcher, collector = await _behind_collector(slow_disk, Settings(tcp=0), 200, 100, 50)
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


async def test_datagrams_are_dropped_and_counted_while_the_sinks_are_behind() -> None:
    from aiologsinks._collector._daemon import Settings, _summary

    unblocked = asyncio.Event()

    async def stalled(records: Any) -> None:
        await unblocked.wait()

    sink, dispatcher, collector = await _behind_collector(stalled, Settings(udp=0), 50, 10, 10)
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", collector.ports["udp"])
    )
    counts = collector.counts["udp"]
    try:
        for i in range(0, 400, 20):  # a few at a time: the kernel buffer never overflows
            for j in range(i, i + 20):
                udp.sendto(frame({"msg": f"r{j}"}))
            await collector.wait_for(lambda r: counts.received + counts.dropped == i + 20)
        assert collector.paused and counts.dropped > 0
        assert counts.received < 200  # the queue's bound, a lane and a check's worth
        assert f"udp {counts.received} received/0 invalid/{counts.dropped} dropped" in _summary(
            collector
        )
        unblocked.set()
        waiter = collector._waiter
        if waiter is not None:  # resumes once the sink has caught up
            await asyncio.wait_for(waiter, 10)
        assert not collector.paused
        received = counts.received
        udp.sendto(frame({"msg": "after"}))
        await collector.wait_for(lambda r: counts.received == received + 1)
        await dispatcher.flush()
    finally:
        udp.close()
        await collector.aclose()
        stats = await dispatcher.aclose()
    assert len(sink.got) == counts.received and stats.lost == 0


# -- under uvloop -------------------------------------------------------------------------


async def uvloop_scenario() -> dict[str, Any]:
    """Run in a child process on a uvloop loop (see the test below): every channel
    receives, an oversized frame closes its connection, a graceful stop with one peer
    that never closes its end returns; what the test checks comes back as a dict."""
    got: list[str] = []
    limits = ReceiverLimits(max_frame=4096, idle_timeout=10, read_timeout=10)
    rx = Receiver(
        tcp=0, udp=0, syslog=0, http=0, limits=limits, on_record=lambda c, f: got.append(c)
    )
    await rx.start()
    try:
        ports = rx.ports
        _, tcp = await asyncio.open_connection("127.0.0.1", ports["tcp"])
        tcp.write(frame({"msg": "tcp"}))
        await tcp.drain()
        _, syslog = await asyncio.open_connection("127.0.0.1", ports["syslog"])
        syslog.write(b"<14>over syslog TCP\n")
        await syslog.drain()
        answer = await http(ports["http"], b"GET /?msg=web HTTP/1.1\r\nConnection: close\r\n\r\n")
        udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", ports["udp"])
        )
        udp.sendto(frame({"msg": "udp"}))
        udp.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["tcp"])
        writer.write(struct.pack(">L", 4097))  # over max_frame: the collector hangs up
        await writer.drain()
        cut = await asyncio.wait_for(reader.read(), 5)
        await rx.wait_for(lambda r: r.received == 4 and r.connections == 2)
    finally:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await rx.aclose(grace=2.0)  # the tcp peer never closes its end: stop anyway
        stopped = loop.time() - began
    for peer in (tcp, syslog, writer):  # what is left open at the end is the receiver's
        peer.close()
        with contextlib.suppress(OSError):
            await peer.wait_closed()
    return {
        "channels": sorted(got),
        "http": answer.split(b"\r\n", 1)[0].decode(),
        "cut": cut.decode(),
        "invalid": rx.invalid,
        "left": rx.connections,
        "stopped": stopped,
    }


def run_uvloop_scenario() -> None:
    """The child's main: the scenario on a new uvloop loop, then the loop closed; prints
    the scenario's dict with the loop's errors and how long the close took."""
    import uvloop

    errors: list[str] = []
    loop = uvloop.new_event_loop()
    loop.set_exception_handler(lambda _, context: errors.append(str(context.get("message"))))
    try:
        result = loop.run_until_complete(asyncio.wait_for(uvloop_scenario(), 20))
    finally:
        began = time.monotonic()
        loop.close()  # runs the loop until every handle is closed
        closing = time.monotonic() - began
    result.update(close=closing, errors=errors)
    print(json.dumps(result))


def test_receiver_under_uvloop_serves_every_channel_and_its_loop_closes() -> None:
    # A loop that does not close hangs for good (pytest-timeout cannot interrupt libuv's
    # poll), hence the child process, killed at the bound.
    require(importlib.util.find_spec("uvloop") is not None, "uvloop (pip install -e .[test])")
    root = Path(__file__).resolve().parent.parent
    code = "from tests.test_collector import run_uvloop_scenario; run_uvloop_scenario()"
    try:
        child = subprocess.run(
            [sys.executable, "-W", "error::ResourceWarning", "-c", code],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the receiver or its uvloop loop did not stop: {exc.stderr!r}")
    assert child.returncode == 0 and child.stderr == "", child.stderr
    result = json.loads(child.stdout)
    assert result["errors"] == []  # no callback of the receiver raised
    assert result["channels"] == ["http", "syslog_tcp", "tcp", "udp"]
    assert result["http"] == "HTTP/1.1 200 OK"
    assert (result["cut"], result["invalid"], result["left"]) == ("", 1, 0)
    assert result["stopped"] < 2.0 + 1.0  # the grace, plus a moment
    assert result["close"] < 1.0
