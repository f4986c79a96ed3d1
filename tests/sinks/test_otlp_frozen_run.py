"""OTLPSink encodes a dispatcher's common frozen records in C where the accelerator is
built (``_otlp_map.protobuf_run``): the messages must be the bytes the Python path
writes for the same records, whatever the values, and every record the compiled run
does not take is encoded, or reported, by the Python path in its place."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiologsinks as als
from aiologsinks import _otlp_map, _trace
from aiologsinks._record import RecordBatch, freeze
from aiologsinks._stats import assert_accounted
from aiologsinks.sinks import otlp as otlp_module

from ..helpers import VALUES, fresh_logger, need_compiled
from ..peers.otel_collector import rotel_collector
from ..test_record import logged

OBSERVED = 1_700_000_000_123_456_789


def _sink(**kwargs: Any) -> tuple[als.OTLPSink, list[Any]]:
    sink = als.OTLPSink("http://127.0.0.1:9/v1/logs", **kwargs)
    errors: list[Any] = []
    sink.report_error = errors.append  # type: ignore[method-assign]
    return sink, errors


def _both_paths(items: list[Any], **kwargs: Any) -> tuple[Any, Any]:
    """What the sink makes of ``items`` as a dispatcher's batch, with the compiled run
    and without it: (scope, bytes) of each encoded record, and the records reported."""

    def encode() -> Any:
        sink, errors = _sink(**kwargs)
        out = sink._items(RecordBatch(list(items)))
        return [(scope, data) for _, scope, data in out], errors

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(otlp_module.time, "time_ns", lambda: OBSERVED)  # one observed time
        with_run = encode()
        mp.setattr(_otlp_map, "_otlp_run", None)
        without = encode()
    return with_run, without


def _frozen(*records: logging.LogRecord) -> list[Any]:
    frozen = [freeze(r) for r in records]
    assert all(type(v) is tuple for v in frozen)
    return frozen


def _run() -> Any:
    need_compiled(_otlp_map._otlp_run is not None)
    return _otlp_map.protobuf_run


def test_the_common_records_are_the_bytes_of_the_python_path() -> None:
    items = _frozen(
        logged("request started: %s %s client=%s", "GET", "/work", "127.0.0.1:5555"),
        logged("loaded user profile", extra={"user_id": 7, "tenant": "acme", "_hidden": 1}),
        logged("request finished: status=%d in %.3f ms", 200, 0.123),
        logged("ünïcode %s", "é€𝄞", extra={"ratio": -0.5, "flag": True, "none": None}),
    )
    run = _run()
    stop, done = run(items, 0, OBSERVED, os.getpid(), 1 << 20)
    assert stop == len(items)
    observed = _otlp_map.observed_field(OBSERVED)
    assert [(scope, data) for _, scope, data in done] == [
        _otlp_map.protobuf_frozen(v, observed, os.getpid()) for v in items
    ]
    assert [item for item, _, _ in done] == items
    with_run, without = _both_paths(items)
    assert with_run == without and with_run[1] == []


def test_the_run_stops_at_each_record_it_leaves_to_the_python_path() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        with_exception = logged("failed %d", 3, exc_info=True)
    leftovers = [
        with_exception,
        logged("stack", stack_info=True),
        logged("bad %d", "x"),  # does not merge: reported by the record path
        logged("big", extra={"n": 2**70}),  # beyond int64: a string value
        logged("bytes", extra={"raw": b"\x00\xff"}),
        logged("nested", extra={"t": (1, "a")}),  # an array value
        logged("surrogate %s", "\ud800"),  # not UTF-8: replaced by the Python path
        logged("traced", extra={_trace.TRACE_ID: "0af7651916cd43dd8448eb211c80319c",
                                _trace.SPAN_ID: "b7ad6b7169203331", _trace.SAMPLED: True}),
    ]  # fmt: skip
    run = _run()
    for record in leftovers:
        # (a nested value keeps its record unfrozen: a LogRecord, also left to Python)
        items = [*_frozen(logged("before")), freeze(record), *_frozen(logged("after"))]
        stop, done = run(items, 0, OBSERVED, None, 1 << 20)
        assert (stop, len(done)) == (1, 1), record.msg
        stop, done = run(items, 2, OBSERVED, None, 1 << 20)
        assert (stop, len(done)) == (3, 1)
        with_run, without = _both_paths(items)
        assert with_run == without, record.msg
        assert len(with_run[0]) == 3 - len(with_run[1])
    items = [logging.makeLogRecord({"msg": "a LogRecord"}), *_frozen(logged("frozen"))]
    assert run(items, 0, OBSERVED, None, 1 << 20) == (0, [])


def test_a_record_beyond_max_batch_bytes_is_reported_by_the_python_path() -> None:
    items = _frozen(logged("small"), logged("x" * 5000), logged("small again"))
    with_run, without = _both_paths(items, max_batch_bytes=4096)
    assert with_run == without
    encoded, errors = with_run
    assert len(encoded) == 2 and len(errors) == 1 and errors[0] is items[1]


def test_odd_standard_fields_are_left_to_the_python_path() -> None:
    odd = [
        {"levelno": True},  # a bool is not a level number
        {"lineno": "7"},
        {"thread": None, "threadName": None},  # logging.logThreads = False
        {"process": None},
        {"process": 1},  # another process than the resource's
        {"created": -1.0},  # before 1970: fixed64 cannot hold it
        {"created": math.nan},
        {"name": None},
        {"levelname": "Level 25", "levelno": 25},
        {"pathname": None, "funcName": None},
    ]
    for change in odd:
        record = logged("odd")
        record.__dict__.update(change)
        items = _frozen(logged("before"), record)
        with_run, without = _both_paths(items)
        assert with_run == without, change


@settings(max_examples=300, deadline=None)
@given(
    args=st.lists(VALUES, max_size=4),
    extra=st.dictionaries(
        st.sampled_from(["user", "_private", "status", "é", "", "otelSpanID"]), VALUES, max_size=3
    ),
    spec=st.sampled_from(["%r", "%s", "%d", "%f"]),
    level=st.sampled_from([(20, "INFO"), (25, "Level 25"), (5, "TRACE"), (99, "HUGE")]),
    pid=st.sampled_from([None, os.getpid(), 1, "text"]),
)
def test_any_frozen_record_encodes_as_the_python_path_encodes_it(
    args: list[Any], extra: dict[str, Any], spec: str, level: tuple[int, str], pid: Any
) -> None:
    msg = " ".join([spec] * len(args)) or "no args"
    record = logged(msg, *args, extra=extra)
    record.levelno, record.levelname = level
    items = [freeze(record), *_frozen(logged("next %s", "one"))]
    with_run, without = _both_paths(items, resource={"process.pid": pid})
    assert with_run == without


async def test_a_real_collector_decodes_what_the_compiled_run_sends(tmp_path: Path) -> None:
    log = fresh_logger("app.frozen")
    async with rotel_collector(tmp_path) as (collector, downstream):
        sink = als.OTLPSink(collector.endpoint)
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(200):
                log.info("event %d of %s", i, "two hundred", extra={"n": i, "ok": i % 2 == 0})
            await dispatcher.flush()
            got = await downstream.wait_records(200)
    assert [lr.body.string_value for _, _, lr in got] == [
        f"event {i} of two hundred" for i in range(200)
    ]
    attributes = [{kv.key: kv.value for kv in lr.attributes} for _, _, lr in got]
    assert [(a["n"].int_value, a["ok"].bool_value) for a in attributes] == [
        (i, i % 2 == 0) for i in range(200)
    ]
    assert all(a["logger.name"].string_value == "app.frozen" for a in attributes)
    assert dispatcher.stats().lost == 0 and sink.error_count == 0


async def test_records_the_run_leaves_behind_are_delivered_or_counted(tmp_path: Path) -> None:
    """Through install() and a real collector: a record whose arguments do not merge
    and one with a traceback sit among common records; the bad one is reported, the
    rest arrive in order, and every record sent is delivered or counted."""
    log = fresh_logger("app.mixed")
    async with rotel_collector(tmp_path) as (collector, downstream):
        sink = als.OTLPSink(collector.endpoint)
        sink.handleError = lambda record: None  # type: ignore[method-assign]
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(30):
                log.info("before %d", i)
            log.info("bad %d", "not a number")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
            for i in range(30):
                log.info("after %d", i)
            await dispatcher.flush()
            got = await downstream.wait_records(61)
            stats = dispatcher.stats()
    bodies = [lr.body.string_value for _, _, lr in got]
    assert bodies == [f"before {i}" for i in range(30)] + ["failed"] + [
        f"after {i}" for i in range(30)
    ]
    assert sink.error_count == 1
    (sink_stats,) = stats.sinks.values()
    assert (sink_stats.delivered, sink_stats.errors, stats.lost) == (61, 1, 1)  # counted
    assert_accounted(stats, logged=62)
