"""From ``logging.LogRecord`` to OTLP logs: the mapping, and both OTLP/HTTP encodings.

Pure functions, no I/O. :func:`map_record` turns a record into an :class:`OTLPLog`
following the OpenTelemetry logs data model and semantic conventions:

* ``time_unix_nano`` from ``record.created``; ``observed_time_unix_nano`` when the sink
  saw it; severity number from the level as the OpenTelemetry SDK maps it (DEBUG 5,
  INFO 9, WARNING 13, ERROR 17, CRITICAL 21, levels in between counted up to 3 steps)
  and severity text = ``levelname``; body = the message (the sink's formatter's output
  when one is set);
* attributes ``code.file.path``, ``code.function.name``, ``code.line.number``,
  ``thread.id``, ``thread.name``, ``logger.name``, ``process.pid`` (when it is not the
  resource's process), ``exception.type``/``exception.message``/``exception.stacktrace``,
  ``code.stacktrace`` (``stack_info``), then every ``extra=`` and bound-context field;
* trace id, span id and the sampled flag of the span active at the logging call (see
  ``_trace``); the scope is the logger name.

:func:`encode_json` writes the OTLP JSON mapping (lowerCamelCase names, hex trace and
span ids, 64-bit integers as strings, enums as numbers); :func:`encode_protobuf` the
binary form (the wire format written directly: no dependency, and several times
faster than building generated-class objects). Both take records already grouped into
requests by :func:`chunks`, which honours a record-count and a byte limit.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import platform
import struct
import sys
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _json, _trace
from ._record import (
    ACCELERATED,
    ARGS,
    CREATED,
    EXC_TEXT,
    FIELDS,
    LEVELNAME,
    LEVELNO,
    MSG,
    N_FIELDS,
    STACK_INFO,
    ExcText,
    Frozen,
    Item,
    deferred,
    extras,
)

__all__ = [
    "OTLPLog",
    "captured_exception",
    "encode_json",
    "encode_protobuf",
    "exception_fields",
    "map_record",
    "observed_field",
    "protobuf_frozen",
    "protobuf_run",
    "resource_attributes",
    "severity_number",
]

_INT64 = (-(2**63), 2**63 - 1)
_MAX_DEPTH = 8


@dataclass
class OTLPLog:
    """One log record in the OTLP data model (ids as hex; attributes as Python values)."""

    scope: str
    time_unix_nano: int
    observed_time_unix_nano: int
    severity_number: int
    severity_text: str
    body: str
    attributes: list[tuple[str, Any]]
    trace_id: str | None = None
    span_id: str | None = None
    flags: int = 0


def severity_number(levelno: int) -> int:
    """The OTel severity number of a ``logging`` level (as the OpenTelemetry SDK maps it)."""
    if levelno <= 0:
        return 0  # SEVERITY_NUMBER_UNSPECIFIED
    if levelno < 10:
        return 1  # TRACE
    base = min(levelno // 10, 5)  # 1 DEBUG .. 5 CRITICAL/FATAL
    return 1 + 4 * base + min(levelno - 10 * base, 3)


def _type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def exception_fields(
    record: logging.LogRecord, captured: ExcText | None = None
) -> tuple[str, str, str] | None:
    """(exception.type, exception.message, exception.stacktrace) of a record, or None.

    ``captured`` is the exception a frozen record carried (its class and message as
    they were at the call). A prepared record copy carries the traceback as text only
    (``exc_text``): type and message are then read back from its last exception line —
    the one ``traceback`` prints for the exception that was raised last.
    """
    exc_info = record.exc_info
    if exc_info and exc_info[0] is not None:
        cls, value = exc_info[0], exc_info[1]
        rendered = record.exc_text or _exc_formatter.formatException(exc_info)
        return _type_name(cls), str(value), rendered
    text = record.exc_text
    if not text:
        return None
    if captured is not None:
        return _type_name(captured.exc_type), captured.message, text
    lines = text.rstrip("\n").split("\n")
    last_frame = max((i for i, line in enumerate(lines) if line.startswith('  File "')), default=-1)
    i = last_frame + 1
    while i < len(lines) and lines[i].startswith("    "):  # source line, carets
        i += 1
    tail = "\n".join(lines[i:]) if i < len(lines) else lines[-1]
    name, sep, message = tail.partition(": ")
    if not sep:
        name, message = tail.strip(), ""
    return name.strip(), message, text


_exc_formatter = logging.Formatter()
_NOT_EXTRA = _json._NOT_EXTRA


def _site_items(
    name: Any,
    path: Any,
    func: Any,
    line: Any,
    thread: Any,
    thread_name: Any,
    process: Any,
    pid: int | None,
) -> list[tuple[str, Any]]:
    """A record's standard attributes, in order (``process.pid`` only when it is not
    the resource's process)."""
    items: list[tuple[str, Any]] = [
        ("code.file.path", path),
        ("code.function.name", func),
        ("code.line.number", line),
        ("thread.id", thread),
        ("thread.name", thread_name),
        ("logger.name", name),
    ]
    if process is not None and process != pid:
        items.append(("process.pid", process))
    return items


def captured_exception(item: Item) -> ExcText | None:
    """The exception a frozen record captured at the call, if it carries one."""
    if type(item) is tuple:
        text = item[EXC_TEXT]
        if type(text) is ExcText:
            return text
    return None


def map_record(
    record: logging.LogRecord,
    body: str,
    observed_ns: int,
    pid: int | None = None,
    captured: ExcText | None = None,
) -> OTLPLog:
    """The OTLP log record for ``record`` (``body``: its formatted message; ``captured``:
    see :func:`exception_fields`)."""
    d = record.__dict__
    attributes = _site_items(
        d["name"], d["pathname"], d["funcName"], d["lineno"], d["thread"], d["threadName"],
        d["process"], pid,
    )  # fmt: skip
    exc = exception_fields(record, captured)
    if exc is not None:
        attributes.append(("exception.type", exc[0]))
        attributes.append(("exception.message", exc[1]))
        attributes.append(("exception.stacktrace", exc[2]))
    if d.get("stack_info"):
        attributes.append(("code.stacktrace", d["stack_info"]))
    if len(d) != _json._N_FIELDS:
        attributes.extend(_json.extra_items(d))
    ids = _trace.ids(d)
    created_ns = int(d["created"] * 1e9)
    if not 0 <= created_ns < 1 << 64:
        # a fixed64 in protobuf; in JSON, a request with one such record is refused
        # whole: this record is the one reported
        raise ValueError(f"created={d['created']!r} is not a time OTLP can carry")
    log = OTLPLog(
        d["name"],
        created_ns,
        observed_ns,
        severity_number(d["levelno"]),
        d["levelname"],
        body,
        attributes,
    )
    if ids is not None:
        log.trace_id, log.span_id = ids[0], ids[1]
        log.flags = 1 if ids[2] else 0
    return log


def resource_attributes(
    explicit: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The resource: SDK and process facts, ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_SERVICE_NAME``, then ``explicit`` — each later one wins."""
    env = os.environ if environ is None else environ
    attrs: dict[str, Any] = {
        "service.name": "unknown_service:python",
        "telemetry.sdk.name": "aiologsinks",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": _version(),
        "process.pid": os.getpid(),
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": platform.python_version(),
    }
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attrs[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attrs["service.name"] = service
    attrs.update(explicit or {})
    return attrs


def _version() -> str:
    from . import __version__

    return __version__


# -- JSON -------------------------------------------------------------------------------


def _json_value(value: Any, depth: int = 0) -> dict[str, Any]:
    """An AnyValue in the OTLP JSON mapping."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    # (an int or float subclass as its number: an IntEnum's str() is its name on
    # 3.10, and a collector refuses the whole request for an intValue of "Status.OK")
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return {"intValue": int.__repr__(value)}
        return {"stringValue": int.__repr__(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": float(value)}
        # proto3's JSON spells them "NaN"/"Infinity" as a doubleValue, which
        # collectors refuse with the whole request (rotel answers 400): as Python
        # shows them, in a string (the protobuf encoding keeps the double)
        return {"stringValue": float.__repr__(value)}
    if value is None:
        # only in an array (a kvlist leaves the value out): the empty AnyValue ({})
        # is valid OTLP/JSON, but rotel refuses the whole request for it; the
        # position is kept, with the text %s gives None
        return {"stringValue": "None"}
    if isinstance(value, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {
                "kvlistValue": {
                    "values": [
                        # a None value is left out of the pair: the KeyValue's value
                        # is unset, as the protobuf encoding sends it
                        {"key": _json.key_text(k), "value": _json_value(v, depth + 1)}
                        if v is not None
                        else {"key": _json.key_text(k)}
                        for k, v in value.items()
                    ]
                }
            }
        if isinstance(value, (list, tuple)):
            return {"arrayValue": {"values": [_json_value(v, depth + 1) for v in value]}}
    return {"stringValue": _json._repr(value)}


def _json_attributes(items: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    # an attribute whose value is None is left out, as the OpenTelemetry SDK leaves it
    # out: its empty AnyValue ({}) is valid OTLP/JSON, but collectors refuse the whole
    # request for it (rotel answers 400)
    return [{"key": k, "value": _json_value(v)} for k, v in items if v is not None]


def json_log(log: OTLPLog) -> bytes:
    """One log record in the OTLP JSON mapping, serialised."""
    obj: dict[str, Any] = {
        "timeUnixNano": str(log.time_unix_nano),
        "observedTimeUnixNano": str(log.observed_time_unix_nano),
        "severityNumber": log.severity_number,
        "severityText": log.severity_text,
        "body": {"stringValue": log.body},
        "attributes": _json_attributes(log.attributes),
    }
    if log.trace_id is not None:
        obj["traceId"] = log.trace_id
        obj["spanId"] = log.span_id
        obj["flags"] = log.flags
    return _json.dumps(obj)


def encode_json(resource: Mapping[str, Any], groups: Sequence[tuple[str, list[bytes]]]) -> bytes:
    """An ``ExportLogsServiceRequest`` in JSON from records encoded by :func:`json_log`,
    grouped by scope name."""
    head = _json.dumps({"attributes": _json_attributes(resource.items())})
    scopes = b",".join(
        b'{"scope":' + _json.dumps({"name": scope}) + b',"logRecords":[' + b",".join(logs) + b"]}"
        for scope, logs in groups
    )
    return b'{"resourceLogs":[{"resource":' + head + b',"scopeLogs":[' + scopes + b"]}]}"


# -- protobuf ---------------------------------------------------------------------------
# The wire format is written here directly (the messages are small and fixed; building
# them as generated-class objects costs several times more per record): a field is a
# one-byte tag (field number << 3 | wire type) then a varint, 8 or 4 little-endian
# bytes, or a varint length and the bytes. Each record is serialised once (its size
# decides the batches); a request is framed around those bytes. The tests decode what
# is sent with opentelemetry-proto's generated classes.

_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    n = len(payload)
    if n < 0x80:
        return bytes((tag, n)) + payload
    return bytes((tag,)) + _varint(n) + payload


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")  # lone surrogates cannot be UTF-8


def _proto_value(value: Any, depth: int = 0) -> bytes:
    """An AnyValue message's bytes."""
    if isinstance(value, str):
        return _field(0x0A, _text(value))  # string_value = 1
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"  # bool_value = 2
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int_value = 3
        return _field(0x0A, int.__repr__(value).encode())
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)  # double_value = 4
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return _field(0x3A, bytes(value))  # bytes_value = 7
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            # kvlist_value = 6: KeyValueList.values = 1
            pairs = b"".join(
                _field(0x0A, _key_value(_json.key_text(k), v, depth + 1)) for k, v in value.items()
            )
            return _field(0x32, pairs)
        if isinstance(value, (list, tuple)):
            # array_value = 5: ArrayValue.values = 1
            return _field(0x2A, b"".join(_field(0x0A, _proto_value(v, depth + 1)) for v in value))
    return _field(0x0A, _text(_json._repr(value)))


def _key_value(key: str, value: Any, depth: int = 0) -> bytes:
    """A KeyValue message's bytes: key = 1, value = 2."""
    return _field(0x0A, _text(key)) + _field(0x12, _proto_value(value, depth))


# Most attributes repeat from record to record (file, function, line, thread, logger,
# bound context): their encoded field is remembered, bounded, keyed by exact type so
# that 1 and True stay apart.
_ATTRIBUTE_CACHE: dict[tuple[int, str, type, Any], bytes] = {}
_CACHE_MAX = 8192
_CACHEABLE = frozenset((str, int, bool))


def _proto_attributes(tag: int, items: Iterable[tuple[str, Any]]) -> bytes:
    cache = _ATTRIBUTE_CACHE
    out = []
    for k, v in items:
        t = type(v)
        if t in _CACHEABLE:
            ck = (tag, k, t, v)
            encoded = cache.get(ck)
            if encoded is None:
                encoded = _field(tag, _key_value(k, v))
                if t is not str or len(v) <= 256:
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[ck] = encoded
            out.append(encoded)
        else:
            out.append(_field(tag, _key_value(k, v)))
    return b"".join(out)


def protobuf_log(log: OTLPLog) -> bytes:
    """One ``LogRecord`` message, serialised."""
    parts = [
        b"\x09" + _pack_fixed64(log.time_unix_nano),  # time_unix_nano = 1 (fixed64)
        b"\x59" + _pack_fixed64(log.observed_time_unix_nano),  # observed = 11 (fixed64)
        b"\x10" + _varint(log.severity_number),  # severity_number = 2
        _field(0x1A, _text(log.severity_text)),  # severity_text = 3
        _field(0x2A, _field(0x0A, _text(log.body))),  # body = 5 (AnyValue string)
        _proto_attributes(0x32, log.attributes),  # attributes = 6
    ]
    if log.trace_id is not None and log.span_id is not None:
        parts.append(_trace_fields(log.trace_id, log.span_id, log.flags))
    return b"".join(parts)


# -- protobuf straight from a frozen record ---------------------------------------------
# What protobuf_log(map_record(thaw(v), message, ...)) makes, without building the
# LogRecord, the OTLPLog and the attribute list: a record's standard attributes are the
# same for every record of one call site on one thread, so their encoded block is
# remembered (bounded), as is each level's severity fields.

_NAME, _PATH, _FUNC, _LINE, _THREAD, _THREAD_NAME, _PROCESS = (
    FIELDS.index(name)
    for name in ("name", "pathname", "funcName", "lineno", "thread", "threadName", "process")
)
_SITE_CACHE: dict[tuple[Any, ...], bytes] = {}
_SEVERITY_CACHE: dict[tuple[int, str], bytes] = {}
_INT_OR_NONE = (int, type(None))
_STR_OR_NONE = (str, type(None))


def observed_field(observed_ns: int) -> bytes:
    """The ``observed_time_unix_nano`` field, shared by a batch's records."""
    return b"\x59" + _pack_fixed64(observed_ns)


def _site(v: Frozen, pid: int | None) -> bytes | None:
    """The encoded standard attributes of ``v`` (as :func:`map_record` lists them)."""
    name, path, func, line = v[_NAME], v[_PATH], v[_FUNC], v[_LINE]
    thread, thread_name, process = v[_THREAD], v[_THREAD_NAME], v[_PROCESS]
    if (
        type(line) is not int
        or type(thread) not in _INT_OR_NONE
        or type(process) not in _INT_OR_NONE
        or not all(type(x) in _STR_OR_NONE for x in (name, path, func, thread_name))
    ):
        return None  # a filter changed one (1 and True would share a cache entry)
    key = (name, path, func, line, thread, thread_name, process, pid)
    block = _SITE_CACHE.get(key)
    if block is None:
        block = _proto_attributes(0x32, _site_items(*key))
        if len(_SITE_CACHE) >= _CACHE_MAX:
            _SITE_CACHE.clear()
        _SITE_CACHE[key] = block
    return block


def protobuf_frozen(v: Frozen, observed: bytes, pid: int | None) -> tuple[str, bytes] | None:
    """``(scope, LogRecord message bytes)`` of the frozen record ``v`` whose body is its
    message: the bytes :func:`protobuf_log` writes for :func:`map_record` of the thawed
    record. None when ``v`` is not the common case (exception or stack text, a message
    that is not merged or cannot be): the caller takes that path."""
    msg = v[MSG]
    if v[EXC_TEXT] or v[STACK_INFO] or v[ARGS] or type(msg) is not str:
        return None
    levelno, levelname = v[LEVELNO], v[LEVELNAME]
    if type(levelno) is not int or type(levelname) is not str:
        return None
    site = _site(v, pid)
    if site is None:
        return None
    extra = b""
    trace = b""
    if len(v) > N_FIELDS:
        args = deferred(v)
        if args:
            try:
                msg = msg % args
            except Exception:  # noqa: BLE001 - the record's own path reports it
                return None
            if type(msg) is not str:
                return None
        if type(v[-1]) is tuple:  # extra= attributes
            d = extras(v)
            extra = _proto_attributes(
                0x32, [(k, x) for k, x in d.items() if k not in _NOT_EXTRA and k[:1] != "_"]
            )
            ids = _trace.ids(d)
            if ids is not None:
                trace = _trace_fields(ids[0], ids[1], 1 if ids[2] else 0)
    severity = _SEVERITY_CACHE.get((levelno, levelname))
    if severity is None:
        severity = _SEVERITY_CACHE[(levelno, levelname)] = (
            b"\x10" + _varint(severity_number(levelno)) + _field(0x1A, _text(levelname))
        )
    return v[_NAME], b"".join(
        (
            b"\x09" + _pack_fixed64(int(v[CREATED] * 1e9)),
            observed,
            severity,
            _field(0x2A, _field(0x0A, _text(msg))),
            site,
            extra,
            trace,
        )
    )


if ACCELERATED:
    from . import _speedups

    #: the compiled protobuf_frozen over a run of records (see _speedups.c), or None
    _otlp_run: Any = getattr(_speedups, "otlp_run", None)
    #: the compiled _log_records, or None
    _otlp_frames: Any = getattr(_speedups, "otlp_frames", None)
else:
    _otlp_run = None
    _otlp_frames = None
#: where otlp_run finds each standard field it reads
_RUN_AT = (_NAME, _PATH, _FUNC, _LINE, _THREAD, _THREAD_NAME, _PROCESS, LEVELNO, LEVELNAME)


def protobuf_run(
    items: list[Item], start: int, observed_ns: int, pid: Any, max_bytes: int
) -> tuple[int, list[tuple[Item, str, bytes]]]:
    """``(stop, [(item, scope, message bytes), ...])`` for the common frozen records of
    ``items`` from ``start`` on, each the bytes :func:`protobuf_frozen` writes, encoded
    by the compiled accelerator until the first record it does not take (one that is
    not the common case, or whose message with its scope exceeds ``max_bytes``):
    ``stop`` is where the caller goes on, record by record. ``(start, [])`` when the
    accelerator is not in use."""
    if _otlp_run is None:
        return start, []
    result: tuple[int, list[tuple[Item, str, bytes]]] = _otlp_run(
        items, start, observed_ns, pid, max_bytes, _RUN_AT, _NOT_EXTRA, _trace.TRACE_ATTRIBUTES
    )
    return result


def _trace_fields(trace_id: str, span_id: str, flags: int) -> bytes:
    """flags = 8 (fixed32), trace_id = 9, span_id = 10."""
    return (
        b"\x45"
        + _pack_fixed32(flags)
        + _field(0x4A, bytes.fromhex(trace_id))
        + _field(0x52, bytes.fromhex(span_id))
    )


def encode_protobuf(
    resource: Mapping[str, Any], groups: Sequence[tuple[str, list[bytes]]]
) -> bytes:
    """An ``ExportLogsServiceRequest`` from records encoded by :func:`protobuf_log`."""
    resource_bytes = _proto_attributes(0x0A, resource.items())  # Resource.attributes = 1
    parts = [_field(0x0A, resource_bytes)]  # ResourceLogs.resource = 1
    for scope, logs in groups:
        scope_bytes = _field(0x0A, _text(scope))  # InstrumentationScope.name = 1
        # ScopeLogs.scope = 1, ScopeLogs.log_records = 2
        body = _field(0x0A, scope_bytes) + _log_records(logs)
        parts.append(_field(0x12, body))  # ResourceLogs.scope_logs = 2
    return _field(0x0A, b"".join(parts))  # ExportLogsServiceRequest.resource_logs = 1


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message's fields (varint and
    length-delimited values decoded; fixed ones skipped as raw bytes)."""
    i = 0
    value: Any
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            size, i = _read_varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


# The field head (tag and length) of each record's message in a request, by its size:
# messages of a service's records come in few sizes, so each head is made once.
_HEADS: dict[int, bytes] = {}


def _head(size: int) -> bytes:
    head = _HEADS.get(size)
    if head is None:
        head = b"\x12" + _varint(size)  # ScopeLogs.log_records = 2
        if len(_HEADS) >= _CACHE_MAX:
            _HEADS.clear()
        _HEADS[size] = head
    return head


def _log_records(logs: list[bytes]) -> bytes:
    """The ``log_records`` fields of a ScopeLogs message: each message framed, joined."""
    if _otlp_frames is not None and type(logs) is list:
        framed: bytes | None = _otlp_frames(logs)
        if framed is not None:
            return framed
    heads = _HEADS
    parts = []
    for log in logs:
        parts.append(heads.get(len(log)) or _head(len(log)))
        parts.append(log)
    return b"".join(parts)


def framing_overhead(size: int) -> int:
    """Bytes a record of ``size`` bytes adds to a request beyond itself (tag + length)."""
    return len(_HEADS.get(size) or _head(size))


def parse_partial_success(body: bytes, content_type: str) -> tuple[int, str]:
    """(rejected log records, error message) from an ``ExportLogsServiceResponse``."""
    if not body:
        return 0, ""
    if content_type.startswith("application/json"):
        import json

        data = json.loads(body)
        partial = (data or {}).get("partialSuccess") or {}
        return int(partial.get("rejectedLogRecords") or 0), str(partial.get("errorMessage") or "")
    # ExportLogsServiceResponse.partial_success = 1:
    #   rejected_log_records = 1 (int64), error_message = 2 (string)
    rejected, message = 0, ""
    for number, wire, value in _fields(body):
        if number == 1 and wire == 2:
            for inner, inner_wire, inner_value in _fields(value):
                if inner == 1 and inner_wire == 0:
                    # an int64: a negative one is ten bytes of two's complement, as
                    # JSON's "rejectedLogRecords": -1 is -1 (then nothing is rejected)
                    rejected = inner_value - (1 << 64) if inner_value >= 1 << 63 else inner_value
                elif inner == 2 and inner_wire == 2:
                    message = inner_value.decode("utf-8", "replace")
    return rejected, message
