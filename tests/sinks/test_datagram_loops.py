"""The datagram sinks on asyncio's loop and on uvloop's: Unix sockets, a socket that
cannot be opened, a daemon whose queue fills and empties again.

Each test runs its coroutine on a loop it makes (``on_loop``), so one test runs on
both loops whatever loop the suite itself uses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import re
import socket
import sys
import time
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
from tests.helpers import fresh_logger, started, wait_until

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


async def read_until(
    daemon: socket.socket, into: list[bytes], n: int, dispatcher: als.Dispatcher
) -> None:
    """Read ``daemon`` on the running loop while ``dispatcher`` flushes, until ``n``
    datagrams are ``into`` (bounded)."""

    async def serve() -> None:
        ev_loop = asyncio.get_running_loop()
        while True:
            into.append(await ev_loop.sock_recv(daemon, 70_000))

    reader = asyncio.ensure_future(serve())
    try:
        await dispatcher.flush(timeout=10)
        await wait_until(lambda: len(into) >= n, describe=lambda: str(len(into)))
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


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
def test_a_missing_unix_datagram_socket_is_an_outage_with_counted_records(
    loop: str, tmp_path: Path
) -> None:
    # the socket is connected when opened: a missing one is the peer's outage (a few
    # notices, every record counted), not one traceback per record
    sink = RecordingDatagramSink(str(tmp_path / "nobody.sock"), None)
    stats = on_loop(loop, lambda: log_records(sink, f"t.unix_missing.{loop}", 3))
    (share,) = stats.sinks.values()
    assert share.delivered == 0 and share.errors == 3, share
    assert_accounted(stats, 3)
    assert sink.errors == []
    assert len(sink.notices) >= 1 and "FileNotFoundError" in sink.notices[0], sink.notices


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
            # the queue fills and empties many times over: each wait ends when the
            # daemon took the held datagram, not after the write timeout
            await read_until(daemon, arrived, n, dispatcher)
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


# -- a Unix datagram reader that stalls, restarts, or is still stalled at close ----------

SINKS = ["datagram", "syslog"]

#: how long a stalled reader reads nothing while the sink waits for room
STALL = 1.0


def unix_sink(kind: str, path: str) -> RecordingDatagramSink | RecordingSysLogSink:
    """The sink of ``kind`` to the Unix datagram socket at ``path``."""
    if kind == "datagram":
        return RecordingDatagramSink(path, None)
    sink = RecordingSysLogSink(path)
    sink.setFormatter(logging.Formatter("%(message)s"))
    return sink


def numbers(datagrams: list[bytes]) -> list[int]:
    """The ``n`` of each "rec n" the datagrams carry (pickle frames or syslog), in order."""
    found: list[int] = []
    for data in datagrams:
        match = re.search(rb"rec (\d+)", data)
        assert match is not None, data
        found.append(int(match.group(1)))
    return found


def holding(sink: RecordingDatagramSink | RecordingSysLogSink) -> bool:
    """True while the sink's link holds a datagram its socket did not take."""
    link = sink.sock if isinstance(sink, DatagramSink) else sink.socket
    return isinstance(link, DatagramLink) and link.transport.get_write_buffer_size() > 0


@pytest.mark.parametrize("kind", SINKS)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_stalled_unix_reader_costs_no_cpu_and_then_gets_every_record(
    loop: str, kind: str, tmp_path: Path
) -> None:
    """The reader reads nothing while the sink has a burst for it: the sink waits for
    room without spinning the loop (an unconnected socket polled writable while every
    send failed with EAGAIN: a core at 100% for as long as the stall lasted)."""
    path = str(tmp_path / "log.sock")
    daemon = unix_datagram_daemon(path)
    n = 200  # many times what the socket's queue holds
    arrived: list[bytes] = []
    sink = unix_sink(kind, path)
    used: list[float] = []

    async def main() -> als.DispatcherStats:
        log = fresh_logger(f"t.stall.{loop}.{kind}")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(n):
                log.warning("rec %05d", i)
            await wait_until(lambda: holding(sink), describe=lambda: repr(dispatcher.stats()))
            # the stall: polled on a deadline, it must stay a stall (nothing counted
            # lost, the datagram still held) while the process's CPU time is measured
            cpu, deadline = time.process_time(), time.monotonic() + STALL
            while time.monotonic() < deadline:
                assert holding(sink) and sink.error_count == 0, dispatcher.stats()
                await asyncio.sleep(0.01)
            used.append(time.process_time() - cpu)
            await read_until(daemon, arrived, n, dispatcher)
        return dispatcher.stats()

    try:
        stats = on_loop(loop, main)
        read_waiting(daemon, arrived)
    finally:
        daemon.close()
    # busy-waiting takes the whole window; waiting on the socket, almost none of it
    assert used[0] < STALL / 5, f"{used[0]:.3f}s of CPU in a {STALL}s stall"
    assert numbers(arrived) == list(range(n))
    assert sink.errors == [] and sink.notices == []
    (share,) = stats.sinks.values()
    assert share.delivered == n
    assert_accounted(stats, n)


@pytest.mark.parametrize("kind", SINKS)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_restarted_unix_reader_gets_the_records_logged_after_its_restart(
    loop: str, kind: str, tmp_path: Path
) -> None:
    """The reader closes its socket and a new one binds the same path between two
    batches: the sink's connected socket still points at the old one, so it is
    replaced and the second batch reaches the new reader."""
    path = str(tmp_path / "log.sock")
    first = unix_datagram_daemon(path)
    n = 5
    before: list[bytes] = []
    after: list[bytes] = []
    sink = unix_sink(kind, path)
    readers = [first]

    async def main() -> als.DispatcherStats:
        log = fresh_logger(f"t.restart.{loop}.{kind}")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(n):
                log.warning("rec %05d", i)
            await dispatcher.flush(timeout=10)
            assert read_waiting(first, before) == n  # flushed: in the reader's queue
            first.close()
            os.unlink(path)
            second = unix_datagram_daemon(path)
            readers.append(second)
            for i in range(n, 2 * n):
                log.warning("rec %05d", i)
            await dispatcher.flush(timeout=10)
            read_waiting(second, after)
        return dispatcher.stats()

    try:
        stats = on_loop(loop, main)
    finally:
        for reader in readers:
            reader.close()
    assert numbers(before) == list(range(n))
    assert numbers(after) == list(range(n, 2 * n))
    assert sink.errors == [] and sink.notices == []
    (share,) = stats.sinks.values()
    assert share.delivered == 2 * n
    assert_accounted(stats, 2 * n)


@pytest.mark.parametrize("kind", SINKS)
@pytest.mark.parametrize("loop", LOOPS)
def test_closing_during_a_unix_reader_stall_counts_each_record_once(
    loop: str, kind: str, tmp_path: Path
) -> None:
    """The sink closes (a bounded close) while the reader still reads nothing: what
    reached the reader's queue is delivered, the rest lost, each record counted once."""
    path = str(tmp_path / "log.sock")
    daemon = unix_datagram_daemon(path)
    n = 60
    arrived: list[bytes] = []
    sink = unix_sink(kind, path)
    sink.report_outage = lambda message: None  # a close with records left says so

    async def main() -> als.DispatcherStats:
        log = fresh_logger(f"t.close_stalled.{loop}.{kind}")
        dispatcher = started(log, sink)
        try:
            for i in range(n):
                log.warning("rec %05d", i)
            await wait_until(lambda: holding(sink), describe=lambda: repr(dispatcher.stats()))
        finally:
            log.removeHandler(dispatcher.handler)
            stats = await dispatcher.aclose(timeout=0.5)
        return stats

    try:
        stats = on_loop(loop, main)
        read_waiting(daemon, arrived)
    finally:
        daemon.close()
    got = numbers(arrived)
    assert got == list(range(len(got)))  # in order, none twice
    (share,) = stats.sinks.values()
    assert share.delivered == len(got), (share, len(got))
    assert share.delivered + share.errors + share.undelivered == n, share
    assert 0 < len(got) < n
    assert_accounted(stats, n)
