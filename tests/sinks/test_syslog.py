"""SysLogSink: SysLogHandler's bytes over UDP and Unix, RFC 6587 over TCP, real rsyslogd."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import logging.handlers
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted
from aiologsinks.sinks.syslog import RFC5424Formatter, SysLogSink
from tests.conftest import RecordingSinkMixin
from tests.peers.records import AsyncReceiver
from tests.peers.rsyslog import Rsyslog, rsyslog  # noqa: F401 - the fixture

SH = logging.handlers.SysLogHandler


class RecordingSysLogSink(RecordingSinkMixin, SysLogSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.errors = []


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    async def get(self) -> bytes:
        return await asyncio.wait_for(self.queue.get(), 5)


@contextlib.asynccontextmanager
async def datagram_peer(path: str | None = None) -> AsyncIterator[tuple[Datagrams, object]]:
    loop = asyncio.get_running_loop()
    if path is None:
        transport, proto = await loop.create_datagram_endpoint(
            Datagrams, local_addr=("127.0.0.1", 0)
        )
        address: object = transport.get_extra_info("sockname")
    else:
        # bound here: uvloop's create_datagram_endpoint takes no path for local_addr
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        transport, proto = await loop.create_datagram_endpoint(Datagrams, sock=sock)
        address = path
    try:
        yield proto, address
    finally:
        transport.close()
        await asyncio.sleep(0)  # let the transport close its socket


def read_until_eof() -> tuple[bytearray, asyncio.Event, Callable[..., Awaitable[None]]]:
    """A stream server callback keeping every byte of a connection until the sink closes it."""
    received = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())
        writer.close()
        await writer.wait_closed()
        done.set()

    return received, done, serve


def record(level: int, msg: str = "hello %s", args: tuple[object, ...] = ("wörld",)):  # type: ignore[no-untyped-def]
    return logging.LogRecord("sys.test", level, __file__, 1, msg, args, None)


COMBOS = list(
    itertools.product(
        [SH.LOG_USER, SH.LOG_LOCAL7, "daemon", SH.LOG_KERN, "authpriv"],
        [logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR, logging.CRITICAL],
        ["", "myapp[42]: "],
        [True, False],
    )
)


@pytest.mark.parametrize("transport", ["udp", "unix"])
async def test_datagram_bytes_equal_syslog_handler_for_many_combinations(
    transport: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "dg.sock") if transport == "unix" else None
    async with datagram_peer(path) as (peer, address):
        for facility, level, ident, nul in COMBOS:
            stdlib = SH(address, facility)  # type: ignore[arg-type]
            stdlib.ident, stdlib.append_nul = ident, nul
            sink = RecordingSysLogSink(address, facility)  # type: ignore[arg-type]
            sink.ident, sink.append_nul = ident, nul
            fmt = logging.Formatter("%(name)s %(levelname)s: %(message)s")
            stdlib.setFormatter(fmt)
            sink.setFormatter(fmt)
            try:
                stdlib.emit(record(level))
                expected = await peer.get()
                async with sink:
                    await sink.emit(record(level))
                    got = await peer.get()
            finally:
                stdlib.close()
            assert got == expected, (facility, level, ident, nul)
            assert sink.errors == []
    assert len(COMBOS) == 120


@pytest.mark.parametrize("ident", [None, b"app: ", 42])
async def test_an_ident_that_is_none_or_not_a_str_is_what_the_stdlib_makes_of_it(
    ident: object,
) -> None:
    # it was sent as its text ("<14>None...", "<14>b'app: '..."): the stdlib adds no
    # ident for None, and fails the record (handleError) for bytes or an int
    async with datagram_peer() as (peer, address):
        stdlib = SH(address)  # type: ignore[arg-type]
        failed: list[logging.LogRecord] = []
        stdlib.handleError = failed.append  # type: ignore[method-assign]
        sink = RecordingSysLogSink(address)  # type: ignore[arg-type]
        try:
            stdlib.ident = sink.ident = ident  # type: ignore[assignment]
            stdlib.emit(record(logging.INFO))
            async with sink:
                await sink.emit(record(logging.INFO))
            stdlib.ident = ""
            stdlib.emit(record(logging.INFO, "end", ()))  # what follows them, if anything
        finally:
            stdlib.close()
        sent = [await peer.get()]
        while sent[-1] != b"<14>end\x00":
            sent.append(await peer.get())
    if ident is None:
        assert sent == [b"<14>hello w\xc3\xb6rld\x00"] * 2 + [b"<14>end\x00"]
        assert failed == [] and sink.errors == []
    else:
        assert sent == [b"<14>end\x00"]
        assert len(failed) == 1 and [r.getMessage() for r in sink.errors] == ["hello wörld"]


def test_a_list_address_from_dictconfig_is_host_and_port() -> None:
    # dictConfig makes a tuple of a list address for SysLogHandler subclasses only;
    # a JSON or YAML configuration can write no tuple
    import logging.config

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "sys": {"class": "aiologsinks.SysLogSink", "address": ["127.0.0.1", 5514]}
            },
        }
    )
    sink = logging.getHandlerByName("sys") if hasattr(logging, "getHandlerByName") else None
    sink = sink or logging._handlers["sys"]  # type: ignore[attr-defined]
    try:
        assert isinstance(sink, SysLogSink) and sink.address == ("127.0.0.1", 5514)
    finally:
        sink.close()


async def test_tcp_frames_are_octet_counted_or_lf_terminated() -> None:
    received, done, serve = read_until_eof()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        expected = []
        for framing in ("octet", "lf"):
            received.clear()
            done.clear()
            sink = SysLogSink(("127.0.0.1", port), "local3", socket.SOCK_STREAM, framing=framing)  # type: ignore[arg-type]
            sink.ident = "app: "
            async with sink:
                for i, level in enumerate([logging.INFO, logging.ERROR, logging.DEBUG]):
                    await sink.emit(record(level, "line %d\nsecond line", (i,)))
            await asyncio.wait_for(done.wait(), 5)
            expected.append(bytes(received))
    finally:
        server.close()
        await server.wait_closed()
    octet, lf = expected
    frames = []
    rest = octet
    while rest:
        m = re.match(rb"(\d+) ", rest)
        assert m, rest
        n = int(m.group(1))
        frames.append(rest[m.end() : m.end() + n])
        rest = rest[m.end() + n :]
    assert frames == [
        b"<158>app: line 0\nsecond line",
        b"<155>app: line 1\nsecond line",
        b"<159>app: line 2\nsecond line",
    ]
    assert lf == b"".join(f + b"\n" for f in frames)


class NoticeSysLogSink(SysLogSink):
    """INFO goes out as notice: the dispatcher's batches must ask the hooks too."""

    def mapPriority(self, levelName: str) -> str:
        return "notice" if levelName == "INFO" else super().mapPriority(levelName)


class NoticeSysLogHandler(SH):
    def mapPriority(self, levelName: str) -> str:
        return "notice" if levelName == "INFO" else super().mapPriority(levelName)


@pytest.mark.parametrize("framing", ["udp-nul", "udp", "octet", "lf"])
async def test_batches_through_install_carry_the_stdlib_bytes(framing: str) -> None:
    """Records frozen by the shim and formatted a batch at a time: per level, per
    framing, with a priority hook overridden, each message is SysLogHandler's."""
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.INFO] * 4
    fmt = logging.Formatter("%(name)s %(levelname)s: %(message)s")
    async with datagram_peer() as (peer, address):
        stdlib = NoticeSysLogHandler(address, "local2")  # type: ignore[arg-type]
        stdlib.ident, stdlib.append_nul = "app[7]: ", framing == "udp-nul"
        stdlib.setFormatter(fmt)
        try:
            for i, level in enumerate(levels):
                stdlib.emit(record(level, "line %d \u00e9", (i,)))
            messages = [await peer.get() for _ in levels]
        finally:
            stdlib.close()
        received, done, serve = read_until_eof()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        if framing.startswith("udp"):
            sink = NoticeSysLogSink(address, "local2")  # type: ignore[arg-type]
            sink.append_nul = framing == "udp-nul"
        else:
            sink = NoticeSysLogSink(
                ("127.0.0.1", port), "local2", socket.SOCK_STREAM, framing=framing
            )  # type: ignore[arg-type]
        sink.ident = "app[7]: "
        sink.setFormatter(fmt)
        logger = logging.getLogger("sys.test")
        logger.propagate = False
        try:
            async with als.install(sink, logger=logger, level=logging.DEBUG):
                for i, level in enumerate(levels):
                    logger.log(level, "line %d \u00e9", i)
            if framing.startswith("udp"):
                got = b"".join([await peer.get() for _ in levels])
                expected = b"".join(messages)
            else:
                await asyncio.wait_for(done.wait(), 5)
                got = bytes(received)
                frame = (
                    (lambda m: b"%d %s" % (len(m), m))
                    if framing == "octet"
                    else (lambda m: m + b"\n")
                )
                expected = b"".join(frame(m) for m in messages)
        finally:
            server.close()
            await server.wait_closed()
    assert got == expected
    assert b"<149>app[7]: sys.test INFO: line 1 \xc3\xa9" in got  # local2.notice


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_record_that_cannot_be_encoded_in_a_batch_is_counted_and_the_rest_go(
    transport: str,
) -> None:
    """A lone surrogate cannot be UTF-8 (SysLogHandler's handleError too): in a
    dispatcher's batch that record goes to handleError, counted, the others are sent
    in order, and received == delivered + errors."""
    messages = [f"ok {i}" for i in range(10)]
    messages[4] = "bad \ud800"
    received, done, serve = read_until_eof()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    logger = logging.getLogger(f"sys.bad.{transport}")
    logger.propagate = False
    async with datagram_peer() as (peer, address):
        if transport == "udp":
            sink = RecordingSysLogSink(address)
        else:
            sink = RecordingSysLogSink(("127.0.0.1", port), socktype=socket.SOCK_STREAM)
        try:
            async with als.install(sink, logger=logger) as dispatcher:
                for m in messages:
                    logger.warning(m)
                await dispatcher.flush()
                stats = dispatcher.stats()
            if transport == "udp":
                got = [await peer.get() for _ in range(9)]
            else:
                await asyncio.wait_for(done.wait(), 5)
                got, rest = [], bytes(received)
                while m := re.match(rb"(\d+) ", rest):
                    got.append(rest[m.end() : m.end() + int(m.group(1))])
                    rest = rest[m.end() + int(m.group(1)) :]
                assert rest == b""
        finally:
            server.close()
            await server.wait_closed()
    assert [g.rstrip(b"\x00").decode().split(">", 1)[1] for g in got] == [
        m for m in messages if m != messages[4]
    ]
    assert [r.getMessage() for r in sink.errors] == [messages[4]]
    s = next(iter(stats.sinks.values()))
    assert (s.received, s.delivered, s.errors) == (10, 9, 1)
    assert_accounted(stats, 10)


async def test_oversize_udp_is_truncated_and_the_next_record_goes_normally() -> None:
    async with datagram_peer() as (peer, address):
        async with RecordingSysLogSink(address, max_size=100) as sink:
            await sink.emit(record(logging.INFO, "é" * 200, ()))
            await sink.emit(record(logging.INFO, "short", ()))
            cut, short = await peer.get(), await peer.get()
        async with RecordingSysLogSink(address) as sink:
            await sink.emit(record(logging.INFO, "x" * 70_000, ()))
            big = await peer.get()
    assert len(cut) <= 100 and cut.endswith(b"\x00") and cut.startswith(b"<14>\xc3\xa9")
    cut[:-1].decode("utf-8")  # cut at a character boundary
    assert short == b"<14>short\x00"
    assert len(big) == 65507 and big.endswith(b"x\x00")
    assert sink.errors == []


async def test_unix_datagram_socket_is_reconnected_after_the_daemon_restarts(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "log.sock")
    sink = RecordingSysLogSink(path)
    try:
        async with datagram_peer(path) as (peer, _):
            await sink.emit(record(logging.WARNING, "first", ()))
            assert await peer.get() == b"<12>first\x00"
        Path(path).unlink()
        async with datagram_peer(path) as (peer, _):
            await sink.emit(record(logging.WARNING, "second", ()))
            assert await peer.get() == b"<12>second\x00"
    finally:
        await sink.aclose()
    assert sink.errors == [] and sink.socktype == socket.SOCK_DGRAM


async def test_a_unix_daemon_that_stops_reading_costs_no_uncounted_record(
    tmp_path: Path,
) -> None:
    # the socket's queue fills, asyncio buffers the rest, the write times out and the
    # link is dropped: what asyncio still held never reached the daemon, so it is sent
    # again, not counted as sent
    from aiologsinks._stats import assert_accounted

    from ..helpers import fresh_logger, wait_until

    path = str(tmp_path / "log.sock")
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(path)
    daemon.setblocking(False)
    outage = asyncio.Event()

    class Sink(RecordingSysLogSink):
        def report_outage(self, message: str) -> None:
            outage.set()

    sink = Sink(path, write_timeout=0.2)
    log = fresh_logger("t.syslog.paused_daemon")
    n = 600  # more than the socket's queue and asyncio's 64 KiB buffer hold
    arrived: list[bytes] = []
    try:
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(n):
                log.info("rec %05d %s", i, "p" * 200)
            # the daemon is not reading: the sink sees the outage (or, were it blind
            # to what asyncio held, would count everything as sent)
            await wait_until(
                lambda: (
                    outage.is_set()
                    or (
                        dispatcher.stats().sinks["Sink#0"].emitted == n
                        and not sink.peer.outbox.pending
                    )
                )
            )

            async def read() -> None:
                loop = asyncio.get_running_loop()
                while True:
                    arrived.append(await loop.sock_recv(daemon, 70_000))

            reader = asyncio.create_task(read())
            # reading again: the sink's retries (flush() does not wait them out) empty
            # its buffer
            await wait_until(lambda: sink.peer.outbox.pending == 0, timeout=20)
            await dispatcher.flush()
        reader.cancel()
        stats = dispatcher.stats()
        while True:  # what the reader had not taken yet is in the socket's queue
            try:
                arrived.append(daemon.recv(70_000))
            except BlockingIOError:
                break
    finally:
        daemon.close()
    numbers = [int(d.split(b"rec ")[1][:5]) for d in arrived]
    (share,) = stats.sinks.values()
    assert share.delivered == len(numbers) == len(set(numbers)) == n
    assert_accounted(stats, n)


def read_all(sock: socket.socket) -> list[bytes]:
    """The datagrams waiting in a non-blocking socket's queue."""
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(70_000))
        except BlockingIOError:
            return got


async def close_on_a_daemon_that_does_not_read(
    tmp_path: Path, n: int, write_timeout: float, flush: bool, close_timeout: float
) -> tuple[als.DispatcherStats, list[bytes]]:
    """Log ``n`` small records to a Unix datagram daemon that reads nothing until the
    dispatcher closed (after a flush, or not); its stats and what the daemon got."""
    from ..helpers import fresh_logger, started

    path = str(tmp_path / "log.sock")
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(path)
    daemon.setblocking(False)
    log = fresh_logger(f"t.syslog.unread_daemon.{write_timeout}.{flush}")
    try:
        dispatcher = started(log, RecordingSysLogSink(path, write_timeout=write_timeout))
        for i in range(n):
            log.info("rec %05d", i)
        if flush:
            await dispatcher.flush()
        stats = await dispatcher.aclose(timeout=close_timeout)
        return stats, read_all(daemon)
    finally:
        daemon.close()


async def test_datagrams_asyncio_still_holds_at_close_are_counted_not_delivered(
    tmp_path: Path,
) -> None:
    # a daemon that does not read while the sink closes: the socket's queue takes a few
    # datagrams, asyncio would hold the rest (under its 64 KiB mark, so no write ever
    # waited) and the close discards them. They never reached the daemon: counted lost.
    n = 300  # small ones: all of them fit asyncio's buffer
    stats, arrived = await close_on_a_daemon_that_does_not_read(
        tmp_path, n, write_timeout=0.2, flush=True, close_timeout=1
    )
    (share,) = stats.sinks.values()
    assert 0 < len(arrived) < n
    assert share.delivered == len(arrived)
    assert share.delivered + share.lost == n
    assert_accounted(stats, n)


async def test_a_send_cut_short_by_close_counts_what_reached_the_daemon_as_delivered(
    tmp_path: Path,
) -> None:
    # the daemon's queue is full and the write timeout far: aclose(timeout=) gives up
    # on the send while it waits. The datagrams the kernel took before are delivered
    # (the daemon reads them later), not counted lost with the rest of the chunk.
    n = 300
    stats, arrived = await close_on_a_daemon_that_does_not_read(
        tmp_path, n, write_timeout=30, flush=False, close_timeout=0.5
    )
    (share,) = stats.sinks.values()
    assert 0 < len(arrived) < n
    assert share.delivered == len(arrived)
    assert_accounted(stats, n)


async def test_unix_stream_socket_is_used_when_there_is_no_datagram_socket(
    tmp_path: Path,
) -> None:
    received, done, serve = read_until_eof()
    path = str(tmp_path / "st.sock")
    server = await asyncio.start_unix_server(serve, path)
    try:
        async with SysLogSink(path, "mail") as sink:
            await sink.emit(record(logging.ERROR, "over a stream", ()))
            assert sink.socktype == socket.SOCK_STREAM
        await asyncio.wait_for(done.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    # what SysLogHandler sends on a Unix stream socket: no framing, NUL-terminated
    assert bytes(received) == b"<19>over a stream\x00"


def test_rfc5424_formatter_builds_the_header_and_structured_data() -> None:
    fmt = RFC5424Formatter(hostname="web 1", app_name="shop", msgid="ORDER")
    rec = record(logging.INFO, "paid", ())
    rec.created = 0.25
    rec.structured_data = {"ctx@32473": {"user": 'a"b]c\\'}}
    line = fmt.format(rec)
    assert line == (
        f"1 1970-01-01T00:00:00.250000Z web_1 shop {rec.process} ORDER"
        ' [ctx@32473 user="a\\"b\\]c\\\\"] paid'
    )
    assert RFC5424Formatter(hostname="h", app_name="a").format(record(10, "m", ())).split()[
        4:7
    ] == [str(rec.process), "-", "-"]


def test_rfc5424_structured_data_of_any_shape_never_fails_the_record() -> None:
    class NoText:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    fmt = RFC5424Formatter(hostname="h", app_name="a")
    rec = record(logging.INFO, "m", ())
    rec.structured_data = {"a@1": None, "b@1": "flat", "c@1": {"k": NoText()}}
    assert fmt.format(rec).split(" ", 6)[6] == (
        '[a@1][b@1 value="flat"][c@1 k="<unrepresentable NoText>"] m'
    )


async def test_rfc5424_option_over_udp() -> None:
    async with datagram_peer() as (peer, address):
        async with SysLogSink(address, "local0", rfc5424=True) as sink:  # type: ignore[arg-type]
            sink.append_nul = False
            await sink.emit(record(logging.ERROR, "bad", ()))
            got = await peer.get()
    assert re.fullmatch(rb"<131>1 \S+Z \S+ \S+ \d+ - - bad", got), got


def test_priority_maps_and_hooks_match_the_stdlib() -> None:
    sink = SysLogSink(("localhost", 514))
    stdlib = SH(("localhost", 514))
    try:
        for name in dir(SH):
            if name.startswith("LOG_"):
                assert getattr(SysLogSink, name) == getattr(SH, name), name
        assert sink.priority_names == SH.priority_names
        assert sink.facility_names == SH.facility_names
        assert sink.priority_map == SH.priority_map
        assert (sink.ident, sink.append_nul) == ("", True)
        for fac, pri in itertools.product(["user", 3, "local7"], ["err", 6, "warning"]):
            assert sink.encodePriority(fac, pri) == stdlib.encodePriority(fac, pri)
        for level in ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "Level 25"]:
            assert sink.mapPriority(level) == stdlib.mapPriority(level)
    finally:
        stdlib.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"address": 514}, TypeError, "address"),
        ({"address": ("h", "514")}, TypeError, "address"),
        ({"address": ("h", 0)}, ValueError, "address"),
        ({"facility": "nope"}, ValueError, "facility"),
        ({"facility": 1.5}, TypeError, "facility"),
        ({"socktype": 99}, ValueError, "socktype"),
        ({"socktype": "udp"}, TypeError, "socktype"),
        ({"framing": "nul"}, ValueError, "framing"),
        ({"max_size": 0}, ValueError, "max_size"),
        ({"buffer_size": -1}, ValueError, "buffer_size"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name) as raised:
        SysLogSink(**kwargs)  # type: ignore[arg-type]
    assert getattr(raised.value, "param", None) == name


# -- a real rsyslogd ---------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["udp", "tcp", "unix", "tcp-lf"])
async def test_rsyslogd_receives_the_right_facility_and_severity(
    transport: str,
    rsyslog: Rsyslog,  # noqa: F811 - the fixture
) -> None:
    if transport == "unix":
        sink = SysLogSink(rsyslog.socket_path, "local4")
    elif transport == "udp":
        sink = SysLogSink(("127.0.0.1", rsyslog.udp_port), SH.LOG_DAEMON)
    else:
        sink = SysLogSink(
            ("127.0.0.1", rsyslog.tcp_port),
            "local1",
            socket.SOCK_STREAM,
            framing="lf" if transport == "tcp-lf" else "octet",
        )
    tag = f"tag-{transport}"
    logger = logging.getLogger(f"rsys.{transport}")
    logger.propagate = False
    async with als.install(sink, logger=logger, level=logging.DEBUG):
        logger.debug("%s debug", tag)
        logger.info("%s info", tag)
        logger.warning("%s warning", tag)
        logger.error("%s error", tag)
        logger.critical("%s critical", tag)
    lines = await rsyslog.wait_for(tag, 5)
    facility = {"unix": "local4", "udp": "daemon"}.get(transport, "local1")
    got = sorted((line.split("|")[0], line.split("|")[1], line.split("|")[2]) for line in lines)
    expected = sorted(
        (facility, severity, f"{tag} {word}")
        for severity, word in [
            ("debug", "debug"),
            ("info", "info"),
            ("warning", "warning"),
            ("err", "error"),
            ("crit", "critical"),
        ]
    )
    assert [(f, s) for f, s, _ in got] == [(f, s) for f, s, _ in expected]
    assert all(msg.strip().endswith(text) for (_, _, msg), (_, _, text) in zip(got, expected))


@pytest.mark.peer
async def test_rsyslogd_receives_records_logged_before_its_tcp_port_was_reachable(
    rsyslog: Rsyslog,  # noqa: F811 - the fixture
) -> None:
    receiver = AsyncReceiver()  # a free port, nothing listening: the outage
    sink = SysLogSink(("127.0.0.1", receiver.port), "user", socket.SOCK_STREAM)  # type: ignore[arg-type]
    sink.retryStart = 0.01
    await sink.emit(record(logging.INFO, "buffered-1", ()))
    assert len(sink.buffer) == 1
    sink.address = ("127.0.0.1", rsyslog.tcp_port)  # the daemon "comes back" here
    await sink.emit(record(logging.INFO, "buffered-2", ()))
    lines = await rsyslog.wait_for("buffered-", 2)
    await sink.aclose()
    assert [line.split("|")[2].strip() for line in lines] == ["buffered-1", "buffered-2"]


def test_timeout_is_the_fourth_parameter_as_in_python_3_14() -> None:
    sink = SysLogSink(("127.0.0.1", 514), "user", socket.SOCK_STREAM, 2.5)
    assert sink.timeout == 2.5 and sink.connect_timeout == 2.5 and sink.write_timeout == 2.5
    default = SysLogSink()
    assert default.timeout is None  # the stdlib's default; the sink's bounds stay finite
    assert (default.connect_timeout, default.write_timeout) == (1.0, 10.0)
    with pytest.raises(ValueError, match="timeout"):
        SysLogSink(("127.0.0.1", 514), "user", socket.SOCK_DGRAM, 0)


def test_udp_mode_carries_no_stream_machinery() -> None:
    udp = SysLogSink(("127.0.0.1", 514))
    assert udp.peer is None and udp.sender is not None
    tcp = SysLogSink(("127.0.0.1", 514), socktype=socket.SOCK_STREAM)
    assert tcp.peer is not None and tcp.sender is None


EXITING_SCRIPT = """
import logging, sys
import aiologsinks as als

log = logging.getLogger("exiting")
log.propagate = False
log.addHandler(als.SysLogSink(("127.0.0.1", int(sys.argv[1]))))
for i in range(20):
    log.warning("exiting %d", i)
"""


def test_a_script_that_exits_at_once_delivers_over_udp_to_a_literal_address() -> None:
    """The records are sent at exit, by the exit hook's close: a literal address is
    taken without a lookup, which needs a thread Python 3.12.0-3.12.2 cannot start
    then (they were all lost, and counted delivered)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(30)
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(EXITING_SCRIPT), str(peer.getsockname()[1])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        got = sorted(peer.recv(2048).decode() for _ in range(20))
    assert got == sorted(f"<12>exiting {i}\x00" for i in range(20))


HOSTNAME_AT_EXIT_SCRIPT = """
import logging, socket, sys
import aiologsinks as als

socktype = socket.SOCK_STREAM if sys.argv[2] == "tcp" else socket.SOCK_DGRAM
sink = als.SysLogSink(("localhost", int(sys.argv[1])), socktype=socktype)
log = logging.getLogger("exiting")
log.propagate = False
# as a plain handler, or behind a dispatcher the first record starts on the
# background loop: either way the records are still queued when the script ends
log.addHandler(sink if sys.argv[3] == "handler" else als.Dispatcher(sink).handler)
for i in range(20):
    log.warning("exiting %d", i)
"""


@pytest.mark.parametrize("how", ["handler", "dispatcher"])
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_script_that_exits_at_once_delivers_to_a_host_name(transport: str, how: str) -> None:
    """Connecting to a host name looks it up on a worker thread, which Python
    3.12.0-3.12.2 cannot start once exit has begun: every record went to the fallback,
    and over TCP the exit waited out the 30 s of reconnect attempts first. The lookup
    now runs on the exiting thread."""
    family = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0][0]
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as peer:
        peer.bind(("localhost", 0))
        peer.settimeout(30)
        if transport == "tcp":
            peer.listen()
        port = peer.getsockname()[1]
        script = textwrap.dedent(HOSTNAME_AT_EXIT_SCRIPT)
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(port), transport, how],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if transport == "tcp":
                conn, _ = peer.accept()
                with conn:
                    conn.settimeout(30)
                    data = b"".join(iter(lambda: conn.recv(65536), b""))
                frames = []
                while data:  # octet counting: "<length> <message>"
                    size, data = data.split(b" ", 1)
                    frames.append(data[: int(size)])
                    data = data[int(size) :]
            else:
                frames = [peer.recv(2048) for _ in range(20)]
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert stderr == ""
    # over UDP with the stdlib's trailing NUL; TCP frames count octets instead
    nul = "\x00" if transport == "udp" else ""
    assert [f.decode() for f in frames] == [f"<12>exiting {i}{nul}" for i in range(20)]
