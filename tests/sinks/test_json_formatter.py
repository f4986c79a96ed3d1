"""JSONFormatter: one JSON object per record, for any sink."""

from __future__ import annotations

import datetime
import io
import json
import logging
import math
import sys
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks import _json

from ..helpers import fresh_logger


def make_record(msg: str = "hello %s", args: Any = ("world",), **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app.db", logging.WARNING, "/srv/app/db.py", 42, msg, args, None)
    record.funcName = "query"
    record.created = 1767323045.123456  # 2026-01-02T03:04:05.123456Z
    record.__dict__.update(extra)
    return record


def parsed(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, Any]:
    text = formatter.format(record)
    assert "\n" not in text  # one line per record, whatever the content
    result: dict[str, Any] = json.loads(text)
    return result


def test_standard_fields_with_an_iso_utc_timestamp_in_microseconds() -> None:
    record = make_record()
    assert parsed(als.JSONFormatter(), record) == {
        "timestamp": "2026-01-02T03:04:05.123456Z",
        "level": "WARNING",
        "logger": "app.db",
        "message": "hello world",
        "module": "db",
        "function": "query",
        "line": 42,
        "process": record.process,
        "thread_name": record.threadName,
    }


def test_the_timestamp_agrees_with_datetime_for_many_instants() -> None:
    for created in (0.0, 0.9999996, 1e9 + 0.000001, 1767323045.5, 1767323099.999999):
        expected = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
        text = _json.iso_utc(created)
        assert text.endswith("Z")
        got = datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=datetime.timezone.utc)
        assert abs((got - expected).total_seconds()) <= 1e-6, (created, text)


def test_extras_and_bound_context_fields_are_written_under_their_names() -> None:
    record = make_record(user={"id": 7, "roles": ["a", "b"]}, request_id="r-1", ratio=0.5)
    out = parsed(als.JSONFormatter(), record)
    assert out["user"] == {"id": 7, "roles": ["a", "b"]}
    assert out["request_id"] == "r-1"
    assert out["ratio"] == 0.5


def test_an_extra_never_replaces_a_standard_field() -> None:
    out = parsed(als.JSONFormatter(), make_record(level="fake", timestamp="fake"))
    assert out["level"] == "WARNING"
    assert out["timestamp"] == "2026-01-02T03:04:05.123456Z"


def test_extras_can_be_left_out() -> None:
    out = parsed(als.JSONFormatter(extras=False), make_record(user="x"))
    assert "user" not in out


class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("serialiser", ["default", "stdlib"])
def test_values_json_cannot_hold_fall_back_to_repr_and_never_raise(
    serialiser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if serialiser == "stdlib":
        monkeypatch.setattr(_json, "_dumps", _json._dumps_stdlib)
    cycle: list[Any] = []
    cycle.append(cycle)
    record = make_record(
        a_set={3},
        obj=Unrepresentable(),
        when=datetime.datetime(2020, 1, 2, 3, 4, 5),
        huge=2**70,
        nan=math.nan,
        cycle=cycle,
        keys={1: "one"},
        raw=b"\xff",
    )
    out = parsed(als.JSONFormatter(), record)
    assert out["a_set"] == "{3}"
    assert out["obj"] == "<unrepresentable Unrepresentable>"
    assert out["when"] == "2020-01-02T03:04:05"
    assert out["huge"] == 2**70
    assert out["nan"] is None
    assert out["keys"] == {"1": "one"}
    assert out["raw"] == "b'\\xff'"
    assert out["message"] == "hello world"


@pytest.mark.parametrize("serialiser", ["default", "stdlib"])
def test_mapping_keys_json_cannot_hold_never_raise(
    serialiser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a key of a type neither encoder takes sends the whole record to the fallback,
    # which must name the other keys as the encoders do and survive a broken __str__
    if serialiser == "stdlib":
        monkeypatch.setattr(_json, "_dumps", _json._dumps_stdlib)

    class NoStr(Unrepresentable):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    record = make_record(
        odd={None: 1, True: 2, 1.5: 3, 7: 4, (1, 2): 5},
        broken={NoStr(): "v"},
    )
    out = parsed(als.JSONFormatter(), record)
    assert out["odd"] == {"null": 1, "true": 2, "1.5": 3, "7": 4, "(1, 2)": 5}
    assert out["broken"] == {"<unrepresentable NoStr>": "v"}
    assert out["message"] == "hello world"


def test_both_serialisers_write_the_same_object(monkeypatch: pytest.MonkeyPatch) -> None:
    record = make_record(user={"id": 1}, tags=("x", "y"), text="ünïcödé")
    fast = als.JSONFormatter().format(record)
    monkeypatch.setattr(_json, "_dumps", _json._dumps_stdlib)
    assert als.JSONFormatter().format(record) == fast


def test_exception_and_stack_are_text() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = make_record(exc_info=sys.exc_info())
    record.stack_info = "Stack (most recent call last):\n  here"
    out = parsed(als.JSONFormatter(), record)
    assert out["exception"].startswith("Traceback (most recent call last):")
    assert out["exception"].endswith("ValueError: bad\nvalue")
    assert out["stack"] == "Stack (most recent call last):\n  here"


def test_fields_are_chosen_ordered_and_renamed() -> None:
    formatter = als.JSONFormatter(["message", "level", "line"], rename={"message": "msg"})
    assert formatter.format(make_record()) == '{"msg":"hello world","level":"WARNING","line":42}'


def test_ecs_and_otel_presets() -> None:
    ecs = parsed(als.JSONFormatter(preset="ecs"), make_record())
    assert ecs["@timestamp"] == "2026-01-02T03:04:05.123456Z"
    assert ecs["log.level"] == "WARNING"
    assert ecs["log.logger"] == "app.db"
    assert ecs["log.origin.function"] == "query"
    otel = parsed(als.JSONFormatter(preset="otel"), make_record())
    assert otel["severity_text"] == "WARNING"
    assert otel["body"] == "hello world"
    assert otel["code.line.number"] == 42


def test_static_fields_appear_on_every_object() -> None:
    out = parsed(als.JSONFormatter(static={"service": "api"}), make_record(service="mine"))
    assert out["service"] == "api"


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"fields": ["nope"]}, ValueError, "fields"),
        ({"fields": "message"}, TypeError, "fields"),
        ({"preset": "gelf"}, ValueError, "preset"),
        ({"rename": {"nope": "x"}}, ValueError, "rename"),
        ({"rename": [("a", "b")]}, TypeError, "rename"),
        ({"static": "x"}, TypeError, "static"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        als.JSONFormatter(**kwargs)


async def test_through_the_pipeline_extras_survive_the_hand_off() -> None:
    stream = io.StringIO()
    sink = als.StreamSink(stream)
    sink.setFormatter(als.JSONFormatter(["level", "message", "exception"]))
    log = fresh_logger("t.json")
    async with als.install(sink, logger=log):
        log.info("plain %d", 1)
        log.warning("with extra", extra={"order": {"id": 9}})
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0] == {"level": "INFO", "message": "plain 1"}
    assert lines[1] == {"level": "WARNING", "message": "with extra", "order": {"id": 9}}
    assert lines[2]["message"] == "failed"
    assert lines[2]["exception"].endswith("ZeroDivisionError: division by zero")
