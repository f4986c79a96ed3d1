"""BufferingSink and MemorySink: the async counterparts of BufferingHandler and MemoryHandler."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Sequence
from contextvars import copy_context

from .._fileio import off_loop
from .._notices import is_notice
from .._sink import Sink, deliver, per_record_hook
from .._supervise import containable
from .._validate import check_instance, check_int

__all__ = ["BufferingSink", "MemorySink"]


class BufferingSink(Sink):
    """Keep records in memory; :meth:`flush` when :meth:`shouldFlush` says so.

    As ``logging.handlers.BufferingHandler``: each record is appended to
    :attr:`buffer`, then :meth:`shouldFlush` (buffer holds ``capacity`` records) is
    asked whether to :meth:`flush`. This base class's flush just empties the buffer;
    subclasses override it. :meth:`aclose` flushes, then closes.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity: int = check_int("capacity", capacity, min=0)
        self.buffer: list[logging.LogRecord] = []
        # flush() is a coroutine that awaits a target: one flush at a time, as the
        # stdlib serialises it with the handler lock.
        self._flush_lock: asyncio.Lock | None = None

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        """True when the buffer is up to capacity; override for another strategy."""
        return len(self.buffer) >= self.capacity

    async def emit(self, record: logging.LogRecord) -> None:
        """Append ``record``; if :meth:`shouldFlush` says so, await :meth:`flush`."""
        self._take_over(1)  # handed on by a flush, or counted, from here
        self.buffer.append(record)
        if self.shouldFlush(record):
            await self.flush()

    async def flush(self) -> None:
        """Empty the buffer. Override to do something with the records first."""
        async with self._lock():
            self.buffer.clear()

    async def _aclose(self) -> None:
        await self.flush()

    def _lock(self) -> asyncio.Lock:
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        return self._flush_lock


class MemorySink(BufferingSink):
    """Buffer records and pass them to a target when full or on a severe record.

    As ``logging.handlers.MemoryHandler``: :meth:`shouldFlush` is true when the
    buffer holds ``capacity`` records or a record at ``flushLevel`` (``ERROR``) or
    above arrives; :meth:`flush` hands the buffered records, in order, to the target
    and clears the buffer — without a target it keeps them. :meth:`aclose` flushes
    when ``flushOnClose`` is true, then drops the target and the buffer; records
    still in it (no target, or ``flushOnClose=False``) are counted as lost, where
    the stdlib drops them silently.

    The target is any :class:`~aiologsinks.Sink` (given the records as one batch,
    after its own filters, so a batching target makes one write or one request) or
    a plain ``logging.Handler``, whose ``handle()`` runs in a worker thread so a
    blocking handler never blocks the loop. The target is not closed with this sink.
    Records a Sink target gives to its own ``handleError`` while it takes the batch
    are counted by this sink too, as a plain handler's failures are; what a target
    that buffers (a network sink's outbox) loses later is in its own counts only.

    The target may also be given by its name (a ``str``): the handler of that name
    (``logging.getHandlerByName``), looked up at construction and, until found, at
    each flush; then kept. ``dictConfig`` passes a ``MemoryHandler``'s ``target``
    that way (``"target": "file"``), and ``fileConfig`` through
    ``kwargs=dict(target="file")`` (its ``target =`` key is read for ``MemoryHandler``
    subclasses only). While no handler has that name, the records stay buffered, as
    without a target.
    """

    #: its target may change the records it is given (its filters, its formatter, a
    #: plain handler on its own thread): in a dispatcher it gets copies of its own
    changes_records = True

    def __init__(
        self,
        capacity: int,
        flushLevel: int = logging.ERROR,
        target: Sink | logging.Handler | str | None = None,
        flushOnClose: bool = True,
    ) -> None:
        super().__init__(capacity)
        check_int("flushLevel", flushLevel)
        _check_target(target)
        self.flushLevel = flushLevel
        #: a handler name's lookup (flush) and setTarget() on another thread
        self._target_lock = threading.Lock()
        self.target = _resolve(target, self)
        self.flushOnClose = flushOnClose
        self._former_target: _Target = None

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        """True when the buffer is full or ``record`` is at ``flushLevel`` or above."""
        return len(self.buffer) >= self.capacity or record.levelno >= self.flushLevel

    def setTarget(self, target: Sink | logging.Handler | str | None) -> None:
        """Set the target the buffered records go to (``None``: keep buffering; a
        ``str``: the handler of that name at each flush)."""
        _check_target(target)
        with self._target_lock:
            self.target = _resolve(target, self)

    async def flush(self) -> None:
        """Hand the buffered records to the target, in order, and clear the buffer.

        Without a target, nothing happens and the records stay buffered. Returns when
        the target handled every record (for a Sink target: when its ``emit_batch``
        returned; errors went to the target's ``handleError``). A record the target's
        filters or a plain handler's ``handle()`` raise on goes to this sink's
        :meth:`~aiologsinks.Sink.report_error` and the next record is handed over; a
        flush interrupted (``aclose(timeout=...)`` giving up on it) counts the records
        not handed over yet as lost.
        """
        async with self._lock():
            named = self.target
            found = _resolve(named, self)
            with self._target_lock:
                if self.target is named:
                    self.target = found  # found: kept from now on
                # else a setTarget() from another thread meanwhile, which wins
                target = self.target
            if not target or isinstance(target, str) or not self.buffer:
                return
            records, self.buffer = self.buffer, []
            if isinstance(target, Sink):
                await self._to_sink(target, records)
            else:
                await self._to_handler(target, records)

    async def _to_sink(self, target: Sink, records: list[logging.LogRecord]) -> None:
        hook = per_record_hook(target)
        passed: list[logging.LogRecord] = [] if hook != "handle" else records
        for record in records if hook != "handle" else ():  # its own handle() filters
            try:
                passed.extend(target.passes((record,)))
            except Exception:  # noqa: BLE001 - per-record boundary: the next one goes on
                self.report_error(record)
        before, taken = target.error_count, target._taken_count
        try:
            await deliver(target, passed, hook)
        except asyncio.CancelledError as exc:
            if containable(exc):  # the target's own, not our task's: its error
                self.report_batch_error(passed)
                return
            # the records the target settled (one at a time through its own hook) or
            # took over (buffered: it counts them itself) are its own; whether the rest
            # reached it is unknown: counted as lost (not delivered twice), as the
            # dispatcher counts an interrupted batch
            self._count_lost(passed[max(0, target._taken_count - taken) :], target)
            raise
        except Exception:  # noqa: BLE001 - a target that breaks emit_batch's contract
            self.report_batch_error(passed)
            return
        # records the target gave to its own handleError (reported there, once) did
        # not reach it: counted here too, where stats() sees them, as a plain
        # handler's failures are
        failed = target.error_count - before
        if failed > 0:
            self.error_count += min(failed, len(passed))

    async def _to_handler(self, target: logging.Handler, records: list[logging.LogRecord]) -> None:
        # handle() runs on a worker thread, which a cancelled await does not stop: it
        # takes the records one by one, so an interrupted flush knows which ones the
        # thread will never take (counted as lost) and reports what the thread failed
        run = _HandlerRun(target, records)
        # off_loop: where the loop's executor takes no more jobs (its default executor
        # shut down, or no thread can start as Python 3.12.0-3.12.2 exit) the thread's
        # part runs here; run_in_executor raised, and the buffer it had taken was lost
        done = off_loop(None, functools.partial(copy_context().run, run))
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self._count_lost(run.stop(), target)
            done.add_done_callback(lambda _: self._report_failed(run.failed))
            raise
        self._report_failed(run.failed)

    def _report_failed(self, failed: list[tuple[logging.LogRecord, BaseException]]) -> None:
        for record, exc in failed:
            try:
                raise exc
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - with its own traceback
                self.report_error(record)

    def _count_lost(self, records: Sequence[logging.LogRecord], target: object) -> None:
        if records:
            reason = f"{self!r}: closed before {_count(records)} buffered reached {target!r}"
            self._report_lost(records, reason)

    async def _aclose(self) -> None:
        try:
            if self.flushOnClose:
                await self.flush()
        finally:
            target, self.target = _resolve(self.target, self), None
            if self._entry is not None:
                # closed as a plain handler, on the handler pipeline's thread: the
                # last reference to the target may be this one, and a handler freed
                # runs logging's weakref callback, which takes logging's lock. A
                # reconfiguration (dictConfig) holds that lock while it waits for this
                # close: it goes in close(), on the caller's thread
                self._former_target = target
            # The stdlib leaves them in the list; the sink is closed, so free them,
            # counted: no target took them (none set, or flushOnClose=False)
            left, self.buffer = self.buffer, []
            if left:
                why = "no target" if target is None else "flushOnClose=False"
                if isinstance(target, str):
                    why = f"no handler named {target!r}"
                self._report_lost(left, f"{self!r}: closed with {_count(left)} buffered ({why})")

    def close(self) -> None:
        """``logging.Handler.close`` (see :meth:`~aiologsinks.Sink.close`)."""
        try:
            super().close()
        finally:
            self._former_target = None


def _count(records: Sequence[logging.LogRecord]) -> str:
    """``"N record(s)"``, as stats() counts them: the pipeline's own notices (a drop
    announcement the dispatcher delivered to this sink) apart."""
    notices = sum(1 for record in records if is_notice(record))
    text = f"{len(records) - notices} record(s)"
    return f"{text} and {notices} notice(s)" if notices else text


def _check_target(target: object) -> None:
    if target is not None:
        check_instance(
            "target",
            target,
            (Sink, logging.Handler, str),
            "a Sink, a Handler, a handler name or None",
        )


_Target = Sink | logging.Handler | str | None


def _resolve(target: _Target, sink: MemorySink) -> _Target:
    """The target itself; for a name, the handler of that name, or the name while
    there is none (``sink`` itself is none: it would hand its buffer to itself)."""
    if not isinstance(target, str):
        return target
    # (logging.getHandlerByName is 3.12+: the same registry, read directly)
    found: logging.Handler | None = logging._handlers.get(target)  # type: ignore[attr-defined]
    if found is None:
        # a reconfiguration (dictConfig, fileConfig) empties the registry, then closes
        # the handlers it held, this one first: its target is still among them
        for ref in list(logging._handlerList):  # type: ignore[attr-defined]
            handler = ref()
            if handler is not None and handler.name == target and handler is not sink:
                found = handler
    return target if found is None or found is sink else found


class _HandlerRun:
    """A plain handler's ``handle()`` over a flush's records, on a worker thread."""

    def __init__(self, handler: logging.Handler, records: list[logging.LogRecord]) -> None:
        self.handler = handler
        self.records = records
        #: records the handler raised on, with the exception
        self.failed: list[tuple[logging.LogRecord, BaseException]] = []
        self._next = 0
        self._stopped = False
        self._lock = threading.Lock()

    def __call__(self) -> None:
        while True:
            with self._lock:
                if self._stopped or self._next >= len(self.records):
                    return
                record = self.records[self._next]
                self._next += 1
            try:
                self.handler.handle(record)
            except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the next goes on
                # (a CancelledError on this thread is the handler's own: no task of
                # ours runs here)
                self.failed.append((record, exc))

    def stop(self) -> list[logging.LogRecord]:
        """Take no more records; return those never taken."""
        with self._lock:
            self._stopped = True
            return self.records[self._next :]
