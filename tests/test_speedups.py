"""The optional compiled accelerator: the same frozen tuples as the pure-Python path,
untracked by the GC from the start, and a pure-Python path that stays complete."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiologsinks import _record
from aiologsinks._record import FIELDS, freeze

from .conftest import require
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


def test_what_the_compiled_path_leaves_to_the_pure_one() -> None:
    left = [
        logged("mutable %s", [1]),  # merged at the call
        logged("extra", extra={"k": 1}),  # extra= attributes
        logged("%(a)s", {"a": 1}),  # a mapping as the arguments
    ]
    try:
        raise ValueError("x")
    except ValueError:
        left.append(logged("failed", exc_info=True))
    reordered = logged("reordered %d", 1)
    reordered.__dict__["lineno"] = reordered.__dict__.pop("lineno")
    left.append(reordered)
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
