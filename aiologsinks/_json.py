"""JSONFormatter: one JSON object per record, for any sink.

The object holds the standard fields a log indexer expects (time, level, logger,
message, source location, process and thread, exception and stack text, trace ids),
then every ``extra=`` field and bound context field (any attribute a record carries
beyond the standard ``LogRecord`` ones). Keys can be chosen, renamed, or taken from a
preset (``"ecs"``, ``"otel"``). It never raises on a value it cannot serialise: such a
value is written as its ``repr()`` (and ``"<unrepresentable T>"`` when ``repr`` fails).

``orjson`` is used when installed (the ``json`` extra); the standard ``json`` module
otherwise. Both give the same objects.
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import _trace
from ._record import FIELDS
from ._validate import ArgumentTypeError, ArgumentValueError

__all__ = ["PRESETS", "STANDARD_FIELDS", "JSONFormatter", "extra_items", "iso_utc", "key_text"]

try:  # the optional fast serialiser
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    _orjson = None  # type: ignore[assignment]

#: every field the formatter knows, by its default output name
STANDARD_FIELDS: tuple[str, ...] = (
    "timestamp",
    "level",
    "levelno",
    "logger",
    "message",
    "module",
    "function",
    "file",
    "path",
    "line",
    "process",
    "process_name",
    "thread",
    "thread_name",
    "task",
    "created",
    "exception",
    "stack",
    "trace_id",
    "span_id",
    "trace_sampled",
)

#: the fields written when ``fields`` is not given (exception, stack and trace ids only
#: when the record has them)
DEFAULT_FIELDS: tuple[str, ...] = (
    "timestamp",
    "level",
    "logger",
    "message",
    "module",
    "function",
    "line",
    "process",
    "thread_name",
    "exception",
    "stack",
    "trace_id",
    "span_id",
)

#: renamings for common schemas: Elastic Common Schema and OpenTelemetry log names
PRESETS: dict[str, dict[str, str]] = {
    "ecs": {
        "timestamp": "@timestamp",
        "level": "log.level",
        "logger": "log.logger",
        "message": "message",
        "module": "log.origin.file.name",
        "function": "log.origin.function",
        "file": "log.origin.file.name",
        "path": "log.origin.file.path",
        "line": "log.origin.file.line",
        "process": "process.pid",
        "process_name": "process.name",
        "thread": "process.thread.id",
        "thread_name": "process.thread.name",
        "exception": "error.stack_trace",
        "stack": "log.origin.stack_trace",
        "trace_id": "trace.id",
        "span_id": "span.id",
    },
    "otel": {
        "timestamp": "timestamp",
        "level": "severity_text",
        "levelno": "severity_number",
        "logger": "scope.name",
        "message": "body",
        "function": "code.function.name",
        "path": "code.file.path",
        "line": "code.line.number",
        "process": "process.pid",
        "thread": "thread.id",
        "thread_name": "thread.name",
        "exception": "exception.stacktrace",
        "stack": "code.stacktrace",
        "trace_id": "trace_id",
        "span_id": "span_id",
        "trace_sampled": "trace_flags",
    },
}

# attributes that are not extras: the LogRecord's own, what Formatter.format adds,
# and the trace ids (written as trace_id/span_id)
_NOT_EXTRA = frozenset(FIELDS) | {"message", "asctime"} | _trace.TRACE_ATTRIBUTES
_N_FIELDS = len(FIELDS)


def extra_items(d: dict[str, Any]) -> list[tuple[str, Any]]:
    """The ``extra=`` and bound-context attributes of a record's ``__dict__``."""
    return [(k, v) for k, v in d.items() if k not in _NOT_EXTRA and not k.startswith("_")]


_last_second = -1
_last_prefix = ""


def iso_utc(created: float) -> str:
    """``created`` (seconds since the epoch) as ISO 8601 UTC with microseconds."""
    global _last_second, _last_prefix
    seconds = int(created)
    micros = int((created - seconds) * 1e6 + 0.5)
    if micros >= 1_000_000:  # rounding carried into the next second
        seconds, micros = seconds + 1, micros - 1_000_000
    if seconds != _last_second:
        # one strftime per second of log time; records of the same second reuse it
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = seconds
        prefix = _last_prefix
    else:
        prefix = _last_prefix
    return f"{prefix}.{micros:06d}Z"


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not fail the record
        return f"<unrepresentable {type(value).__name__}>"


def key_text(key: Any) -> str:
    """A mapping key as an object key, as the stdlib encoder and orjson write it
    (``None`` as ``"null"``, ``True`` as ``"true"``); any other type by what it would
    be written as as a value, its ``repr()`` at worst: a key never fails the record."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    value = _default(key)
    return value if isinstance(value, str) else _repr(value)


def _default(value: Any) -> Any:
    """What JSON cannot hold: the common types as orjson writes them, else the repr."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return _repr(value)


def _sanitised(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that the stdlib encoder accepts (repr for the rest)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # as orjson: JSON has no NaN
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    if depth > 20:
        return _repr(value)
    if isinstance(value, Mapping):
        return {key_text(k): _sanitised(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitised(v, depth + 1) for v in value]
    return _default(value)


# as orjson writes: no spaces, UTF-8 rather than \\u escapes
_COMPACT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "default": _default}
# built once: json.dumps with options builds an encoder per call
_STRICT = json.JSONEncoder(allow_nan=False, **_COMPACT)
_LENIENT = json.JSONEncoder(**_COMPACT)


def _dumps_stdlib(obj: dict[str, Any]) -> bytes:
    try:
        text = _STRICT.encode(obj)
    except Exception:  # noqa: BLE001 - cycles, odd keys, NaN: sanitise, then encode
        text = _LENIENT.encode(_sanitised(obj))
    return text.encode("utf-8", "replace")


if _orjson is not None:
    _ORJSON_OPTIONS = _orjson.OPT_NON_STR_KEYS

    def _dumps(obj: dict[str, Any]) -> bytes:
        try:
            return _orjson.dumps(obj, default=_default, option=_ORJSON_OPTIONS)
        except Exception:  # noqa: BLE001 - ints beyond 64 bits, cycles, surrogates
            return _dumps_stdlib(obj)
else:  # pragma: no cover - exercised where orjson is not installed
    _dumps = _dumps_stdlib


def dumps(obj: dict[str, Any]) -> bytes:
    """Serialise ``obj`` to UTF-8 JSON; never raises (repr for what JSON cannot hold)."""
    return _dumps(obj)


_SKIP: Any = object()  # a getter's answer for "the record has no such field"


def _exception(record: logging.LogRecord, d: dict[str, Any]) -> Any:
    text = d.get("exc_text")
    if not text and d.get("exc_info"):
        text = _exc_formatter.formatException(d["exc_info"])
    return text or _SKIP


def _trace_value(index: int) -> Callable[[logging.LogRecord, dict[str, Any]], Any]:
    def get(record: logging.LogRecord, d: dict[str, Any]) -> Any:
        ids = _trace.ids(d)
        return _SKIP if ids is None else ids[index]

    return get


# the plain fields as expressions on ``d`` (the record's __dict__) and ``record``, for
# the per-formatter function JSONFormatter compiles (one dict display, no calls per field)
_EXPRESSIONS: dict[str, str] = {
    "timestamp": 'iso_utc(d["created"])',
    "level": 'd["levelname"]',
    "levelno": 'd["levelno"]',
    "logger": 'd["name"]',
    "message": "record.getMessage()",
    "module": 'd["module"]',
    "function": 'd["funcName"]',
    "file": 'd["filename"]',
    "path": 'd["pathname"]',
    "line": 'd["lineno"]',
    "process": 'd["process"]',
    "process_name": 'd["processName"]',
    "thread": 'd["thread"]',
    "thread_name": 'd["threadName"]',
    "task": 'd.get("taskName")',
    "created": 'd["created"]',
}


def _compile(
    plan: list[tuple[str, str]], static: dict[str, Any], extras: bool, reserved: frozenset[str]
) -> Callable[[logging.LogRecord], dict[str, Any]]:
    """Build ``to_dict`` for one formatter's choice of fields.

    The keys are passed in as variables (never pasted into the source), so a renamed
    key cannot change the code; only the field names of ``_EXPRESSIONS`` are.
    """
    namespace: dict[str, Any] = {
        "iso_utc": iso_utc,
        "extra_items": extra_items,
        "_SKIP": _SKIP,
        "GETTERS": _GETTERS,
        "STATIC": static,
        "RESERVED": reserved,
        "N_FIELDS": _N_FIELDS,
    }
    display, optional = [], []
    for i, (key, field) in enumerate(plan):
        namespace[f"K{i}"] = key
        if field in _EXPRESSIONS:
            display.append(f"K{i}: {_EXPRESSIONS[field]}")
        else:
            optional.append(f"    v = GETTERS[{field!r}](record, d)")
            optional.append(f"    if v is not _SKIP:\n        out[K{i}] = v")
    source = ["def to_dict(record):", "    d = record.__dict__"]
    source.append("    out = {" + ("**STATIC, " if static else "") + ", ".join(display) + "}")
    source.extend(optional)
    if extras:
        source.append("    if len(d) != N_FIELDS:")
        source.append("        for k, v in extra_items(d):")
        source.append("            if k not in RESERVED:")
        source.append("                out[k] = v")
    source.append("    return out")
    exec("\n".join(source), namespace)  # noqa: S102 - our own code, keys never pasted in
    return namespace["to_dict"]  # type: ignore[no-any-return]


_exc_formatter = logging.Formatter()
_GETTERS: dict[str, Callable[[logging.LogRecord, dict[str, Any]], Any]] = {
    "timestamp": lambda r, d: iso_utc(d["created"]),
    "level": lambda r, d: d["levelname"],
    "levelno": lambda r, d: d["levelno"],
    "logger": lambda r, d: d["name"],
    "message": lambda r, d: r.getMessage(),
    "module": lambda r, d: d["module"],
    "function": lambda r, d: d["funcName"],
    "file": lambda r, d: d["filename"],
    "path": lambda r, d: d["pathname"],
    "line": lambda r, d: d["lineno"],
    "process": lambda r, d: d["process"],
    "process_name": lambda r, d: d["processName"],
    "thread": lambda r, d: d["thread"],
    "thread_name": lambda r, d: d["threadName"],
    "task": lambda r, d: d.get("taskName"),
    "created": lambda r, d: d["created"],
    "exception": _exception,
    "stack": lambda r, d: d.get("stack_info") or _SKIP,
    "trace_id": _trace_value(0),
    "span_id": _trace_value(1),
    "trace_sampled": _trace_value(2),
}


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object (a single line; no trailing newline).

    ``fields`` chooses the standard fields, in output order (default:
    :data:`DEFAULT_FIELDS`; all names are in :data:`STANDARD_FIELDS`). ``timestamp`` is
    ISO 8601 UTC with microseconds (``2026-01-02T03:04:05.123456Z``); ``message`` is
    ``msg % args``; ``exception`` and ``stack`` are the traceback and stack texts and
    ``trace_id``/``span_id``/``trace_sampled`` the span active at the logging call —
    these are left out when the record has none. ``preset`` (``"ecs"`` or ``"otel"``)
    renames fields to a schema's names, and ``rename`` maps a field's default name to the
    key to write (applied after the preset). ``extras=True`` (default) adds every
    attribute a record has beyond the standard ones (``extra=`` fields, bound context),
    under its own name; an extra never replaces a standard field. ``static`` adds
    constant fields (e.g. a service name) to every object.

    Values JSON cannot hold are written as their ``repr()``; ``format`` never raises
    because of a value. :meth:`format_bytes` returns the UTF-8 bytes directly.
    """

    def __init__(
        self,
        fields: Iterable[str] | None = None,
        *,
        preset: str | None = None,
        rename: Mapping[str, str] | None = None,
        extras: bool = True,
        static: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(fields, str):
            raise ArgumentTypeError("fields", f"expected a sequence of field names, got {fields!r}")
        chosen = tuple(DEFAULT_FIELDS if fields is None else fields)
        for name in chosen:
            if name not in STANDARD_FIELDS:
                raise ArgumentValueError(
                    "fields", f"unknown field {name!r} (known: {', '.join(STANDARD_FIELDS)})"
                )
        if preset is not None and preset not in PRESETS:
            raise ArgumentValueError("preset", f"expected one of {sorted(PRESETS)}, got {preset!r}")
        if rename is not None and not isinstance(rename, Mapping):
            raise ArgumentTypeError("rename", f"expected a mapping, got {rename!r}")
        names = dict(PRESETS[preset]) if preset else {}
        for old, new in (rename or {}).items():
            if old not in STANDARD_FIELDS or not isinstance(new, str):
                raise ArgumentValueError(
                    "rename", f"expected standard field -> str, got {old!r}: {new!r}"
                )
            names[old] = new
        if static is not None and not isinstance(static, Mapping):
            raise ArgumentTypeError("static", f"expected a mapping, got {static!r}")
        self.fields = chosen
        self.extras = bool(extras)
        self.static = dict(static or {})
        self.names = {name: names.get(name, name) for name in STANDARD_FIELDS}
        reserved = frozenset(self.names[n] for n in chosen) | frozenset(self.static)
        plan = [(self.names[name], name) for name in chosen]
        self._to_dict = _compile(plan, self.static, self.extras, reserved)
        _trace.enable()

    def to_dict(self, record: logging.LogRecord) -> dict[str, Any]:
        """The object :meth:`format` serialises, as a dict."""
        return self._to_dict(record)

    def format_bytes(self, record: logging.LogRecord) -> bytes:
        """The record as UTF-8 JSON bytes (what :meth:`format` returns, encoded)."""
        return _dumps(self._to_dict(record))

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        return _dumps(self._to_dict(record)).decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fields={list(self.fields)}>"
