"""SysLogSink frames a dispatcher's formatted batch in C where the accelerator is built
(``_speedups.syslog_run``): each frame must be the bytes the Python framing gives for
``(head + text).encode()``, and it must stop, for the Python loop, at every record it
does not take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiologsinks import _wire
from aiologsinks._record import LEVELNAME, freeze
from aiologsinks.sinks import syslog as syslog_module

from ..helpers import need_compiled
from ..test_record import logged

FRAMES: list[Callable[[bytes], bytes]] = [
    _wire.octet_frame,
    _wire.lf_frame,
    _wire.nul_terminated,
    _wire.unframed,
]


def _run() -> Any:
    need_compiled(syslog_module._syslog_run is not None)
    return syslog_module._syslog_run


def _item(level: str) -> Any:
    item = freeze(logged("m"))
    assert type(item) is tuple
    return (*item[:LEVELNAME], level, *item[LEVELNAME + 1 :])


def test_each_framing_is_known_by_its_python_function() -> None:
    assert [syslog_module._FRAMINGS[f] for f in FRAMES] == [0, 1, 2, 3]


@settings(max_examples=400, deadline=None)
@given(
    texts=st.lists(
        st.one_of(
            st.text(max_size=12),
            st.text(alphabet="ab\n\x00", max_size=6),  # what LF framing strips
            st.sampled_from(["", "\n", "\x00\n", "é\n", "x\ud800"]),
        ),
        max_size=8,
    ),
    levels=st.lists(st.sampled_from(["INFO", "WARNING", "ERROR", "DEBUG"]), min_size=8),
    heads=st.dictionaries(
        st.sampled_from(["INFO", "WARNING", "ERROR"]),
        st.sampled_from(["<14>", "<11>app: ", "", "<9>\n", "<8>\x00", "<13>é"]),
    ),
    framing=st.integers(0, 3),
)
def test_frames_are_the_python_framings_bytes_up_to_where_it_stops(
    texts: list[str], levels: list[str], heads: dict[str, str], framing: int
) -> None:
    run = _run()
    items = [_item(level) for level in levels[: len(texts)]]
    frame = FRAMES[framing]
    start = 0
    while start <= len(texts):
        stop, frames = run(texts, items, start, heads, LEVELNAME, framing)
        expected = [frame((heads[levels[i]] + texts[i]).encode()) for i in range(start, stop)]
        assert frames == expected
        if stop == len(texts):
            break
        # it stops only where the Python loop has something to do
        level = levels[stop]
        assert level not in heads or "\ud800" in texts[stop] + heads[level]
        start = stop + 1


def test_what_is_not_a_frozen_record_with_a_str_level_is_left_to_python() -> None:
    run = _run()
    heads = {"INFO": "<14>"}
    items: list[Any] = [_item("INFO"), logged("a LogRecord"), _item("INFO")]
    assert run(["a", "b", "c"], items, 0, heads, LEVELNAME, 0) == (1, [b"5 <14>a"])
    assert run(["a", "b", "c"], items, 2, heads, LEVELNAME, 0) == (3, [b"5 <14>c"])
    assert run(["a", None, "c"], [_item("INFO")] * 3, 0, heads, LEVELNAME, 3) == (1, [b"<14>a"])
    odd_level = (*_item("INFO")[:LEVELNAME], 20, *_item("INFO")[LEVELNAME + 1 :])
    assert run(["a"], [odd_level], 0, {20: "<14>"}, LEVELNAME, 3) == (0, [])
