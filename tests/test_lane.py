"""A lane's supervision and its accounting: each record counted once, notices never."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import aiologsinks as als
from aiologsinks._stats import assert_accounted

from .conftest import require
from .helpers import CaptureHandler, GatedSink, ListSink, fresh_logger, started, wait_until
from .peers.faulty import blackhole


async def deliver(*sinks: als.Sink, n: int = 100, **options: object) -> als.DispatcherStats:
    log = fresh_logger("t.lane")
    async with als.install(*sinks, logger=log, **options) as dispatcher:  # type: ignore[arg-type]
        for i in range(n):
            log.info("rec %d", i)
        await dispatcher.flush()
    return dispatcher.stats()


class FailingFlush(ListSink):
    async def flush(self) -> None:
        raise OSError("disk gone")


async def test_a_failing_flush_is_an_operation_not_a_lost_record() -> None:
    sink = FailingFlush()
    stats = await deliver(sink)
    s = stats.sinks["FailingFlush#0"]
    assert s.errors == 0 and s.delivered == 100
    assert s.failed_operations >= 2  # the flush and the close-time flush
    assert len(sink.errors) == s.failed_operations  # each reported to handleError
    assert_accounted(stats, logged=100)


async def test_dev_full_counts_each_record_once(tmp_path: Path) -> None:
    """Every write to /dev/full fails: 100 sent, 100 errors (not 103), the file beside
    it gets all 100."""
    require(os.path.exists("/dev/full"), "/dev/full")
    sink = als.FileSink("/dev/full", mode="w")
    failed: list[logging.LogRecord] = []
    sink.handleError = failed.append  # type: ignore[assignment]
    path = tmp_path / "ok.log"
    stats = await deliver(sink, als.FileSink(path), batch_size=1)
    s = stats.sinks["FileSink#0"]
    assert s.errors + s.undelivered == 100 and s.delivered == 0
    assert stats.sinks["FileSink#1"].delivered == 100
    assert len(path.read_text(encoding="utf-8").splitlines()) == 100
    assert_accounted(stats, logged=100)


async def test_drop_notices_are_delivered_but_never_counted_as_records() -> None:
    sink = GatedSink()
    log = fresh_logger("t.lane.notice")
    dispatcher = als.Dispatcher(sink, lane_size=5, overflow="drop_newest", batch_size=5)
    async with dispatcher:
        log.addHandler(dispatcher.handler)
        for i in range(100):
            log.info("rec %d", i)
        await asyncio.wait_for(sink.entered.wait(), 5)
        await wait_until(lambda: dispatcher.stats().queued == 0)
        sink.gate.set()
        await dispatcher.flush()
        log.info("after")
        await dispatcher.flush()
        log.removeHandler(dispatcher.handler)
    stats = dispatcher.stats()
    s = stats.sinks["GatedSink#0"]
    notices = [line for line in sink.lines if "dropped" in line]
    assert s.dropped > 0
    assert notices == [
        f"aiologsinks: {s.dropped} record(s) dropped for sink GatedSink#0: "
        "its lane was full (overflow=drop_newest)"
    ]
    assert s.received == 101 and s.delivered == 101 - s.dropped  # not counted
    assert len(sink.lines) == s.delivered + len(notices)
    assert_accounted(stats, logged=101)


class RaisingEverywhere(ListSink):
    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        raise RuntimeError("emit")

    def handleError(self, record: logging.LogRecord) -> None:
        raise RuntimeError("handleError too")


async def test_a_raising_handle_error_goes_to_the_fallback_and_the_lane_goes_on() -> None:
    sink = RaisingEverywhere()
    fallback = CaptureHandler()
    stats = await deliver(sink, fallback=fallback, batch_size=10)
    assert stats.sinks["RaisingEverywhere#0"].errors == 100
    told = [r.getMessage() for r in fallback.records if "handleError" in r.getMessage()]
    assert len(told) == 10  # one per failed batch, naming the sink
    assert "RaisingEverywhere#0" in told[0]
    assert_accounted(stats, logged=100)


async def test_a_filter_replacing_records_and_one_rejecting_are_not_errors() -> None:
    sink = ListSink()
    sink.addFilter(lambda r: int(r.getMessage().split()[-1]) % 2)
    stats = await deliver(sink)
    s = stats.sinks["ListSink#0"]
    assert (s.filtered, s.delivered, s.errors) == (50, 50, 0)
    assert_accounted(stats, logged=100)


async def test_a_sink_that_gives_up_later_moves_records_from_delivered_to_errors() -> None:
    """A network sink reports records it gave up on after accepting them (an outage
    buffer): they leave ``delivered`` for ``errors``, the sum is unchanged."""
    sink = ListSink()
    log = fresh_logger("t.lane.later")
    async with als.install(sink, logger=log) as dispatcher:
        for i in range(10):
            log.info("rec %d", i)
        await dispatcher.flush()
        sink.report_error(sink.records[0])  # what an outbox does when it gives a record up
        sink.report_error(sink.records[1])
        s = dispatcher.stats().sinks["ListSink#0"]
        assert (s.emitted, s.delivered, s.errors) == (10, 8, 2)
        assert_accounted(dispatcher.stats(), logged=10)


def stuck(dispatcher: als.Dispatcher) -> bool:
    return dispatcher.stats().sinks["SocketSink#0"].depth > 0


async def test_a_batch_a_sink_buffered_before_close_gave_up_on_it_is_counted_once() -> None:
    """A SocketSink stuck writing to a black-hole peer (it accepts, never reads):
    aclose(timeout) interrupts the call. The records its outbox had taken over are
    the sink's to count (abandoned: errors); only the rest are the lane's
    undelivered, written to the fallback — no record in both."""
    fallback = CaptureHandler()
    log = fresh_logger("t.lane.blackhole")
    async with blackhole() as (host, port):
        sink = als.SocketSink(host, port)
        dispatcher = started(log, sink, fallback=fallback, batch_size=100)
        for i in range(1500):
            log.info("rec %05d %s", i, "p" * 8000)
            if not i % 100:
                await asyncio.sleep(0)
        log.removeHandler(dispatcher.handler)
        outbox = sink.peer.outbox
        # the peer's socket buffers are full: a write is stuck with records in flight
        await wait_until(lambda: outbox.pending > 0 and stuck(dispatcher))
        stats = await asyncio.wait_for(dispatcher.aclose(timeout=0.5), 10)
    s = stats.sinks["SocketSink#0"]
    assert_accounted(stats, logged=1500)
    sent = outbox.statistics()
    assert s.delivered == sent.delivered  # what reached the peer's socket
    assert s.errors == sent.abandoned + sent.dropped > 0  # the sink's losses, once
    spilled = [r for r in fallback.records if r.getMessage().startswith("rec ")]
    assert len(spilled) == s.undelivered > 0  # the lane's, the rest of them
    assert s.delivered + s.errors + s.undelivered == 1500


class GivesUpOnOlderRecords(als.Sink):
    """Buffers what it takes over; the second call gives up on everything buffered
    (as an outbox does when its buffer overflows or records expire during a call)."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.calls = 0

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        self.calls += 1
        self._take_over(len(records))
        self.buffered += len(records)
        if self.calls == 2:
            self.error_count += self.buffered  # more than this call's records
            self.buffered = 0


async def test_losses_of_earlier_batches_counted_during_a_smaller_call_are_all_counted() -> None:
    sink = GivesUpOnOlderRecords()
    log = fresh_logger("t.lane.older")
    async with als.install(sink, logger=log) as dispatcher:
        for i in range(10):
            log.info("rec %d", i)
        await dispatcher.flush()
        log.info("the last one")
        await dispatcher.flush()
        s = dispatcher.stats().sinks["GivesUpOnOlderRecords#0"]
    assert sink.calls == 2
    assert s.errors == 11 and s.delivered == 0


async def test_a_sink_raising_generator_exit_is_contained_as_any_error() -> None:
    """A sink whose first batch raises GeneratorExit: counted as that batch's error,
    the lane goes on, flush() returns. Taken for the lane's own coroutine being
    closed, it ended the lane: flush() hung, the other records never delivered."""

    class Exits(ListSink):
        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            if not self.batches:
                self.batches += 1
                raise GeneratorExit("a sink's bug")
            await super().emit_batch(records)

    sink = Exits()
    sink.handleError = lambda record: None  # type: ignore[method-assign]
    log = fresh_logger("t.lane.generator_exit")
    async with als.install(sink, logger=log, linger=0) as dispatcher:
        log.warning("first")
        await asyncio.wait_for(dispatcher.flush(), 5)
        for i in range(5):
            log.warning("then %d", i)
        await asyncio.wait_for(dispatcher.flush(), 5)
    stats = dispatcher.stats()
    assert sink.lines == [f"then {i}" for i in range(5)]
    assert_accounted(stats, logged=6)
    assert stats.sinks["Exits#0"].errors == 1
