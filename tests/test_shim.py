"""The QueueHandler shim: prepare(), the hand-off, and never raising."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted

from .helpers import CaptureHandler, ListSink, fresh_logger, wait_until


def make_record(msg: str = "m %s", args: Any = ("a",), **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("n", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_prepare_copies_merges_args_and_keeps_extras() -> None:
    handler = als.Dispatcher(ListSink()).handler
    record = make_record("user=%s n=%s", ("ann", [3]), request_id="r-1")
    prepared = handler.prepare(record)
    assert prepared is not record
    assert (prepared.msg, prepared.args) == ("user=ann n=[3]", None)
    assert prepared.request_id == "r-1"  # type: ignore[attr-defined]
    assert (record.msg, record.args) == ("user=%s n=%s", ("ann", [3]))  # original untouched
    assert prepared.getMessage() == record.getMessage()
    immutable = make_record("user=%s n=%d", ("ann", 3))
    kept = handler.prepare(immutable)  # cannot change after the call: kept for the formatter
    assert (kept.msg, kept.args) == ("user=%s n=%d", ("ann", 3))


def test_prepare_renders_exc_info_so_the_record_pickles() -> None:
    handler = als.Dispatcher(ListSink()).handler
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record = logging.LogRecord("n", 40, __file__, 1, "oops", None, sys.exc_info())
    prepared = handler.prepare(record)
    assert prepared.exc_info is None
    assert prepared.exc_text and prepared.exc_text.endswith("ValueError: bad")
    assert record.exc_info is not None
    pickle.dumps(prepared.__dict__)  # no traceback, no frames


def test_prepare_with_a_dict_argument_and_a_non_string_message() -> None:
    handler = als.Dispatcher(ListSink()).handler
    assert handler.prepare(make_record("%(a)s-%(b)s", ({"a": 1, "b": 2},))).msg == "1-2"
    assert handler.prepare(make_record(12345, None)).msg == "12345"  # type: ignore[arg-type]


def test_prepare_keeps_unmergeable_records_for_the_sinks_to_report() -> None:
    handler = als.Dispatcher(ListSink()).handler
    prepared = handler.prepare(make_record("%d", ("x",)))
    assert (prepared.msg, prepared.args) == ("%d", ("x",))


class BrokenQueue(collections.deque):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        raise RuntimeError("queue is broken")


@pytest.mark.parametrize("broken", ["queue", "wake-up"])
def test_emit_never_raises_into_the_caller(monkeypatch: Any, broken: str) -> None:
    dispatcher = als.Dispatcher(ListSink())
    handler = dispatcher.handler
    calls: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", calls.append)
    if broken == "queue":
        monkeypatch.setattr(dispatcher, "_items", BrokenQueue())
    else:

        def broken_wake_up() -> None:
            raise RuntimeError("no loop to wake")

        monkeypatch.setattr(dispatcher, "_wake_up", broken_wake_up)
    record = make_record()
    assert handler.handle(record) is record  # must not raise
    assert calls == [record]
    dispatcher._items.clear()  # never started: nothing is left to deliver at exit


def test_the_shim_takes_no_per_record_lock() -> None:
    lock = als.Dispatcher(ListSink()).handler.lock
    # no real lock, but one that stdlib code may still test or enter (3.13's
    # Handler.handle does `with self.lock:`)
    assert not lock
    with lock:
        pass


async def test_a_burst_from_a_thread_wakes_the_loop_a_few_times_not_per_record() -> None:
    sink = ListSink()
    log = fresh_logger("t.wakeups")
    dispatcher = als.Dispatcher(sink)
    loop = asyncio.get_running_loop()
    wakeups = 0
    original = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        async with dispatcher:
            log.addHandler(dispatcher.handler)

            def burst() -> None:
                for i in range(5000):
                    log.info("t %d", i)

            await asyncio.to_thread(burst)
            await dispatcher.flush()
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    assert len(sink.records) == 5000
    assert wakeups < 500, wakeups  # at most once per drained burst, not per record


async def test_handler_filters_and_level_apply_before_the_queue() -> None:
    sink = ListSink()
    log = fresh_logger("t.shimfilter")
    async with als.install(sink, logger=log) as dispatcher:
        dispatcher.handler.setLevel(logging.WARNING)
        dispatcher.handler.addFilter(lambda r: "secret" not in r.getMessage())
        log.info("below the shim's level")
        log.warning("secret stuff")
        log.warning("visible")
        await dispatcher.flush()
    assert [r.getMessage() for r in sink.records] == ["visible"]


@pytest.mark.parametrize("plain", [True, False])
async def test_a_record_the_shim_cannot_take_is_reported_and_counted(
    plain: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    # a malformed exc_info fails the shim's copy: its handleError reported it, as
    # QueueHandler's does, but no counter had it (3 logged, 2 accounted for)
    sink = ListSink()
    log = fresh_logger(f"t.shimreject.{plain}")
    async with als.install(sink, logger=log) as dispatcher:
        if not plain:
            dispatcher.handler.addFilter(lambda r: True)  # the shim's emit() path
        log.info("one")
        log.error("bad exc_info", exc_info=("not", "a", "tuple"))  # type: ignore[arg-type]
        log.info("two")
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert [r.getMessage() for r in sink.records] == ["one", "two"]
    assert (stats.rejected, stats.lost) == (1, 1)
    assert_accounted(stats, logged=3)
    assert "Message: 'bad exc_info'" in capsys.readouterr().err


async def test_records_from_many_threads_all_arrive_exactly_once() -> None:
    sink = ListSink()
    log = fresh_logger("t.many")
    async with als.install(sink, logger=log, queue_size=64) as dispatcher:

        def produce(k: int) -> None:
            for i in range(1000):
                log.info("%d:%d", k, i)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        await dispatcher.flush()
    got = [r.getMessage() for r in sink.records]
    assert len(got) == len(set(got)) == 8000
    for k in range(8):
        mine = [int(m.split(":")[1]) for m in got if m.startswith(f"{k}:")]
        assert mine == list(range(1000))


class Braces(logging.LogRecord):
    def getMessage(self) -> str:
        return str(self.msg).format(*self.args)


class Tagged(logging.LogRecord):
    def getMessage(self) -> str:
        return "[app] " + super().getMessage()


def test_prepare_uses_a_record_subclass_own_get_message() -> None:
    handler = als.Dispatcher(ListSink()).handler
    record = Braces("n", logging.INFO, __file__, 1, "user={} id={}", (["ann"], 7), None)
    assert handler.prepare(record).getMessage() == "user=['ann'] id=7"


@pytest.mark.parametrize("factory", [Braces, Tagged])
async def test_a_record_subclass_message_is_what_file_handler_writes(
    tmp_path: Path, monkeypatch: Any, factory: type[logging.LogRecord]
) -> None:
    """Its getMessage() runs once, with the arguments as they were at the call."""
    monkeypatch.setattr(logging, "_logRecordFactory", factory)
    template = "user={} id={}" if factory is Braces else "user=%s id=%s"
    log = fresh_logger("t.shim.subclass")
    reference = logging.FileHandler(tmp_path / "reference.log")
    log.addHandler(reference)
    sink = als.FileSink(tmp_path / "sink.log")
    try:
        async with als.install(sink, logger=log) as dispatcher:
            log.info(template, "ann", 7)  # immutable: the message is built by the sink
            names = ["bob"]
            log.info(template, names, 8)  # mutable: built at the call
            names.append("eve")
            log.info("no args")
            await dispatcher.flush()
            assert [s.errors for s in dispatcher.stats().sinks.values()] == [0]
    finally:
        reference.close()
    expected = (tmp_path / "reference.log").read_text().splitlines()
    assert expected[1].endswith("id=8") and "eve" not in expected[1]
    assert (tmp_path / "sink.log").read_text().splitlines() == expected


def test_the_listener_is_the_dispatcher_as_on_the_stdlib_queue_handler() -> None:
    dispatcher = als.Dispatcher(ListSink())
    assert dispatcher.handler.listener is dispatcher


@pytest.mark.skipif(sys.version_info < (3, 12), reason="logging.getHandlerByName is 3.12+")
def test_get_handler_by_name_finds_a_named_shim() -> None:
    handler = als.Dispatcher(ListSink()).handler
    handler.set_name("aiologsinks-test-shim")
    assert logging.getHandlerByName("aiologsinks-test-shim") is handler  # type: ignore[attr-defined]


async def test_the_stdlib_handle_with_its_lock_still_works_on_the_shim() -> None:
    """Python 3.13's Handler.handle does `with self.lock:`; the lock-free shim allows it."""
    sink = ListSink()
    async with als.Dispatcher(sink) as dispatcher:
        record = logging.makeLogRecord({"msg": "via Handler.handle", "levelno": 20})
        logging.Handler.handle(dispatcher.handler, record)
        dispatcher.handler.acquire()
        dispatcher.handler.release()
        await dispatcher.flush()
    assert [r.getMessage() for r in sink.records] == ["via Handler.handle"]


async def test_the_shim_sees_each_change_of_what_it_reads_after_it_read_it(
    monkeypatch: Any,
) -> None:
    """The compiled shim reads the handler's filters, the trace hook, the context
    switch and the dispatcher's state again only when their dicts have changed: each
    change made after records went through is seen by the next record."""
    from aiologsinks import _trace

    sink = ListSink()
    fallback = CaptureHandler()
    log = fresh_logger("t.shim.state")
    dispatcher = als.Dispatcher(sink, fallback=fallback)
    handler = dispatcher.handler
    log.addHandler(handler)
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)
    async with dispatcher:
        log.info("one")  # read
        handler.filters = [lambda r: r.getMessage() != "two"]  # a new list
        log.info("two")
        handler.filters = []
        log.info("three")
        handler.filters.append(lambda r: r.getMessage() != "four")  # the same list
        log.info("four")
        handler.filters.clear()
        stamped: list[str] = []
        monkeypatch.setattr(_trace, "hook", lambda r: stamped.append(r.getMessage()))
        log.info("five")
        monkeypatch.setattr(_trace, "hook", None)
        log.info("six")
        with monkeypatch.context() as m:
            m.setattr(dispatcher, "_items", BrokenQueue())
            log.info("seven")  # the held queue is not the dispatcher's: submit() reports it
        log.info("eight")
        await dispatcher.flush()
        # a sink filter turns the context switch on: records carry their context
        var: contextvars.ContextVar[str] = contextvars.ContextVar("t_shim_state")
        seen: list[str | None] = []
        sink.addFilter(lambda r: seen.append(var.get(None)) or True)
        var.set("caller's")
        log.info("nine")
        await dispatcher.flush()
    log.info("ten")  # closed: to the fallback, counted
    log.removeHandler(handler)
    assert [r.getMessage() for r in sink.records] == [
        "one",
        "three",
        "five",
        "six",
        "eight",
        "nine",
    ]
    assert stamped == ["five"]
    assert [r.getMessage() for r in errors] == ["seven"]
    assert seen == ["caller's"]
    # written by the fallback's thread (the record came from the loop's)
    await wait_until(lambda: [r.getMessage() for r in fallback.records][-1:] == ["ten"])
    assert dispatcher.stats().after_close == 1
