"""Trace correlation: the active OpenTelemetry span, read at the logging call.

A record is formatted in a sink's lane, long after the call and on another task (or
thread), where the caller's span is no longer current. So the ids are read where the
record is made: the shim calls :data:`hook` (when set) on every record before queueing
it, and :func:`stamp` puts the current span's ids on the record as attributes. The
attribute names are those of ``opentelemetry-instrumentation-logging``, so records that
its ``LoggingInstrumentor`` already stamped are read the same way.

The hook is installed by :func:`enable` (``OTLPSink`` and ``JSONFormatter`` call it) and
only when ``opentelemetry-api`` is importable; without it the shim pays one ``is None``
check per record. With the API's default runtime context, most logging calls of a
service happen outside any trace, where the context is empty: :data:`gate` lets the
compiled shim see that with one C call and not call the hook at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

__all__ = [
    "SAMPLED",
    "SPAN_ID",
    "TRACE_ATTRIBUTES",
    "TRACE_ID",
    "enable",
    "gate",
    "gated",
    "hook",
    "ids",
]

#: record attributes: trace id (32 hex digits), span id (16 hex digits), sampled flag
TRACE_ID = "otelTraceID"
SPAN_ID = "otelSpanID"
SAMPLED = "otelTraceSampled"
#: every attribute this module may set (not user extras)
TRACE_ATTRIBUTES = frozenset((TRACE_ID, SPAN_ID, SAMPLED, "otelServiceName"))

#: called by the shim with each record before it is queued (None: trace capture off)
hook: Callable[[logging.LogRecord], None] | None = None

#: the ``ContextVar`` holding the current OpenTelemetry context (the API's default
#: runtime context), or None: while it holds an empty context (no span) and ``hook`` is
#: still :data:`gated`, the hook would do nothing, and the compiled shim skips the call
gate: ContextVar[Any] | None = None
#: the hook that :data:`gate` was made for (a hook set by anyone else is always called)
gated: Callable[[logging.LogRecord], None] | None = None


def enable() -> bool:
    """Install the capture hook; False when ``opentelemetry-api`` is not installed."""
    global hook, gate, gated
    if hook is not None:
        return True
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    get_current_span = trace.get_current_span
    var = _context_var()
    peek = var.get if var is not None else None

    def stamp(record: logging.LogRecord) -> None:
        """Put the active span's ids on ``record`` (nothing when no span is active)."""
        try:
            if peek is not None and not peek():
                return  # an empty OpenTelemetry context: no span (logging outside traces)
            context = get_current_span().get_span_context()
            if context.is_valid:
                d = record.__dict__
                d[TRACE_ID] = f"{context.trace_id:032x}"
                d[SPAN_ID] = f"{context.span_id:016x}"
                d[SAMPLED] = context.trace_flags.sampled
        except Exception:  # noqa: BLE001, S110 - tracing must never fail a logging call
            pass

    # the gate first: a shim that sees the hook set sees the gate that goes with it
    gate, gated = var, stamp
    hook = stamp
    return True


def _context_var() -> ContextVar[Any] | None:
    """The ``ContextVar`` of the current OpenTelemetry context when the runtime context
    is the API's default (reading it is one C call where ``get_current_span`` takes four
    Python calls to find that it is empty), else None. An empty context holds no span,
    so ``get_current_span()`` would give the invalid span there."""
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:
        return None
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is not ContextVarsRuntimeContext or type(var) is not ContextVar:
        return None
    return var


def ids(d: dict[str, Any]) -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) from a record's ``__dict__``, or None.

    The ids are W3C's: 32 and 16 hex digits, not all zero, given in lower case. Any
    other value (``extra=`` can set anything under these names) is no trace context:
    written as it is, one record's bad id would make a collector refuse the whole
    request it travels in.
    """
    global _last
    trace_id = d.get(TRACE_ID)
    span_id = d.get(SPAN_ID)
    # LoggingInstrumentor writes "0" when no span is active
    if not trace_id or not span_id or trace_id == "0" or span_id == "0":
        return None
    trace, span = str(trace_id), str(span_id)
    last = _last  # the records of one span come one after another: checked once
    if trace != last[0] or span != last[1]:
        last = _last = (trace, span, _w3c(trace, span))
    valid = last[2]
    return None if valid is None else (valid[0], valid[1], bool(d.get(SAMPLED)))


def _w3c(trace: str, span: str) -> tuple[str, str] | None:
    """The ids in lower case when they are W3C ids, else None."""
    if len(trace) != 32 or len(span) != 16:
        return None
    try:
        # bytes.fromhex skips spaces between digit pairs: the lengths above and below
        # together refuse them
        trace_bytes, span_bytes = bytes.fromhex(trace), bytes.fromhex(span)
    except ValueError:
        return None
    if (
        len(trace_bytes) != 16
        or len(span_bytes) != 8
        or not any(trace_bytes)
        or not any(span_bytes)
    ):
        return None
    return trace_bytes.hex(), span_bytes.hex()


#: the last ids checked and their verdict (one tuple, replaced whole: threads may share it)
_last: tuple[str, str, tuple[str, str] | None] = ("", "", None)
