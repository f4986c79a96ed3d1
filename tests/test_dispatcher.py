"""The dispatcher: delivery, flush, isolation, overflow, levels, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted

from .helpers import (
    CaptureHandler,
    GatedSink,
    ListSink,
    RaisingSink,
    fresh_logger,
    started,
    wait_until,
)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


async def test_flush_covers_records_from_the_loop_and_four_threads(tmp_path: Path) -> None:
    log = fresh_logger("t.flush")
    path = tmp_path / "out.log"
    async with als.install(als.FileSink(path), logger=log) as dispatcher:
        barrier = threading.Barrier(5)

        def produce(k: int) -> None:
            barrier.wait()
            for i in range(2000):
                log.info("thread-%d %d", k, i)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        await asyncio.to_thread(barrier.wait)
        for i in range(2000):
            log.info("loop %d", i)
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        await dispatcher.flush()
        # no waiting after flush(): the file must already be complete
        lines = read_lines(path)
        assert len(lines) == 10_000
        assert sum(line.startswith("loop ") for line in lines) == 2000
        for k in range(4):
            assert sum(line.startswith(f"thread-{k} ") for line in lines) == 2000


async def test_aclose_after_200k_records_keeps_everything_in_order_per_producer(
    tmp_path: Path,
) -> None:
    log = fresh_logger("t.bulk")
    path = tmp_path / "bulk.log"
    dispatcher = started(log, als.FileSink(path))

    def produce(k: int) -> None:
        for i in range(50_000):
            log.info("p%d %d", k, i)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for i in range(50_000):
        log.info("p3 %d", i)
        if i % 1000 == 0:
            await asyncio.sleep(0)
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    stats = await dispatcher.aclose()
    log.removeHandler(dispatcher.handler)

    lines = read_lines(path)
    # the stats say whether a shortfall was counted (and where) or silent
    assert len(lines) == 200_000, (len(lines), stats)
    seen: dict[str, int] = {}
    for line in lines:
        producer, n = line.split()
        assert int(n) == seen.get(producer, -1) + 1, f"{producer} out of order at {n}"
        seen[producer] = int(n)
    assert seen == {f"p{k}": 49_999 for k in range(4)}
    assert stats.lost == 0
    assert next(iter(stats.sinks.values())).emitted == 200_000


async def test_a_raising_sink_does_not_affect_a_file_sink_beside_it(tmp_path: Path) -> None:
    log = fresh_logger("t.raise")
    path = tmp_path / "ok.log"
    bad = RaisingSink()
    async with als.install(bad, als.FileSink(path), logger=log) as dispatcher:
        for i in range(500):
            log.warning("record %d", i)
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert len(read_lines(path)) == 500
    assert len(bad.errors) == 500
    assert [r.getMessage() for r in bad.errors[:2]] == ["record 0", "record 1"]
    bad_stats = stats.sinks["RaisingSink#0"]
    assert (bad_stats.errors, bad_stats.emitted) == (500, 0)
    assert stats.sinks["FileSink#1"].emitted == 500


async def test_a_stalled_sink_does_not_delay_the_file_sink(tmp_path: Path) -> None:
    log = fresh_logger("t.stall")
    path = tmp_path / "fast.log"
    stalled = GatedSink()
    file_sink = als.FileSink(path)
    async with als.install(stalled, file_sink, logger=log) as dispatcher:
        for i in range(300):
            log.info("r %d", i)
        await asyncio.wait_for(stalled.entered.wait(), 5)
        await wait_until(lambda: dispatcher.stats().sinks["FileSink#1"].emitted == 300)
        assert len(read_lines(path)) == 300
        assert stalled.lines == []  # still stuck on its first batch
        stalled.gate.set()
    assert len(stalled.lines) == 300


async def test_a_sink_sleeping_one_second_per_record_does_not_delay_others(
    tmp_path: Path,
) -> None:
    class SleepySink(ListSink):
        async def emit_batch(self, records):  # type: ignore[no-untyped-def]
            for record in records:
                await asyncio.sleep(1)
                await super().emit_batch([record])

    log = fresh_logger("t.sleepy")
    path = tmp_path / "fast.log"
    sleepy = SleepySink()
    dispatcher = started(log, sleepy, als.FileSink(path))
    for i in range(20):
        log.info("r %d", i)
    await wait_until(lambda: dispatcher.stats().sinks["FileSink#1"].emitted == 20)
    assert len(read_lines(path)) == 20
    assert len(sleepy.lines) < 20
    stats = await dispatcher.aclose(timeout=0.1)
    log.removeHandler(dispatcher.handler)
    sleepy_stats = stats.sinks["SleepySink#0"]
    assert sleepy_stats.emitted + sleepy_stats.undelivered == 20


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_overflow_drops_per_policy_counts_exactly_and_announces_once(
    policy: str,
) -> None:
    log = fresh_logger(f"t.overflow.{policy}")
    stalled = GatedSink()
    dispatcher = als.Dispatcher(stalled, lane_size=10, batch_size=5, overflow=policy)  # type: ignore[arg-type]
    dispatcher.start()
    log.addHandler(dispatcher.handler)
    log.info("first")  # taken by the worker, which then stalls on it
    await asyncio.wait_for(stalled.entered.wait(), 5)
    for i in range(100):
        log.info("n %d", i)
    await wait_until(lambda: dispatcher.stats().queued == 0)
    stats = dispatcher.stats().sinks["GatedSink#0"]
    assert (stats.received, stats.dropped, stats.depth) == (101, 90, 11)
    stalled.gate.set()
    await dispatcher.flush()
    messages = [r.getMessage() for r in stalled.records]
    kept = [f"n {i}" for i in (range(90, 100) if policy == "drop_oldest" else range(10))]
    # the announcement follows the first batch that got through again
    notice = (
        f"aiologsinks: 90 record(s) dropped for sink GatedSink#0: its lane was full "
        f"(overflow={policy})"
    )
    assert messages == ["first", notice, *kept]
    assert stalled.records[1].levelno == logging.WARNING
    log.info("later")
    await dispatcher.flush()
    assert [r.getMessage() for r in stalled.records][-1] == "later"
    assert sum("dropped" in r.getMessage() for r in stalled.records) == 1
    final = await dispatcher.aclose()
    assert final.sinks["GatedSink#0"].dropped == 90
    log.removeHandler(dispatcher.handler)


async def test_block_policy_makes_a_foreign_thread_wait_and_loses_nothing() -> None:
    log = fresh_logger("t.block")
    stalled = GatedSink()
    dispatcher = started(log, stalled, queue_size=5, lane_size=5, batch_size=5)
    done = threading.Event()

    def produce() -> None:
        for i in range(200):
            log.info("b %d", i)
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    await asyncio.wait_for(stalled.entered.wait(), 5)
    # the producer is held back by the full queue and lane, not dropping
    await wait_until(lambda: dispatcher.stats().queued >= 5)
    assert not done.is_set()
    stalled.gate.set()
    await asyncio.to_thread(thread.join, 10)
    assert done.is_set()
    stats = await dispatcher.aclose()
    log.removeHandler(dispatcher.handler)
    assert [r.getMessage() for r in stalled.records] == [f"b {i}" for i in range(200)]
    assert stats.lost == 0


class _ToThreadSink(ListSink):
    """Writes through asyncio.to_thread (the loop's default executor, as aiofiles
    does), and logs from that thread on what it writes."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self.log = log
        self.logged = 0

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        def write() -> None:
            for record in records:
                if record.getMessage().startswith("job 0 "):
                    self.logged += 1
                    self.log.info("written %s", record.getMessage())

        await asyncio.to_thread(write)
        await super().emit_batch(records)


@pytest.mark.parametrize("workers", [None, 1])
async def test_block_policy_never_makes_the_loops_executor_threads_wait_for_good(
    workers: int | None,
) -> None:
    # every thread of the default executor waited for room, and the sink's write
    # waited for one of them (or a thread of it logged): nothing drained, for good.
    # (1: a default executor of one thread, set by the application)
    log = fresh_logger(f"t.block.executor.{workers}")
    sink = _ToThreadSink(log)
    dispatcher = started(log, sink, queue_size=10, lane_size=10, batch_size=10)
    loop = asyncio.get_running_loop()
    if workers is not None:
        # (named as the application likes: uvloop tells no one its default executor)
        executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="io")
        loop.set_default_executor(executor)
    jobs = 2 * (workers or min(32, (os.cpu_count() or 1) + 4))  # more than its threads

    def job(k: int) -> None:
        for i in range(300):
            log.info("job %d %d", k, i)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(loop.run_in_executor(None, job, k) for k in range(jobs))), 60
        )
        await asyncio.wait_for(dispatcher.flush(), 30)
    finally:
        stats = await dispatcher.aclose(timeout=5)
        log.removeHandler(dispatcher.handler)
    assert_accounted(stats, logged=jobs * 300 + sink.logged)
    assert stats.sinks["_ToThreadSink#0"].delivered > 0


class _OnlyEven(ListSink):
    def filter(self, record: logging.LogRecord) -> bool:
        return int(record.getMessage().split()[-1]) % 2 == 0


async def test_a_sinks_own_filter_method_is_applied_as_on_a_handler() -> None:
    # applied only when a filter was also added (the lane asked sink.filters)
    log = fresh_logger("t.own_filter")
    by_class = _OnlyEven()
    by_instance = ListSink()
    by_instance.filter = lambda record: record.getMessage().endswith("3")
    async with als.install(by_class, by_instance, logger=log) as dispatcher:
        for i in range(6):
            log.info("m %d", i)
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert [r.getMessage() for r in by_class.records] == ["m 0", "m 2", "m 4"]
    assert [r.getMessage() for r in by_instance.records] == ["m 3"]
    assert stats.sinks["_OnlyEven#0"].filtered == 3
    assert stats.sinks["ListSink#1"].filtered == 5


async def test_levels_filters_and_formatters_are_per_sink() -> None:
    log = fresh_logger("t.levels")
    everything, errors_only, filtered = ListSink(), ListSink(logging.ERROR), ListSink()
    everything.setFormatter(logging.Formatter("%(levelname)s:%(message)s"))
    errors_only.setFormatter(logging.Formatter("!%(message)s"))
    filtered.addFilter(lambda r: "keep" in r.getMessage())
    async with als.install(everything, errors_only, filtered, logger=log) as dispatcher:
        log.debug("keep debug")
        log.info("drop info")
        log.error("keep error")
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert everything.lines == ["DEBUG:keep debug", "INFO:drop info", "ERROR:keep error"]
    assert errors_only.lines == ["!keep error"]
    assert [r.getMessage() for r in filtered.records] == ["keep debug", "keep error"]
    assert stats.sinks["ListSink#2"].filtered == 1
    assert stats.sinks["ListSink#1"].received == 1


async def test_respect_handler_level_false_passes_everything_like_queue_listener() -> None:
    log = fresh_logger("t.norespect")
    errors_only = ListSink(logging.ERROR)
    async with als.install(errors_only, logger=log, respect_handler_level=False) as d:
        log.info("info")
        log.error("error")
        await d.flush()
    assert [r.getMessage() for r in errors_only.records] == ["info", "error"]


async def test_a_plain_logging_handler_runs_off_the_loop(tmp_path: Path) -> None:
    log = fresh_logger("t.plain")
    path = tmp_path / "plain.log"
    handler = logging.FileHandler(path, delay=True)
    threads: set[str] = set()

    class Spy(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            threads.add(threading.current_thread().name)
            return True

    handler.addFilter(Spy())
    async with als.install(handler, logger=log) as dispatcher:
        for i in range(100):
            log.info("plain %d", i)
        await dispatcher.flush()
        assert len(read_lines(path)) == 100
    assert threading.current_thread().name not in threads
    assert handler.stream is None  # closed by aclose()


async def test_a_plain_handler_whose_emit_raises_loses_only_that_record() -> None:
    """A handler whose emit() does not catch its own errors (as Handler.handle lets
    them through): the record that raised goes to the handler's handleError and is
    counted; the batch's other records are handled. The first failure ended the
    batch: the records after it were never handled, and the whole batch was counted."""

    class Strict(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.got: list[str] = []
            self.errors: list[object] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.got.append(self.format(record))

        def handleError(self, record: logging.LogRecord) -> None:
            self.errors.append((record.msg, sys.exc_info()[0]))

    log = fresh_logger("t.strict")
    handler = Strict()
    async with als.install(handler, logger=log) as dispatcher:
        for i in range(100):
            if i == 50:
                log.info("bad %d", "not a number")
            else:
                log.info("rec %d", i)
        await dispatcher.flush()
        stats = next(iter(dispatcher.stats().sinks.values()))
    assert handler.got == [f"rec {i}" for i in range(100) if i != 50]
    assert handler.errors == [("bad %d", TypeError)]
    assert (stats.emitted, stats.errors, stats.delivered) == (99, 1, 99)


async def test_a_plain_handler_that_reports_its_own_failure_counts_it() -> None:
    """The stdlib's handlers catch their emit's errors and call handleError
    themselves: the record failed, and was counted delivered."""

    class Failing(io.StringIO):
        def write(self, text: str) -> int:
            if "bad" in text:
                raise OSError("disk full")
            return super().write(text)

    stream = Failing()
    handler = logging.StreamHandler(stream)
    reported: list[str] = []
    handler.handleError = lambda record: reported.append(record.getMessage())  # type: ignore[method-assign]
    log = fresh_logger("t.selfcaught")
    async with als.install(handler, logger=log) as dispatcher:
        for message in ("good 1", "bad 2", "good 3"):
            log.info(message)
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert stream.getvalue().splitlines() == ["good 1", "good 3"]
    assert reported == ["bad 2"]
    only = next(iter(stats.sinks.values()))
    assert (only.delivered, only.errors) == (2, 1)
    assert_accounted(stats, logged=3)
    # closed, the sink leaves the handler as it found it (its own handleError)
    assert handler.handleError.__name__ == "<lambda>"
    plain = logging.StreamHandler(io.StringIO())
    async with als.install(plain, logger=fresh_logger("t.selfcaught.plain")):
        assert "handleError" in plain.__dict__
    assert "handleError" not in plain.__dict__


async def test_a_wrapped_handlers_own_handleerror_stays_its_own() -> None:
    """A handler class whose handleError is a staticmethod: the count's wrapper
    called it with the handler as an extra argument (a TypeError in the application's
    own logging calls). Two sinks on one handler, the application setting its own
    handleError between them: closing the first took the second's count away."""

    class Quiet(logging.Handler):
        reported: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            try:
                raise OSError("down")
            except OSError:  # as the stdlib's handlers do
                self.handleError(record)

        @staticmethod
        def handleError(record: logging.LogRecord) -> None:
            Quiet.reported.append(record.getMessage())

    handler = Quiet()
    first = als.Dispatcher(als.HandlerSink(handler))
    first.start()
    direct = fresh_logger("t.wrapped.direct")
    direct.addHandler(handler)
    direct.warning("direct")  # the application's own call: reported, no TypeError
    handler.handleError = lambda record: Quiet.reported.append("app " + record.getMessage())  # type: ignore[method-assign]
    second = als.Dispatcher(als.HandlerSink(handler))
    second.start()
    await first.aclose()
    log = fresh_logger("t.wrapped.second")
    log.addHandler(second.handler)
    try:
        log.warning("through the second")
        stats = await second.aclose()
    finally:
        log.removeHandler(second.handler)
        direct.removeHandler(handler)
    only = next(iter(stats.sinks.values()))
    assert (only.delivered, only.errors) == (0, 1)
    assert Quiet.reported == ["direct", "app through the second"]
    assert handler.handleError.__name__ == "<lambda>"  # the application's again


class _Reporter:
    """A handler class's handleError that is a callable object, no function."""

    def __init__(self) -> None:
        self.reported: list[str] = []

    def __call__(self, record: logging.LogRecord) -> None:
        self.reported.append(record.getMessage())


async def test_a_handleerror_that_is_a_callable_object_is_called_as_the_class_has_it() -> None:
    """It has no __get__: the count's wrapper failed on it (AttributeError in the
    application's own logging calls through the handler)."""

    class Reporting(logging.StreamHandler):  # type: ignore[type-arg]
        handleError = _Reporter()  # type: ignore[assignment]

    handler = Reporting(io.StringIO())
    handler.emit = lambda record: handler.handleError(record)  # type: ignore[method-assign]
    direct = fresh_logger("t.reporter.direct")
    direct.addHandler(handler)
    log = fresh_logger("t.reporter")
    try:
        async with als.install(handler, logger=log) as dispatcher:
            direct.warning("direct")
            log.warning("through the sink")
            await dispatcher.flush()
            stats = dispatcher.stats()
    finally:
        direct.removeHandler(handler)
    assert Reporting.handleError.reported == ["direct", "through the sink"]
    assert next(iter(stats.sinks.values())).errors == 1


def test_a_plain_handler_cut_short_by_aclose_writes_no_record_twice() -> None:
    """aclose(timeout=) gives up on a batch the handler's thread is in: the records
    the thread took are its own (written, counted delivered), the others go to the
    fallback. Every record was both written and spilled, and counted undelivered."""
    release = threading.Event()
    in_hand = threading.Event()

    class Slow(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.got: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "r2":
                in_hand.set()
                release.wait(10)
            self.got.append(record.getMessage())

    async def main() -> tuple[Any, Any, Any]:
        handler, fallback = Slow(), CaptureHandler()
        dispatcher = als.Dispatcher(als.HandlerSink(handler), fallback=fallback)
        dispatcher.start()
        log = fresh_logger("t.handler.cut")
        log.addHandler(dispatcher.handler)
        try:
            for i in range(6):
                log.info("r%d", i)
            assert await asyncio.to_thread(in_hand.wait, 10)
            stats = await dispatcher.aclose(timeout=0.2)
        finally:
            log.removeHandler(dispatcher.handler)
            release.set()
        return handler, fallback, stats

    handler, fallback, stats = asyncio.run(main())
    spilled = [r.getMessage() for r in fallback.records if not r.name.startswith("aiologsinks")]
    assert spilled == ["r3", "r4", "r5"]
    only = next(iter(stats.sinks.values()))
    assert (only.delivered, only.undelivered) == (3, 3)
    assert_accounted(stats, logged=6)
    assert handler.got[:2] == ["r0", "r1"]  # r2 is written when the thread is released


async def test_mutating_an_argument_after_the_call_does_not_change_the_output() -> None:
    log = fresh_logger("t.mutate")
    sink = ListSink()
    async with als.install(sink, logger=log) as dispatcher:
        payload = {"state": "before"}
        items = [1, 2]
        log.info("payload=%s items=%s", payload, items)
        payload["state"] = "after"
        items.append(3)
        await dispatcher.flush()
    assert sink.lines == ["payload={'state': 'before'} items=[1, 2]"]


async def test_a_record_with_bad_arguments_goes_to_handle_error_and_the_next_arrives() -> None:
    log = fresh_logger("t.badargs")
    sink = ListSink()
    async with als.install(sink, logger=log) as dispatcher:
        log.info("number %d", "not a number")
        log.info("fine %d", 2)
        await dispatcher.flush()
        stats = dispatcher.stats().sinks["ListSink#0"]
    assert sink.lines == ["fine 2"]
    assert [r.msg for r in sink.errors] == ["number %d"]
    assert (stats.errors, stats.emitted) == (1, 1)


async def test_exception_text_is_rendered_and_the_traceback_dropped() -> None:
    log = fresh_logger("t.exc")
    sink = ListSink()
    async with als.install(sink, logger=log) as dispatcher:
        try:
            raise KeyError("boom")
        except KeyError:
            log.exception("failed")
        await dispatcher.flush()
    (record,) = sink.records
    assert record.exc_info is None
    assert record.exc_text is not None and "KeyError: 'boom'" in record.exc_text
    assert sink.lines[0].startswith("failed\nTraceback (most recent call last):")


async def test_emitting_after_aclose_returns_promptly_to_the_fallback() -> None:
    log = fresh_logger("t.afterclose")
    fallback = CaptureHandler()
    sink = ListSink()
    dispatcher = started(log, sink, fallback=fallback)
    log.info("before")
    await dispatcher.aclose()
    log.info("after %s", "close")
    await asyncio.to_thread(log.info, "from a thread")
    assert [r.getMessage() for r in sink.records] == ["before"]
    # the first was spilled from the loop's thread; the second, behind it, queued after
    await wait_until(lambda: len(fallback.records) == 3)
    messages = [r.getMessage() for r in fallback.records]
    assert messages[1:] == ["after close", "from a thread"]
    assert "closed" in messages[0]
    assert dispatcher.stats().after_close == 2
    assert await dispatcher.aclose() == dispatcher.stats()  # idempotent


def test_emitting_from_a_thread_after_the_loop_closed_returns_promptly(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging, threading, warnings
        import aiologsinks as als

        warnings.simplefilter("ignore", ResourceWarning)
        log = logging.getLogger("late")
        log.propagate = False
        holder = {}

        async def main():
            d = als.Dispatcher(als.NullSink(), queue_size=2)
            d.start()
            log.addHandler(d.handler)
            holder["d"] = d
            log.info("while running")

        asyncio.run(main())  # ends without aclose(): the loop is closed now

        def late():
            for i in range(50):  # queue_size=2 and overflow=block: must not hang
                log.warning("late %d", i)

        t = threading.Thread(target=late)
        t.start()
        t.join(10)
        assert not t.is_alive(), "a logging call hung after the loop closed"
        print("after_close", holder["d"].stats().after_close)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "after_close 50" in proc.stdout
    assert "late 49" in proc.stderr  # the fallback (stderr) got the records


async def close_while_stalled(
    dispatcher: als.Dispatcher,
    log: logging.Logger,
    stalled: GatedSink,
    prefix: str,
    n: int,
    timeout: float,
) -> als.DispatcherStats:
    """Log ``n`` records, wait until ``stalled`` holds a batch, then close with ``timeout``."""
    dispatcher.start()
    log.addHandler(dispatcher.handler)
    for i in range(n):
        log.info(f"{prefix} %d", i)
    await asyncio.wait_for(stalled.entered.wait(), 5)
    try:
        return await dispatcher.aclose(timeout=timeout)
    finally:
        log.removeHandler(dispatcher.handler)


async def test_aclose_timeout_reports_what_a_stalled_sink_did_not_deliver() -> None:
    log = fresh_logger("t.timeout")
    stalled = GatedSink()
    fallback = CaptureHandler()
    dispatcher = als.Dispatcher(stalled, batch_size=10, fallback=fallback)
    stats = await close_while_stalled(dispatcher, log, stalled, "s", 25, timeout=0.05)
    assert stats.sinks["GatedSink#0"].undelivered == 25
    assert_accounted(stats, logged=25)
    assert [r.getMessage() for r in fallback.records if r.name != "aiologsinks"] == [
        f"s {i}" for i in range(25)
    ]
    # and why they are there (they had come without a word)
    assert [r.getMessage() for r in fallback.records if r.name == "aiologsinks"] == [
        "aiologsinks: sink GatedSink#0 ran out of time to deliver 25 record(s); they went"
        " to the fallback"
    ]
    assert stalled.closed


async def test_records_the_pump_holds_for_a_full_lane_are_not_lost_at_close() -> None:
    # lane of 5, batches of 100: the pump takes only what the full lane has room for,
    # so every record is in the shared queue or in a lane, and counted there at close
    log = fresh_logger("t.pump.held")
    stalled, beside = GatedSink(), ListSink()
    fallback = CaptureHandler()
    dispatcher = als.Dispatcher(
        stalled, beside, batch_size=100, fallback=fallback, lanes={stalled: {"size": 5}}
    )
    stats = await close_while_stalled(dispatcher, log, stalled, "r", 300, timeout=0.1)
    gated, other = stats.sinks["GatedSink#0"], stats.sinks["ListSink#1"]
    assert gated.emitted == 0 and gated.dropped == 0
    assert 5 <= gated.received == gated.undelivered <= 10  # in flight + the full lane
    assert other.received == other.delivered == gated.received
    # what was still in the shared queue: counted there as undelivered (not as
    # arriving after close, which it did not)
    assert stats.undelivered == 300 - gated.received and stats.after_close == 0
    assert_accounted(stats, logged=300)
    spilled = [r.getMessage() for r in fallback.records if r.name != "aiologsinks"]
    assert sorted(spilled) == sorted(f"r {i}" for i in range(300))


async def test_install_attaches_and_detaches_and_restores_the_level() -> None:
    log = fresh_logger("t.install")
    log.setLevel(logging.WARNING)
    sink = ListSink()
    async with als.install(sink, logger="t.install", level="DEBUG") as dispatcher:
        assert dispatcher.handler in log.handlers
        assert log.level == logging.DEBUG
        log.debug("inside")
    assert dispatcher.handler not in log.handlers
    assert log.level == logging.WARNING
    assert dispatcher.state.value == "closed"
    assert sink.closed and sink.flushes >= 1
    assert [r.getMessage() for r in sink.records] == ["inside"]


async def test_install_defaults_to_the_root_logger() -> None:
    sink = ListSink()
    async with als.install(sink) as dispatcher:
        assert dispatcher.handler in logging.getLogger().handlers
    assert dispatcher.handler not in logging.getLogger().handlers


async def test_records_queued_before_start_are_delivered() -> None:
    sink = ListSink()
    dispatcher = als.Dispatcher(sink)
    dispatcher.handler.handle(logging.makeLogRecord({"msg": "early", "levelno": 20}))
    async with dispatcher:
        await dispatcher.flush()
    assert [r.getMessage() for r in sink.records] == ["early"]


def test_start_needs_a_running_loop() -> None:
    with pytest.raises(als.DispatcherStateError, match="running event loop"):
        als.Dispatcher(ListSink()).start()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"queue_size": 0}, ValueError, "queue_size: expected an int >= 1, got 0"),
        ({"lane_size": "10"}, TypeError, "lane_size: expected an int, got '10'"),
        ({"lane_size": 2.0}, TypeError, "lane_size: expected an int, got 2.0"),
        ({"batch_size": -1}, ValueError, "batch_size"),
        ({"overflow": "spill"}, ValueError, "overflow: expected one of drop_oldest, drop_newest"),
        ({"overflow": 3}, TypeError, "overflow: expected one of drop_oldest, drop_newest"),
    ],
)
def test_invalid_options_name_the_parameter(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    # a value of the wrong type is a TypeError, one out of range a ValueError
    with pytest.raises(error, match=message) as raised:
        als.Dispatcher(ListSink(), **kwargs)  # type: ignore[arg-type]
    assert not isinstance(raised.value, ValueError if error is TypeError else TypeError)


@pytest.mark.parametrize("value", ["app.log", None])
def test_handler_sink_names_a_handler_that_is_not_one(value: object) -> None:
    with pytest.raises(TypeError, match=r"handler: expected a logging\.Handler, got"):
        als.HandlerSink(value)  # type: ignore[arg-type]


def test_a_non_sink_is_rejected_with_its_position() -> None:
    with pytest.raises(TypeError, match=r"sinks\[1\]: expected a Sink or a logging.Handler"):
        als.Dispatcher(ListSink(), "stderr")  # type: ignore[arg-type]


async def test_per_sink_lane_overrides() -> None:
    quiet, loud = GatedSink(), ListSink()
    log = fresh_logger("t.lanes")
    dispatcher = started(log, quiet, loud, lanes={quiet: {"size": 2, "overflow": "drop_newest"}})
    log.info("x0")
    await asyncio.wait_for(quiet.entered.wait(), 5)
    for i in range(1, 10):
        log.info("x%d", i)
    await wait_until(lambda: dispatcher.stats().sinks["ListSink#1"].emitted == 10)
    assert dispatcher.stats().sinks["GatedSink#0"].dropped == 7
    quiet.gate.set()
    await dispatcher.aclose()
    log.removeHandler(dispatcher.handler)
    with pytest.raises(TypeError, match="unknown option"):
        als.Dispatcher(quiet, lanes={quiet: {"sise": 2}})


async def test_records_around_pending_flushes_keep_their_order_and_levels() -> None:
    log = fresh_logger("t.flush.order")
    everything, errors_only = ListSink(), ListSink(level=logging.ERROR)
    async with als.install(everything, errors_only, logger=log) as dispatcher:
        flushes = []
        for i in range(30):
            log.log(logging.ERROR if i % 3 == 0 else logging.INFO, "r %d", i)
            if i % 7 == 0:  # flush markers queued among the records
                flushes.append(asyncio.ensure_future(dispatcher.flush()))
        await asyncio.wait_for(asyncio.gather(*flushes), 5)
        got = [r.getMessage() for r in everything.records]
        assert len(got) >= 29  # every record logged before the last flush (at r 28)
        assert got == [f"r {i}" for i in range(len(got))]
    assert [r.getMessage() for r in everything.records] == [f"r {i}" for i in range(30)]
    assert [r.getMessage() for r in errors_only.records] == [f"r {i}" for i in range(0, 30, 3)]


# -- misuse raises before anything starts ----------------------------------------------


def live_tasks() -> list[str]:
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        return []
    return [t.get_name() for t in tasks if t.get_name().startswith("aiologsinks")]


def test_the_same_sink_twice_is_rejected_naming_both_positions() -> None:
    sink = ListSink()
    with pytest.raises(ValueError, match=r"sinks\[2\]: .* is already sinks\[0\]") as info:
        als.Dispatcher(sink, ListSink(), sink)
    assert getattr(info.value, "param", None) == "sinks[2]"  # as every argument error


def test_start_after_close_says_closed_with_or_without_a_loop() -> None:
    dispatcher = als.Dispatcher(ListSink())
    dispatcher.close()
    with pytest.raises(als.DispatcherStateError, match="dispatcher is closed, expected new"):
        dispatcher.start()


async def test_install_with_an_unknown_level_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "never.log"
    sink = als.FileSink(path, delay=True)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with pytest.raises(ValueError, match="level: unknown level name 'VERBOSE'"):
        async with als.install(sink, level="VERBOSE"):
            pytest.fail("must not get here")
    assert live_tasks() == []
    assert not sink.closed and not path.exists()  # never opened, never started
    assert (root.handlers, root.level) == (handlers, level)


async def test_install_without_a_sink_is_an_error() -> None:
    # records would be taken by the shim and written nowhere
    root = logging.getLogger()
    handlers = list(root.handlers)
    with pytest.raises(ValueError, match=r"^sinks: install\(\) needs at least one sink"):
        async with als.install(logger=root):
            pytest.fail("must not get here")
    assert live_tasks() == []
    assert root.handlers == handlers


async def test_a_sink_runs_in_one_dispatcher_at_a_time(tmp_path: Path) -> None:
    # two lanes would open the file twice (one leaks) and the first dispatcher to close
    # would close it under the other
    log_a, log_b = fresh_logger("t.shared.a"), fresh_logger("t.shared.b")
    path = tmp_path / "shared.log"
    sink = als.FileSink(path)
    built_first = als.Dispatcher(sink)  # built before the other started: caught at start
    async with als.install(sink, logger=log_a) as running:
        with pytest.raises(ValueError, match=r"^sinks\[1\]: <FileSink .* runs in another"):
            als.Dispatcher(als.NullSink(), sink)
        with pytest.raises(als.DispatcherStateError, match=r"^start: <FileSink .* runs in"):
            built_first.start()
        assert built_first.state is als.DispatcherState.NEW
        log_b.addHandler(running.handler)  # the way to feed one sink from two loggers
        log_a.info("from a")
        log_b.info("from b")
        await running.flush()
        log_b.removeHandler(running.handler)
    assert read_lines(path) == ["from a", "from b"]
    # closed: the sink may run in a new dispatcher
    async with als.install(sink, logger=log_a):
        log_a.info("again")
    assert read_lines(path)[-1] == "again"
    # and closed again: its first close had left it closed, so the second dispatcher's
    # close left the file its write opened again open (an fd per reuse)
    assert sink._file is None


def test_a_sink_whose_loop_ended_without_aclose_runs_in_a_new_dispatcher(tmp_path: Path) -> None:
    sink = ListSink()

    async def leave_running() -> None:
        als.Dispatcher(sink).start()  # never closed: its loop ends under it

    async def reuse() -> None:
        log = fresh_logger("t.shared.reuse")
        async with als.install(sink, logger=log):
            log.info("on the next loop")

    with pytest.warns(ResourceWarning):
        asyncio.run(leave_running())
    asyncio.run(reuse())
    assert sink.lines[-1] == "on the next loop"


async def test_overlapping_installs_restore_the_level_in_any_exit_order() -> None:
    log = fresh_logger("t.install.order")
    log.setLevel(logging.WARNING)
    outer = als.install(ListSink(), logger=log, level="DEBUG")
    inner = als.install(ListSink(), logger=log, level="ERROR")
    await outer.__aenter__()
    await inner.__aenter__()
    assert log.level == logging.ERROR
    await outer.__aexit__(None, None, None)  # the outer one first
    assert log.level == logging.ERROR  # the inner one still holds
    await inner.__aexit__(None, None, None)
    assert log.level == logging.WARNING and log.handlers == []


async def test_a_second_start_raises() -> None:
    dispatcher = als.Dispatcher(ListSink())
    dispatcher.start()
    with pytest.raises(als.DispatcherStateError, match="running, expected new"):
        dispatcher.start()
    await dispatcher.aclose()


# -- flush(timeout), aclose on a dispatcher never started -------------------------------


async def test_flush_timeout_names_what_it_still_waits_for() -> None:
    stalled, quick = GatedSink(), ListSink()
    log = fresh_logger("t.flush.timeout")
    async with als.install(stalled, quick, logger=log) as dispatcher:
        log.info("one")
        with pytest.raises(TimeoutError, match=r"0\.05s; still waiting for sink\(s\) GatedSink#0$"):
            await dispatcher.flush(timeout=0.05)
        assert [r.getMessage() for r in quick.records] == ["one"]
        stalled.gate.set()
        await dispatcher.flush(timeout=5)
    assert_accounted(dispatcher.stats(), logged=1)


async def test_aclose_of_a_dispatcher_never_started_delivers_what_was_queued() -> None:
    sink = ListSink()
    dispatcher = als.Dispatcher(sink)
    dispatcher.handler.handle(logging.makeLogRecord({"msg": "queued", "levelno": 20}))
    stats = await dispatcher.aclose()
    assert [r.getMessage() for r in sink.records] == ["queued"]
    assert sink.closed
    assert_accounted(stats, logged=1)


# -- no loop, no loss ---------------------------------------------------------------------


def test_the_dispatcher_is_a_sync_context_manager_on_the_background_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sync.log"
    log = fresh_logger("t.sync")
    with als.Dispatcher(als.FileSink(path)) as dispatcher:
        log.addHandler(dispatcher.handler)
        for i in range(100):
            log.info("rec %d", i)
        log.removeHandler(dispatcher.handler)
    assert dispatcher.state is als._dispatcher.DispatcherState.CLOSED
    assert path.read_text(encoding="utf-8").splitlines() == [f"rec {i}" for i in range(100)]
    assert_accounted(dispatcher.stats(), logged=100)


async def test_the_sync_context_manager_refuses_a_running_loop() -> None:
    with pytest.raises(als.DispatcherStateError, match="use async with"):
        with als.Dispatcher(ListSink()):
            pass


def test_a_full_queue_with_no_loop_starts_delivering_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "auto.log"
    log = fresh_logger("t.auto")
    dispatcher = als.Dispatcher(als.FileSink(path), queue_size=10)
    log.addHandler(dispatcher.handler)
    for i in range(1000):
        log.info("rec %d", i)
    log.removeHandler(dispatcher.handler)
    assert dispatcher.state is als._dispatcher.DispatcherState.RUNNING
    stats = dispatcher.close(timeout=5)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1000
    assert_accounted(stats, logged=1000)


NO_LOOP_SCRIPT = """
import logging, os, sys, time
import aiologsinks as als

als._dispatcher._AUTO_START_DELAY = 0.2  # 5 s by default: keep the test short
d = als.Dispatcher(als.FileSink(sys.argv[1]))
logging.getLogger().addHandler(d.handler)
logging.getLogger().setLevel(logging.INFO)
for i in range(50):
    logging.info("no loop %d", i)
if sys.argv[2] == "wait":
    # no loop runs and nobody starts it: the background loop delivers it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(sys.argv[1]) and len(open(sys.argv[1]).read().splitlines()) == 50:
            print("delivered while running", d.state.value)
            break
        time.sleep(0.05)  # polling a file another thread writes: the condition itself
# nobody closes: what is left is delivered at exit
"""


@pytest.mark.parametrize("when", ["wait", "exit"])
def test_a_process_that_never_runs_a_loop_delivers(when: str, tmp_path: Path) -> None:
    path = tmp_path / "noloop.log"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_LOOP_SCRIPT), str(path), when],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    expected = [f"no loop {i}" for i in range(50)]
    if when == "wait":
        assert "delivered while running running" in proc.stdout
    # also where no thread can start at exit (Python 3.12.0-3.12.2): the exit hook
    # delivers them on the exiting thread
    assert path.read_text(encoding="utf-8").splitlines() == expected
    assert "no loop" not in proc.stderr


class ThreadRecorder(logging.Handler):
    """A fallback that notes which thread wrote each record."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.written = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "aiologsinks":
            self.threads.append(threading.current_thread().name)
            self.written.set()


async def test_the_fallback_is_written_off_the_loop() -> None:
    fallback = ThreadRecorder()
    dispatcher = als.Dispatcher(ListSink(), fallback=fallback)
    dispatcher.start()
    stats = await dispatcher.aclose()
    dispatcher.handler.handle(logging.makeLogRecord({"msg": "late", "levelno": 20}))
    assert await asyncio.to_thread(fallback.written.wait, 5)
    assert fallback.threads == ["aiologsinks-fallback"]
    assert dispatcher.stats().after_close == stats.after_close + 1


async def test_closed_dispatchers_are_freed_and_their_fallback_threads_end() -> None:
    """50 dispatchers, each closed, then spilling a record to its fallback: all 50
    written, the fallback threads end once idle, and no dispatcher outlives its last
    reference. Each left a fallback thread behind for good, and the map from each
    sink to its dispatcher (weak keys, strong values that hold the key) kept every
    one alive."""
    fallback = ThreadRecorder()
    refs = []
    for _ in range(50):
        dispatcher = als.Dispatcher(ListSink(), fallback=fallback)
        dispatcher.start()
        await dispatcher.aclose()
        dispatcher.handler.handle(logging.makeLogRecord({"msg": "late", "levelno": 20}))
        refs.append(weakref.ref(dispatcher))
    del dispatcher
    await wait_until(lambda: len(fallback.threads) == 50, 10)
    assert set(fallback.threads) == {"aiologsinks-fallback"}
    await wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "aiologsinks-fallback"], 10
    )
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


async def test_a_running_dispatcher_dropped_without_close_runs_until_closed() -> None:
    """A started dispatcher whose every reference was dropped is not collected while
    it runs (collected, its tasks were destroyed pending, and the exit no longer
    closed its sinks); once closed, it is."""
    sink = ListSink()
    dispatcher = als.Dispatcher(sink)
    dispatcher.start()
    await dispatcher.flush()  # idle: its tasks wait on its own events, nothing else
    ref = weakref.ref(dispatcher)
    del dispatcher
    gc.collect()
    running = ref()
    assert running is not None and running.state is als.DispatcherState.RUNNING
    running.handler.handle(logging.makeLogRecord({"msg": "still here", "levelno": 20}))
    await running.aclose()
    assert sink.lines == ["still here"]
    del running
    await wait_until(lambda: gc.collect() >= 0 and ref() is None, 5)


def test_dispatchers_whose_loop_was_closed_under_them_are_freed() -> None:
    """20 loops, each closed (not its tasks cancelled) with a running dispatcher on
    it: they are let go, as before running dispatchers were held (20 kept, each with
    its sinks' threads and files)."""
    refs = []
    for _ in range(20):
        dispatcher = als.Dispatcher(ListSink())
        loop = asyncio.new_event_loop()

        async def start(d: als.Dispatcher = dispatcher) -> None:
            d.start()

        loop.run_until_complete(start())
        loop.close()
        refs.append(weakref.ref(dispatcher))
        del dispatcher
    gc.collect()
    assert (
        len([ref for ref in refs if ref() is not None]) <= 1
    )  # the last one, until the next start


async def test_a_slow_fallback_holds_up_only_its_own_dispatcher() -> None:
    """One dispatcher's fallback takes a second a record; another's records, logged
    from a plain thread after its close, behind a spill of its own, are written at
    once. With one fallback thread for all, each waited a second behind the first's."""
    gate = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            gate.wait(10)

    slow = als.Dispatcher(ListSink(), fallback=Slow())
    fast_fallback = CaptureHandler()
    fast = als.Dispatcher(ListSink(), fallback=fast_fallback)
    late = logging.makeLogRecord({"msg": "late", "levelno": 20})
    try:
        for dispatcher in (slow, fast):
            dispatcher.start()
            await dispatcher.aclose()
            dispatcher.handler.handle(late)  # spilled from the loop's thread
        for _ in range(10):
            await asyncio.to_thread(fast.handler.handle, late)
        await wait_until(lambda: len(fast_fallback.records) >= 11, 5)
    finally:
        gate.set()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"respect_handler_level": "no"}, "respect_handler_level"), ({"lanes": [1]}, "lanes")],
)
def test_a_bad_option_is_a_type_error_naming_it(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(TypeError, match=f"^{name}: "):
        als.Dispatcher(ListSink(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", ["1", -1, float("nan")])
async def test_a_bad_timeout_is_refused_before_anything_changes(timeout: object) -> None:
    # a close that raised half way stopped taking records but never closed the sinks
    sink = ListSink()
    dispatcher = als.Dispatcher(sink)
    dispatcher.start()
    with pytest.raises((TypeError, ValueError), match=r"^timeout: "):
        await dispatcher.aclose(timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match=r"^timeout: "):
        await dispatcher.flush(timeout=timeout)  # type: ignore[arg-type]
    assert dispatcher.state is als.DispatcherState.RUNNING
    stats = await dispatcher.aclose()
    assert dispatcher.state is als.DispatcherState.CLOSED and sink.closed
    assert stats.lost == 0


class _Tag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.tag = "changed by another sink"
        return True


class _Tagging(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.tag = "changed by another sink"  # as a colouring formatter does
        return super().format(record)


class _TaggingSink(als.StreamSink):
    def format(self, record: logging.LogRecord) -> str:
        record.tag = "changed by another sink"
        return super().format(record)


@pytest.mark.parametrize(
    "changer",
    [
        "sink filter",
        "wrapped handler's filter",
        "formatter",
        "format()",
        "patched formatter",
        "memory sink's target",
        "emit set on the instance",
    ],
)
@pytest.mark.parametrize("first", [True, False])
async def test_what_one_sink_changes_in_a_record_no_other_sink_sees(
    tmp_path: Path, changer: str, first: bool
) -> None:
    """Lanes run in no fixed order: a record one sink's filter changes must not reach
    another sink changed, or that sink's output would depend on the order."""
    tagger: als.Sink
    owned: list[als.Sink] = []
    if changer == "sink filter":
        tagger = ListSink()
        tagger.addFilter(_Tag())
    elif changer == "formatter":
        tagger = als.StreamSink(io.StringIO())
        tagger.setFormatter(_Tagging())
    elif changer == "format()":
        tagger = _TaggingSink(io.StringIO())
    elif changer == "memory sink's target":
        target = als.StreamSink(io.StringIO())
        target.setFormatter(_Tagging())
        tagger = als.MemorySink(capacity=1, target=target)
        owned.append(target)  # a MemorySink does not close its target
    elif changer == "emit set on the instance":
        tagger = als.StreamSink(io.StringIO())

        async def emit(record: logging.LogRecord) -> None:
            record.tag = "changed by another sink"
            await als.StreamSink.emit(tagger, record)

        tagger.emit = emit  # type: ignore[method-assign]
    elif changer == "patched formatter":
        tagger = als.StreamSink(io.StringIO())
        patched = logging.Formatter()
        patched.format = _Tagging().format  # type: ignore[method-assign]
        tagger.setFormatter(patched)
    else:
        handler = CaptureHandler()
        handler.addFilter(_Tag())
        tagger = als.HandlerSink(handler)
    plain = als.FileSink(tmp_path / "plain.log")
    plain.setFormatter(logging.Formatter("%(message)s tag=%(tag)s", defaults={"tag": "-"}))
    # a filter on the sink makes every record travel as one LogRecord for all lanes
    plain.addFilter(lambda r: True)
    sinks = (tagger, plain) if first else (plain, tagger)
    log = fresh_logger("t.dispatcher.isolated")
    try:
        async with als.install(*sinks, logger=log) as dispatcher:
            for i in range(50):
                log.info("record %d", i)
            await dispatcher.flush()
    finally:
        for sink in owned:
            await sink.aclose()
    assert (tmp_path / "plain.log").read_text().splitlines() == [
        f"record {i} tag=-" for i in range(50)
    ]


CANCELLED_OWNER_SCRIPT = """
import asyncio, logging, sys
import aiologsinks as als

async def owner(entered):
    log = logging.getLogger("owner")
    log.propagate = False
    log.setLevel(logging.INFO)
    if sys.argv[2] == "install":
        async with als.install(als.FileSink(sys.argv[1]), logger=log):
            for i in range(100):
                log.info("r %d", i)
            entered.set()
            await asyncio.Event().wait()  # until asyncio.run() cancels it
    dispatcher = als.Dispatcher(als.FileSink(sys.argv[1]))
    dispatcher.start()
    log.addHandler(dispatcher.handler)
    try:
        for i in range(3000):
            log.info("r %d", i)
        entered.set()
        await asyncio.Event().wait()
    finally:
        # the order asyncio.run() cancels its tasks in is a set's: here the pump's
        # cancellation runs first, as it often does (the dispatcher is then closed
        # already, with its lanes still delivering what the pump handed them)
        for _ in range(100):
            if dispatcher._pump_task.done():
                break
            await asyncio.sleep(0)
        stats = await dispatcher.aclose()
        # delivered when aclose() returns, not later
        lines = len(open(sys.argv[1]).read().splitlines())
        print("closed", lines, sum(s.delivered for s in stats.sinks.values()))

async def main():
    entered = asyncio.Event()
    task = asyncio.create_task(owner(entered))
    await entered.wait()
    return task  # kept: asyncio.run() cancels it with the dispatcher's own tasks

asyncio.run(main())
print("returned")
"""


@pytest.mark.parametrize("how", ["install", "aclose in finally"])
def test_asyncio_run_ends_when_the_task_that_closes_the_dispatcher_is_cancelled(
    how: str, tmp_path: Path
) -> None:
    """asyncio.run() cancels every task at once: the close a task's `finally` (or
    install()'s exit) starts finds the pump and lanes cancelled; it must not wait for
    them without end."""
    path = tmp_path / "owner.log"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CANCELLED_OWNER_SCRIPT), str(path), how.split()[0]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    closed = "closed 3000 3000\n" if how == "aclose in finally" else ""
    assert proc.stdout == closed + "returned\n"
    n = 3000 if how == "aclose in finally" else 100
    assert path.read_text(encoding="utf-8").splitlines() == [f"r {i}" for i in range(n)]


def test_dispatchers_start_and_close_on_many_threads_loops_at_once() -> None:
    """Four threads, each on its own loop: one keeps 300 dispatchers running while
    three start and close dispatchers, with thread switches as often as can be. The
    set of running dispatchers, shared by every loop, was read by one start while
    another changed it: "Set changed size during iteration", a start failing half
    done."""
    errors: list[BaseException] = []
    held_up = threading.Event()
    done = threading.Event()

    async def hold() -> None:
        running = [als.Dispatcher(ListSink()) for _ in range(300)]
        for dispatcher in running:
            dispatcher.start()
        held_up.set()
        await asyncio.to_thread(done.wait, 60)
        for dispatcher in running:
            await dispatcher.aclose()

    async def churn() -> None:
        held_up.wait(30)
        for _ in range(150):
            dispatcher = als.Dispatcher(ListSink())
            dispatcher.start()
            await dispatcher.aclose()

    def run(coro: Any) -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            errors.append(exc)

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        holder = threading.Thread(target=run, args=(hold(),))
        churners = [threading.Thread(target=run, args=(churn(),)) for _ in range(3)]
        holder.start()
        for thread in churners:
            thread.start()
        for thread in churners:
            thread.join(60)
        done.set()
        holder.join(60)
    finally:
        sys.setswitchinterval(before)
    assert errors == []


def test_a_dispatcher_whose_loop_closed_under_a_busy_sink_is_settled_once() -> None:
    """Its sink waits inside emit_batch when the loop is closed with the tasks still
    pending; another loop's start settles it: each record counted once, undelivered,
    and in the fallback, and the sink told of nothing. Collected later, its lane's
    coroutine got GeneratorExit inside the sink, which took it for the sink's error:
    each record counted twice, and handleError called."""
    entered = threading.Event()

    class Stuck(ListSink):
        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            entered.set()
            await asyncio.Event().wait()  # a peer that never answers

    sink = Stuck()
    fallback = CaptureHandler()
    dispatcher = als.Dispatcher(sink, fallback=fallback)
    log = fresh_logger("t.loop_closed_busy")
    log.addHandler(dispatcher.handler)

    async def main(started: als.Dispatcher) -> None:
        started.start()
        for i in range(3):
            log.warning("r %d", i)
        await asyncio.to_thread(entered.wait, 5)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main(dispatcher))
    loop.close()  # its tasks still pending
    log.removeHandler(dispatcher.handler)

    async def another() -> None:
        await als.Dispatcher(ListSink()).aclose()

    asyncio.run(another())
    stats = dispatcher.stats()
    del dispatcher
    gc.collect()  # its tasks, and their coroutines with them
    (share,) = stats.sinks.values()
    assert (share.received, share.undelivered, share.errors) == (3, 3, 0), share
    assert (sink.errors, sink.error_count) == ([], 0)
    assert [r.getMessage() for r in fallback.records if r.name != "aiologsinks"] == [
        f"r {i}" for i in range(3)
    ]
