"""SocketSink: stdlib frames, back-off, outage buffer, back-pressure, reconnects."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import socket
import sys
import threading
from pathlib import Path

import pytest

import aiologsinks as als
from aiologsinks._backoff import Backoff
from aiologsinks.sinks.socket import SocketSink
from tests.conftest import IN_CI, RecordingSinkMixin
from tests.peers.records import AsyncReceiver, StdlibReceiver, free_port


class RecordingSocketSink(RecordingSinkMixin, SocketSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.errors = []


def make_record(i: int, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("net.test", logging.INFO, __file__, 10, "record %d", (i,), None)
    record.__dict__.update(extra)
    return record


def raw_records() -> list[logging.LogRecord]:
    """Records as a logger makes them: args unmerged, a live exc_info, extras."""
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    plain = logging.LogRecord("a.b", logging.WARNING, "f.py", 3, "hello %s %d", ("x", 1), None)
    with_exc = logging.LogRecord("a.c", logging.ERROR, "f.py", 4, "failed", None, exc_info)
    extras = logging.makeLogRecord(
        {"name": "a.d", "levelno": 25, "levelname": "Level 25", "msg": "m", "user": "ann"}
    )
    extras.request_id = 42
    extras.tags = ["x", {"y": 1}]
    return [plain, with_exc, extras]


def copies(record: logging.LogRecord) -> tuple[logging.LogRecord, logging.LogRecord]:
    a, b = logging.makeLogRecord({}), logging.makeLogRecord({})
    a.__dict__.update(record.__dict__)
    b.__dict__.update(record.__dict__)
    return a, b


# -- wire compatibility ----------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2], ids=["args", "exc_info", "extras"])
def test_make_pickle_bytes_equal_the_stdlib(index: int) -> None:
    ours, theirs = copies(raw_records()[index])
    stdlib = logging.handlers.SocketHandler("localhost", None)
    try:
        expected = stdlib.makePickle(theirs)
    finally:
        stdlib.close()
    assert SocketSink("localhost", None).makePickle(ours) == expected


def test_make_pickle_of_a_prepared_record_keeps_exc_text() -> None:
    record = raw_records()[1]
    prepared = als.QueueHandler(als.Dispatcher()).prepare(record)
    assert prepared.exc_info is None and prepared.exc_text
    ours, theirs = copies(prepared)
    stdlib = logging.handlers.SocketHandler("localhost", None)
    try:
        assert SocketSink("localhost", None).makePickle(ours) == stdlib.makePickle(theirs)
    finally:
        stdlib.close()


@pytest.mark.parametrize("kind", ["tcp", "unix", "tcp6"])
async def test_stdlib_receiver_rebuilds_every_record(kind: str, tmp_path: Path) -> None:
    if kind == "tcp6" and not socket.has_ipv6:
        (pytest.fail if IN_CI else pytest.skip)("no IPv6")
    host = "::1" if kind == "tcp6" else "127.0.0.1"
    try:
        receiver = StdlibReceiver(kind[:3] if kind != "unix" else "unix", str(tmp_path / "s"), host)
    except OSError:
        (pytest.fail if IN_CI else pytest.skip)(f"cannot listen on {host}")
    with receiver:
        logger = logging.getLogger(f"net.{kind}")
        logger.propagate = False
        async with als.install(SocketSink(*receiver.address), logger=logger, level=logging.DEBUG):
            logger.info("hello %s", "world", extra={"user": "ann", "n": 3})
            try:
                1 / 0
            except ZeroDivisionError:
                logger.exception("failed %d", 7)
            logger.debug("last")
        got = await receiver.wait_for(3)
    assert [(r.name, r.levelno, r.getMessage()) for r in got] == [
        (f"net.{kind}", logging.INFO, "hello world"),
        (f"net.{kind}", logging.ERROR, "failed 7"),
        (f"net.{kind}", logging.DEBUG, "last"),
    ]
    assert (got[0].user, got[0].n) == ("ann", 3)
    assert got[0].exc_text is None
    assert "ZeroDivisionError" in got[1].exc_text
    assert got[1].exc_info is None and got[1].args is None


async def test_unpicklable_record_goes_to_handle_error_and_the_next_is_sent() -> None:
    async with AsyncReceiver() as receiver:
        async with RecordingSocketSink(*receiver.address) as sink:
            bad = make_record(0, lock=threading.Lock())
            await sink.emit_batch([bad, make_record(1)])
            got = await receiver.wait_for(1)
        assert sink.errors == [bad]
        assert [r.getMessage() for r in got] == ["record 1"]


# -- back-off and the outage buffer ----------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingSink(RecordingSocketSink):
    """Records when each connection attempt happened (on the loop's clock)."""

    attempts: list[float]

    async def makeSocket(
        self, timeout: float = 1.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.attempts.append(asyncio.get_running_loop().time())
        return await super().makeSocket(timeout)


def counting_sink(port: int, **kwargs: object) -> CountingSink:
    sink = CountingSink("127.0.0.1", port, **kwargs)  # type: ignore[arg-type]
    sink.attempts = []
    return sink


async def test_connection_attempts_follow_the_seed_back_off_on_a_controlled_clock() -> None:
    clock = FakeClock()
    sink = counting_sink(free_port())
    sink.retryStart, sink.retryFactor, sink.retryMax = 1.0, 2.0, 5.0
    sink.backoff.clock = clock
    waits = []
    async with sink:  # aopen: the first attempt fails
        for _ in range(6):
            assert sink.retryTime is not None
            wait = sink.retryTime - clock.now
            waits.append(wait)
            clock.now += wait - 0.01
            n = len(sink.attempts)
            await sink.createSocket()  # too early: no attempt
            assert len(sink.attempts) == n
            clock.now += 0.01
            await sink.createSocket()
            assert len(sink.attempts) == n + 1
    assert waits == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0, 5.0])
    assert sink.sock is None


def test_backoff_matches_the_stdlib_create_socket_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    stdlib = logging.handlers.SocketHandler("127.0.0.1", free_port())
    stdlib.retryStart, stdlib.retryFactor, stdlib.retryMax = 0.5, 3.0, 10.0
    ours = Backoff(0.5, 3.0, 10.0, clock=lambda: now[0])
    for _ in range(6):
        stdlib.createSocket()
        ours.failed()
        assert (ours.retryTime, ours.retryPeriod) == (stdlib.retryTime, stdlib.retryPeriod)
        now[0] = stdlib.retryTime
    stdlib.close()


async def test_outage_records_and_later_ones_arrive_in_order_after_the_listener_appears() -> None:
    port = free_port()
    sink = counting_sink(port, buffer_size=100)
    sink.retryStart, sink.retryFactor, sink.retryMax = 0.02, 2.0, 0.08
    receiver = AsyncReceiver(port=port)
    async with sink:
        for i in range(10):
            await sink.emit(make_record(i))  # no listener: buffered
        assert len(sink.buffer) == 10
        # let a few attempts fail, then appear: the retry task delivers on its own
        while len(sink.attempts) < 4:
            await asyncio.wait_for(_next_attempt(sink), 2)
        async with receiver:
            await receiver.wait_for(10)
            await sink.emit_batch([make_record(i) for i in range(10, 20)])
            got = await receiver.wait_for(20)
    assert [r.getMessage() for r in got] == [f"record {i}" for i in range(20)]
    assert receiver.connections == 1 and sink.errors == []
    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:4])]
    expected = [0.02, 0.04, 0.08]
    assert all(g >= e * 0.9 for g, e in zip(gaps, expected)), gaps


async def _next_attempt(sink: CountingSink) -> None:
    n = len(sink.attempts)
    while len(sink.attempts) == n:
        await asyncio.sleep(0.005)


async def test_a_full_outage_buffer_drops_the_oldest_and_counts_each_drop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    sink = counting_sink(port, buffer_size=5)
    sink.retryStart = 0.01
    async with sink:
        await sink.emit_batch([make_record(i) for i in range(8)])
        assert sink.dropped == 3 and sink.error_count == 3
        assert sink.errors == []  # the peer's outage, not the records' fault: no traceback
        async with AsyncReceiver(port=port) as receiver:
            got = await receiver.wait_for(5)
    assert [r.getMessage() for r in got] == [f"record {i}" for i in range(3, 8)]
    down, up = capsys.readouterr().err.splitlines()
    assert "peer unreachable (ConnectionRefusedError" in down
    assert "peer reachable again" in up and "3 record(s) lost" in up


async def test_aclose_while_unreachable_counts_the_buffer_and_stops_retrying(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = counting_sink(free_port())
    sink.retryStart = 0.01
    await sink.emit_batch([make_record(0), make_record(1)])
    task = sink.peer.outbox._task
    await sink.aclose()
    assert sink.error_count == 2 and sink.errors == []
    assert task is not None and task.done()
    assert "closed with 2 record(s) undelivered" in capsys.readouterr().err
    await sink.aclose()  # idempotent


# -- back-pressure and reconnects ------------------------------------------------------


class SmallBufferSink(SocketSink):
    async def makeSocket(
        self, timeout: float = 1.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await super().makeSocket(timeout)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        writer.transport.set_write_buffer_limits(high=32768)
        return reader, writer


async def test_a_slow_reader_applies_back_pressure_without_blocking_the_loop() -> None:
    """The peer pauses 2 ms per 50 records, so sending 3,000 takes at least 120 ms of
    waiting for it: other tasks run all through that wait (blocking calls are caught
    by the suite's blockbuster fixture), and each send returns only once the peer has
    read nearly everything (back-pressure, not an unbounded buffer)."""
    n, payload = 3000, "x" * 1000
    ticks_while_sending = 0
    sending = False
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks_while_sending
        while not stop.is_set():
            await asyncio.sleep(0.001)
            ticks_while_sending += sending

    async with AsyncReceiver(pause_every=50, pause=0.002, recv_buffer=65536) as receiver:
        async with SmallBufferSink(*receiver.address) as sink:
            tick = asyncio.create_task(ticker())
            records = [make_record(i, payload=payload) for i in range(n)]
            sending = True
            for start in range(0, n, 500):
                await sink.emit_batch(records[start : start + 500])
            sending = False
            # emit_batch only returned once the peer had read nearly everything
            backlog = n - len(receiver.records)
            got = await receiver.wait_for(n, timeout=20)
            stop.set()
            await tick
    assert backlog * 1000 < 1_000_000, backlog
    assert [r.getMessage() for r in got] == [f"record {i}" for i in range(n)]
    # the loop went on while the sends waited (60 pauses of the peer): not one wait
    assert ticks_while_sending >= 10, ticks_while_sending


async def test_a_peer_closing_mid_stream_leads_to_a_reconnect_and_later_delivery() -> None:
    async with AsyncReceiver(close_after=5) as receiver:
        async with RecordingSocketSink(*receiver.address) as sink:
            for i in range(5):
                await sink.emit(make_record(i))
            await receiver.wait_for(5)
            link = sink.peer.link
            assert link is not None
            assert await asyncio.wait_for(link.reader.read(), 5) == b""  # the peer's EOF
            for i in range(5, 9):
                await sink.emit(make_record(i))
            got = await receiver.wait_for(9)
    assert [r.getMessage() for r in got] == [f"record {i}" for i in range(9)]
    assert receiver.connections == 2 and sink.connects == 2 and sink.errors == []


async def test_a_restarted_peer_gets_the_records_logged_while_it_was_down(tmp_path: Path) -> None:
    receiver = AsyncReceiver(path=str(tmp_path / "sock"))
    async with receiver:
        sink = RecordingSocketSink(*receiver.address)
        sink.retryStart = 0.01
        await sink.emit(make_record(0))
        await receiver.wait_for(1)
    for i in range(1, 4):
        await sink.emit(make_record(i))  # down: buffered
    async with receiver:
        got = await receiver.wait_for(4)
    await sink.aclose()
    assert [r.getMessage() for r in got] == [f"record {i}" for i in range(4)]
    assert sink.errors == []


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((123, 80), {}, TypeError, "host"),
        (("h", "80"), {}, TypeError, "port"),
        (("h", 70000), {}, ValueError, "port"),
        (("h", 80), {"buffer_size": -1}, ValueError, "buffer_size"),
        (("h", 80), {"timeout": 0}, ValueError, "timeout"),
    ],
)
def test_bad_arguments_name_the_parameter(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        SocketSink(*args, **kwargs)  # type: ignore[arg-type]


def test_seed_attributes_and_defaults() -> None:
    sink = SocketSink("localhost", 9020)
    assert (sink.retryStart, sink.retryFactor, sink.retryMax) == (1.0, 2.0, 30.0)
    assert sink.address == ("localhost", 9020) and sink.sock is None
    assert SocketSink("/tmp/x", None).address == "/tmp/x"


async def test_buffer_size_zero_sends_while_connected_and_drops_while_not() -> None:
    """The seed's behaviour: no buffer, but nothing dropped while the peer is up."""
    records = [logging.makeLogRecord({"msg": f"m{i}"}) for i in range(50)]
    with StdlibReceiver("tcp") as receiver:
        sink = SocketSink(*receiver.address, buffer_size=0)
        sink.handleError = lambda record: None  # type: ignore[method-assign]
        await sink.emit_batch(records)
        got = await receiver.wait_for(50)
        assert [r.getMessage() for r in got] == [f"m{i}" for i in range(50)]
        assert sink.error_count == 0
        await sink.aclose()
    down = SocketSink("127.0.0.1", free_port(), buffer_size=0)
    down.handleError = lambda record: None  # type: ignore[method-assign]
    await down.emit_batch(records[:5])
    assert down.error_count == 5
    await down.aclose()
