"""Lingering: the dispatcher's (a burst waits for the records after it) and a sink's
(its lane waits between deliveries). Each test sets a linger far longer than its
timeout, so a wait that flush, close, a notice or a full batch should end shows as a
failure, never as a slow pass."""

from __future__ import annotations

import asyncio
import threading

import pytest

import aiologsinks as als
from aiologsinks import _lane
from aiologsinks._stats import assert_accounted

from .helpers import ListSink, fresh_logger, started, wait_until

FOREVER = 3600.0  # a linger nothing in these tests may wait out
BOUND = 10.0  # what every wait here is bounded by


class LingeringSink(ListSink):
    """A ListSink whose lane lingers between deliveries; remembers each batch."""

    def __init__(self, linger: float) -> None:
        super().__init__()
        self.linger = linger
        self.sizes: list[int] = []
        self.delivered = asyncio.Event()

    async def emit_batch(self, records):  # type: ignore[no-untyped-def]
        self.sizes.append(len(records))
        await super().emit_batch(records)
        self.delivered.set()


async def test_a_burst_logged_over_several_iterations_is_one_batch() -> None:
    """linger=FOREVER: records logged across loop iterations wait together; flush()
    moves them at once and does not wait for the linger."""
    sink = ListSink()
    log = fresh_logger("t.linger.burst")
    async with als.install(sink, logger=log, linger=FOREVER) as dispatcher:
        await asyncio.wait_for(dispatcher.flush(), BOUND)  # the pump's first run is over
        for i in range(5):
            log.info("rec %d", i)
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(0)
        assert sink.lines == []  # still lingering: nothing moved yet
        await asyncio.wait_for(dispatcher.flush(), BOUND)
        assert sink.lines == [f"rec {i}" for i in range(5)]
        assert sink.batches == 1
    assert_accounted(dispatcher.stats(), logged=5)


async def test_no_linger_moves_each_burst_at_the_next_iteration() -> None:
    sink = ListSink()
    log = fresh_logger("t.linger.none")
    async with als.install(sink, logger=log, linger=0) as dispatcher:
        log.info("first")
        await wait_until(lambda: sink.lines == ["first"], BOUND)
        log.info("second")
        await wait_until(lambda: sink.lines == ["first", "second"], BOUND)
        assert sink.batches == 2
        await dispatcher.flush()


async def test_a_record_from_another_thread_waits_the_linger_too() -> None:
    sink = ListSink()
    log = fresh_logger("t.linger.thread")
    async with als.install(sink, logger=log, linger=FOREVER) as dispatcher:
        worker = threading.Thread(target=log.info, args=("from a thread",))
        worker.start()
        await asyncio.get_running_loop().run_in_executor(None, worker.join)
        log.info("from the loop")
        await asyncio.wait_for(dispatcher.flush(), BOUND)
        assert sorted(sink.lines) == ["from a thread", "from the loop"]
    assert_accounted(dispatcher.stats(), logged=2)


async def test_a_sink_lingers_after_a_delivery_and_flush_ends_the_wait() -> None:
    """The lane delivers the first batch at once, then lingers: what arrives meanwhile
    travels as one batch when flush() comes, without waiting the linger out."""
    sink = LingeringSink(FOREVER)
    log = fresh_logger("t.linger.sink")
    async with als.install(sink, logger=log, linger=0) as dispatcher:
        log.info("first")
        await asyncio.wait_for(sink.delivered.wait(), BOUND)
        for i in range(4):
            log.info("later %d", i)
            await asyncio.sleep(0)
        await asyncio.wait_for(dispatcher.flush(), BOUND)
        assert sink.sizes == [1, 4]
        assert sink.lines == ["first"] + [f"later {i}" for i in range(4)]
    assert_accounted(dispatcher.stats(), logged=5)


async def test_a_full_batch_ends_a_sinks_linger() -> None:
    sink = LingeringSink(FOREVER)
    log = fresh_logger("t.linger.full")
    async with als.install(sink, logger=log, linger=0, batch_size=10) as dispatcher:
        log.info("first")
        await asyncio.wait_for(sink.delivered.wait(), BOUND)
        for i in range(10):
            log.info("later %d", i)
        await wait_until(lambda: len(sink.lines) == 11, BOUND, lambda: repr(sink.sizes))
        assert sink.sizes == [1, 10]
        await dispatcher.flush()


async def test_close_ends_a_sinks_linger_and_delivers_everything() -> None:
    sink = LingeringSink(FOREVER)
    log = fresh_logger("t.linger.close")
    dispatcher = started(log, sink, linger=0)
    try:
        log.info("first")
        await asyncio.wait_for(sink.delivered.wait(), BOUND)
        log.info("second")
    finally:
        log.removeHandler(dispatcher.handler)
        await asyncio.wait_for(dispatcher.aclose(), BOUND)
    assert sink.lines == ["first", "second"]
    assert_accounted(dispatcher.stats(), logged=2)


@pytest.mark.parametrize(
    ("value", "error"),
    [(-0.1, ValueError), (float("nan"), ValueError), ("5ms", TypeError), (True, TypeError)],
)
def test_a_bad_linger_is_refused_with_its_name(value: object, error: type) -> None:
    with pytest.raises(error, match="linger"):
        als.Dispatcher(ListSink(), linger=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="linger"):
        als.OTLPSink(endpoint="http://127.0.0.1:4318/v1/logs", linger=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="linger"):
        als.HTTPSink("127.0.0.1:8080", "/log", json_batch=True, linger=value)  # type: ignore[arg-type]


def test_http_linger_only_applies_to_json_batches() -> None:
    assert als.HTTPSink("127.0.0.1:8080", "/log", "POST", json_batch=True).linger > 0
    assert als.HTTPSink("127.0.0.1:8080", "/log").linger == 0
    with pytest.raises(ValueError, match=r"linger.*json_batch"):
        als.HTTPSink("127.0.0.1:8080", "/log", linger=0.5)


def test_the_defaults() -> None:
    assert als.Dispatcher(ListSink()).linger == 0.005
    assert als.OTLPSink(endpoint="http://127.0.0.1:4318/v1/logs").linger == 0.05
    assert als.Sink.linger == 0.0


async def test_a_bound_in_records_ends_a_sinks_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """With LINGER_MAX_RECORDS set (the benchmarks' --linger-max), a lingering lane
    delivers once that many records wait, short of a full batch (4,000)."""
    monkeypatch.setattr(_lane, "LINGER_MAX_RECORDS", 300)
    sink = LingeringSink(FOREVER)
    log = fresh_logger("t.linger.gc")
    async with als.install(sink, logger=log, linger=0) as dispatcher:
        log.info("first")
        await asyncio.wait_for(sink.delivered.wait(), BOUND)
        for i in range(299):
            log.info("later %d", i)
        for _ in range(20):  # the records reach the lane; one short of the bound
            await asyncio.sleep(0)
        assert sink.sizes == [1]
        log.info("the last one")
        await wait_until(lambda: len(sink.sizes) == 2, BOUND, lambda: repr(sink.sizes))
        assert sink.sizes == [1, 300]
        await dispatcher.flush()
    assert_accounted(dispatcher.stats(), logged=301)


def test_by_default_only_a_full_batch_bounds_a_linger() -> None:
    assert _lane.LINGER_MAX_RECORDS is None
    assert _lane.linger_max_records() >= 1 << 30
