"""Frozen records: what the shim queues is the stdlib's prepared record, and the GC
never has to look at it twice."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._record import FIELDS, RecordBatch, extras, freeze, thaw

from .helpers import ListSink, fresh_logger


def logged(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """The record a real logging call makes (captured before any handler sees it)."""
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    log = fresh_logger("t.record")
    log.addHandler(Capture())
    log.info(*args, **kwargs)
    return seen[0]


def prepared(record: logging.LogRecord) -> dict[str, Any]:
    return als.QueueHandler(als.Dispatcher()).prepare(record).__dict__


CASES = [
    ("plain %d and %.3f", (7, 1.5)),
    ("no args", ()),
    ("%(user)s logged in", ({"user": "ann"},)),
    ("a list %s", ([1, 2],)),
    ("bad %d", ("x",)),
]


def as_sinks_see(record: logging.LogRecord) -> dict[str, Any]:
    """The prepared record, with immutable arguments unmerged as the caller gave them
    (they could not change after the call; a formatter may read ``args``)."""
    d = prepared(record)
    args = record.args
    if type(args) is tuple and args and all(type(a) in (str, int, float) for a in args):
        d["msg"], d["args"] = record.msg, args
    return d


@pytest.mark.parametrize(("msg", "args"), CASES)
def test_a_thawed_record_is_the_prepared_record(msg: str, args: tuple[Any, ...]) -> None:
    record = logged(msg, *args)
    frozen = freeze(record)
    assert type(frozen) is tuple
    back = thaw(frozen)
    assert type(back) is logging.LogRecord
    # same keys in the same order (pickles and dict dumps match), same values
    assert list(back.__dict__.items()) == list(as_sinks_see(record).items())


def test_immutable_arguments_travel_unmerged_and_come_back_as_args() -> None:
    # they follow the fields; the merge happens where the record is formatted, by the
    # formatter's own getMessage() (a formatter reading record.args gets them)
    record = logged("%s took %.3f ms", "job", 1.5)
    frozen = freeze(record)
    assert type(frozen) is tuple and frozen[len(FIELDS) :] == ("job", 1.5)
    back = thaw(frozen)
    assert (back.msg, back.args) == ("%s took %.3f ms", ("job", 1.5))
    assert back.getMessage() == "job took 1.500 ms"
    assert back.__dict__ == as_sinks_see(record)


@pytest.mark.parametrize("args", [(), ("job",)], ids=["no-args", "args"])
def test_exception_info_is_rendered_and_dropped(args: tuple[str, ...]) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logged("failed %s" if args else "failed", *args, exc_info=True)
    back = thaw(freeze(record))  # type: ignore[arg-type]
    assert back.exc_info is None
    assert back.exc_text is not None and "ValueError: boom" in back.exc_text
    assert list(back.__dict__.items()) == list(prepared(record).items())


def test_stack_info_travels_as_text() -> None:
    record = logged("here", stack_info=True)
    back = thaw(freeze(record))  # type: ignore[arg-type]
    assert back.stack_info == record.stack_info and back.stack_info


def test_records_that_are_not_plain_travel_as_prepared_copies() -> None:
    # an extra= value that can change after the call is not frozen
    extra = logged("with extra", extra={"request": {"id": "r-1"}})

    class Mine(logging.LogRecord):
        pass

    sub = Mine("t", logging.INFO, __file__, 1, "sub %d", (1,), None)
    for record in (extra, sub):
        item = freeze(record)
        assert isinstance(item, logging.LogRecord) and item is not record
        assert item.__dict__ == prepared(record)
    assert freeze(sub).msg == "sub 1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("msg", "args"), [("done", ()), ("done %s in %.1f ms", ("job", 2.5)), ("bad %d", ("x",))]
)
def test_extra_attributes_of_immutable_values_are_frozen(msg: str, args: tuple[Any, ...]) -> None:
    record = logged(msg, *args, extra={"request_id": "r-1", "status": 200, "ms": 1.5})
    frozen = freeze(record)
    assert type(frozen) is tuple
    assert extras(frozen) == {"request_id": "r-1", "status": 200, "ms": 1.5}
    back = thaw(frozen)
    # the extras after the standard attributes, in the call's order, as in the copy
    assert list(back.__dict__.items()) == list(as_sinks_see(record).items())
    # the names are shared by the call site's records: once the first collection has
    # seen them, each later record is untracked at its own first collection
    gc.collect()
    later = freeze(logged(msg, *args, extra={"request_id": "r-2", "status": 500, "ms": 0.5}))
    gc.collect(0)
    assert type(later) is tuple and not gc.is_tracked(later)


def test_a_formatter_s_cached_message_keeps_a_record_off_the_frozen_path() -> None:
    # SocketHandler.makePickle drops "message": the copy's path does the same
    record = logged("seen %s", "before", extra={"k": 1})
    logging.Formatter().format(record)
    item = freeze(record)
    assert isinstance(item, logging.LogRecord)
    assert item.__dict__ == prepared(record)


def test_same_number_of_attributes_but_not_the_standard_ones() -> None:
    record = logged("renamed")
    del record.__dict__["funcName"]
    record.__dict__["custom"] = 1
    item = freeze(record)
    assert isinstance(item, logging.LogRecord) and item.custom == 1  # type: ignore[attr-defined]


def test_the_gc_untracks_a_frozen_record_at_its_first_collection() -> None:
    # queued records then cost the cyclic collector nothing, however long they wait
    frozen = [freeze(logged("request %d in %.3f ms", i, 1.5)) for i in range(50)]
    gc.collect(0)
    assert not any(gc.is_tracked(f) for f in frozen)


def test_mutating_arguments_after_the_call_changes_nothing() -> None:
    items = [1]
    frozen = freeze(logged("items %s", items))
    items.append(2)
    assert thaw(frozen).msg == "items [1]"  # type: ignore[arg-type]


def test_a_record_batch_is_a_sequence_of_records() -> None:
    records = [logged("one"), logged("two %d", 2)]
    batch = RecordBatch([freeze(records[0]), records[1]])
    assert not batch.thawed
    assert len(batch) == 2
    assert [r.getMessage() for r in batch] == ["one", "two 2"]
    assert batch.thawed
    assert batch[0] is batch[0]  # thawed once
    assert [r.msg for r in batch[0:1]] == ["one"]


def test_the_field_order_is_this_pythons() -> None:
    fresh = logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)
    assert tuple(fresh.__dict__) == FIELDS
    assert ("taskName" in FIELDS) == (sys.version_info >= (3, 12))


async def test_sinks_get_immutable_arguments_as_the_caller_gave_them() -> None:
    # as a stdlib handler's formatter does: uvicorn's access formatter unpacks args
    sink = ListSink()
    log = fresh_logger("t.record.sink")
    async with als.install(sink, logger=log):
        log.info("kept %s", "here")
        log.info("merged %s", ["a list"])  # could change after the call: merged there
    assert [(r.msg, r.args) for r in sink.records] == [
        ("kept %s", ("here",)),
        ("merged ['a list']", None),
    ]
    assert [r.getMessage() for r in sink.records] == ["kept here", "merged ['a list']"]


@pytest.mark.parametrize(("msg", "args"), CASES)
def test_a_frozen_records_pickle_frame_is_the_stdlibs(msg: str, args: tuple[Any, ...]) -> None:
    import logging.handlers

    from aiologsinks.sinks.socket import _frame_of

    record = logged(msg, *args)
    stdlib = logging.handlers.SocketHandler("127.0.0.1", 9)
    sink = als.SocketSink("127.0.0.1", 9)
    as_prepared = als.QueueHandler(als.Dispatcher()).prepare(record)
    try:
        expected = stdlib.makePickle(as_prepared)
    except TypeError:  # the message cannot be merged: both raise
        with pytest.raises(TypeError):
            _frame_of(freeze(record), sink.makePickle)  # type: ignore[arg-type]
        return
    finally:
        stdlib.close()
    assert _frame_of(freeze(record), sink.makePickle) == expected  # type: ignore[arg-type]


async def test_uvicorns_access_formatter_writes_what_it_writes_on_a_file_handler(
    tmp_path: Path,
) -> None:
    """uvicorn's AccessFormatter unpacks ``record.args``; routed to a FileSink (its
    dictConfig "class" swapped for aiologsinks.FileSink), every access line was an
    error once the arguments had been merged."""
    from uvicorn.logging import AccessFormatter

    fmt = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
    lines = [("127.0.0.1:5000", "GET", "/", "1.1", 200), ("[::1]:6000", "POST", "/a?b=1", "2", 404)]

    def log_all(log: logging.Logger) -> None:
        for client, method, path, version, status in lines:
            log.info('%s - "%s %s HTTP/%s" %d', client, method, path, version, status)

    stdlib = logging.FileHandler(tmp_path / "stdlib.log")
    stdlib.setFormatter(AccessFormatter(fmt, use_colors=False))
    log = fresh_logger("t.record.uvicorn.stdlib")
    log.addHandler(stdlib)
    log_all(log)
    stdlib.close()
    sink = als.FileSink(tmp_path / "sink.log")
    sink.setFormatter(AccessFormatter(fmt, use_colors=False))
    log = fresh_logger("t.record.uvicorn.sink")
    async with als.install(sink, logger=log) as dispatcher:
        log_all(log)
    assert dispatcher.stats().sinks["FileSink#0"].errors == 0
    expected = (tmp_path / "stdlib.log").read_text()
    assert expected.count("\n") == 2
    assert (tmp_path / "sink.log").read_text() == expected


async def test_uvicorns_coloured_startup_lines_are_written_as_on_a_file_handler(
    tmp_path: Path,
) -> None:
    """uvicorn's DefaultFormatter with colours swaps ``msg`` for the record's
    ``color_message`` (an ``extra=``) and merges the arguments into that: both must
    reach it as the caller gave them."""
    from uvicorn.logging import DefaultFormatter

    def log_all(log: logging.Logger) -> None:
        started = "Started server process [\x1b[36m%d\x1b[0m]"
        log.info("Started server process [%d]", 123, extra={"color_message": started})
        running = "Uvicorn running on \x1b[1m%s://%s:%d\x1b[0m (Press CTRL+C to quit)"
        log.info(
            "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)",
            "http",
            "127.0.0.1",
            8000,
            extra={"color_message": running},
        )
        log.warning("no colour message %s", "here")

    stdlib = logging.FileHandler(tmp_path / "stdlib.log")
    stdlib.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=True))
    log = fresh_logger("t.record.uvicorn.colours.stdlib")
    log.addHandler(stdlib)
    log_all(log)
    stdlib.close()
    sink = als.FileSink(tmp_path / "sink.log")
    sink.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=True))
    log = fresh_logger("t.record.uvicorn.colours.sink")
    async with als.install(sink, logger=log) as dispatcher:
        log_all(log)
    assert dispatcher.stats().sinks["FileSink#0"].errors == 0
    expected = (tmp_path / "stdlib.log").read_text()
    assert "[\x1b[36m123\x1b[0m]" in expected and expected.count("\n") == 3
    assert (tmp_path / "sink.log").read_text() == expected


class EventDictFormatter(logging.Formatter):
    """As structlog's ProcessorFormatter reads a record that structlog made: ``msg``
    is the event dict."""

    def format(self, record: logging.LogRecord) -> str:
        event = record.msg.copy()  # type: ignore[union-attr]
        return " ".join(f"{k}={event[k]}" for k in sorted(event))


async def test_a_structured_message_and_mutable_extras_are_written_as_at_the_call(
    tmp_path: Path,
) -> None:
    """A dict ``msg`` reaches formatters as a dict (it was made a str at the call:
    every structlog record failed in ProcessorFormatter), and a dict, list or set
    given in ``extra=`` is written as it was at the call, as a FileHandler writes it,
    whatever the caller does with it afterwards."""

    def log_all(log: logging.Logger) -> None:
        event = {"event": "order placed", "order_id": 42}
        log.info(event)
        event["order_id"] = 43  # after the call: not in the output
        tags, seen = ["a"], {"x": 1}
        log.info("tags", extra={"tags": tags, "seen": seen})
        tags.append("b")
        seen["x"] = 2

    outputs = []
    for name, make in (("stdlib", logging.FileHandler), ("sink", als.FileSink)):
        for formatter in (EventDictFormatter(), logging.Formatter("%(message)s %(tags)s %(seen)s")):
            path = tmp_path / f"{name}-{type(formatter).__name__}.log"
            handler = make(path)
            handler.setFormatter(formatter)
            if type(formatter) is EventDictFormatter:
                handler.addFilter(lambda r: isinstance(r.msg, dict))
            else:
                handler.addFilter(lambda r: not isinstance(r.msg, dict))
            log = fresh_logger(f"t.record.structured.{name}.{type(formatter).__name__}")
            if name == "stdlib":
                log.addHandler(handler)
                log_all(log)
                handler.close()
            else:
                async with als.install(handler, logger=log) as dispatcher:
                    log_all(log)
                assert dispatcher.stats().lost == 0
            outputs.append(path.read_text())
    stdlib_event, stdlib_extra, sink_event, sink_extra = outputs
    assert stdlib_event == "event=order placed order_id=42\n"
    assert stdlib_extra == "tags ['a'] {'x': 1}\n"
    assert (sink_event, sink_extra) == (stdlib_event, stdlib_extra)
