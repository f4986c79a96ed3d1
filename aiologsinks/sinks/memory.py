"""BufferingSink and MemorySink: the async counterparts of BufferingHandler and MemoryHandler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from .._sink import Sink
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
        self.capacity: int = check_int("capacity", capacity)
        self.buffer: list[logging.LogRecord] = []
        # flush() is a coroutine that awaits a target: one flush at a time, as the
        # stdlib serialises it with the handler lock.
        self._flush_lock: asyncio.Lock | None = None

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        """True when the buffer is up to capacity; override for another strategy."""
        return len(self.buffer) >= self.capacity

    async def emit(self, record: logging.LogRecord) -> None:
        """Append ``record``; if :meth:`shouldFlush` says so, await :meth:`flush`."""
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
    when ``flushOnClose`` is true, then drops the target and the buffer.

    The target is any :class:`~aiologsinks.Sink` (given the records as one batch,
    after its own filters, so a batching target makes one write or one request) or
    a plain ``logging.Handler``, whose ``handle()`` runs in a worker thread so a
    blocking handler never blocks the loop. The target is not closed with this sink.
    """

    def __init__(
        self,
        capacity: int,
        flushLevel: int = logging.ERROR,
        target: Sink | logging.Handler | None = None,
        flushOnClose: bool = True,
    ) -> None:
        super().__init__(capacity)
        check_int("flushLevel", flushLevel)
        _check_target(target)
        self.flushLevel = flushLevel
        self.target = target
        self.flushOnClose = flushOnClose

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        """True when the buffer is full or ``record`` is at ``flushLevel`` or above."""
        return len(self.buffer) >= self.capacity or record.levelno >= self.flushLevel

    def setTarget(self, target: Sink | logging.Handler | None) -> None:
        """Set the target the buffered records go to (``None``: keep buffering)."""
        _check_target(target)
        self.target = target

    async def flush(self) -> None:
        """Hand the buffered records to the target, in order, and clear the buffer.

        Without a target, nothing happens and the records stay buffered. Returns when
        the target handled every record (for a Sink target: when its ``emit_batch``
        returned; errors went to the target's ``handleError``).
        """
        async with self._lock():
            target = self.target
            if not target or not self.buffer:
                return
            records, self.buffer = self.buffer, []
            if isinstance(target, Sink):
                await target.emit_batch(target.passes(records))
            else:
                await asyncio.to_thread(_handle_all, target, records)

    async def _aclose(self) -> None:
        try:
            if self.flushOnClose:
                await self.flush()
        finally:
            self.target = None
            # The stdlib leaves them in the list; the sink is closed, so free them.
            self.buffer = []


def _check_target(target: object) -> None:
    if target is not None:
        check_instance("target", target, (Sink, logging.Handler), "a Sink, a Handler or None")


def _handle_all(handler: logging.Handler, records: Sequence[logging.LogRecord]) -> None:
    for record in records:
        handler.handle(record)
