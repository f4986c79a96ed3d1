"""The datagram sinks on asyncio's loop and on uvloop's: Unix sockets, a socket that
cannot be opened, a daemon whose queue fills and empties again.

Each test runs its coroutine on a loop it makes (``on_loop``), so one test runs on
both loops whatever loop the suite itself uses.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted
from aiologsinks._transport import DatagramLink
from aiologsinks.sinks.socket import DatagramSink, SocketSink
from aiologsinks.sinks.syslog import SysLogSink
from tests.conftest import RecordingSinkMixin, require
from tests.helpers import fresh_logger, wait_until

T = TypeVar("T")

LOOPS = ["asyncio", "uvloop"]


def on_loop(kind: str, main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` to its end on a new event loop of ``kind``."""
    if kind == "asyncio":
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    else:
        try:
            import uvloop
        except ImportError:
            uvloop = None
        # uvloop is part of the test extra wherever it runs (not on Windows)
        require(uvloop is not None or sys.platform == "win32", "uvloop (the test extra)")
        if uvloop is None:
            pytest.skip("uvloop does not run on Windows")
        factory = uvloop.new_event_loop

    async def run() -> T:
        return await main()

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(run())
    loop = factory()  # pragma: no cover - Python 3.10
    try:
        return loop.run_until_complete(run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class RecordingOutages(RecordingSinkMixin):
    """Records the sink's errors and its outage notices."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.errors = []
        self.notices: list[str] = []

    def report_outage(self, message: str) -> None:
        self.notices.append(message)


class RecordingDatagramSink(RecordingOutages, DatagramSink):
    pass


class RecordingSocketSink(RecordingOutages, SocketSink):
    pass


class RecordingSysLogSink(RecordingOutages, SysLogSink):
    pass


async def log_records(sink: als.Sink, logger: str, n: int) -> als.DispatcherStats:
    """Log ``n`` records ("rec 0" ...) through ``sink`` in a dispatcher, flush (bounded),
    close it; its stats."""
    log = fresh_logger(logger)
    async with als.install(sink, logger=log) as dispatcher:
        for i in range(n):
            log.warning("rec %d", i)
        await dispatcher.flush(timeout=10)
    return dispatcher.stats()


def unix_datagram_daemon(path: str) -> socket.socket:
    """A bound, non-blocking Unix datagram socket that reads only when told to."""
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(path)
    daemon.setblocking(False)
    return daemon


def read_waiting(daemon: socket.socket, into: list[bytes]) -> int:
    """Take what waits in ``daemon``'s queue; return how many datagrams it holds now."""
    while True:
        try:
            into.append(daemon.recv(70_000))
        except BlockingIOError:
            return len(into)


#: a name whose 64-character label idna refuses: a UnicodeError, not an OSError
BAD_HOST = "a" * 64 + ".example"


@pytest.mark.parametrize("kind", ["datagram", "syslog-udp", "syslog-tcp", "socket"])
@pytest.mark.parametrize("loop", LOOPS)
def test_a_host_name_that_cannot_be_encoded_costs_counted_records_not_delivered_ones(
    loop: str, kind: str
) -> None:
    n = 20
    sink: RecordingDatagramSink | RecordingSocketSink | RecordingSysLogSink
    if kind == "datagram":
        sink = RecordingDatagramSink(BAD_HOST, 9999)
    elif kind == "socket":
        sink = RecordingSocketSink(BAD_HOST, 9999)
    else:
        socktype = socket.SOCK_STREAM if kind == "syslog-tcp" else socket.SOCK_DGRAM
        sink = RecordingSysLogSink((BAD_HOST, 514), socktype=socktype)

    stats = on_loop(loop, lambda: log_records(sink, f"t.badhost.{loop}.{kind}", n))
    (share,) = stats.sinks.values()
    # nothing left the process: every record is counted, none as delivered
    assert share.delivered == 0 and share.errors == n, share
    assert_accounted(stats, n)
    # an outage reported by a few notices naming the error, not a traceback a record
    assert sink.errors == []
    assert 1 <= len(sink.notices) <= 3 and "Unicode" in sink.notices[0], sink.notices


@pytest.mark.parametrize("socktype", ["datagram", "stream"])
@pytest.mark.parametrize("loop", LOOPS)
def test_a_unix_syslog_socket_gets_every_record(loop: str, socktype: str, tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    n = 300
    sink = RecordingSysLogSink(path)
    sink.setFormatter(logging.Formatter("%(message)s"))
    arrived: list[bytes] = []

    async def main() -> als.DispatcherStats:
        ev_loop = asyncio.get_running_loop()
        if socktype == "datagram":
            daemon = unix_datagram_daemon(path)

            async def serve() -> None:
                while True:
                    arrived.append(await ev_loop.sock_recv(daemon, 70_000))

            server = asyncio.ensure_future(serve())
        else:
            received = bytearray()
            closed = asyncio.Event()

            async def on_connection(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                received.extend(await reader.read())  # until the sink closes
                writer.close()
                closed.set()

            server = await asyncio.start_unix_server(on_connection, path)
        try:
            log = fresh_logger(f"t.unix_syslog.{loop}.{socktype}")
            async with als.install(sink, logger=log) as dispatcher:
                for i in range(n):
                    log.warning("rec %05d", i)
                await dispatcher.flush(timeout=10)
                if socktype == "datagram":
                    await wait_until(lambda: len(arrived) >= n, describe=lambda: str(len(arrived)))
            if socktype == "stream":
                await asyncio.wait_for(closed.wait(), 10)
                # a Unix stream carries SysLogHandler's messages unframed, NUL-ended
                arrived.extend(m + b"\x00" for m in bytes(received).split(b"\x00")[:-1])
        finally:
            if isinstance(server, asyncio.Future):
                server.cancel()
                await asyncio.gather(server, return_exceptions=True)
                daemon.close()
            else:
                server.close()
                await server.wait_closed()
        return dispatcher.stats()

    stats = on_loop(loop, main)
    assert sink.socktype == (socket.SOCK_DGRAM if socktype == "datagram" else socket.SOCK_STREAM)
    assert arrived == [b"<12>rec %05d\x00" % i for i in range(n)]
    assert sink.errors == [] and sink.notices == []
    (share,) = stats.sinks.values()
    assert share.delivered == n
    assert_accounted(stats, n)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_datagram_sink_on_a_unix_path_sends_every_record(loop: str, tmp_path: Path) -> None:
    path = str(tmp_path / "records.sock")
    daemon = unix_datagram_daemon(path)
    n = 8  # fewer than a Unix datagram socket queues (10 by default on Linux)
    got: list[bytes] = []
    sink = RecordingDatagramSink(path, None)

    try:
        stats = on_loop(loop, lambda: log_records(sink, f"t.unix_datagram.{loop}", n))
        read_waiting(daemon, got)
    finally:
        daemon.close()
    records = [logging.makeLogRecord(pickle.loads(g[4:])) for g in got]
    assert [r.getMessage() for r in records] == [f"rec {i}" for i in range(n)]
    assert sink.errors == []
    (share,) = stats.sinks.values()
    assert share.delivered == n
    assert_accounted(stats, n)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_missing_unix_datagram_socket_sends_each_record_to_handle_error(
    loop: str, tmp_path: Path
) -> None:
    # as DatagramHandler: the socket opens, each send fails, the record is the error's
    sink = RecordingDatagramSink(str(tmp_path / "nobody.sock"), None)
    records = [logging.makeLogRecord({"msg": f"lost {i}"}) for i in range(3)]

    async def main() -> None:
        async with sink:
            await sink.emit_batch(records)

    on_loop(loop, main)
    assert sink.errors == records


@pytest.mark.parametrize("loop", LOOPS)
def test_a_unix_daemon_that_catches_up_gets_the_rest_without_waiting_out_the_timeout(
    loop: str, tmp_path: Path
) -> None:
    """The daemon's queue fills and the sink waits with a datagram held; the daemon
    reads again. The sink goes on at once: the write timeout (30 s here) is for a
    daemon that does not read, not for one that did."""
    path = str(tmp_path / "log.sock")
    daemon = unix_datagram_daemon(path)
    n = 600  # many times what the socket's queue holds
    arrived: list[bytes] = []
    sink = RecordingSysLogSink(path, write_timeout=30)
    sink.setFormatter(logging.Formatter("%(message)s"))

    async def main() -> als.DispatcherStats:
        log = fresh_logger(f"t.catching_up.{loop}")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(n):
                log.warning("rec %05d", i)

            def holding() -> bool:
                link = sink.socket  # asyncio's or libuv's buffer holds a datagram
                return isinstance(link, DatagramLink) and link.transport.get_write_buffer_size() > 0

            await wait_until(holding, describe=lambda: repr(dispatcher.stats()))

            async def serve() -> None:
                ev_loop = asyncio.get_running_loop()
                while True:
                    arrived.append(await ev_loop.sock_recv(daemon, 70_000))

            reader = asyncio.ensure_future(serve())
            try:
                # the queue fills and empties many times over: each wait ends when the
                # daemon took the held datagram, not after the write timeout
                await dispatcher.flush(timeout=10)
                await wait_until(lambda: len(arrived) >= n, describe=lambda: str(len(arrived)))
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        return dispatcher.stats()

    try:
        stats = on_loop(loop, main)
        read_waiting(daemon, arrived)
    finally:
        daemon.close()
    assert arrived == [b"<12>rec %05d\x00" % i for i in range(n)]
    assert sink.errors == [] and sink.notices == []
    (share,) = stats.sinks.values()
    assert share.delivered == n
    assert_accounted(stats, n)
