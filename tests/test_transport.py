"""Links over real loopback sockets: every call bounded, errors raised to the sender."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import pytest

from aiologsinks import RecordTooLargeError, SinkConnectError, _wire
from aiologsinks._backoff import Backoff
from aiologsinks._transport import DatagramLink, LinkSlot, StreamLink

from .helpers import wait_until
from .peers.faulty import blackhole
from .peers.records import AsyncReceiver, StdlibReceiver, free_port


def frame(i: int, size: int = 0) -> bytes:
    record = logging.LogRecord("t", logging.INFO, "", 0, "n %d %s", (i, "x" * size), None)
    return _wire.pickle_frame(record)


async def test_a_stream_link_delivers_frames_to_a_tcp_peer() -> None:
    async with AsyncReceiver() as receiver:
        host, port = receiver.address
        assert port is not None
        link = await StreamLink.connect_tcp(host, port)
        await link.write(frame(0) + frame(1))
        got = await receiver.wait_for(2)
        await link.aclose()
    assert [r.getMessage() for r in got] == ["n 0 ", "n 1 "]


async def test_a_stream_link_delivers_frames_to_a_unix_peer() -> None:
    with tempfile.TemporaryDirectory() as d:
        async with AsyncReceiver(path=str(Path(d) / "s")) as receiver:
            link = await StreamLink.connect_unix(str(Path(d) / "s"))
            await link.write(frame(7))
            got = await receiver.wait_for(1)
            await link.aclose()
    assert got[0].getMessage() == "n 7 "


async def test_connecting_to_nobody_raises_an_oserror() -> None:
    with pytest.raises(ConnectionRefusedError):
        await StreamLink.connect_tcp("127.0.0.1", free_port())


async def test_an_unresolvable_name_fails_to_connect_with_an_oserror() -> None:
    with pytest.raises(OSError):
        await StreamLink.connect_tcp("no-such-host.invalid", 9, timeout=5)


async def test_a_write_into_a_peer_that_never_reads_times_out_and_aborts() -> None:
    async with blackhole() as (host, port):
        link = await StreamLink.connect_tcp(host, port)
        with pytest.raises(TimeoutError):
            for _ in range(1000):  # until the kernel buffers are full
                await link.write(b"x" * 65536, timeout=0.05)
        assert link.writer.is_closing()
        await asyncio.wait_for(link.aclose(), 5)


async def test_closing_a_link_to_a_peer_that_never_reads_is_bounded() -> None:
    async with blackhole() as (host, port):
        link = await StreamLink.connect_tcp(host, port)
        link.writer.write(b"x" * 8_000_000)  # far more than the kernel takes
        await asyncio.wait_for(link.aclose(timeout=0.05), 5)
        assert link.writer.transport.is_closing()


async def test_a_link_notices_that_the_peer_closed_before_the_next_write() -> None:
    receiver = AsyncReceiver()
    async with receiver:
        host, port = receiver.address
        assert port is not None
        link = await StreamLink.connect_tcp(host, port)
        await receiver.wait_connections(1)
    # the receiver closed its end; its FIN reaches us
    await wait_until(lambda: link.peer_gone, 5)
    with pytest.raises(ConnectionResetError):
        await link.write(frame(0))
    await link.aclose()


async def test_a_datagram_link_sends_each_payload_and_reports_the_one_too_large() -> None:
    with StdlibReceiver("udp") as receiver:
        host, port = receiver.address
        assert port is not None
        link = await DatagramLink.open_udp(host, port)
        errors: list[tuple[int, type[BaseException]]] = []

        def on_error(i: int, exc: Exception) -> bool:
            errors.append((i, type(exc)))
            return True

        payloads = [frame(0), frame(1, 70_000), *(frame(i) for i in range(2, 40))]
        assert await link.send_all(payloads, on_error) == 40
        got = await receiver.wait_for(39)
        await link.aclose()
    assert errors == [(1, RecordTooLargeError)]
    assert [r.getMessage() for r in got] == ["n 0 "] + [f"n {i} " for i in range(2, 40)]


async def test_a_datagram_link_stops_where_the_sender_says_the_socket_broke() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "dgram")
        with StdlibReceiver("unixdgram", path=path) as receiver:
            link = await DatagramLink.open_unix(path)
            await link.send(frame(0))
            await receiver.wait_for(1)
        # the receiver is gone: the connected socket refuses
        seen: list[int] = []

        def on_error(i: int, exc: Exception) -> bool:
            seen.append(i)
            return False

        assert await link.send_all([frame(1), frame(2)], on_error) == 0
        assert seen == [0]
        await link.aclose()


async def test_a_datagram_send_cut_short_takes_what_asyncio_holds_with_the_link() -> None:
    # the daemon's queue is full: the datagram being sent waits in asyncio's buffer,
    # and reached() said the ones before it went. Cancelled there, the link goes with
    # that datagram: sent later, it would duplicate the copy the outbox sends again.
    import socket

    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "dgram")
        daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        daemon.bind(path)
        daemon.setblocking(False)
        try:
            link = await DatagramLink.open_unix(path)
            reached: list[int] = []
            sending = asyncio.ensure_future(
                link.send_all(
                    [frame(i) for i in range(200)],
                    lambda i, e: False,
                    timeout=30,
                    reached=reached.append,
                )
            )
            await wait_until(lambda: bool(reached))  # waiting for room, one held
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            assert link.transport.is_closing()
            arrived = 0
            while True:
                try:
                    daemon.recv(70_000)
                except BlockingIOError:
                    break
                arrived += 1
            assert arrived == reached[-1]  # what reached() said went: no more, no less
        finally:
            daemon.close()


async def test_opening_a_missing_unix_datagram_socket_fails_at_once() -> None:
    with tempfile.TemporaryDirectory() as d, pytest.raises(OSError):
        await DatagramLink.open_unix(str(Path(d) / "nobody"))


async def test_a_slot_remembers_a_failed_resolution_for_the_back_off_period() -> None:
    """An unresolvable name costs one lookup per back-off period, not one per record."""
    now = [0.0]
    lookups = 0

    async def opener() -> DatagramLink:
        nonlocal lookups
        lookups += 1
        return await DatagramLink.open_udp("no-such-host.invalid", 514, timeout=5)

    slot: LinkSlot[DatagramLink] = LinkSlot(
        opener, backoff=Backoff(1.0, 2.0, 30.0, clock=lambda: now[0]), name="syslog"
    )
    with pytest.raises(OSError):
        await slot.get()
    for _ in range(100):
        with pytest.raises(SinkConnectError, match="next attempt in"):
            await slot.get()
    assert lookups == 1
    now[0] += 1.0
    with pytest.raises(OSError):
        await slot.get()
    assert lookups == 2 and slot.link is None


async def test_a_slot_takes_an_open_that_fails_with_any_error_for_an_outage() -> None:
    """A host name idna refuses (a 64-character label) fails with UnicodeError, not
    OSError: still no link. It is remembered for the back-off like a failed lookup,
    and raised as the outage the sinks count (it used to fail each chunk for good,
    and the sinks without a report for that counted the records as sent)."""
    now = [0.0]
    opens = 0

    async def opener() -> DatagramLink:
        nonlocal opens
        opens += 1
        return await DatagramLink.open_udp("a" * 64 + ".example", 514, timeout=5)

    slot: LinkSlot[DatagramLink] = LinkSlot(
        opener, backoff=Backoff(1.0, 2.0, 30.0, clock=lambda: now[0]), name="syslog"
    )
    with pytest.raises(SinkConnectError) as raised:
        await slot.get()
    assert isinstance(raised.value.__cause__, UnicodeError)
    for _ in range(10):
        with pytest.raises(SinkConnectError, match="next attempt in"):
            await slot.get()
    assert opens == 1 and slot.link is None


async def test_a_slot_keeps_the_link_it_opened_until_reset() -> None:
    with StdlibReceiver("udp") as receiver:
        host, port = receiver.address
        assert port is not None

        async def opener() -> DatagramLink:
            return await DatagramLink.open_udp(host, port)

        slot: LinkSlot[DatagramLink] = LinkSlot(opener)
        first = await slot.get()
        assert await slot.get() is first and slot.opened == 1
        await slot.reset()
        assert first.transport.is_closing()
        second = await slot.get()
        assert second is not first and slot.opened == 2
        slot.abort()
        assert second.transport.is_closing()
        await asyncio.sleep(0)  # the aborted transport's callbacks run
