"""HTTPSink(json_batch=True) encodes a dispatcher's frozen records without thawing them
(in C where the accelerator is built): the bytes must be those ``json.dumps`` writes
for each record's ``__dict__``, whatever the values, and a record the fast path does
not take is encoded by the Python path in its place."""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import aiologsinks as als
from aiologsinks import _record, _wire
from aiologsinks._record import freeze, frozen_dict
from aiologsinks.sinks import http as http_module

from ..helpers import VALUES, fresh_logger, need_compiled
from ..peers.http import http_peer
from ..test_record import logged


def _sink() -> tuple[als.HTTPSink, list[logging.LogRecord]]:
    sink = als.HTTPSink("127.0.0.1:9", "/log", "POST", json_batch=True)
    errors: list[logging.LogRecord] = []
    sink.handleError = errors.append  # type: ignore[method-assign]
    return sink, errors


def _reference(items: list[Any]) -> bytes:
    """What the sink sent before it knew frozen records: json.dumps of each __dict__."""
    return _wire.json_items(frozen_dict(i) if type(i) is tuple else i.__dict__ for i in items)


def _frozen(*records: logging.LogRecord) -> list[Any]:
    return [freeze(r) for r in records]


def test_the_common_records_are_encoded_as_json_dumps_encodes_their_dict() -> None:
    items = _frozen(
        logged("request started: %s %s client=%s", "GET", "/work", "127.0.0.1:5555"),
        logged("loaded user profile", extra={"user_id": 7, "tenant": "acme"}),
        logged("request finished: status=%d in %.3f ms", 200, 0.123),
    )
    assert all(type(i) is tuple for i in items)
    sink, errors = _sink()
    body = sink._json_piece(items)
    assert body == _reference(items)
    decoded = json.loads(b"[" + body + b"]")
    assert [d["msg"] for d in decoded] == [
        "request started: GET /work client=127.0.0.1:5555",
        "loaded user profile",
        "request finished: status=200 in 0.123 ms",
    ]
    assert decoded[1]["user_id"] == 7 and decoded[1]["args"] == []
    assert errors == []


def test_the_compiled_run_stops_where_the_python_path_takes_over() -> None:
    run = http_module._json_run
    need_compiled(run is not None)
    items = _frozen(logged("one %d", 1), logged("bad %d", "x"), logged("three"))
    stop, chunk = run(items, 0, http_module._JSON_KEYS, http_module._encode_ascii)
    assert stop == 1  # "bad %d" % ("x",) does not merge: the Python path keeps it as is
    assert chunk == _reference(items[:1])
    stop, chunk = run(items, 2, http_module._JSON_KEYS, http_module._encode_ascii)
    assert (stop, chunk) == (3, _reference(items[2:]))


def test_odd_values_exceptions_and_plain_records_are_encoded_by_the_python_path() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        with_exception = logged("failed %d", 3, exc_info=True)
    items = [
        *_frozen(
            logged("bytes", extra={"raw": b"\x00\xff"}),  # default=str
            with_exception,  # its traceback is rendered where it is thawed
            logged("stack", stack_info=True),
            logged("floats", extra={"nan": math.nan, "inf": -math.inf, "zero": -0.0}),
            logged("big %d", 2**80),
            logged("text %s", 'quote " backslash \\ newline \n tab \t é \u2028 \ud800'),
        ),
        logging.makeLogRecord({"msg": "a LogRecord among them", "custom": [1, 2]}),
        logging.makeLogRecord({"msg": "and one more after it"}),
        *_frozen(logged("frozen again")),
    ]
    sink, errors = _sink()
    assert sink._json_piece(items) == _reference(items)
    assert errors == []


def test_a_record_json_cannot_hold_goes_to_handle_error_alone() -> None:
    class Unrepresentable:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    bad = logging.makeLogRecord({"msg": "bad", "thing": Unrepresentable()})
    items = [*_frozen(logged("before")), bad, *_frozen(logged("after"))]
    sink, errors = _sink()
    decoded = json.loads(b"[" + sink._json_piece(items) + b"]")
    assert [d["msg"] for d in decoded] == ["before", "after"]
    assert errors == [bad]


def test_an_int_past_the_digit_limit_goes_to_handle_error_alone() -> None:
    # str() of such an int raises ValueError: the compiled run leaves the record to
    # the Python path, which reports it, instead of failing the whole chunk
    items = _frozen(logged("before"), logged("big", extra={"big": 10**5000}), logged("after"))
    sink, errors = _sink()
    decoded = json.loads(b"[" + sink._json_piece(items) + b"]")
    if sys.get_int_max_str_digits() == 0:  # no limit set in this interpreter
        assert [d["msg"] for d in decoded] == ["before", "big", "after"]
        assert errors == []
    else:
        assert [d["msg"] for d in decoded] == ["before", "after"]
        assert [e.getMessage() for e in errors] == ["big"]


def test_an_overridden_map_log_record_is_always_called() -> None:
    class Mapped(als.HTTPSink):
        def mapLogRecord(self, record: logging.LogRecord) -> dict[str, Any]:
            return {"m": record.getMessage()}

    sink = Mapped("127.0.0.1:9", "/log", "POST", json_batch=True)
    items = _frozen(logged("a %d", 1), logged("b"))
    assert sink._json_piece(items) == b'{"m":"a 1"},{"m":"b"}'
    plain, _ = _sink()
    plain.mapLogRecord = lambda record: {"n": record.getMessage()}  # type: ignore[method-assign]
    assert plain._json_piece(items) == b'{"n":"a 1"},{"n":"b"}'


@settings(max_examples=300, deadline=None)
@given(
    args=st.lists(VALUES, max_size=4),
    extra=st.dictionaries(
        st.text(alphabet="abcxyzé_", min_size=1, max_size=6).filter(
            lambda k: k not in _record.FIELDS and k not in ("message", "asctime")
        ),
        VALUES,
        max_size=3,
    ),
    spec=st.sampled_from(["%r", "%s", "%d", "%f"]),
)
def test_any_frozen_record_is_encoded_as_json_dumps_encodes_its_dict(
    args: list[Any], extra: dict[str, Any], spec: str
) -> None:
    msg = " ".join([spec] * len(args)) or "no args"
    items = _frozen(logged(msg, *args, extra=extra), logged("next %s", "one"))
    sink, errors = _sink()
    assert sink._json_piece(items) == _reference(items)
    assert errors == []


async def test_a_dispatchers_records_reach_the_server_as_their_dicts() -> None:
    """Through install() and a real server: the objects the server decodes are the
    records' __dict__ as the stdlib's JSON encoding gives them."""
    log = fresh_logger("t.http.frozen")
    async with http_peer() as peer:
        sink = als.HTTPSink(peer.netloc, "/bulk", "POST", json_batch=True)
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(60):
                log.info("event %d of %s", i, "sixty", extra={"n": i, "ok": i % 2 == 0})
            await dispatcher.flush()
        items = [item for r in peer.ok for item in json.loads(r.body)]
    assert [(d["msg"], d["n"], d["ok"]) for d in items] == [
        (f"event {i} of sixty", i, i % 2 == 0) for i in range(60)
    ]
    assert all(d["name"] == "t.http.frozen" and d["args"] is None for d in items)
    assert all(("taskName" in d) == (sys.version_info >= (3, 12)) for d in items)
    assert dispatcher.stats().lost == 0


def test_every_ascii_character_is_escaped_as_json_dumps_escapes_it() -> None:
    every = "".join(map(chr, range(128)))
    items = _frozen(
        logged("all of ascii: %s", every, extra={"each": every, "key\x7f\n": "v\x00"}),
        logged(every),  # the message itself, unmerged
        logged("shared %s", every, extra={"each": every}),  # the same objects again
    )
    assert all(type(i) is tuple for i in items)
    sink, errors = _sink()
    assert sink._json_piece(items) == _reference(items)
    assert errors == []


def test_ints_of_every_size_are_written_as_json_dumps_writes_them() -> None:
    values = [0, -1, 7, 2**31, -(2**63), 2**63 - 1, 2**63, -(2**63) - 1, 10**30]
    items = _frozen(*(logged("n", extra={"n": v, "m": -v}) for v in values))
    sink, errors = _sink()
    assert sink._json_piece(items) == _reference(items)
    assert errors == []


def _copy(value: Any) -> Any:
    """An equal value that is another object (the JSON text is the same)."""
    if type(value) is str and len(value) > 1:  # one-character strings are shared
        return "".join(list(value))
    if type(value) is int:
        return int(str(value))
    if type(value) is float:
        return float(repr(value))
    return value


_SITES = [
    ("request started: %s %s client=%s", ("GET", "/work", "127.0.0.1")),
    ("loaded user profile", ()),
    ("request finished: status=%d in %.3f ms", (200, 0.125)),
]


def _site_args(site: int, n: int) -> tuple[Any, ...]:
    """The site's arguments, the n-th variant: the same format merged with others."""
    return tuple(a + (f".{n}" if type(a) is str else n) for a in _SITES[site][1])


@settings(max_examples=200, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.integers(0, len(_SITES) - 1),
            st.sets(st.sampled_from(_record.FIELDS)),
            st.booleans(),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_consecutive_records_sharing_values_are_encoded_as_each_alone(
    plan: list[tuple[int, set[str], bool, int]],
) -> None:
    """Consecutive records of one call site share most of their values' objects, and
    the compiled path copies such runs of fields from the previous record's text:
    whichever fields are shared or are new objects, and with or without extra=, the
    bytes are each record's own json.dumps."""
    first = logged(_SITES[0][0], *_SITES[0][1])
    records = []
    for site, fresh, extra, variant in plan:
        record = logged(
            _SITES[site][0],
            *_site_args(site, variant),
            extra={"user_id": 7, "tenant": "acme"} if extra else None,
        )
        for name in _record.FIELDS:
            if name in ("msg", "args", "exc_info", "exc_text", "stack_info", "taskName"):
                continue
            value = getattr(record, name)
            if name in fresh:
                setattr(record, name, _copy(value))
            elif getattr(first, name) == value:
                # the first record's object: runs of shared objects of every length
                setattr(record, name, getattr(first, name))
        records.append(record)
    items = _frozen(*records)
    assert all(type(i) is tuple for i in items)
    sink, errors = _sink()
    assert sink._json_piece(items) == _reference(items)
    assert errors == []
    run = http_module._json_run
    if run is not None:
        stop, chunk = run(items, 0, http_module._JSON_KEYS, http_module._encode_ascii)
        assert (stop, chunk) == (len(items), _reference(items))
