"""HandlerSink: runs a plain ``logging.Handler`` inside a Dispatcher, off the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from ._context import need_context, run_in
from ._fileio import FileWorker
from ._hooks import class_attribute
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
    on that thread. A record the handler gives to its ``handleError`` (the stdlib's
    handlers catch their own errors) is counted in ``stats().errors``: the handler's
    ``handleError`` is wrapped on the instance to tell, until the sink is closed.
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
        self._counting = _count_reports(handler)
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
        is handled normally. Interrupted (``aclose(timeout=...)``), the call leaves to
        the thread the records it took already and returns the others.
        """
        run = _HandleAll(self.handler, records)
        done = self._worker.start(run)
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            # a cancelled await does not stop the thread: the records it took are
            # handled (its failures counted when it is done), the rest go back
            self._take_over(run.stop())
            done.add_done_callback(lambda _: self._count_failed(run))
            raise
        self._count_failed(run)

    def _count_failed(self, run: _HandleAll) -> None:
        self.error_count += run.failed

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
            _uncount_reports(self._counting)

    def __repr__(self) -> str:
        return f"<HandlerSink {self.handler!r}>"


class _HandleAll:
    """A batch's records through a handler's ``handle``, one by one, on the worker
    thread; :meth:`stop` ends it after the record in hand."""

    def __init__(self, handler: logging.Handler, records: Sequence[logging.LogRecord]) -> None:
        self.handler = handler
        self.records = records
        #: records whose handle() raised (each given to the handler's handleError)
        self.failed = 0
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        handler, records = self.handler, self.records
        _running.run = self
        try:
            while True:
                with self._lock:
                    if self._next >= len(records):
                        return
                    record = records[self._next]
                    self._next += 1
                self.reported = False
                try:
                    run_in(record, handler.handle, record)
                except Exception:  # noqa: BLE001 - per-record boundary: the next one goes on
                    self.reported = True
                    # inside the except block: the handler's handleError reports it
                    with contextlib.suppress(Exception):
                        handler.handleError(record)
                # (a stdlib handler catches its own emit's errors and reports them)
                if self.reported and not is_notice(record):  # a notice was not logged
                    self.failed += 1
        finally:
            _running.run = None

    def stop(self) -> int:
        """Take no more records; return how many were taken (in hand or handled)."""
        with self._lock:
            taken, self._next = self._next, len(self.records)
            return taken


#: the batch a worker thread is handling (see _count_reports)
_running = threading.local()


class _Counting:
    """``handleError`` set on a wrapped handler's instance while HandlerSinks use it:
    it tells the batch being handled on this thread that its record failed (the
    stdlib's handlers catch their own ``emit`` errors and report them there, so
    nothing else would tell, and the record would count as delivered), then reports
    as the handler would have (elsewhere, the handler used directly, only that)."""

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        #: the handleError set on the instance before (None: the class's, looked up
        #: at each call, so that a patch of the class still applies)
        self.previous = handler.__dict__.get("handleError")
        #: the HandlerSinks using it (it goes with the last one's close)
        self.users = 1

    def __call__(self, record: logging.LogRecord) -> None:
        run = getattr(_running, "run", None)
        if run is not None and run.handler is self.handler:
            run.reported = True
        if self.previous is not None:
            self.previous(record)
        else:
            # bound as the class binds it (a staticmethod, a classmethod, a callable
            # object that is no descriptor)
            cls = type(self.handler)
            attr: Any = class_attribute(cls, "handleError")
            bind = getattr(type(attr), "__get__", None)
            (attr if bind is None else bind(attr, self.handler, cls))(record)


def _count_reports(handler: logging.Handler) -> _Counting | None:
    """Set :class:`_Counting` on ``handler`` (or count one more user of the one
    there); returns it, for :func:`_uncount_reports` (None: the handler's class
    makes it a property; its failures then count as delivered)."""
    current = handler.__dict__.get("handleError")
    if isinstance(current, _Counting) and current.handler is handler:
        current.users += 1
        return current
    if hasattr(type(class_attribute(type(handler), "handleError")), "__set__"):
        return None  # a property: setting it is the class's business, not ours
    counting = _Counting(handler)
    handler.handleError = counting  # type: ignore[method-assign]
    return counting


def _uncount_reports(counting: _Counting | None) -> None:
    """One user less of ``counting``; the last takes it off its handler (unless
    something else was set there since: then that stays)."""
    if counting is None:
        return
    counting.users -= 1
    handler, previous = counting.handler, counting.previous
    if counting.users or handler.__dict__.get("handleError") is not counting:
        return
    if previous is None:
        del handler.handleError
    else:
        handler.handleError = previous  # type: ignore[method-assign]
