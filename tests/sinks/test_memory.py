"""BufferingSink and MemorySink behave as BufferingHandler and MemoryHandler do."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiologsinks as als
from aiologsinks._stats import assert_accounted
from aiologsinks.sinks.memory import BufferingSink, MemorySink

from ..helpers import attached, wait_until


class ListHandler(logging.Handler):
    """A stdlib target that remembers what it got and on which thread."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[str] = []
        self.threads: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.threads.add(threading.get_ident())
        self.got.append(record.getMessage())


class ListSink(als.Sink):
    """An async target that remembers each batch it got."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    @property
    def got(self) -> list[str]:
        return [m for batch in self.batches for m in batch]

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        self.batches.append([r.getMessage() for r in records])


def rec(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("app", level, __file__, 1, msg, None, None)


# One step of a scenario: ("emit", level) | ("flush", 0) | ("target", 0/1)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("emit"),
            st.sampled_from(
                [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
            ),
        ),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("target"), st.integers(0, 1)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    steps=steps,
    capacity=st.integers(1, 6),
    flush_level=st.sampled_from([logging.WARNING, logging.ERROR, logging.CRITICAL]),
    flush_on_close=st.booleans(),
    start_with_target=st.booleans(),
)
def test_memory_sink_matches_memory_handler(
    steps: list[tuple[str, int]],
    capacity: int,
    flush_level: int,
    flush_on_close: bool,
    start_with_target: bool,
) -> None:
    """After every step and after close, the targets got the same records."""
    theirs_target = ListHandler()
    theirs = logging.handlers.MemoryHandler(
        capacity, flush_level, theirs_target if start_with_target else None, flush_on_close
    )

    async def run() -> None:
        ours_target = ListSink()
        ours = MemorySink(
            capacity, flush_level, ours_target if start_with_target else None, flush_on_close
        )
        for i, (op, arg) in enumerate(steps):
            if op == "emit":
                theirs.handle(rec(f"m{i}", arg))
                await ours.handle(rec(f"m{i}", arg))
            elif op == "flush":
                theirs.flush()
                await ours.flush()
            else:
                theirs.setTarget(theirs_target if arg else None)
                ours.setTarget(ours_target if arg else None)
            assert ours_target.got == theirs_target.got
            assert [r.getMessage() for r in ours.buffer] == [r.getMessage() for r in theirs.buffer]
        theirs.close()
        await ours.aclose()
        assert ours_target.got == theirs_target.got
        assert ours.target is None and theirs.target is None
        assert ours.closed

    asyncio.run(run())


async def test_capacity_flushes_one_batch_to_a_sink_target() -> None:
    target = ListSink()
    async with MemorySink(3, target=target) as sink:
        for i in range(7):
            await sink.handle(rec(f"m{i}"))
        assert target.batches == [["m0", "m1", "m2"], ["m3", "m4", "m5"]]
        assert [r.msg for r in sink.buffer] == ["m6"]
    assert target.batches[-1] == ["m6"]  # flushOnClose


async def test_flush_level_flushes_early() -> None:
    target = ListSink()
    sink = MemorySink(100, flushLevel=logging.WARNING, target=target)
    await sink.handle(rec("a"))
    await sink.handle(rec("b", logging.WARNING))
    assert target.batches == [["a", "b"]]
    await sink.aclose()


async def test_flush_on_close_false_drops_the_buffer() -> None:
    target = ListSink()
    sink = MemorySink(100, target=target, flushOnClose=False)
    await sink.handle(rec("a"))
    await sink.aclose()
    assert target.batches == []
    assert sink.buffer == [] and sink.target is None
    assert sink.error_count == 1  # dropped as the stdlib drops it, but counted
    await sink.aclose()  # idempotent


async def test_without_target_records_wait_for_set_target() -> None:
    sink = MemorySink(2)
    for i in range(5):
        await sink.handle(rec(f"m{i}"))
    assert len(sink.buffer) == 5  # kept, as the stdlib keeps them
    target = ListSink()
    sink.setTarget(target)
    await sink.flush()
    assert target.got == [f"m{i}" for i in range(5)]
    await sink.aclose()


async def test_target_filters_apply() -> None:
    target = ListSink()
    target.addFilter(lambda r: r.msg != "skip")
    async with MemorySink(3, target=target) as sink:
        for msg in ("a", "skip", "c"):
            await sink.handle(rec(msg))
    assert target.got == ["a", "c"]


async def test_plain_handler_target_runs_off_the_loop() -> None:
    target = ListHandler()
    async with MemorySink(2, target=target) as sink:
        for i in range(5):
            await sink.handle(rec(f"m{i}"))
    assert target.got == [f"m{i}" for i in range(5)]
    assert threading.get_ident() not in target.threads


async def test_buffering_sink_only_empties_its_buffer() -> None:
    class Counting(BufferingSink):
        flushed: list[list[str]] = []

        async def flush(self) -> None:
            self.flushed.append([r.getMessage() for r in self.buffer])
            await super().flush()

    sink = Counting(2)
    for i in range(5):
        await sink.handle(rec(f"m{i}"))
    assert sink.flushed == [["m0", "m1"], ["m2", "m3"]]
    assert [r.msg for r in sink.buffer] == ["m4"]
    await sink.aclose()
    assert sink.flushed[-1] == ["m4"] and sink.buffer == []


async def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="capacity"):
        BufferingSink("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target"):
        MemorySink(10, target=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flushLevel"):
        MemorySink(10, flushLevel="ERROR")  # type: ignore[arg-type]


async def test_end_to_end_through_install() -> None:
    target = ListSink()
    logger = logging.getLogger("test.memory.e2e")
    logger.propagate = False
    try:
        async with als.install(MemorySink(10, target=target), logger=logger, level=logging.INFO):
            for i in range(25):
                logger.info("m%d", i)
    finally:
        logger.propagate = True
    assert target.got == [f"m{i}" for i in range(25)]
    assert target.batches[0] == [f"m{i}" for i in range(10)]


class _Refusing(logging.Handler):
    """A plain target whose emit raises on one message (not caught, as custom
    handlers sometimes do); remembers the others."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused
        self.got: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.refused:
            raise self.refusal()
        self.got.append(record.getMessage())

    def refusal(self) -> BaseException:
        return RuntimeError(f"cannot take {self.refused}")


class _Reporting(MemorySink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reported: list[tuple[str, str]] = []

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        self.reported.append((record.getMessage(), str(sys.exc_info()[1])))


def _refusing_sink_target(refused: str) -> ListSink:
    target = ListSink()

    def refuse(record: logging.LogRecord) -> bool:
        if record.getMessage() == refused:
            raise RuntimeError(f"cannot take {refused}")
        return True

    target.addFilter(refuse)
    return target


@pytest.mark.parametrize("kind", ["handler", "sink filter"])
async def test_a_target_that_raises_on_one_record_gets_the_others(kind: str) -> None:
    # the stdlib raises into the logging call; here the record is this sink's error
    # (counted) and the rest of the buffer still reaches the target
    target: logging.Handler = _Refusing("m2") if kind == "handler" else _refusing_sink_target("m2")
    sink = _Reporting(5, target=target)
    log = logging.getLogger(f"test.memory.refused.{kind}")
    log.propagate = False
    async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
        for i in range(5):
            log.info("m%d", i)
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert target.got == ["m0", "m1", "m3", "m4"]  # type: ignore[attr-defined]
    assert sink.reported == [("m2", "cannot take m2")]
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors) == (4, 1)
    assert_accounted(stats, 5)


class _ReportingSinkTarget(ListSink):
    """A Sink target that gives one record to its own handleError (a record its peer
    refused, say) and takes the others."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        taken = []
        for record in records:
            if record.getMessage() == self.refused:
                self.report_error(record)
            else:
                taken.append(record)
        await super().emit_batch(taken)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # reported here, once: the MemorySink counts it, never reports it again


async def test_what_a_sink_target_reports_as_failed_is_counted_by_the_memory_sink() -> None:
    target = _ReportingSinkTarget("m2")
    sink = _Reporting(5, target=target)
    log = logging.getLogger("test.memory.target_reported")
    log.propagate = False
    async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
        for i in range(5):
            log.info("m%d", i)
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert target.got == ["m0", "m1", "m3", "m4"] and target.error_count == 1
    assert sink.reported == []
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors) == (4, 1)
    assert_accounted(stats, 5)


async def test_records_no_target_ever_took_are_counted_at_close() -> None:
    # the stdlib drops them with the handler; here they are lost, counted
    sink = _Reporting(100)
    log = logging.getLogger("test.memory.no_target")
    log.propagate = False
    async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
        for i in range(5):
            log.info("m%d", i)
    stats = dispatcher.stats()
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors) == (0, 5)
    assert "closed with 5 record(s) buffered (no target)" in sink.reported[0][1]
    assert_accounted(stats, 5)


async def test_the_closing_message_counts_records_as_stats_do_not_notices() -> None:
    # logged on the loop thread with no await between: the dispatcher's queue of 5
    # drops the 5 oldest, and its drop notice reaches the sink with the survivors
    sink = _Reporting(100)
    log = logging.getLogger("test.memory.notice_at_close")
    log.propagate = False
    log.setLevel(logging.INFO)
    with attached(log, sink, queue_size=5, overflow="drop_oldest") as dispatcher:
        for i in range(10):
            log.info("m%d", i)
        await dispatcher.flush()
        assert any("dropped" in r.getMessage() for r in sink.buffer)
        await dispatcher.aclose()
    stats = dispatcher.stats()
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors, stats.dropped) == (0, 5, 5)
    assert "closed with 5 record(s) and 1 notice(s) buffered (no target)" in sink.reported[0][1]
    assert_accounted(stats, 10)


class _Stuck(logging.Handler):
    """A plain target that never returns until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.got: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.release.wait(10)
        self.got.append(record.getMessage())


class _StuckSink(ListSink):
    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize("kind", ["handler", "sink"])
async def test_records_held_when_aclose_gives_up_are_counted_once(kind: str) -> None:
    # the buffer was the sink's: what the abandoned close did not hand over is lost,
    # counted, and never counted twice
    target: logging.Handler = _Stuck() if kind == "handler" else _StuckSink()
    sink = _Reporting(100, target=target)
    log = logging.getLogger(f"test.memory.abandoned.{kind}")
    log.propagate = False
    with attached(log, sink) as dispatcher:
        for i in range(5):
            log.warning("m%d", i)
        # in the buffer (a dispatcher flush would flush this sink to its target)
        await wait_until(lambda: len(sink.buffer) == 5)
        await dispatcher.aclose(timeout=0.3)
    stats = dispatcher.stats()
    (share,) = stats.sinks.values()
    if isinstance(target, _Stuck):
        target.release.set()
        # the worker thread takes m0 at once (unless the close gave up first): it still
        # delivers it, and only the four it never took are lost
        taken = await asyncio.to_thread(target.entered.wait, 5)
        assert (share.delivered, share.errors) == ((1, 4) if taken else (0, 5))
    else:
        assert (share.delivered, share.errors) == (0, 5)
    assert "closed before" in sink.reported[0][1]
    assert stats.lost == share.errors
    assert_accounted(stats, 5)


# with no executor left, the target's handle() runs on the loop's thread, as intended
@pytest.mark.allow_blocking
def test_a_plain_handler_target_is_reached_after_the_loops_executor_shut_down(
    tmp_path: Path,
) -> None:
    """The loop's default executor was shut down (as asyncio.run() does) but the loop
    not closed, and close() runs it: the buffer reaches the FileHandler target, here
    on the calling thread. The flush had taken the buffer and lost it (0 of 100 in the
    file), stats saying delivered; so did the exit on Python 3.12.0-3.12.2."""
    path = tmp_path / "target.log"
    target = logging.FileHandler(path)
    sink = MemorySink(10_000, target=target)
    dispatcher = als.Dispatcher(sink)
    logger = logging.getLogger("t.memory.executor_shut")
    logger.propagate = False
    logger.addHandler(dispatcher.handler)

    async def main() -> None:
        dispatcher.start()
        for i in range(100):
            logger.warning("rec %d", i)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_default_executor())
        stats = dispatcher.close()
    finally:
        logger.removeHandler(dispatcher.handler)
        loop.close()
        target.close()
    assert path.read_text(encoding="utf-8").splitlines() == [f"rec {i}" for i in range(100)]
    assert_accounted(stats, logged=100)


class _CancellingHandler(_Refusing):
    """A target whose handle() raises CancelledError of its own on one record."""

    def refusal(self) -> BaseException:
        return asyncio.CancelledError(f"{self.refused} cancelled itself")


class _CancellingSink(ListSink):
    """A Sink target whose emit_batch raises CancelledError of its own (no task of
    the pipeline was cancelled)."""

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        if any(r.getMessage() == "m2" for r in records):
            raise asyncio.CancelledError("the target cancelled itself")
        await super().emit_batch(records)


async def test_a_target_raising_its_own_cancelled_error_is_its_error_counted_once() -> None:
    # it was counted lost as an interrupted flush and then again, as the record being
    # emitted, by the containment around the memory sink: two counts, and the
    # record that raised never reported
    handler_target = _CancellingHandler("m2")
    sink_target = _CancellingSink()
    by_handler = _Reporting(5, target=handler_target)
    by_sink = _Reporting(5, target=sink_target)
    log = logging.getLogger("test.memory.own_cancel")
    log.propagate = False
    async with als.install(by_handler, by_sink, logger=log, level=logging.INFO) as dispatcher:
        for i in range(10):
            log.info("m%d", i)
        await asyncio.wait_for(dispatcher.flush(), 10)
        stats = dispatcher.stats()
    assert handler_target.got == ["m0", "m1", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
    assert by_handler.reported == [("m2", "m2 cancelled itself")]
    assert sink_target.got == ["m5", "m6", "m7", "m8", "m9"]
    assert by_sink.reported == [("m0", "the target cancelled itself")]
    share = {name.split("#")[1]: s for name, s in stats.sinks.items()}
    assert (share["0"].delivered, share["0"].errors) == (9, 1)
    assert (share["1"].delivered, share["1"].errors) == (5, 5)
    assert_accounted(stats, 10)


async def test_a_target_named_is_the_handler_of_that_name_once_there_is_one() -> None:
    target = ListSink()
    sink = _Reporting(2, target="t.memory.named")
    log = logging.getLogger("test.memory.named")
    log.propagate = False
    async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
        for i in range(3):  # a full buffer: no handler of that name yet, kept
            log.info("m%d", i)
        await dispatcher.flush()
        assert len(sink.buffer) == 3 and sink.target == "t.memory.named"
        target.set_name("t.memory.named")
        log.info("m3")
        await dispatcher.flush()
        assert sink.target is target and sink.buffer == []
        sink.setTarget("t.memory.nobody")
        log.info("m4")
        stats = await dispatcher.aclose()
    assert target.got == ["m0", "m1", "m2", "m3"]
    assert sink.reported == [
        ("m4", f"{sink!r}: closed with 1 record(s) buffered (no handler named 't.memory.nobody')")
    ]
    assert_accounted(stats, 5)
    target.set_name(None)  # type: ignore[arg-type]


async def test_a_target_naming_the_memory_sink_itself_is_no_target() -> None:
    # it handed its buffer to itself: a flush that waited for itself, then records
    # counted delivered that went nowhere
    sink = _Reporting(2, target="t.memory.itself")
    sink.set_name("t.memory.itself")
    log = logging.getLogger("test.memory.itself")
    log.propagate = False
    try:
        async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
            for i in range(3):
                log.info("m%d", i)
            await asyncio.wait_for(dispatcher.flush(), 10)
            assert len(sink.buffer) == 3
            stats = await asyncio.wait_for(dispatcher.aclose(timeout=5), 10)
    finally:
        sink.set_name(None)  # type: ignore[arg-type]
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors) == (0, 3)
    assert "no handler named 't.memory.itself'" in sink.reported[0][1]
