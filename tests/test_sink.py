"""The Sink base class: a logging.Handler with coroutine hooks, and its error API."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._sink import is_dual, overridden


class Recording(als.Sink):
    def __init__(self) -> None:
        super().__init__()
        self.reported: list[str] = []
        self.got: list[str] = []
        self.flushed = 0

    async def emit(self, record: logging.LogRecord) -> None:
        self.got.append(record.getMessage())

    async def flush(self) -> None:
        self.flushed += 1

    def handleError(self, record: logging.LogRecord) -> None:
        self.reported.append(record.getMessage())


def rec(msg: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": msg, "levelno": logging.INFO, "levelname": "INFO"})


def test_an_async_override_gets_the_dual_entry() -> None:
    assert is_dual(Recording.flush) and is_dual(als.Sink.handle)
    assert is_dual(als.NullSink.handle)  # NullSink overrides handle itself
    sink = Recording()

    async def main() -> None:
        await sink.flush()  # awaited: the hook
        assert await sink.handle(rec("direct")) is True  # awaited: inline

    asyncio.run(main())
    assert sink.flushed == 1 and sink.got == ["direct"]
    assert sink.flush() is None  # plain call (logging.shutdown): the handler entry
    assert sink.flushed == 1  # nothing was handed over, so nothing to wait for
    sink.close()


def test_the_dual_entry_sees_the_coroutine_behind_a_generator_expression() -> None:
    """gather(*(sink.flush() for sink in sinks)) in a coroutine: the generator
    expression's frame (a list comprehension's too before 3.12) is a plain one, and
    the calls took the handler entry: flush() returned None (gather raised TypeError)
    and handle() started a private pipeline."""
    sinks = [Recording(), Recording()]

    def consume(calls: Any) -> list[Any]:  # plain code iterating it: plain calls
        return list(calls)

    async def main() -> None:
        assert await asyncio.gather(*(s.handle(rec("genexpr")) for s in sinks)) == [True] * 2
        assert await asyncio.gather(*[s.handle(rec("listcomp")) for s in sinks]) == [True] * 2
        await asyncio.gather(*(s.flush() for s in sinks))
        assert [s.flushed for s in sinks] == [1, 1]
        assert all(s._entry is None for s in sinks)  # no private pipeline
        assert consume(s.flush() for s in sinks) == [None, None]

    asyncio.run(main())
    assert [s.got for s in sinks] == [["genexpr", "listcomp"]] * 2
    for s in sinks:
        s.close()


def test_a_plain_call_is_the_handler_entry_and_filters_at_the_call() -> None:
    sink = Recording()
    sink.addFilter(lambda r: r.msg != "no")
    assert not sink.handle(rec("no"))
    assert sink.handle(rec("yes"))
    sink.flush()  # waits for the private pipeline
    assert sink.got == ["yes"]
    sink.close()
    assert sink.closed


def test_report_error_counts_and_reports_one_record() -> None:
    sink = Recording()
    try:
        raise OSError("disk full")
    except OSError:
        sink.report_error(rec("a"))
    assert sink.error_count == 1 and sink.reported == ["a"]


def test_report_batch_error_counts_every_record_and_reports_the_first() -> None:
    sink = Recording()
    try:
        raise OSError("peer gone")
    except OSError:
        sink.report_batch_error([rec("a"), rec("b"), rec("c")])
        sink.report_batch_error([])
    assert sink.error_count == 3 and sink.reported == ["a"]


def test_contain_each_reports_the_failing_record_and_goes_on() -> None:
    sink = Recording()

    def shout(record: logging.LogRecord) -> str:
        if record.msg == "bad":
            raise ValueError("cannot")
        return str(record.msg).upper()

    results, kept = sink.contain_each([rec("a"), rec("bad"), rec("c")], shout)
    assert results == ["A", "C"] and [r.msg for r in kept] == ["a", "c"]
    assert sink.error_count == 1 and sink.reported == ["bad"]


def test_overridden_sees_subclass_hooks_and_dual_entries() -> None:
    class Plain(als.Sink):
        async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
            pass

    class OwnFormat(Plain):
        def format(self, record: logging.LogRecord) -> str:
            return "x"

    assert not overridden(Plain, "format", als.Sink.format)
    assert overridden(OwnFormat, "format", als.Sink.format)
    assert overridden(Recording, "flush", als.Sink.flush)
    assert not overridden(Plain, "flush", als.Sink.flush)


def test_a_sink_is_in_logging_handler_registry_by_name() -> None:
    sink = als.NullSink()
    sink.name = "t.sink.registry"
    assert logging._handlers.get("t.sink.registry") is sink  # type: ignore[attr-defined]
    sink.close()
    assert logging._handlers.get("t.sink.registry") is None  # type: ignore[attr-defined]


def test_handler_sink_level_is_the_wrapped_handlers_both_ways() -> None:
    handler = logging.NullHandler(logging.WARNING)
    handler.set_name("t.sink.wrapped")
    wrapped = als.HandlerSink(handler)
    assert wrapped.level == logging.WARNING and wrapped.name == "t.sink.wrapped"
    wrapped.level = logging.ERROR
    assert handler.level == logging.ERROR
    wrapped.setLevel("INFO")
    assert handler.level == logging.INFO
    # the wrapper does not take the wrapped handler's place in the registry
    assert logging._handlers.get("t.sink.wrapped") is handler  # type: ignore[attr-defined]


@pytest.mark.parametrize("level", [1.5, None, True])
def test_a_bad_level_is_a_type_error_naming_it(level: object) -> None:
    with pytest.raises(TypeError, match=r"^level: ") as info:
        als.NullSink(level)  # type: ignore[arg-type]
    assert info.value.param == "level"  # type: ignore[attr-defined]


def test_a_negative_level_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"^level: expected a level >= 0, got -5"):
        als.NullSink(-5)
    sink = als.NullSink()
    with pytest.raises(ValueError, match=r"^level: "):
        sink.setLevel(-1)
    assert sink.level == logging.NOTSET


def test_a_negative_buffer_capacity_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"^capacity: .*>= 0"):
        als.BufferingSink(-1)
    with pytest.raises(ValueError, match=r"^capacity: "):
        als.MemorySink(-1)
    assert als.MemorySink(0).capacity == 0  # as MemoryHandler: every record flushes


def test_a_hand_made_record_without_a_level_does_not_stop_the_pipeline() -> None:
    sink = Recording()
    sink.handle(logging.makeLogRecord({"msg": "no level"}))  # levelno None
    sink.handle(rec("next"))
    sink.flush()
    assert sink.got == ["no level", "next"]
    sink.close()


TEARDOWN_SCRIPT = """
import logging, sys
import aiologsinks as als

log = logging.getLogger("teardown")
log.propagate = False
log.addHandler(als.FileSink(sys.argv[1]))

class LogsWhenCollected:
    def __del__(self):
        for i in range(3):
            log.warning("collected %d", i)

# collected as the interpreter tears the modules down, when imports no longer work
keep = LogsWhenCollected()
"""


def test_a_logging_call_at_module_teardown_does_not_raise(tmp_path: Path) -> None:
    """Whatever its sink cannot do then, the logging call itself must not raise (it
    did on 3.13: handleError's own traceback formatting failed to import)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TEARDOWN_SCRIPT), str(tmp_path / "t.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored in" not in proc.stderr, proc.stderr
    # nor is a record lost without a word: written, or its error said
    path = tmp_path / "t.log"
    written = path.read_text().splitlines() if path.exists() else []
    assert written == [f"collected {i}" for i in range(3)] or "Logging error" in proc.stderr
