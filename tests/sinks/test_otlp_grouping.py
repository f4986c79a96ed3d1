"""OTLPSink groups a batch's encoded records by scope within ``max_batch_bytes`` and frames
them as ``log_records`` fields in C where the accelerator is built
(``_speedups.otlp_group``, ``otlp_frames``): the request bodies and the number of
records each holds must be those of the Python loops, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiologsinks as als
from aiologsinks import _otlp_map
from aiologsinks.sinks import otlp as otlp_module

from ..helpers import need_compiled

CHUNKS = st.lists(
    st.tuples(
        st.none(),
        st.sampled_from(["app", "app.db", "é.scope", ""]),
        st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=300)),
    ),
    min_size=1,
    max_size=30,
)


def _compiled() -> None:
    need_compiled(otlp_module._otlp_group is not None and _otlp_map._otlp_frames is not None)


@settings(max_examples=300, deadline=None)
@given(chunk=CHUNKS, limit=st.integers(0, 3000))
def test_bodies_and_counts_are_the_python_loops(chunk: list[Any], limit: int) -> None:
    _compiled()
    sink = als.OTLPSink(endpoint="http://127.0.0.1:9/v1/logs", max_batch_bytes=max(limit, 1))
    compiled = sink._body(chunk)
    saved = (otlp_module._otlp_group, _otlp_map._otlp_frames)
    otlp_module._otlp_group, _otlp_map._otlp_frames = None, None
    try:
        python = sink._body(chunk)
    finally:
        otlp_module._otlp_group, _otlp_map._otlp_frames = saved
    assert compiled == python
    assert compiled[1] >= 1  # a record alone always goes (the sink refused larger ones)


def test_frames_are_log_records_fields() -> None:
    _compiled()
    logs = [b"", b"x" * 127, b"y" * 128, b"z" * 20000]
    assert _otlp_map._otlp_frames is not None
    assert _otlp_map._otlp_frames(logs) == (
        b"\x12\x00" + b"\x12\x7f" + b"x" * 127 + b"\x12\x80\x01" + b"y" * 128
        + b"\x12\xa0\x9c\x01" + b"z" * 20000
    )  # fmt: skip
    assert _otlp_map._otlp_frames([b"a", bytearray(b"b")]) is None  # left to the join
    assert _otlp_map._log_records([b"a", bytearray(b"b")]) == b"\x12\x01a\x12\x01b"


def test_what_is_not_an_encoded_entry_is_left_to_python() -> None:
    _compiled()
    assert otlp_module._otlp_group is not None
    assert otlp_module._otlp_group([(None, "s", bytearray(b"x"))], 100) is None
    assert otlp_module._otlp_group([(None, "s")], 100) is None
    with pytest.raises(TypeError):
        otlp_module._otlp_group((), 100)
