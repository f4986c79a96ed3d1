"""HandlerSink: runs a plain ``logging.Handler`` inside a Dispatcher, off the loop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from ._context import need_context, run_in
from ._fileio import FileWorker
from ._notices import is_notice
from ._sink import Sink
from ._validate import check_instance

__all__ = ["HandlerSink"]


class HandlerSink(Sink):
    """Adapt a synchronous ``logging.Handler`` to the Sink interface.

    The handler runs on its own worker thread, one record at a time, through its own
    ``handle()`` (so its filters, lock and ``handleError`` apply as usual). When it has
    filters or a formatter of its own class when wrapped, each record is handled in the
    context it was logged in, so those can read the caller's contextvars. Its level
    is the handler's level. ``flush``/``aclose`` call the handler's ``flush``/``close``
    on that thread.
    """

    changes_records = True  # its filters, and on its own thread

    def __init__(self, handler: logging.Handler) -> None:
        check_instance("handler", handler, logging.Handler, "a logging.Handler")
        self.handler = handler
        super().__init__(handler.level)
        # not the `name` setter: that would register this wrapper in logging's
        # handler registry under the wrapped handler's name
        self._name = handler.get_name()
        self._worker = FileWorker(type(handler).__name__)
        self._check_context()

    def _check_context(self) -> None:
        """Make records carry the caller's context if the wrapped handler has filters
        or a formatter of its own class: they may read the caller's contextvars, as
        they would on the logger, and the handler runs in that context. Checked when
        wrapped, as the sink's lane starts and before each of its batches (the
        handler may get them at any time, by attribute too)."""
        formatter = self.handler.formatter
        if self.handler.filters or (
            formatter is not None and type(formatter) is not logging.Formatter
        ):
            need_context(self)

    @property
    def level(self) -> int:
        """The wrapped handler's level (assigning sets it)."""
        return self.handler.level

    @level.setter
    def level(self, value: int) -> None:
        self.handler.level = value

    def setLevel(self, level: int | str) -> None:
        """Set the wrapped handler's level."""
        self.handler.setLevel(level)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Pass each record to the handler's ``handle`` on the worker thread.

        A record whose ``handle`` raises (an ``emit`` that does not catch its own
        errors) goes to the handler's ``handleError`` and is counted; the next record
        is handled normally.
        """
        self.error_count += await self._worker.run(_handle_all, self.handler, records)

    async def emit(self, record: logging.LogRecord) -> None:
        """Pass one record to the handler on the worker thread."""
        await self._worker.run(run_in, record, self.handler.handle, record)

    async def flush(self) -> None:
        """Call the handler's ``flush()`` on the worker thread."""
        await self._worker.run(self.handler.flush)

    async def _aclose(self) -> None:
        try:
            await self._worker.run(self.handler.close)
        finally:
            self._worker.shutdown()

    def __repr__(self) -> str:
        return f"<HandlerSink {self.handler!r}>"


def _handle_all(handler: logging.Handler, records: Sequence[logging.LogRecord]) -> int:
    """Handle each record; returns how many raised (each given to ``handleError``)."""
    handle = handler.handle
    failed = 0
    for record in records:
        try:
            run_in(record, handle, record)
        except Exception:  # noqa: BLE001 - per-record boundary: the next record goes on
            failed += not is_notice(record)  # a notice of ours is not a record logged
            # inside the except block: the handler's handleError reports this error
            with contextlib.suppress(Exception):
                handler.handleError(record)
    return failed
