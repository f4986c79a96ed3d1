"""The receiver decodes what stdlib handlers and our sinks send, and refuses hostile frames."""

from __future__ import annotations

import ast
import asyncio
import logging
import logging.handlers
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._cli.receive import Receiver, decode_frame, parse_syslog
from aiologsinks._collector._records import rebuild
from tests.helpers import ClosingHTTPHandler, drive

N = 50


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got: list[tuple[str, dict[str, Any]]] = []
    rx = Receiver(tcp=0, udp=0, syslog=0, http=0, on_record=lambda c, f: got.append((c, f)))
    rx.got = got  # type: ignore[attr-defined]
    async with rx:
        yield rx


def records(n: int = N, name: str = "stdlib", merged: bool = False) -> list[logging.LogRecord]:
    if merged:  # HTTPHandler sends msg and args unmerged, as str()
        return [
            logging.LogRecord(name, logging.WARNING, __file__, i, f"record {i}", None, None)
            for i in range(n)
        ]
    return [
        logging.LogRecord(name, logging.WARNING, __file__, i, "record %d", (i,), None)
        for i in range(n)
    ]


async def wait_count(rx: Receiver, channel: str, n: int, timeout: float = 10.0) -> None:
    await rx.wait_for(lambda r: r.counts[channel].received >= n, timeout)


def messages(rx: Receiver, channel: str) -> list[str]:
    return [merged(f) for c, f in rx.got if c == channel]  # type: ignore[attr-defined]


def merged(fields: dict[str, object]) -> str:
    """A record's message from its fields: a form (HTTPHandler's, HTTPSink's) sends
    ``msg`` and ``args`` (``str(tuple)``) apart."""
    msg, args = str(fields["msg"]), fields.get("args")
    if isinstance(args, str) and args not in ("None", "()", ""):
        return msg % ast.literal_eval(args)
    return msg


# -- stdlib senders ------------------------------------------------------------------


async def test_decodes_socket_handler_frames(receiver: Receiver) -> None:
    handler = logging.handlers.SocketHandler("127.0.0.1", receiver.ports["tcp"])
    await asyncio.to_thread(drive, handler, records())
    await wait_count(receiver, "tcp", N)
    assert messages(receiver, "tcp") == [f"record {i}" for i in range(N)]
    _, first = receiver.got[0]  # type: ignore[attr-defined]
    assert first["name"] == "stdlib" and first["levelno"] == logging.WARNING
    assert receiver.invalid == 0


async def test_decodes_datagram_handler_frames(receiver: Receiver) -> None:
    handler = logging.handlers.DatagramHandler("127.0.0.1", receiver.ports["udp"])
    await asyncio.to_thread(drive, handler, records())
    await wait_count(receiver, "udp", N)
    assert sorted(messages(receiver, "udp")) == sorted(f"record {i}" for i in range(N))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_decodes_syslog_handler_messages(receiver: Receiver, transport: str) -> None:
    socktype = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    handler = await asyncio.to_thread(
        logging.handlers.SysLogHandler,
        ("127.0.0.1", receiver.ports["syslog"]),
        logging.handlers.SysLogHandler.LOG_LOCAL3,
        socktype,
    )
    await asyncio.to_thread(drive, handler, records())
    channel = f"syslog_{transport}"
    await wait_count(receiver, channel, N)
    _, first = receiver.got[0]  # type: ignore[attr-defined]
    assert first["facility"] == 19 and first["severity"] == 4
    assert sorted(messages(receiver, channel)) == sorted(f"record {i}" for i in range(N))


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_decodes_http_handler_requests(receiver: Receiver, method: str) -> None:
    handler = ClosingHTTPHandler(
        f"127.0.0.1:{receiver.ports['http']}", "/log?x=1" if method == "GET" else "/log", method
    )
    await asyncio.to_thread(drive, handler, records(5, merged=True))
    await wait_count(receiver, "http", 5)
    assert messages(receiver, "http") == [f"record {i}" for i in range(5)]


def test_decodes_octet_counted_syslog_and_rejects_bad_pri() -> None:
    assert parse_syslog(b"<134>app: hi\x00") == {"facility": 16, "severity": 6, "msg": "app: hi"}
    # Arabic-Indic digits: a number to str.isdigit() and int(), not a PRI
    for bad in (b"no pri", b"<999>x", b"<x>y", b"", "<\u0661\u0663\u0664>x".encode()):
        with pytest.raises(ValueError):
            parse_syslog(bad)


async def test_syslog_tcp_octet_counting_and_mixed_framing(receiver: Receiver) -> None:
    stream = b"".join(b"%d %s" % (len(m), m) for m in (b"<14>one", b"<14>two", b"<14>thr ee"))
    _, writer = await asyncio.open_connection("127.0.0.1", receiver.ports["syslog"])
    writer.write(stream[:5])
    await writer.drain()
    writer.write(stream[5:])
    await writer.drain()
    await wait_count(receiver, "syslog_tcp", 3)
    writer.close()
    await writer.wait_closed()
    assert messages(receiver, "syslog_tcp") == ["one", "two", "thr ee"]


async def send_in_two(
    rx: Receiver, first: bytes, rest: bytes, read: Callable[[Receiver], bool]
) -> None:
    """Send ``first`` to the syslog port, wait until ``read(rx)`` says the receiver has
    read it, then ``rest``: two reads, as a slow network makes them."""
    _, writer = await asyncio.open_connection("127.0.0.1", rx.ports["syslog"])
    try:
        writer.write(first)
        await writer.drain()
        await rx.wait_for(read)
        writer.write(rest)
        await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


def nul_framed(n: int) -> bytes:
    return b"".join(b"<14>record %d\x00" % i for i in range(n))


async def test_a_syslog_handler_message_with_lines_that_start_with_a_digit(
    receiver: Receiver,
) -> None:
    # SysLogHandler's multi-line message (an embedded log with its timestamps) whose
    # NUL has not arrived yet: an LF before "2024-..." is inside the message, and
    # "2024-01-02" is no RFC 6587 octet count. The connection stays NUL-framed.
    head = b"<14>job output:\n2024-01-02 03:04:05 step one\n2024-01-0"
    rest = b"2 03:04:06 step two\x00" + nul_framed(100)
    # held, or (before the fix) a message made of its first line
    await send_in_two(
        receiver, head, rest, lambda r: r._buffered > 0 or r.counts["syslog_tcp"].received > 0
    )
    await wait_count(receiver, "syslog_tcp", 101)
    got = messages(receiver, "syslog_tcp")
    assert got[0] == "job output:\n2024-01-02 03:04:05 step one\n2024-01-02 03:04:06 step two"
    assert got[1:] == [f"record {i}" for i in range(100)]
    assert receiver.invalid == 0


async def test_a_pause_after_an_lf_costs_one_message_not_the_connection(
    receiver: Receiver,
) -> None:
    # the NUL-framed sender stalls right after an LF inside its first message: the
    # receiver takes the LF as the end (as it must for an LF-framed sender that has
    # stopped) and the next NUL tells it otherwise: what follows is read as sent
    rest = b"second line\x00" + nul_framed(100)
    # the pause: the receiver made a message of the first line
    await send_in_two(
        receiver, b"<14>first line\n", rest, lambda r: r.counts["syslog_tcp"].received > 0
    )
    await wait_count(receiver, "syslog_tcp", 101)
    # its second line, without a PRI of its own, is counted invalid
    assert messages(receiver, "syslog_tcp") == ["first line", *(f"record {i}" for i in range(100))]
    assert receiver.counts["syslog_tcp"].invalid == 1


async def test_http_handler_args_that_are_not_literals_stay_in_the_message(
    receiver: Receiver,
) -> None:
    # HTTPHandler sends str(args): a datetime's or a Decimal's repr is code, not a
    # literal, so the values cannot be rebuilt; they must not vanish from the message
    import datetime
    import decimal

    handler = ClosingHTTPHandler(f"127.0.0.1:{receiver.ports['http']}", "/log", "POST")
    at = datetime.datetime(2024, 1, 2, 3, 4, 5)
    sent = [
        logging.LogRecord("web", logging.INFO, __file__, 1, "at %s", (at,), None),
        logging.LogRecord(
            "web", logging.INFO, __file__, 1, "amount %s", (decimal.Decimal(2),), None
        ),
        logging.LogRecord("web", logging.INFO, __file__, 1, "%d of %d", (1, 2), None),
    ]
    await asyncio.to_thread(drive, handler, sent)
    await wait_count(receiver, "http", 3)
    rebuilt = [rebuild(f).getMessage() for c, f in receiver.got]  # type: ignore[attr-defined]
    assert rebuilt == [
        "at %s (datetime.datetime(2024, 1, 2, 3, 4, 5),)",
        "amount %s (Decimal('2'),)",
        "1 of 2",
    ]


async def test_http_handler_messages_of_none_and_of_floats_that_are_not_finite(
    receiver: Receiver,
) -> None:
    # a form sends every value as str(): a message that is None (or the text "None")
    # was written empty, and str() of nan or inf is a name, not a literal
    handler = ClosingHTTPHandler(f"127.0.0.1:{receiver.ports['http']}", "/log", "POST")
    sent = [
        logging.LogRecord("web", logging.INFO, __file__, 1, msg, args, None)
        for msg, args in [
            (None, None),
            ("None", None),
            ("%s", (None,)),
            ("%s", (float("nan"),)),
            ("%s %s", (float("inf"), float("-inf"))),
        ]
    ]
    await asyncio.to_thread(drive, handler, sent)
    await wait_count(receiver, "http", len(sent))
    rebuilt = [rebuild(f).getMessage() for c, f in receiver.got]  # type: ignore[attr-defined]
    assert rebuilt == [record.getMessage() for record in sent]
    assert rebuilt == ["None", "None", "None", "nan", "inf -inf"]


# -- hostile and broken input ------------------------------------------------------------


class Evil:
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (os.system, ("touch /nonexistent-aiologsinks-pwned",))


def frame(obj: Any, protocol: int = 1) -> bytes:
    data = pickle.dumps(obj, protocol)
    return struct.pack(">L", len(data)) + data


def test_decode_frame_refuses_globals_and_non_dicts() -> None:
    for proto in (0, 1, 2, 5):
        with pytest.raises(ValueError, match="not allowed"):
            decode_frame(pickle.dumps(Evil(), proto))
    with pytest.raises(ValueError, match="not allowed"):
        decode_frame(pickle.dumps({"msg": logging.LogRecord}))
    with pytest.raises(ValueError, match="expected a pickled dict"):
        decode_frame(pickle.dumps(["a", "list"]))
    with pytest.raises(ValueError):
        decode_frame(b"\x80\x05garbage")
    assert decode_frame(pickle.dumps({"msg": "ok", "args": None, "n": (1, 2.5)}, 1))["msg"] == "ok"


async def test_malicious_pickle_is_counted_and_receiver_keeps_serving(
    receiver: Receiver,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.ports["tcp"])
    writer.write(frame(Evil()) + frame({"msg": "after evil"}) + frame(Evil(), 4))
    writer.write(frame({"msg": "still here"}))
    await writer.drain()
    await wait_count(receiver, "tcp", 2)
    assert receiver.counts["tcp"].invalid == 2
    assert messages(receiver, "tcp") == ["after evil", "still here"]

    # a length prefix beyond any sane frame breaks the stream: that connection is dropped
    writer.write(struct.pack(">L", 0xFFFFFFF0) + b"x" * 10)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    assert receiver.counts["tcp"].invalid == 3

    # ... and the receiver still serves new connections and datagrams
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", receiver.ports["udp"])
    )
    udp.sendto(frame(Evil()))
    udp.sendto(b"\x00\x00\x00\x09short")
    udp.sendto(frame({"msg": "udp ok"}))
    await wait_count(receiver, "udp", 1)
    udp.close()
    assert receiver.counts["udp"].invalid == 2
    handler = logging.handlers.SocketHandler("127.0.0.1", receiver.ports["tcp"])
    await asyncio.to_thread(drive, handler, records(1))
    await wait_count(receiver, "tcp", 3)
    assert not Path("/nonexistent-aiologsinks-pwned").exists()


async def test_bad_http_bodies_are_rejected_and_counted(receiver: Receiver) -> None:
    import aiohttp

    url = f"http://127.0.0.1:{receiver.ports['http']}/log"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, data=b"{not json", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
        async with session.get(url) as r:
            assert r.status == 400
        async with session.post(url, json=[{"msg": "a"}, {"msg": "b"}]) as r:
            assert r.status == 200
    assert receiver.counts["http"].invalid == 2
    assert messages(receiver, "http") == ["a", "b"]


# -- our sinks -----------------------------------------------------------------------------


def sink_class(name: str) -> type[als.Sink]:
    cls: type[als.Sink] = getattr(als, name)
    return cls


async def log_through(sink: als.Sink, n: int) -> None:
    logger = logging.getLogger(f"test_receive.{type(sink).__name__}")
    logger.propagate = False
    async with als.install(sink, logger=logger, level=logging.INFO):
        for i in range(n):
            logger.info("sink record %d", i)


async def test_decodes_socket_sink(receiver: Receiver) -> None:
    cls: Any = sink_class("SocketSink")
    await log_through(cls("127.0.0.1", receiver.ports["tcp"]), N)
    await wait_count(receiver, "tcp", N)
    assert messages(receiver, "tcp") == [f"sink record {i}" for i in range(N)]


async def test_decodes_datagram_sink(receiver: Receiver) -> None:
    cls: Any = sink_class("DatagramSink")
    await log_through(cls("127.0.0.1", receiver.ports["udp"]), N)
    await wait_count(receiver, "udp", N)
    assert sorted(messages(receiver, "udp")) == sorted(f"sink record {i}" for i in range(N))


@pytest.mark.parametrize("socktype", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
async def test_decodes_syslog_sink(receiver: Receiver, socktype: int) -> None:
    cls: Any = sink_class("SysLogSink")
    await log_through(cls(("127.0.0.1", receiver.ports["syslog"]), socktype=socktype), N)
    channel = "syslog_udp" if socktype == socket.SOCK_DGRAM else "syslog_tcp"
    await wait_count(receiver, channel, N)
    assert sorted(messages(receiver, channel)) == sorted(f"sink record {i}" for i in range(N))
    assert receiver.invalid == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_decodes_http_sink(receiver: Receiver, method: str) -> None:
    cls: Any = sink_class("HTTPSink")
    await log_through(cls(f"127.0.0.1:{receiver.ports['http']}", "/log", method), 10)
    await wait_count(receiver, "http", 10)
    assert messages(receiver, "http") == [f"sink record {i}" for i in range(10)]


# -- the command --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_receive_command_writes_lines_and_stops_on_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "received.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiologsinks", "receive", "--tcp", "0", "--syslog", "0",
        "--out", str(out),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        assert "listening on" in line and "127.0.0.1:" in line, line
        ports = dict(part.split(" 127.0.0.1:") for part in line.split("on ", 1)[1].split(", "))
        tcp = int(ports["tcp"])
        handler = logging.handlers.SocketHandler("127.0.0.1", tcp)
        await asyncio.to_thread(drive, handler, records(3, name="cli"))

        async def written() -> None:
            while True:
                text = await asyncio.to_thread(lambda: out.read_text() if out.exists() else "")
                if text.count("\n") >= 3:
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(written(), 10)
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        tail = (await proc.stderr.read()).decode()
        assert "tcp 3 received/0 invalid" in tail
        lines = (await asyncio.to_thread(out.read_text)).splitlines()
        assert [ln.split("] ", 1)[1] for ln in lines] == [
            f"WARNING cli: record {i}" for i in range(3)
        ]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- graceful close --------------------------------------------------------------------


def pickled(i: int) -> bytes:
    return frame({"msg": f"record {i}", "args": None, "levelno": 30, "name": "n"})


async def test_a_graceful_close_stops_listening_before_peers_are_told_to_go() -> None:
    # Closing a listener resets a connection whose handshake completes at that
    # instant, records written on it included. A peer told to go away (EOF) reconnects
    # at once, so the listener must already be closed when it hears: refused, the
    # peer keeps its records for the next collector, nothing is reset unread.
    got: list[tuple[str, dict[str, Any]]] = []
    rx = Receiver(tcp=0, on_record=lambda c, f: got.append((c, f)))
    await rx.start()
    port = rx.ports["tcp"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(pickled(0))
    await rx.wait_for(lambda r: r.counts["tcp"].received == 1, 10)
    closing = asyncio.ensure_future(rx.aclose(grace=5))
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the receiver's EOF
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        # what a peer sends before it learnt of the shutdown is still read
        writer.write(pickled(1))
        await rx.wait_for(lambda r: r.counts["tcp"].received == 2, 10)
        writer.close()
        await asyncio.wait_for(closing, 10)
    finally:
        closing.cancel()
        await rx.aclose()
    assert [f["msg"] for _, f in got] == ["record 0", "record 1"]


async def test_a_connection_waiting_in_the_backlog_at_close_is_read_not_reset() -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    rx = Receiver(tcp=0, on_record=lambda c, f: got.append((c, f)))
    await rx.start()
    # connected and written with no await: the kernel holds it in the backlog,
    # asyncio has not accepted it when the close begins
    sock = socket.create_connection(("127.0.0.1", rx.ports["tcp"]), timeout=10)
    try:
        sock.sendall(pickled(7))
        closing = asyncio.ensure_future(rx.aclose(grace=5))
        # the receiver half-closes it (EOF) and reads what was written
        assert await asyncio.wait_for(asyncio.to_thread(sock.recv, 1), 10) == b""
        sock.close()
        await asyncio.wait_for(closing, 10)
    finally:
        sock.close()
        await rx.aclose()
    assert rx.counts["tcp"].received == 1 and rx.counts["tcp"].invalid == 0
    assert [f["msg"] for _, f in got] == ["record 7"]
