"""The trace hook reads the caller's span at the logging call: inside a span its ids go
on the record; outside any span (an empty OpenTelemetry context, the quick check) and
in a context that holds other values but no span, nothing does."""

from __future__ import annotations

import logging

from aiologsinks import _trace


def _stamped(record: logging.LogRecord) -> tuple[str, str, bool] | None:
    assert _trace.hook is not None
    _trace.hook(record)
    return _trace.ids(record.__dict__)


def test_ids_inside_a_span_and_none_outside_or_in_a_spanless_context() -> None:
    from opentelemetry import baggage, context
    from opentelemetry.sdk.trace import TracerProvider

    assert _trace.enable()
    assert _trace._context_var() is not None  # the API's default runtime context
    tracer = TracerProvider().get_tracer("tests")
    make = logging.makeLogRecord
    assert _stamped(make({"msg": "before"})) is None
    with tracer.start_as_current_span("work") as span:
        ids = _stamped(make({"msg": "inside"}))
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            nested = _stamped(make({"msg": "inside, with baggage"}))
        finally:
            context.detach(token)
    ctx = span.get_span_context()
    assert ids == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", True)
    assert nested == ids
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        assert context.get_current()  # not empty: the full lookup runs, and finds no span
        assert _stamped(make({"msg": "baggage only"})) is None
    finally:
        context.detach(token)
    assert _stamped(make({"msg": "after"})) is None
