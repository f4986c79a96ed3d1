"""The optional compiled accelerator: the same frozen tuples as the pure-Python path,
untracked by the GC from the start, and a pure-Python path that stays complete."""

from __future__ import annotations

import gc
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiologsinks as als
from aiologsinks import _record, _trace
from aiologsinks._record import FIELDS, freeze

from .conftest import require
from .helpers import ListSink
from .test_record import logged

ROOT = Path(__file__).resolve().parent.parent
PURE = bool(os.environ.get("AIOLOGSINKS_PURE_PYTHON"))


def plain(d: dict[str, Any]) -> Any:
    if PURE:
        pytest.skip("AIOLOGSINKS_PURE_PYTHON is set: the compiled path is off")
    require(_record._freeze_plain is not None, "the compiled accelerator (pip install -e .)")
    assert _record._freeze_plain is not None
    return _record._freeze_plain(d)


def test_the_accelerator_is_built_and_used_unless_turned_off() -> None:
    if PURE:
        assert not _record.ACCELERATED and freeze is _record._freeze_pure
        return
    # CI builds it (gcc and the headers are there): a missing one there is a broken build
    require(_record.ACCELERATED, "the compiled accelerator (pip install -e .)")
    assert freeze is _record._freeze_accelerated


def test_the_common_record_takes_the_compiled_path() -> None:
    record = logged("request %d handled in %.3f ms by %s", 7, 1.5, "ann")
    frozen = plain(record.__dict__)
    assert frozen is not None and frozen == _record._freeze_pure(record)
    assert not gc.is_tracked(frozen)  # no collection has to look at it
    bare = logged("no arguments")
    assert plain(bare.__dict__) == _record._freeze_pure(bare)
    for kwargs in ({"extra": {"user": "ann", "status": 200}}, {"extra": {"user": "bob"}}):
        extra = logged("with extra= %d", 1, **kwargs)  # type: ignore[arg-type]
        frozen = plain(extra.__dict__)
        assert frozen is not None and frozen == _record._freeze_pure(extra)
        assert not gc.is_tracked(frozen)
    again = plain(logged("again", extra={"user": "eve"}).__dict__)
    assert again[-1] is frozen[-1]  # the same names: one tuple, not one per record


def test_what_the_compiled_path_leaves_to_the_pure_one() -> None:
    left = [
        logged("mutable %s", [1]),  # merged at the call
        logged("extra", extra={"k": [1]}),  # an extra= value that can change
        logged("many", extra={f"k{i}": i for i in range(17)}),  # more extra= than it takes
        logged("%(a)s", {"a": 1}),  # a mapping as the arguments
    ]
    try:
        raise ValueError("x")
    except ValueError:
        left.append(logged("failed", exc_info=True))
    reordered = logged("reordered %d", 1)
    reordered.__dict__["lineno"] = reordered.__dict__.pop("lineno")
    left.append(reordered)
    formatted = logged("formatted %s", "once", extra={"k": 1})
    logging.Formatter("%(asctime)s %(message)s").format(formatted)  # adds message, asctime
    left.append(formatted)
    odd = logged("not str")
    odd.msg = 42
    left.append(odd)
    for record in left:
        assert plain(record.__dict__) is None, record.__dict__
    assert plain({"not": "a record"}) is None
    assert plain(dict.fromkeys(FIELDS)) is None  # exc_info None, msg not a str


def test_a_tuple_holding_a_tracked_value_stays_tracked() -> None:
    record = logged("changed %d", 1)
    record.threadName = ["a list"]  # type: ignore[assignment]  # a filter may do that
    frozen = plain(record.__dict__)
    assert frozen == _record._freeze_pure(record)
    assert gc.is_tracked(frozen)


ATOMS = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.booleans(),
    st.none(),
)
ARGS = st.lists(st.one_of(ATOMS, st.lists(ATOMS, max_size=2)), max_size=4)


@settings(max_examples=200, deadline=None)
@given(args=ARGS, extra=st.booleans(), stack=st.booleans())
def test_the_compiled_path_returns_what_the_pure_one_does(
    args: list[Any], extra: bool, stack: bool
) -> None:
    if PURE:
        pytest.skip("AIOLOGSINKS_PURE_PYTHON is set: the compiled path is off")
    require(_record.ACCELERATED, "the compiled accelerator (pip install -e .)")
    msg = " ".join(["%r"] * len(args)) or "no args"
    kwargs: dict[str, Any] = {"stack_info": stack}
    if extra:
        kwargs["extra"] = {"request_id": "r-1"}
    record = logged(msg, *args, **kwargs)
    fast, pure = _record._freeze_accelerated(record), _record._freeze_pure(record)
    assert type(fast) is type(pure)
    if isinstance(pure, tuple):
        assert fast == pure
    else:
        assert isinstance(fast, logging.LogRecord)
        assert fast.__dict__ == pure.__dict__


def test_consecutive_records_share_their_repeating_values() -> None:
    first, second = logged("first %d", 1), logged("second %d", 2)
    a, b = plain(first.__dict__), plain(second.__dict__)
    assert a == _record._freeze_pure(first) and b == _record._freeze_pure(second)
    for name in ("thread", "process"):
        i = FIELDS.index(name)
        assert a[i] == getattr(second, name) and a[i] is b[i]  # one object, not two
    i = FIELDS.index("msecs")
    zero, negative = logged("zero"), logged("negative zero")
    zero.msecs, negative.msecs = 0.0, -0.0
    assert plain(zero.__dict__)[i] is not plain(negative.__dict__)[i]
    assert math.copysign(1, plain(negative.__dict__)[i]) == -1  # bit for bit, not ==


def compiled_handle(handler: logging.Handler) -> bool:
    return type(vars(handler).get("handle")).__name__ == "Shim"


def test_a_dispatchers_handler_gets_the_compiled_handle() -> None:
    dispatcher = als.Dispatcher(ListSink())
    if PURE:
        assert not compiled_handle(dispatcher.handler)
        return
    require(_record.ACCELERATED, "the compiled accelerator (pip install -e .)")
    assert compiled_handle(dispatcher.handler)
    assert "compiled QueueHandler.handle" in repr(dispatcher.handler.handle)

    class OwnHandle(als.QueueHandler):
        def handle(self, record: logging.LogRecord) -> Any:
            return super().handle(record)

    class OwnPrepare(als.QueueHandler):
        def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
            return record

    class NotADispatcher:
        def submit(self, record: object) -> None:
            pass

    # what it would skip is the subclass's own, or it is not a Dispatcher's queue
    assert not compiled_handle(OwnHandle(dispatcher))
    assert not compiled_handle(OwnPrepare(dispatcher))
    assert not compiled_handle(als.QueueHandler(NotADispatcher()))


class Mark(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "drop" not in str(record.msg)


def kinds() -> list[tuple[str, Callable[[], logging.LogRecord]]]:
    def failing() -> logging.LogRecord:
        try:
            raise KeyError("k")
        except KeyError:
            return logged("failed %s", "job", exc_info=True)

    class Sub(logging.LogRecord):
        pass

    return [
        ("deferred", lambda: logged("request %d took %.3f ms", 7, 1.5)),
        ("no arguments", lambda: logged("no arguments")),
        ("mutable", lambda: logged("list %s", [1, 2])),
        ("extra", lambda: logged("with %s", "extra", extra={"user": "ann"})),
        ("exception", failing),
        ("stack", lambda: logged("stack", stack_info=True)),
        ("subclass", lambda: Sub("n", logging.INFO, __file__, 1, "sub %s", ("x",), None)),
        ("filtered", lambda: logged("drop %d", 1)),
    ]


def queued(item: object) -> object:
    if isinstance(item, logging.LogRecord):
        return item.__dict__
    assert isinstance(item, tuple)
    return tuple(v.text() if isinstance(v, _record.ExcText) else v for v in item)


@pytest.mark.parametrize("context", ["none", "bound fields", "trace hook", "closed"])
@pytest.mark.parametrize("kind", [name for name, _ in kinds()])
def test_the_compiled_handle_queues_what_the_python_one_does(
    kind: str, context: str, monkeypatch: Any
) -> None:
    make = dict(kinds())[kind]
    dispatchers = [als.Dispatcher(ListSink()), als.Dispatcher(ListSink())]
    for d in dispatchers:
        d._wake_pending = True  # never started: the records stay in its queue, compared
        d.handler.addFilter(Mark())
        if context == "closed":
            d._accepting = False  # as close leaves it: records go to the fallback
            monkeypatch.setattr(d, "_to_fallback", d._items.append)
    if context == "trace hook":
        monkeypatch.setattr(_trace, "hook", lambda record: setattr(record, "span", "s-1"))
    fast, python = dispatchers[0].handler, dispatchers[1].handler
    for filtered in (True, False):
        if not filtered:  # without a filter, the record takes the compiled path
            fast.filters.clear()
            python.filters.clear()
        record, twin = make(), make()
        twin.__dict__.update(record.__dict__)
        with als.context(request_id="r-1") if context == "bound fields" else nullcontext():
            assert fast.handle(record) is not None
            assert als.QueueHandler.handle(python, twin) is not None
        got = [queued(i) for i in dispatchers[0]._items]
        want = [queued(i) for i in dispatchers[1]._items]
        assert got == want, (kind, context, filtered)
    for d in dispatchers:
        d._items.clear()


def test_with_a_trace_hook_set_the_compiled_handle_still_takes_plain_records(
    monkeypatch: Any,
) -> None:
    """OTLPSink and JSONFormatter set the trace hook for every record: the compiled
    handle calls it itself (no Python frame between the caller and the hook) and
    queues the record frozen, span ids included."""
    if PURE:
        pytest.skip("AIOLOGSINKS_PURE_PYTHON is set: the compiled path is off")
    require(_record.ACCELERATED, "the compiled accelerator (pip install -e .)")
    callers: list[str] = []

    def hook(record: logging.LogRecord) -> None:
        callers.append(sys._getframe(1).f_code.co_name)
        record.otelSpanID = "00f067aa0ba902b7"

    monkeypatch.setattr(_trace, "hook", hook)
    d = als.Dispatcher(ListSink())
    d._wake_pending = True  # never started: the record stays in its queue
    record = logged("request %s", "r-1")
    assert d.handler.handle(record) is record
    assert callers == [sys._getframe().f_code.co_name]  # once, from the C call
    (item,) = d._items
    assert type(item) is tuple and "00f067aa0ba902b7" in item


def test_the_compiled_handle_skips_the_trace_hook_only_where_its_gate_says_it_does_nothing(
    monkeypatch: Any,
) -> None:
    """Outside any trace the OpenTelemetry context is empty and _trace's hook returns at
    once: the compiled handle reads that context itself (``_trace.gate``) and does not
    call the hook then; in a non-empty context, or for a hook the gate was not made
    for, it calls the hook, and with a real span the ids still travel."""
    if PURE:
        pytest.skip("AIOLOGSINKS_PURE_PYTHON is set: the compiled path is off")
    require(_record.ACCELERATED, "the compiled accelerator (pip install -e .)")
    from contextvars import ContextVar, copy_context

    calls: list[str] = []

    def hook(record: logging.LogRecord) -> None:
        calls.append(record.getMessage())

    def other(record: logging.LogRecord) -> None:
        calls.append("other: " + record.getMessage())

    var: ContextVar[dict[str, Any]] = ContextVar("otel-context", default={})
    monkeypatch.setattr(_trace, "gate", var)
    monkeypatch.setattr(_trace, "gated", hook)
    monkeypatch.setattr(_trace, "hook", hook)
    d = als.Dispatcher(ListSink())
    d._wake_pending = True  # never started: the records stay in its queue
    handle = d.handler.handle

    handle(logged("outside"))
    copy_context().run(lambda: (var.set({"span": 1}), handle(logged("inside")))[1])
    handle(logged("outside again"))
    monkeypatch.setattr(_trace, "hook", other)  # not the hook the gate was made for
    handle(logged("someone else's hook"))
    monkeypatch.setattr(_trace, "gate", None)
    monkeypatch.setattr(_trace, "hook", hook)
    handle(logged("no gate"))
    assert calls == ["inside", "other: someone else's hook", "no gate"]
    assert len(d._items) == 5 and all(type(item) is tuple for item in d._items)

    # the real hook and the API's own context: ids inside a span only
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.undo()
    assert _trace.enable() and _trace.hook is _trace.gated and _trace.gate is not None
    d._items.clear()
    tracer = TracerProvider().get_tracer("tests")
    handle(logged("before"))
    with tracer.start_as_current_span("work") as span:
        handle(logged("in the span"))
    handle(logged("after"))
    span_id = f"{span.get_span_context().span_id:016x}"
    found = [span_id in item for item in d._items]
    assert found == [False, True, False]


@pytest.mark.skipif(PURE, reason="this run is the pure-Python one already")
def test_the_pure_python_path_passes_the_record_tests() -> None:
    # the accelerator is optional: without it (no compiler) everything still works
    env = {**os.environ, "AIOLOGSINKS_PURE_PYTHON": "1", "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_ADDOPTS", None)
    tests = [
        "tests/test_record.py",
        "tests/test_speedups.py",
        "tests/test_exception_text.py",
        "tests/test_shim.py",
        "tests/sinks/test_frozen_format.py",
        "tests/sinks/test_direct_writes.py",
        "tests/sinks/test_http_json_frozen.py",
        "tests/sinks/test_otlp_frozen_run.py",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
