"""OTLPSink: the record -> OTLP mapping field by field, both encodings, a real collector.

Golden tests decode what the sink sent with ``opentelemetry-proto`` (protobuf, and JSON
through ``json_format``, which enforces the OTLP JSON mapping). The happy path goes
through a real collector (rotel), which re-exports what it accepted to our receiver: a
field the collector misread would show up there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiologsinks as als
from aiologsinks import _otlp_map

from ..helpers import VALUES, fresh_logger
from ..peers.otel_collector import otlp_receiver, require_module, rotel_collector

pytestmark = pytest.mark.usefixtures("_needs_proto")


@pytest.fixture
def _needs_proto() -> None:
    require_module("opentelemetry.proto")


def attrs(kvs: Any) -> dict[str, Any]:
    """Decoded KeyValues as plain Python values."""
    from google.protobuf.json_format import MessageToDict

    out = {}
    for kv in kvs:
        value = MessageToDict(kv.value)
        ((kind, v),) = value.items() if value else (("empty", None),)
        if kind == "intValue":
            v = int(v)
        out[kv.key] = v
    return out


ENCODINGS = ["protobuf", "json"]


class _Named(int):
    def __str__(self) -> str:
        return f"Named.{int(self)}"

    __repr__ = __str__


class _NamedFloat(float):
    def __str__(self) -> str:
        return "weird"

    __repr__ = __str__


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_every_field_of_a_record_is_mapped(encoding: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("tests")
    log = fresh_logger("app.orders")
    async with otlp_receiver() as receiver:
        sink = als.OTLPSink(
            receiver.endpoint, encoding, resource={"service.name": "shop", "env": "test"}
        )
        async with als.install(sink, logger=log) as dispatcher:
            with tracer.start_as_current_span("checkout") as span:
                log.warning(
                    "order %s failed", 42, extra={"order": {"id": 42, "items": [1, 2]}, "vip": True}
                )
            try:
                raise KeyError("missing")
            except KeyError:
                log.exception("lookup")
            log.info("with stack", stack_info=True)
            await dispatcher.flush()
        got = await receiver.wait_records(3)
    export = receiver.exports[0]
    assert export.headers["Content-Type"] == (
        "application/x-protobuf" if encoding == "protobuf" else "application/json"
    )
    assert export.headers["Content-Encoding"] == "gzip"  # (the server inflated the body)

    resource, scope, first = got[0]
    res = attrs(resource.attributes)
    assert res["service.name"] == "shop"
    assert res["env"] == "test"
    assert res["telemetry.sdk.name"] == "aiologsinks"
    assert res["process.pid"] == os.getpid()
    assert scope.name == "app.orders"

    context = span.get_span_context()
    assert first.trace_id == context.trace_id.to_bytes(16, "big")
    assert first.span_id == context.span_id.to_bytes(8, "big")
    assert first.flags == 1
    assert first.body.string_value == "order 42 failed"
    assert first.severity_number == 13
    assert first.severity_text == "WARNING"
    assert first.observed_time_unix_nano >= first.time_unix_nano > 1_600_000_000 * 10**9
    a = attrs(first.attributes)
    assert a["code.file.path"] == __file__
    assert a["code.function.name"] == "test_every_field_of_a_record_is_mapped"
    assert isinstance(a["code.line.number"], int)
    assert a["thread.id"] == threading.get_ident()
    assert a["thread.name"] == threading.current_thread().name
    assert a["logger.name"] == "app.orders"
    assert a["vip"] is True
    assert a["order"] == {"values": [
        {"key": "id", "value": {"intValue": "42"}},
        {"key": "items", "value": {"arrayValue": {"values": [
            {"intValue": "1"}, {"intValue": "2"}]}}},
    ]}  # fmt: skip
    assert "process.pid" not in a  # the resource says it

    _, _, second = got[1]
    assert second.trace_id == b""  # no span active at that call
    assert second.severity_number == 17
    b = attrs(second.attributes)
    assert b["exception.type"] == "KeyError"
    assert b["exception.message"] == "'missing'"
    assert b["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert b["exception.stacktrace"].endswith("KeyError: 'missing'")

    _, _, third = got[2]
    assert third.severity_number == 9
    assert attrs(third.attributes)["code.stacktrace"].startswith("Stack (most recent call last)")


async def test_the_json_encoding_follows_the_otlp_json_mapping() -> None:
    log = fresh_logger("app.json")
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("tests")
    async with otlp_receiver() as receiver:
        sink = als.OTLPSink(receiver.endpoint, "json", compression="none")
        async with als.install(sink, logger=log):
            with tracer.start_as_current_span("s") as span:
                log.info("hi", extra={"n": 2**40, "ratio": 0.5, "raw": b"\x00\x01"})
        await receiver.wait_records(1)
    raw = json.loads(receiver.exports[0].body)
    record = raw["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    # lowerCamelCase names, int64 as strings, hex ids, enums as numbers
    assert isinstance(record["timeUnixNano"], str) and record["timeUnixNano"].isdigit()
    assert record["severityNumber"] == 9
    assert record["traceId"] == f"{span.get_span_context().trace_id:032x}"
    assert record["spanId"] == f"{span.get_span_context().span_id:016x}"
    values = {kv["key"]: kv["value"] for kv in record["attributes"]}
    assert values["n"] == {"intValue": str(2**40)}
    assert values["ratio"] == {"doubleValue": 0.5}
    assert values["raw"] == {"bytesValue": "AAE="}


def test_severity_numbers_match_the_opentelemetry_sdk() -> None:
    require_module("opentelemetry.sdk")
    from opentelemetry.sdk._logs._internal import std_to_otel

    for levelno in range(10, 70):
        assert _otlp_map.severity_number(levelno) == std_to_otel(levelno).value, levelno
    assert _otlp_map.severity_number(5) == 1  # below DEBUG: TRACE
    assert _otlp_map.severity_number(0) == 0


def test_exception_type_and_message_are_read_back_from_the_text() -> None:
    class Custom(Exception):
        pass

    for exc, name, message in [
        (ValueError("a\nb"), "ValueError", "a\nb"),
        (Custom("x: y"), f"{__name__}.{Custom.__qualname__}", "x: y"),
        (RuntimeError(), "RuntimeError", ""),
    ]:
        try:
            try:
                raise OSError("cause")
            except OSError:
                raise exc
        except Exception:
            record = logging.LogRecord("x", 40, __file__, 1, "m", None, sys.exc_info())
        record.exc_text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
        live = _otlp_map.exception_fields(record)
        record.exc_info = None  # as after the shim
        assert _otlp_map.exception_fields(record) == live == (name, message, record.exc_text)


def _raisers() -> list[Any]:
    def syntax() -> None:
        compile("x = (", "<config>", "exec")

    def chained() -> None:
        try:
            raise KeyError("inner")
        except KeyError:
            raise ValueError("outer\nsecond line") from None

    raisers: list[Any] = [syntax, chained]
    if sys.version_info >= (3, 11):

        def group() -> None:
            raise ExceptionGroup("eg", [ValueError("a"), TypeError("b")])  # noqa: F821

        def group_while_handling() -> None:
            try:
                raise KeyError("k")
            except KeyError:
                raise ExceptionGroup("eg2", [OSError("c")])  # noqa: F821

        def noted() -> None:
            exc = RuntimeError("with a note")
            exc.add_note("the note")  # type: ignore[attr-defined]
            raise exc

        raisers += [group, group_while_handling, noted]
    return raisers


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_exception_type_and_message_are_the_live_exceptions(encoding: str) -> None:
    # read from what the record captured at the call, not parsed back from the text,
    # which cannot tell a message from its notes, a group's parts or a SyntaxError's
    # position
    log = fresh_logger("app.exc")
    expected = []
    async with otlp_receiver() as receiver:
        async with als.install(als.OTLPSink(receiver.endpoint, encoding), logger=log):
            for raiser in _raisers():
                try:
                    raiser()
                except Exception as exc:
                    expected.append((type(exc).__qualname__, str(exc)))
                    log.exception("failed")
        got = await receiver.wait_records(len(expected))
    mapped = [attrs(lr.attributes) for _, _, lr in got]
    assert [(a["exception.type"], a["exception.message"]) for a in mapped] == expected
    assert all("Traceback (most recent call last):" in a["exception.stacktrace"] for a in mapped)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_real_collector_accepts_and_re_exports_every_record(
    encoding: str, tmp_path: Path
) -> None:
    log = fresh_logger("app.collector")
    async with rotel_collector(tmp_path) as (collector, downstream):
        sink = als.OTLPSink(collector.endpoint, encoding, resource={"service.name": "svc"})
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(300):
                log.info("record %d", i, extra={"i": i})
            await dispatcher.flush()
            stats = dispatcher.stats().sinks
        got = await downstream.wait_records(300)
    assert [lr.body.string_value for _, _, lr in got] == [f"record {i}" for i in range(300)]
    assert [attrs(lr.attributes)["i"] for _, _, lr in got] == list(range(300))
    assert {attrs(res.attributes)["service.name"] for res, _, _ in got} == {"svc"}
    assert {scope.name for _, scope, _ in got} == {"app.collector"}
    assert sink.error_count == 0
    assert all(s.errors == 0 for s in stats.values())


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_one_odd_record_does_not_cost_a_real_collectors_whole_request(
    encoding: str, tmp_path: Path
) -> None:
    # each is a record of its own: a trace id that is not one (extra= can set anything
    # under the name) is no trace context, None values are left out, a time before
    # 1970 is that record's error; the rest of the request is accepted
    trace, span = "0AF7651916CD43DD8448EB211C80319C", "B7AD6B7169203331"
    odd: list[dict[str, Any]] = [
        {"otelTraceID": "not-a-trace-id-at-all-not-hex!!!", "otelSpanID": "b7ad6b7169203331"},
        {"otelTraceID": "ab", "otelSpanID": "cd"},
        {"otelTraceID": "0" * 32, "otelSpanID": "0" * 16},
        {"otelTraceID": trace, "otelSpanID": span, "otelTraceSampled": True},
        {"user": None},
        # what OTLP/JSON spells as proto3 does ("NaN", {} for null) a collector
        # refuses with the whole request: as strings, and a kvlist's value left out
        {"ratio": math.nan, "big": math.inf, "small": -math.inf},
        {"tags": ["a", None], "ctx": {"user": None, "id": 1}},
        # numbers whose str()/repr() are not their digits (an IntEnum's on 3.10)
        {"status": _Named(200), "share": _NamedFloat(0.5), "big": _Named(2**70)},
    ]

    class BeforeEpoch(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.getMessage() == "odd time":
                record.created = -1.0
            return True

    log = fresh_logger("app.odd")
    async with rotel_collector(tmp_path) as (collector, downstream):
        sink = als.OTLPSink(collector.endpoint, encoding)
        sink.addFilter(BeforeEpoch())
        reported: list[str] = []
        sink.handleError = lambda record: reported.append(record.getMessage())  # type: ignore[method-assign]
        async with als.install(sink, logger=log) as dispatcher:
            for i, extra in enumerate(odd):
                log.info("odd %d", i, extra=extra)
            log.info("odd time")
            log.info("plain")
            await dispatcher.flush()
            stats = dispatcher.stats()
        got = await downstream.wait_records(len(odd) + 1)
    by_body = {lr.body.string_value: lr for _, _, lr in got}
    assert sorted(by_body) == sorted([f"odd {i}" for i in range(len(odd))] + ["plain"])
    assert [by_body[f"odd {i}"].trace_id for i in range(3)] == [b"", b"", b""]
    assert by_body["odd 3"].trace_id == bytes.fromhex(trace)
    assert by_body["odd 3"].span_id == bytes.fromhex(span)
    user = [a for a in by_body["odd 4"].attributes if a.key == "user"]
    assert user == [] if encoding == "json" else len(user) == 1
    floats = {k: v for k, v in attrs(by_body["odd 5"].attributes).items() if k in odd[5]}
    if encoding == "json":
        assert floats == {"ratio": "nan", "big": "inf", "small": "-inf"}
    else:  # doubles, as protobuf's JSON shows them
        assert floats == {"ratio": "NaN", "big": "Infinity", "small": "-Infinity"}
    nested = attrs(by_body["odd 6"].attributes)
    tags = nested["tags"]["values"]
    assert tags[0] == {"stringValue": "a"} and len(tags) == 2
    assert tags[1] == ({"stringValue": "None"} if encoding == "json" else {})
    named = {k: v for k, v in attrs(by_body["odd 7"].attributes).items() if k in odd[7]}
    assert named == {"status": 200, "share": 0.5, "big": str(2**70)}
    assert [(kv["key"], kv.get("value")) for kv in nested["ctx"]["values"]] in (
        [("user", {}), ("id", {"intValue": "1"})],
        [("user", None), ("id", {"intValue": "1"})],
    )
    assert reported == ["odd time"]
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors) == (len(odd) + 1, 1)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_no_request_body_exceeds_max_batch_bytes(encoding: str) -> None:
    # the bound is often a collector's own body limit: the resource every request
    # repeats and scope names in UTF-8 bytes (not characters) count too
    log = fresh_logger("app.bound")
    bound = 20_000
    resource = {"service.name": "svc", "padding": "r" * 4000}
    async with otlp_receiver() as receiver:
        sink = als.OTLPSink(
            receiver.endpoint, encoding, compression="none", max_batch_bytes=bound,
            resource=resource,
        )  # fmt: skip
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(400):
                scope = log.getChild(f"模块{i % 40}")  # 40 non-ASCII scope names
                scope.propagate = True
                scope.info("record %d %s", i, "m" * 60)
            await dispatcher.flush()
        got = await receiver.wait_records(400)
    assert len(got) == 400 and sink.error_count == 0
    sizes = [len(export.body) for export in receiver.exports]
    assert len(sizes) > 1 and max(sizes) <= bound, sizes


async def test_the_collector_rejects_malformed_json_with_400_and_it_is_not_retried(
    tmp_path: Path,
) -> None:
    async with rotel_collector(tmp_path) as (collector, _):
        sink = als.OTLPSink(collector.endpoint, "json")
        sink._encode_request = lambda resource, groups: b"{not json"  # type: ignore[method-assign]
        errors: list[str] = []
        sink.handleError = lambda record: errors.append(str(sys.exc_info()[1]))  # type: ignore[method-assign]
        async with sink:
            await sink.emit_batch([logging.LogRecord("x", 20, "f", 1, "m", None, None)] * 3)
        assert sink.error_count == 3
        assert sink.outbox.statistics().outages == 0  # refused, not retried
        assert len(errors) == 1 and "answered 400" in errors[0]


async def test_batches_respect_the_record_and_byte_limits() -> None:
    async with otlp_receiver() as receiver:
        sink = als.OTLPSink(
            receiver.endpoint, "protobuf", max_batch_records=10, max_batch_bytes=4000
        )
        records = [logging.LogRecord("x", 20, "f", 1, "m" * 100, None, None) for _ in range(45)]
        async with sink:
            await sink.emit_batch(records)
        got = await receiver.wait_records(45)
    assert len(got) == 45
    sizes = [len(e.body) for e in receiver.exports]  # inflated by the server
    counts = [sum(len(sl.log_records) for rl in e.message.resource_logs for sl in rl.scope_logs)
              for e in receiver.exports]  # fmt: skip
    assert max(counts) <= 10 and sum(counts) == 45
    assert max(sizes) <= 4000


async def test_standard_environment_variables_configure_the_sink(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "api-key=s%3Dcret,x-team=logs")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored,region=eu%2Dwest")
        sink = als.OTLPSink()
        assert sink.endpoint == receiver.endpoint
        assert sink.timeout == 2.5
        assert "cret" not in repr(sink)
        async with sink:
            await sink.emit(logging.LogRecord("x", 20, "f", 1, "m", None, None))
        ((resource, _, _),) = await receiver.wait_records(1)
    headers = receiver.exports[0].headers
    assert headers["api-key"] == "s=cret" and headers["x-team"] == "logs"
    assert headers["Content-Type"] == "application/json"
    assert "Content-Encoding" not in headers
    res = attrs(resource.attributes)
    assert res["service.name"] == "billing"
    assert res["region"] == "eu-west"


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"endpoint": "ftp://x/v1/logs"}, ValueError, "endpoint"),
        ({"endpoint": 3}, TypeError, "endpoint"),
        ({"encoding": "grpc"}, ValueError, "encoding"),
        ({"compression": "br"}, ValueError, "compression"),
        ({"timeout": 0}, ValueError, "timeout"),
        # a NaN timeout never times out: a silent collector would hold the sink
        ({"timeout": math.nan}, ValueError, "timeout"),
        ({"close_timeout": math.nan}, ValueError, "close_timeout"),
        ({"timeout": math.inf}, ValueError, "timeout"),
        ({"resource": {1: "x"}}, TypeError, "resource"),
        ({"max_batch_records": 0}, ValueError, "max_batch_records"),
        ({"max_batch_bytes": True}, ValueError, "max_batch_bytes"),
        ({"buffer_size": -1}, ValueError, "buffer_size"),
        ({"headers": "a=b"}, TypeError, "headers"),
        ({"resource": ["x"]}, TypeError, "resource"),
        ({"headers": {"x-team": "logs\r\nX-Injected: 1"}}, ValueError, "headers"),
        ({"headers": {"x:y": "1"}}, ValueError, "headers"),
        ({"headers": {"Content-Length": "1"}}, ValueError, "headers"),
        ({"headers": {"x-team": 1}}, TypeError, "headers"),
        ({"endpoint": "http://127.0.0.1:4318/v1/my logs"}, ValueError, "endpoint"),
        ({"endpoint": "http://127.0.0.1:port/v1/logs"}, ValueError, "endpoint"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        als.OTLPSink(**kwargs)


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0", "soon"])
def test_a_bad_timeout_in_the_environment_names_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", value)
    with pytest.raises(ValueError, match=r"^OTEL_EXPORTER_OTLP_TIMEOUT: expected a positive"):
        als.OTLPSink()


async def test_user_and_password_in_the_endpoint_are_basic_authentication() -> None:
    async with otlp_receiver() as receiver:
        endpoint = f"http://collector:s%3Dcret@127.0.0.1:{receiver.port}/v1/logs"
        sink = als.OTLPSink(endpoint, encoding="json")
        assert "cret" not in repr(sink)
        async with sink:
            await sink.emit(logging.LogRecord("x", 20, "f", 1, "m", None, None))
        await receiver.wait_records(1)
    assert receiver.exports[0].headers["Authorization"] == "Basic Y29sbGVjdG9yOnM9Y3JldA=="


def test_grpc_in_the_environment_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        als.OTLPSink("http://127.0.0.1:1/v1/logs")


def test_all_three_by_name_in_toml_config() -> None:
    from aiologsinks import config

    require_module("aiokafka")
    text = """
[formatters.json]
"()" = "aiologsinks:JSONFormatter"
preset = "ecs"

[sinks.otel]
type = "otlp"
endpoint = "http://127.0.0.1:4318/v1/logs"
encoding = "json"
headers = { api-key = "k" }
resource = { "service.name" = "api" }

[sinks.events]
type = "KafkaSink"
topic = "logs"
bootstrap_servers = ["127.0.0.1:9092"]
key = "name"
acks = 1
formatter = "json"
"""
    cfg = config.loads(text)
    otel: Any = cfg.sinks["otel"]
    kafka: Any = cfg.sinks["events"]
    assert type(otel) is als.OTLPSink and type(kafka) is als.KafkaSink
    assert otel.encoding == "json" and otel.headers == {"api-key": "k"}
    assert otel.resource["service.name"] == "api"
    assert kafka.acks == 1 and kafka.key == "name"
    assert (
        isinstance(kafka.formatter, als.JSONFormatter)
        and kafka.formatter.names["level"] == "log.level"
    )
    otel.close()
    kafka.close()
    with pytest.raises(config.ConfigError) as info:
        config.loads('[sinks.o]\ntype = "otlp"\nencoding = "grpc"\n')
    assert info.value.path == "sinks.o.encoding"


class _NoText:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_the_protobuf_writer_agrees_with_the_generated_classes() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
    from opentelemetry.proto.common.v1.common_pb2 import KeyValueList as KVList
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    values: list[tuple[Any, Any]] = [
        ("ünï", AnyValue(string_value="ünï")),
        (True, AnyValue(bool_value=True)),
        (False, AnyValue(bool_value=False)),
        (-5, AnyValue(int_value=-5)),
        (2**63 - 1, AnyValue(int_value=2**63 - 1)),
        (2**64, AnyValue(string_value=str(2**64))),
        (-0.25, AnyValue(double_value=-0.25)),
        (None, AnyValue()),
        (b"\x00\xff", AnyValue(bytes_value=b"\x00\xff")),
        ([1, "a"], AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1),
                                                           AnyValue(string_value="a")]))),
        ({"k": {"n": 1}}, AnyValue(kvlist_value=KVList(values=[KeyValue(key="k", value=AnyValue(
            kvlist_value=KVList(values=[KeyValue(key="n", value=AnyValue(int_value=1))])))]))),
        ("x" * 300, AnyValue(string_value="x" * 300)),
        # keys as the JSON encoders write them; a key whose str() raises by its name
        ({None: 1, 7: 2, _NoText(): 3}, AnyValue(kvlist_value=KVList(values=[
            KeyValue(key="null", value=AnyValue(int_value=1)),
            KeyValue(key="7", value=AnyValue(int_value=2)),
            KeyValue(key="<unrepresentable _NoText>", value=AnyValue(int_value=3))]))),
    ]  # fmt: skip
    for _ in range(2):  # the second round reads the attribute cache
        log = _otlp_map.OTLPLog(
            "scope", 1, 2, 9, "INFO", "b" * 200, [(f"a{i}", v) for i, (v, _) in enumerate(values)],
            "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1,
        )  # fmt: skip
        expected = LogRecord(
            time_unix_nano=1, observed_time_unix_nano=2, severity_number=9, severity_text="INFO",  # type: ignore[arg-type]
            body=AnyValue(string_value="b" * 200),
            attributes=[KeyValue(key=f"a{i}", value=m) for i, (_, m) in enumerate(values)],
            trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
            span_id=bytes.fromhex("b7ad6b7169203331"), flags=1,
        )  # fmt: skip
        got = LogRecord()
        got.ParseFromString(_otlp_map.protobuf_log(log))
        assert got == expected


async def test_a_real_collector_restarted_mid_stream_loses_nothing(tmp_path: Path) -> None:
    from aiologsinks._backoff import Backoff

    log = fresh_logger("app.restart")
    async with rotel_collector(tmp_path) as (collector, downstream):
        sink = als.OTLPSink(collector.endpoint, backoff=Backoff(0.05, 2.0, 0.2))
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(50):
                log.info("before %d", i)
            await dispatcher.flush()
            await downstream.wait_records(50)
            await collector.stop()  # the collector goes away mid-stream
            for i in range(50):
                log.info("during %d", i)
            await dispatcher.flush()
            assert sink.outbox.pending == 50  # waiting, not lost
            await collector.start()  # back on the same ports
            got = await downstream.wait_records(100)
    bodies = [lr.body.string_value for _, _, lr in got]
    assert bodies == [f"before {i}" for i in range(50)] + [f"during {i}" for i in range(50)]
    assert sink.error_count == 0


TRACES = [
    None,
    ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True),
    ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", False),
    ("0", "0", False),  # what LoggingInstrumentor writes without a span
    ("not hex", "b7ad6b7169203331", True),  # both paths fail on it
]


@settings(max_examples=300, deadline=None)
@given(
    args=st.lists(st.one_of(st.integers(), st.text(max_size=5), st.floats()), max_size=3),
    extra=st.dictionaries(st.sampled_from(["user", "_private", "status"]), VALUES, max_size=3),
    trace=st.sampled_from(TRACES),
    level=st.sampled_from([(20, "INFO"), (25, "Level 25"), (5, "TRACE"), (40, "ERROR")]),
    stack=st.booleans(),
    threads=st.booleans(),
    pid=st.sampled_from([None, os.getpid(), 1]),
)
def test_frozen_records_encode_to_the_bytes_the_record_path_writes(
    args: list[Any],
    extra: dict[str, Any],
    trace: tuple[str, str, bool] | None,
    level: tuple[int, str],
    stack: bool,
    threads: bool,
    pid: int | None,
) -> None:
    from aiologsinks import _context, _trace
    from aiologsinks._record import freeze, thaw

    msg = " ".join(["%r"] * len(args)) or "no arguments"
    record = logging.LogRecord("app.orders", level[0], __file__, 7, msg, tuple(args), None)
    record.levelname = level[1]
    if not threads:  # logging.logThreads = False
        record.thread = record.threadName = None
    if stack:
        record.stack_info = "Stack (most recent call last):\n  here"
    record.__dict__.update(extra)
    if trace is not None:
        ids = dict(zip((_trace.TRACE_ID, _trace.SPAN_ID, _trace.SAMPLED), trace, strict=True))
        record.__dict__.update(ids)
    with pytest.MonkeyPatch.context() as mp:
        # no open sink of an earlier test needing the caller's context (a copy then)
        mp.setattr(_context._switch, "on", False)
        frozen = freeze(record)
    assert isinstance(frozen, tuple)  # immutable values only: it travels frozen
    observed = 1_700_000_000_123_456_789

    def outcome(encode: Any) -> Any:
        try:
            return encode()
        except Exception as exc:
            return type(exc)

    def by_record() -> tuple[str, bytes]:
        thawed = thaw(frozen)
        log = _otlp_map.map_record(thawed, thawed.getMessage(), observed, pid)
        return log.scope, _otlp_map.protobuf_log(log)

    fast = outcome(
        lambda: _otlp_map.protobuf_frozen(frozen, _otlp_map.observed_field(observed), pid)
    )
    if fast is None:
        assert stack  # the only case here it leaves to the record path
        return
    assert fast == outcome(by_record)
