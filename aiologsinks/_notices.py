"""The pipeline's own notices (a lane's drop announcements), told apart from records.

A notice is delivered through a sink like a record, but it is not one the application
logged: when a sink fails to deliver it, or its outbox drops it, that must not be
counted as a lost record (the accounting is of the application's records, exactly).
The lane marks the notices it makes (:func:`mark`) and hands them over inside
:func:`delivering_notice`; the sinks' error counting and the outbox's loss callbacks
leave them out.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import weakref
from collections.abc import Iterator

__all__ = ["delivering_notice", "handing_over_notice", "is_notice", "mark"]

_notices: weakref.WeakSet[logging.LogRecord] = weakref.WeakSet()
_handing_over: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "aiologsinks_handing_over_notice", default=False
)


def mark(record: logging.LogRecord) -> logging.LogRecord:
    """Mark ``record`` as a notice of the library's own; returns it."""
    _notices.add(record)
    return record


def is_notice(record: object) -> bool:
    """True for a record :func:`mark` marked (frozen records never are)."""
    return isinstance(record, logging.LogRecord) and record in _notices


@contextlib.contextmanager
def delivering_notice() -> Iterator[None]:
    """Within: what a sink's outbox takes in ``put`` is a notice's encoding."""
    token = _handing_over.set(True)
    try:
        yield
    finally:
        _handing_over.reset(token)


def handing_over_notice() -> bool:
    """True inside :func:`delivering_notice`."""
    return _handing_over.get()
