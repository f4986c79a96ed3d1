"""DatagramSink: one stdlib pickle frame per datagram, over UDP and Unix datagram sockets."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import re
import socket
from pathlib import Path

import pytest

import aiologsinks as als
from aiologsinks.sinks.socket import DatagramSink
from tests.conftest import IN_CI, RecordingSinkMixin
from tests.helpers import fresh_logger, wait_until
from tests.peers.records import StdlibReceiver
from tests.sinks.test_syslog import datagram_peer


class RecordingDatagramSink(RecordingSinkMixin, DatagramSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.errors = []


@pytest.mark.parametrize("kind", ["udp", "unixdgram", "udp6"])
async def test_stdlib_receiver_rebuilds_every_record(kind: str, tmp_path: Path) -> None:
    host = "::1" if kind == "udp6" else "127.0.0.1"
    try:
        receiver = StdlibReceiver(kind.rstrip("6"), str(tmp_path / "d"), host)
    except OSError:
        (pytest.fail if IN_CI else pytest.skip)(f"cannot listen on {host}")
    with receiver:
        logger = logging.getLogger(f"dgram.{kind}")
        logger.propagate = False
        async with als.install(DatagramSink(*receiver.address), logger=logger, level=logging.DEBUG):
            logger.warning("hello %s", "world", extra={"user": "ann"})
            try:
                raise KeyError("k")
            except KeyError:
                logger.exception("failed")
        got = await receiver.wait_for(2)
    got.sort(key=lambda r: r.created)  # datagrams may be reordered in theory
    assert [(r.name, r.levelno, r.getMessage()) for r in got] == [
        (f"dgram.{kind}", logging.WARNING, "hello world"),
        (f"dgram.{kind}", logging.ERROR, "failed"),
    ]
    assert got[0].user == "ann" and "KeyError" in got[1].exc_text


async def test_datagrams_equal_the_stdlib_datagram_handler() -> None:
    async with datagram_peer() as (peer, address):
        host, port = address  # type: ignore[misc]
        record = logging.LogRecord("d", logging.INFO, "f.py", 1, "m %d", (1,), None)
        record.extra_field = {"a": [1, 2]}
        stdlib = logging.handlers.DatagramHandler(host, port)
        try:
            stdlib.emit(logging.makeLogRecord(dict(record.__dict__)))
            expected = await peer.get()
        finally:
            stdlib.close()
        async with DatagramSink(host, port) as sink:
            await sink.emit(logging.makeLogRecord(dict(record.__dict__)))
            assert await peer.get() == expected


@pytest.mark.parametrize("kind", ["udp", "unix"])
async def test_a_record_too_large_goes_to_handle_error_and_the_next_is_sent(
    kind: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "big.sock") if kind == "unix" else None
    async with datagram_peer(path) as (peer, address):
        sink = (
            RecordingDatagramSink(path, None) if path else RecordingDatagramSink(*address)  # type: ignore[misc]
        )
        async with sink:
            big = logging.makeLogRecord({"msg": "x" * 2_000_000})
            small = logging.makeLogRecord({"msg": "small"})
            await sink.emit_batch([big, small])
            data = await peer.get()
    assert sink.errors == [big]
    assert b"small" in data


async def test_a_missing_unix_socket_is_an_outage_counted_not_a_traceback_a_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # connected, the socket fails to open: a peer outage, as an unresolvable host
    async with RecordingDatagramSink(str(tmp_path / "none.sock"), None) as sink:
        await sink.emit_batch([logging.makeLogRecord({"msg": "lost"}) for _ in range(3)])
    assert sink.errors == [] and sink.error_count == 3
    assert capsys.readouterr().err.count("peer unreachable") == 1


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(TypeError, match="host"):
        DatagramSink(None, 9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        DatagramSink("h", -1)


async def test_send_error_from_the_transport_is_raised_to_the_sender() -> None:
    # asyncio reports sendto errors to error_received; the channel raises them
    sink = DatagramSink("127.0.0.1", 9)
    await sink.createSocket()
    assert sink.sock is not None
    try:
        with pytest.raises(als.RecordTooLargeError):
            await sink.send(b"x" * 70_000)
    finally:
        await sink.aclose()


def test_the_seeds_retry_attributes_are_kept_as_datagram_handler_inherits_them() -> None:
    stdlib = logging.handlers.DatagramHandler("127.0.0.1", 9)
    sink = DatagramSink("127.0.0.1", 9)
    try:
        for name in ("retryStart", "retryFactor", "retryMax", "retryTime", "closeOnError"):
            assert getattr(sink, name) == getattr(stdlib, name), name
    finally:
        stdlib.close()
    sink.retryStart, sink.retryFactor, sink.retryMax = 0.5, 3.0, 9.0
    assert (sink.backoff.retryStart, sink.backoff.retryFactor, sink.backoff.retryMax) == (
        0.5,
        3.0,
        9.0,
    )


async def test_an_unresolvable_host_is_counted_and_not_looked_up_per_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = RecordingDatagramSink("nowhere.invalid", 9020)
    async with sink:
        for _ in range(3):
            await sink.emit_batch([logging.makeLogRecord({"msg": "m"}) for _ in range(50)])
        assert sink.retryTime is not None  # the next lookup waits for the back-off
    assert sink.error_count == 150 and sink.errors == []
    assert capsys.readouterr().err.count("peer unreachable") == 1


async def test_a_reader_that_stops_reading_gets_each_record_once_or_it_is_counted(
    tmp_path: Path,
) -> None:
    """A Unix datagram socket whose reader stops for longer than the write timeout.

    What asyncio holds for it then did not fail: it used to go to handleError (counted
    as an error) and arrive all the same once the reader read again. Now the socket
    is dropped with what waits in asyncio's buffer, those records are sent again or
    counted, and each record either arrives once or is counted, never both.
    """
    path = str(tmp_path / "stalled.sock")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(path)
    peer.setblocking(False)
    sink = RecordingDatagramSink(path, None)
    sink.sender.timeout = 0.2  # the write timeout (10 s), short for the test
    dispatcher = als.Dispatcher(sink)
    logger = fresh_logger("stalled.datagram")
    logger.addHandler(dispatcher.handler)
    n = 600
    got: list[bytes] = []

    def stats() -> als.SinkStats:
        (only,) = dispatcher.stats().sinks.values()
        return only

    def read_all() -> int:
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(peer.recv(70_000))
        return len(got)

    try:
        async with dispatcher:
            for i in range(n):
                logger.warning("d%05d %s", i, "p" * 200)
            # the reader reads nothing until the sink has settled every record: sent
            # (to the kernel, or into asyncio's buffer) or counted as lost
            await wait_until(
                lambda: stats().delivered + stats().errors == n, describe=lambda: repr(stats())
            )
            # then it reads: what asyncio held goes out, and nothing is sent twice
            await wait_until(
                lambda: read_all() >= stats().delivered,
                describe=lambda: f"{len(got)} read; {stats()!r}",
            )
    finally:
        logger.removeHandler(dispatcher.handler)
        peer.close()
    ids = [re.search(rb"d\d{5}", data).group().decode() for data in got]  # type: ignore[union-attr]
    reported = {record.getMessage()[:6] for record in sink.errors}
    assert len(ids) == len(set(ids))  # none twice
    assert not reported & set(ids)  # none both counted and delivered
    final = stats()
    assert final.delivered == len(ids) and final.delivered + final.errors == n


@pytest.mark.parametrize("make", ["DatagramSink", "SocketSink", "SysLogSink"])
def test_a_unix_path_longer_than_a_socket_address_is_refused_at_construction(
    make: str, tmp_path: Path
) -> None:
    # opened later it could only ever fail: every record an outage that never ends
    path = str(tmp_path / ("x" * 120))
    with pytest.raises(ValueError, match=r"^(host|address): a Unix socket path holds at most 107"):
        if make == "SysLogSink":
            als.SysLogSink(address=path)
        else:
            getattr(als, make)(path, None)
    fits = "/tmp/" + "y" * 100  # 105 bytes: taken (nothing is opened yet)
    sink = als.SysLogSink(address=fits) if make == "SysLogSink" else getattr(als, make)(fits, None)
    assert sink is not None
