"""The Sink base class: the async counterpart of ``logging.Handler``."""

from __future__ import annotations

import enum
import logging
import sys
import traceback
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from ._record import Frozen, as_record
from ._validate import check_level

__all__ = ["Sink", "SinkState"]

_default_formatter = logging.Formatter()


class SinkState(enum.Enum):
    """Lifecycle of a sink."""

    #: constructed; I/O resources may be opened lazily on first emit
    OPEN = "open"
    #: ``aclose()`` is running: no new records are accepted
    CLOSING = "closing"
    #: ``aclose()`` finished; a second ``aclose()`` is a no-op
    CLOSED = "closed"


class Sink(logging.Filterer):
    """Base class of every sink: a ``logging.Handler`` whose I/O methods are coroutines.

    A sink has the handler's ``level``, ``formatter``, filters (``addFilter``,
    ``removeFilter``, ``filter``), ``name`` and ``handleError``, with the same
    meaning as in :class:`logging.Handler`. ``emit``, ``emit_batch``, ``handle``,
    ``flush`` and ``aclose`` are coroutines. Subclasses override :meth:`emit` (one
    record) or :meth:`emit_batch` (a batch: one write, one request, one mail).

    A sink does not know the dispatcher exists: a :class:`~aiologsinks.Dispatcher`
    calls :meth:`emit_batch` from one worker task per sink, so a sink's coroutines are
    never entered concurrently by the pipeline. A sink is also usable on its own as an
    async context manager (``async with FileSink(path) as sink: await sink.handle(r)``).
    """

    #: set by sinks that cannot honour ``setFormatter`` (HTTPSink, as in the stdlib)
    _uses_formatter = True

    def __init__(self, level: int | str = logging.NOTSET) -> None:
        super().__init__()
        self._name: str | None = None
        self.level: int = _check_level(level)
        self.formatter: logging.Formatter | None = None
        self.state = SinkState.OPEN
        #: records that went to handleError through the pipeline (read by stats())
        self.error_count = 0

    # -- logging.Handler-compatible surface -------------------------------------------

    @property
    def name(self) -> str | None:
        """The sink's name (``None`` unless set); stats() reports sinks by it."""
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    def get_name(self) -> str | None:
        """Return :attr:`name` (``logging.Handler.get_name``)."""
        return self._name

    def set_name(self, name: str | None) -> None:
        """Set :attr:`name` (``logging.Handler.set_name``)."""
        self._name = name

    def setLevel(self, level: int | str) -> None:
        """Set the threshold below which records are ignored by this sink."""
        self.level = _check_level(level)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        """Set the formatter used by :meth:`format`."""
        self.formatter = fmt

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` with this sink's formatter, or the stdlib default one."""
        fmt = self.formatter or _default_formatter
        return fmt.format(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Handle an error that occurred while delivering ``record``.

        Called from within the ``except`` block that caught it. As
        ``logging.Handler.handleError``: when ``logging.raiseExceptions`` is true,
        print the traceback and the offending record to ``sys.stderr``; otherwise
        ignore the error. Override it to route delivery errors elsewhere.
        """
        if not (logging.raiseExceptions and sys.stderr):
            return
        exc_type, exc, tb = sys.exc_info()
        try:
            parts = ["--- Logging error ---\n"]
            parts.extend(traceback.format_exception(exc_type, exc, tb))
            parts.append(f"Sink: {self!r}\n")
            try:
                parts.append(f"Message: {record.msg!r}\nArguments: {record.args!r}\n")
            except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the error
                parts.append("Unable to print the message and arguments.\n")
            sys.stderr.write("".join(parts))
        except OSError:  # pragma: no cover - stderr itself is gone (as the stdlib)
            pass
        finally:
            del exc_type, exc, tb

    def _fail(self, record: logging.LogRecord | Frozen) -> None:
        """Count a delivery error for ``record`` (thawed if frozen) and pass it to
        :meth:`handleError`."""
        self.error_count += 1
        self.handleError(as_record(record))

    # -- the I/O surface ----------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Deliver one record. Subclasses override this or :meth:`emit_batch`.

        May raise: :meth:`handle` and the default :meth:`emit_batch` route the
        exception to :meth:`handleError` and go on with the next record.
        """
        raise NotImplementedError(f"{type(self).__name__} must override emit or emit_batch")

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Deliver records that already passed this sink's level and filters.

        The default awaits :meth:`emit` per record; an exception from one record goes
        to :meth:`handleError` and the next record is delivered normally. Batching
        sinks override this to make one write, one request or one mail per batch.
        Returns when every record was delivered or handed to :meth:`handleError`.
        """
        for record in records:
            try:
                await self.emit(record)
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(record)

    async def handle(self, record: logging.LogRecord) -> bool:
        """Filter ``record`` and, if it passes, emit it (``logging.Handler.handle``).

        Returns what the filters returned: ``False`` when the record was dropped.
        A filter may return a replacement record (Python 3.12 semantics), which is
        then emitted instead. Delivery errors go to :meth:`handleError`.
        """
        rv: Any = self.filter(record)
        if isinstance(rv, logging.LogRecord):
            record = rv
        if rv:
            try:
                await self.emit(record)
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(record)
        return bool(rv)

    def passes(self, records: Iterable[logging.LogRecord]) -> list[logging.LogRecord]:
        """Return the records that pass this sink's filters (replacements applied)."""
        if not self.filters:
            return list(records)
        out: list[logging.LogRecord] = []
        for record in records:
            rv: Any = self.filter(record)
            if isinstance(rv, logging.LogRecord):
                out.append(rv)
            elif rv:
                out.append(record)
        return out

    async def aopen(self) -> None:
        """Acquire resources eagerly (open a file, connect); the base does nothing.

        The dispatcher awaits it when it starts the sink's lane, and ``async with``
        awaits it on entry. Sinks must still open lazily on first emit when this was
        not called or failed, so a failure here is never fatal.
        """

    async def flush(self) -> None:
        """Make every record emitted so far durable at the destination.

        The base implementation does nothing. Returns when the flush completed.
        """

    async def aclose(self) -> None:
        """Release the sink's resources; idempotent (a second call returns at once).

        Subclasses override :meth:`_aclose` (not this method) to close their
        resources; it is awaited once, and the sink counts as closed even when it
        raises.
        """
        if self.state is not SinkState.OPEN:
            return
        self.state = SinkState.CLOSING
        try:
            await self._aclose()
        finally:
            self.state = SinkState.CLOSED

    async def _aclose(self) -> None:
        """Close the sink's resources. Called once by :meth:`aclose`."""

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started."""
        return self.state is not SinkState.OPEN

    async def __aenter__(self) -> Sink:
        await self.aopen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} ({level})>"


def _check_level(level: int | str) -> int:
    """Validate a level the way ``logging`` does, naming the parameter on failure."""
    return check_level("level", level)
