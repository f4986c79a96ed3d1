"""The compiled JSON encoding writes floats itself (aiologsinks/_shortest.h): the text
must be ``repr(x)`` for every finite double, the shortest digits that read back as x,
laid out as repr lays them out, and a record's JSON stays what ``json.dumps`` writes."""

from __future__ import annotations

import json
import random
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiologsinks import _record
from aiologsinks.sinks import http as http_module

from .helpers import need_compiled
from .test_record import logged

HEADER = Path(__file__).resolve().parent.parent / "aiologsinks" / "_shortest.h"


@pytest.fixture
def float_repr() -> Callable[[float], str]:
    need_compiled(http_module._json_run is not None)
    from aiologsinks import _speedups

    return _speedups.float_repr


def _pow10_entry(k: int) -> tuple[int, int]:
    """floor(10**k * 2**(127 - floor(log2(10**k)))) + 1, split into 64-bit halves."""
    floor_log2 = (10**k).bit_length() - 1 if k >= 0 else -((10**-k).bit_length())
    shift = 127 - floor_log2
    if k >= 0:
        g = 10**k << shift if shift >= 0 else 10**k >> -shift
    else:
        g = (1 << shift) // 10**-k
    g += 1
    return g >> 64, g & (2**64 - 1)


def test_the_power_of_ten_table_is_the_formula() -> None:
    row = r"\{0x([0-9A-F]{16})U, 0x([0-9A-F]{16})U\}, /\* (-?\d+) \*/"
    rows = re.findall(row, HEADER.read_text())
    assert [int(k) for _, _, k in rows] == list(range(-292, 327))
    for hi, lo, k in rows:
        assert (int(hi, 16), int(lo, 16)) == _pow10_entry(int(k)), k
        # the C code's floor(log2(10**k)) and floor(log10(2**q)) shortcuts
        exact = (10 ** int(k)).bit_length() - 1 if int(k) >= 0 else -((10 ** -int(k)).bit_length())
        assert (int(k) * 1741647) >> 19 == exact
    for q in range(-1074, 972):
        assert (q * 1262611) >> 22 == _floor_log10_pow2(q), q


def _floor_log10_pow2(q: int) -> int:
    """floor(log10(2**q)), exactly."""
    if q >= 0:
        return len(str(2**q)) - 1
    n, k = 2**-q, 0  # 2**q = 1/n; the largest k with 10**k <= 1/n, i.e. 10**-k >= n
    while 10**-k < n:
        k -= 1
    return k


def _from_bits(bits: int) -> float:
    return float(struct.unpack("<d", bits.to_bytes(8, "little"))[0])


def _edges() -> Iterator[float]:
    for e in range(-1074, 1024):
        x = 2.0**e
        yield from (x, x * (1 + 2**-52), x * (1 - 2**-53))
    for k in range(-325, 309):
        yield float(f"1e{k}")
        yield float(f"9.999999999999999e{k}")
    for i in range(2000):
        yield _from_bits(i)  # the smallest subnormals
        yield _from_bits(0x0010000000000000 + i - 1000)  # around the smallest normal
        yield _from_bits(0x7FEFFFFFFFFFFFFF - i)  # the largest finite doubles
    for n in range(1, 64):
        yield float(2**n - 1)
        yield float(10**n if n < 23 else 10.0**n)
    # where repr moves between positional and scientific text
    yield from (1e16, 9999999999999998.0, 1e15, 0.0001, 0.00009999999999999999, 1e-05)
    yield from (0.0, 1.0, 0.1, 0.5, 123.456, 1e23, 5e-324, 1.7976931348623157e308)


def test_edge_values_are_written_as_repr_writes_them(float_repr: Callable[[float], str]) -> None:
    values = [x for e in _edges() for x in (e, -e)]
    wrong = [(repr(x), float_repr(x)) for x in values if float_repr(x) != repr(x)]
    assert wrong == []


def test_random_doubles_are_written_as_repr_writes_them(float_repr: Callable[[float], str]) -> None:
    rnd = random.Random(20261203)
    values: list[float] = []
    while len(values) < 200_000:
        x = _from_bits(rnd.getrandbits(64))
        if x - x == 0:  # finite
            values.append(x)
    # what records hold: time stamps, milliseconds, durations, counters
    values += [1.7e9 + rnd.random() * 1e8 for _ in range(50_000)]
    values += [rnd.random() * 1000 for _ in range(50_000)]
    values += [float(rnd.getrandbits(rnd.randint(1, 70))) for _ in range(20_000)]
    wrong = [(repr(x), float_repr(x)) for x in values if float_repr(x) != repr(x)]
    assert wrong == []


@settings(max_examples=2000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_float_is_written_as_repr_writes_it(x: float) -> None:
    need_compiled(http_module._json_run is not None)
    from aiologsinks import _speedups

    assert _speedups.float_repr(x) == repr(x)
    assert float(_speedups.float_repr(x)) == x


def test_nan_and_infinities_are_left_to_repr(float_repr: Callable[[float], str]) -> None:
    for x in (float("nan"), float("inf"), float("-inf")):
        assert float_repr(x) == repr(x)
    with pytest.raises(TypeError):
        float_repr("1.0")  # type: ignore[arg-type]


def test_records_full_of_floats_encode_as_json_dumps_encodes_them() -> None:
    run = http_module._json_run
    need_compiled(run is not None)
    rnd = random.Random(7)
    records = []
    for i in range(200):
        extra = {f"f{j}": _from_bits(rnd.getrandbits(64)) for j in range(8)}
        extra = {k: v for k, v in extra.items() if v - v == 0}
        extra["t"] = 1.7e9 + rnd.random() * 1e8
        took, ratio = rnd.random() * 100, rnd.random()
        records.append(logged("took %s ms, ratio %r", took, ratio, extra=extra))
    items = [_record.freeze(r) for r in records]
    stop, chunk = run(items, 0, http_module._JSON_KEYS, http_module._encode_ascii)
    assert stop == len(items)  # all of them took the compiled path
    reference = ",".join(
        json.dumps(_record.frozen_dict(i), default=str, separators=(",", ":")) for i in items
    )
    assert chunk == reference.encode()
