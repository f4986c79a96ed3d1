"""Lingering: the dispatcher's (a burst waits for the records after it) and a sink's
(its lane waits between deliveries). Each test sets a linger far longer than its
timeout, so a wait that flush, close, a notice or a full batch should end shows as a
failure, never as a slow pass."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

import aiologsinks as als
from aiologsinks._lane import linger_max_records
from aiologsinks._stats import assert_accounted

from .helpers import ListSink, fresh_logger, wait_until

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
    dispatcher = als.Dispatcher(sink, linger=0)
    dispatcher.start()
    log.addHandler(dispatcher.handler)
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


async def test_a_few_hundred_waiting_records_end_a_sinks_linger() -> None:
    """With the default batch size (4,000), a lingering lane delivers once half the
    GC's young threshold in records wait: more of them alive at once would make a
    busy service's cyclic GC collect several times as often."""
    bound = linger_max_records()
    assert bound == max(gc.get_threshold()[0] // 2, 64)
    sink = LingeringSink(FOREVER)
    log = fresh_logger("t.linger.gc")
    async with als.install(sink, logger=log, linger=0) as dispatcher:
        log.info("first")
        await asyncio.wait_for(sink.delivered.wait(), BOUND)
        for i in range(bound - 1):
            log.info("later %d", i)
        for _ in range(20):  # the records reach the lane; one short of the bound
            await asyncio.sleep(0)
        assert sink.sizes == [1]
        log.info("the last one")
        await wait_until(lambda: len(sink.sizes) == 2, BOUND, lambda: repr(sink.sizes))
        assert sink.sizes == [1, bound]
        await dispatcher.flush()
    assert_accounted(dispatcher.stats(), logged=bound + 1)


def test_the_bound_follows_the_gcs_threshold() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(10_000, *before[1:])
        assert linger_max_records() == 5_000
        gc.set_threshold(100, *before[1:])
        assert linger_max_records() == 64  # still a batch worth a request
        gc.set_threshold(0, *before[1:])  # no automatic collections: no bound
        assert linger_max_records() >= 1 << 30
    finally:
        gc.set_threshold(*before)
