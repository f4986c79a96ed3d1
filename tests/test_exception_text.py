"""Exception text captured at the call and rendered in the lane is the stdlib's text,
byte for byte: the same file as a ``logging.FileHandler`` beside the sink writes, also
when the exception changes after the call or its frames are gone."""

from __future__ import annotations

import gc
import importlib.util
import logging
import sys
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._record import EXC_TEXT, ExcText, _positions, _stack_texts, freeze, thaw

from .helpers import fresh_logger

FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PY311 = sys.version_info >= (3, 11)


def _inner(key: str) -> Any:
    return {}[key]


def _chained() -> None:
    try:
        _inner("k")
    except KeyError as e:
        raise ValueError("bad value") from e


def _implicit() -> None:
    try:
        1 / 0
    except ZeroDivisionError:
        raise RuntimeError("while handling")


def _suppressed() -> None:
    try:
        _inner("x")
    except KeyError:
        raise LookupError("no context") from None


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def _bad_str() -> None:
    raise _BadStr


def _group() -> None:
    raise ExceptionGroup(  # noqa: F821 - 3.11+
        "many",
        [
            _raising(_chained),
            ExceptionGroup("inner", [KeyError("k"), _raising(_suppressed)]),  # noqa: F821
        ],
    )


def _raising(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except BaseException as e:
        return e
    raise AssertionError("did not raise")


def _recurse(n: int) -> None:
    if n:
        _recurse(n - 1)
    raise OSError(5, "deep")


def _two_places(first: bool) -> None:
    """Two raises in one code object: two instruction offsets, two positions."""
    if first:
        raise KeyError("the first place")
    values = {"a": 1}
    raise LookupError(
        "the second place, spanning lines",
        values["a"],
    )


def _name_error() -> None:
    missing_valu = 1  # noqa: F841 - what 3.12+'s "Did you mean" finds in the frame
    missing_value  # type: ignore[name-defined]  # noqa: F821


def _log_all(log: logging.Logger) -> None:
    """Every kind of exception record, some changed after the call."""
    log.error("first place", exc_info=_raising(lambda: _two_places(True)))
    log.error("second place", exc_info=_raising(lambda: _two_places(False)))
    log.error("name error", exc_info=_raising(_name_error))
    log.error("attribute error", exc_info=_raising(lambda: "text".uper()))  # type: ignore[attr-defined]
    log.error("chained", exc_info=_raising(_chained))
    log.error("implicit context", exc_info=_raising(_implicit))
    log.error("suppressed", exc_info=_raising(_suppressed))
    log.error("bad str", exc_info=_raising(_bad_str))
    log.error("recursion %d", 3, exc_info=_raising(lambda: _recurse(3)))
    try:
        _chained()
    except ValueError:
        log.exception("from an except block, user %s", "ann")
        log.warning("exc_info=True with extra", exc_info=True, extra={"request_id": "r-1"})
    log.exception("outside any except block")  # noqa: LOG004 - exc_info is (None, None, None)
    log.error("syntax", exc_info=_raising(lambda: compile("a b", "<src>", "exec")))
    # mutated after the call: the text is the one at the call
    err = _raising(_chained)
    log.error("mutated", exc_info=err)
    err.args = ("changed later",)
    err.__cause__ = TypeError("another cause")
    if PY311:
        noted = _raising(_chained)
        noted.add_note("a note at the call")
        noted.add_note("two\nlines")
        log.error("notes", exc_info=noted)
        noted.add_note("a note added later")
        group = _raising(_group)
        log.error("group", exc_info=group)
        group.exceptions[0].add_note("later")  # type: ignore[attr-defined]
    log.info("extra %s then", "args", extra={"status": 200, "ms": 1.5})
    log.info("extra only", extra={"status": 500})
    log.info("plain %d", 1)


async def test_the_file_is_the_file_handler_s_byte_for_byte(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.log", tmp_path / "theirs.log"
    fmt = logging.Formatter(FMT)
    sink = als.FileSink(str(ours))
    sink.setFormatter(fmt)
    ref = logging.FileHandler(str(theirs))
    ref.setFormatter(fmt)
    log = fresh_logger("t.exc.text")
    log.addHandler(ref)
    try:
        async with als.install(sink, logger=log):
            _log_all(log)
            _log_all(log)  # the same stacks again: their texts come from the cache
    finally:
        log.removeHandler(ref)
        ref.close()
    expected = theirs.read_bytes()
    assert expected.count(b"Traceback") >= 16
    assert ours.read_bytes() == expected
    assert b"changed later" not in expected and b"a note added later" not in expected


def test_an_exception_is_captured_not_rendered_at_the_call() -> None:
    captured: list[Any] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(freeze(record))

    log = fresh_logger("t.exc.capture")
    log.addHandler(Capture())
    err = _raising(_chained)
    log.error("failed", exc_info=err)
    frozen = captured[0]
    assert type(frozen) is tuple and type(frozen[EXC_TEXT]) is ExcText
    text = logging.Formatter().formatException((type(err), err, err.__traceback__))
    assert thaw(frozen).exc_text == text
    assert thaw(frozen).exc_text == text  # rendered once, kept


def test_the_capture_keeps_no_frame_alive() -> None:
    class Marker:
        pass

    def fail(marker: Marker) -> None:
        raise ValueError(str(id(marker)))

    marker = Marker()
    ref = weakref.ref(marker)
    record: logging.LogRecord | None = None
    try:
        fail(marker)
    except ValueError:
        record = logging.LogRecord("n", logging.ERROR, __file__, 1, "m", None, sys.exc_info())
    assert record is not None
    frozen = freeze(record)
    expected = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    del record, marker
    gc.collect()
    assert ref() is None  # the frames (and their locals) are gone
    assert thaw(frozen).exc_text == expected  # type: ignore[arg-type]


@pytest.mark.skipif(not PY311, reason="notes are 3.11+")
def test_a_note_that_is_not_a_string_is_rendered_at_the_call() -> None:
    err = _raising(_chained)
    err.__notes__ = [["a", "list"]]  # type: ignore[attr-defined]
    record = logging.LogRecord("n", logging.ERROR, __file__, 1, "m", None, None)
    record.exc_info = (type(err), err, err.__traceback__)
    expected = logging.Formatter().formatException(record.exc_info)
    frozen = freeze(record)
    assert type(frozen) is tuple and frozen[EXC_TEXT] == expected


async def test_extra_fields_in_the_format_are_the_file_handler_s(tmp_path: Path) -> None:
    # a format that reads an extra= field cannot take the frozen fast path: the records
    # are thawed, extras and all
    ours, theirs = tmp_path / "ours.log", tmp_path / "theirs.log"
    fmt = logging.Formatter("%(levelname)s %(request_id)s %(status)d: %(message)s")
    sink = als.FileSink(str(ours))
    sink.setFormatter(fmt)
    ref = logging.FileHandler(str(theirs))
    ref.setFormatter(fmt)
    log = fresh_logger("t.exc.extra")
    log.addHandler(ref)
    try:
        async with als.install(sink, logger=log):
            for i in range(5):
                log.info(
                    "call %d took %.1f ms", i, 1.5, extra={"request_id": f"r-{i}", "status": 200}
                )
            log.error(
                "failed", exc_info=_raising(_chained), extra={"request_id": "r-x", "status": 500}
            )
    finally:
        log.removeHandler(ref)
        ref.close()
    assert ours.read_bytes() == theirs.read_bytes()
    assert b"r-4 200: call 4 took 1.5 ms" in theirs.read_bytes()


def test_a_frozen_record_with_extras_pickles_as_the_socket_handler_s() -> None:
    import logging.handlers
    import pickle

    from aiologsinks._record import RecordBatch

    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    log = fresh_logger("t.exc.pickle")
    log.addHandler(Capture())
    log.info("call %d", 7, extra={"request_id": "r-7", "ms": 2.5})
    log.error("failed", exc_info=_raising(_chained), extra={"request_id": "r-8"})
    handler = logging.handlers.SocketHandler("127.0.0.1", 9)
    try:
        for record in seen:
            frozen = freeze(record)
            assert type(frozen) is tuple
            ours = RecordBatch([frozen]).pickle_dicts()[0]
            assert ours is not None
            theirs = pickle.loads(handler.makePickle(record)[4:])
            assert list(ours.items()) == list(theirs.items())
    finally:
        handler.close()


def _render(err: BaseException) -> tuple[str, str]:
    """(ours, the stdlib's) text of ``err`` logged now."""
    record = logging.LogRecord("n", logging.ERROR, __file__, 1, "m", None, None)
    record.exc_info = (type(err), err, err.__traceback__)
    expected = logging.Formatter().formatException(record.exc_info)
    text = thaw(freeze(record)).exc_text
    assert text is not None
    return text, expected


def _second_place() -> None:
    _two_places(False)


def test_positions_are_remembered_by_code_and_instruction() -> None:
    """The stdlib walks a code object's position table up to each frame's instruction;
    the capture remembers the position it found, and it is the stdlib's."""
    _positions.clear()
    err = _raising(_second_place)
    ours, theirs = _render(err)
    assert ours == theirs
    if sys.version_info < (3, 11):
        return  # no positions: the stdlib walks nothing
    tb = err.__traceback__
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lasti))
        tb = tb.tb_next
    assert {(id(code), lasti) for code, lasti in frames} == set(_positions)
    get_position = traceback._get_code_position  # type: ignore[attr-defined]
    for code, lasti in frames:
        assert _positions[id(code), lasti] == (code, get_position(code, lasti))
    remembered = dict(_positions)
    assert _render(_raising(_second_place)) == (ours, theirs)
    assert _positions == remembered  # the same places: nothing new to walk


@pytest.mark.parametrize("limit", [0, 1, -1])
def test_the_traceback_limit_applies_as_in_the_stdlib(monkeypatch: Any, limit: int) -> None:
    monkeypatch.setattr(sys, "tracebacklimit", limit, raising=False)
    ours, theirs = _render(_raising(lambda: _recurse(3)))
    assert ours == theirs


def test_a_repeated_stack_s_text_is_remembered() -> None:
    _stack_texts.clear()
    first = _render(_raising(_chained))
    assert len(_stack_texts) == 2  # the ValueError's stack and its cause's
    again = _render(_raising(_chained))
    assert len(_stack_texts) == 2
    assert first[0] == first[1] and again[0] == again[1]


def test_a_remembered_stack_shows_the_source_as_it_is_now(tmp_path: Path) -> None:
    """The stdlib reads a frame's source line when it formats: after the file changed,
    the same code position shows the new line, and so does ours."""
    path = tmp_path / "edited_module.py"
    path.write_text("def fail():\n    raise KeyError('first version of the line')\n")
    spec = importlib.util.spec_from_file_location("edited_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = _render(_raising(module.fail))
    assert before[0] == before[1] and "first version" in before[0]
    path.write_text("def fail():\n    raise KeyError('the line as edited, longer than before')\n")
    after = _render(_raising(module.fail))
    assert after[0] == after[1] and "as edited" in after[0]
