"""The compiled line formatting does ``fmt % values`` itself for the common lines (ASCII
text, %s, %d, %f): where it takes a line, the text must be exactly what ``%`` gives;
everything else is left to ``%`` (``percent_format`` returns None)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from aiologsinks import _fastformat

from .helpers import VALUES, need_compiled

Format = Callable[[str, tuple[Any, ...]], "str | None"]

SPECS = ["%s", "%d", "%i", "%03d", "%5d", "%05d", "%0d", "%f", "%.3f", "%.0f", "%.12f"]
#: conversions the compiled formatting leaves to %
OTHER_SPECS = ["%r", "%-5s", "%x", "%10s", "%.2s", "%+d", "% d", "%e", "%g", "%*d", "%c"]


def _percent_format() -> Format:
    need_compiled(_fastformat._format_run is not None)
    from aiologsinks import _speedups

    return _speedups.percent_format


@pytest.fixture
def percent_format() -> Format:
    return _percent_format()


def test_a_service_line_is_taken_and_matches(percent_format: Format) -> None:
    fmt = "2026-12-03 16:00:55,%03d %s %s: request finished: status=%d in %.3f ms\n"
    values = (5.0, "INFO", "svc.app", 200, 12.3456)
    assert percent_format(fmt, values) == fmt % values
    fmt = "%s,%03d %s %s: loaded user profile for %s (%s, %s)"
    values = ("2026-12-03 16:00:55", 999.0, "WARNING", "a.b", 7, -2.5e-07, 10**18)
    assert percent_format(fmt, values) == fmt % values


@pytest.mark.parametrize(
    ("fmt", "values"),
    [
        ("%s", ("é",)),  # not ASCII
        ("%s", (2**70,)),  # beyond 64 bits
        ("%d", (True,)),  # an int subclass
        ("%d", (math.nan,)),  # % raises
        ("%f", (math.inf,)),
        ("%s %s", ("one",)),  # too few values: % raises
        ("%s", ("one", "two")),  # too many: % raises
        ("%(name)s", ("x",)),
        ("trailing %", ()),
        ("%s", ("x" * 5000,)),  # longer than the compiled buffer
    ],
)
def test_what_is_left_to_percent(percent_format: Format, fmt: str, values: tuple[Any, ...]) -> None:
    assert percent_format(fmt, values) is None


def _literal() -> st.SearchStrategy[str]:
    return st.text(alphabet=st.characters(codec="ascii", exclude_characters="%"), max_size=6)


@settings(max_examples=1500, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            _literal(),
            st.one_of(st.sampled_from(SPECS), st.sampled_from([*OTHER_SPECS, "%%"])),
        ),
        max_size=5,
    ),
    tail=_literal(),
    values=st.lists(
        st.one_of(
            VALUES,
            st.text(alphabet=st.characters(codec="ascii"), max_size=8),
            st.integers(-(2**64), 2**64),
            st.floats(-1e20, 1e20),
        ),
        max_size=6,
    ),
)
@example(parts=[("a", "%05d"), ("b", "%5d")], tail="", values=[-12, -12.9])
@example(parts=[("", "%d")], tail="", values=[-(2**63)])
@example(parts=[("", "%d")], tail="", values=[2**63 - 1])
@example(parts=[("", "%.0f"), ("", "%.3f")], tail="", values=[0.5, 2.0005])
def test_a_taken_line_is_what_percent_gives(
    parts: list[tuple[str, str]], tail: str, values: list[Any]
) -> None:
    percent_format = _percent_format()
    fmt = "".join(literal + spec for literal, spec in parts) + tail
    args = tuple(values)
    # a value taken as a "*" width pads to that many characters: % would allocate
    # gigabytes for a large one (the compiled path leaves every "*" to % anyway)
    assume("*" not in fmt or all(type(v) is not int or abs(v) < 10_000 for v in values))
    fast = percent_format(fmt, args)
    try:
        expected: str | None = fmt % args
    except (TypeError, ValueError, OverflowError):
        expected = None
    if fast is not None:
        assert fast == expected
        assert type(fast) is str and fast.isascii()


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    "value", [0, -7, 123456789, 2**63 - 1, -(2**63), 0.0, -0.5, 999.9999, 1.5e17]
)
def test_each_supported_conversion_is_taken(percent_format: Format, spec: str, value: Any) -> None:
    if spec.endswith("f") and type(value) is int:
        value = float(value)  # %f of an int is left to %
    fmt = f"<{spec}>"
    assert percent_format(fmt, (value,)) == fmt % (value,)


def test_fields_picks_as_itemgetter_does_and_always_gives_a_tuple() -> None:
    need_compiled(_fastformat._format_run is not None)
    from aiologsinks._speedups import Fields

    record = ("a", 1, 2.5, None)
    assert Fields([2, 0])(record) == operator.itemgetter(2, 0)(record)
    assert Fields([1])(record) == (1,)  # itemgetter(1) would give 1
    assert Fields([])(record) == ()
    assert Fields([0, 0])(["x", "y"]) == ("x", "x")  # any sequence
    with pytest.raises(IndexError):
        Fields([4])(record)
    with pytest.raises(ValueError, match=">= 0"):
        Fields([-1])
    with pytest.raises(ValueError, match="at most 64"):
        Fields(range(65))
    assert repr(Fields([3, 1])) == "Fields([3, 1])"


def test_frozen_formats_read_values_through_fields() -> None:
    need_compiled(_fastformat._format_run is not None)
    from aiologsinks._speedups import Fields

    assert type(_fastformat._getter([1, 2])) is Fields
