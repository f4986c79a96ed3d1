"""A sink's lane: a bounded queue and the one worker task that feeds the sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._record import Item, RecordBatch
from ._sink import Sink

if TYPE_CHECKING:
    from ._dispatcher import Overflow, SinkStats

__all__ = ["Lane"]


class _FlushMarker:
    """Travels through the queue and every lane; done once each lane flushed its sink."""

    __slots__ = ("_pending", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop, lanes: int) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self._pending = lanes
        if lanes == 0:
            self.done.set_result(None)

    def ack(self) -> None:
        self._pending -= 1
        if self._pending <= 0 and not self.done.done():
            self.done.set_result(None)


def _notice(msg: str, *args: object) -> logging.LogRecord:
    """A WARNING record from aiologsinks itself (drop announcements and the like)."""
    record = logging.LogRecord("aiologsinks", logging.WARNING, __file__, 0, msg, args, None)
    record.msg, record.args = record.getMessage(), None
    return record


class Lane:
    """One sink's bounded queue and worker; owned by a Dispatcher."""

    def __init__(
        self,
        sink: Sink,
        name: str,
        size: int,
        overflow: Overflow,
        batch_size: int,
        on_orphans: Callable[[list[Any], Lane], None],
    ) -> None:
        self.sink = sink
        self.name = name
        self.size = size
        self.overflow = overflow
        self.batch_size = batch_size
        # receives what a lane could not deliver while the loop shut down
        self._on_orphans = on_orphans
        self.items: deque[Any] = deque()
        # flush markers now in items: while there are none, batches are taken in bulk
        self._markers = 0
        self.received = 0
        self.emitted = 0
        self.filtered = 0
        self.dropped = 0
        self.undelivered = 0
        self._unannounced = 0
        self._in_flight: list[Item] = []
        self._marker: _FlushMarker | None = None
        self._idle = False
        self._has_items: asyncio.Event | None = None
        self._has_room: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rescuing = False
        #: seconds a cancelled worker may spend delivering its lane on the way out
        self.grace = 2.0

    # -- producer side (the dispatcher's pump, on the loop) ------------------------

    def start(self) -> None:
        self._has_items = asyncio.Event()
        self._has_room = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"aiologsinks-lane-{self.name}"
        )

    def put(self, record: Item) -> bool:
        """Offer a record; False only when the lane is full and its policy is block."""
        items = self.items
        if len(items) >= self.size:
            if self.overflow == "block":
                return False
            self.received += 1
            self.dropped += 1
            self._unannounced += 1
            if self.overflow == "drop_newest":
                return True
            self._drop_oldest()
        else:
            self.received += 1
        items.append(record)
        self._wake_worker()
        return True

    def put_many(self, records: list[Any]) -> bool:
        """Offer records (no markers) at once; False, taking none, when they do not fit."""
        if len(self.items) + len(records) > self.size:
            return False
        self.force(records)
        return True

    def force(self, records: list[Any]) -> None:
        """Append records past the bound (shutdown: the lane is drained or spilled next)."""
        self.received += len(records)
        self.items.extend(records)
        self._wake_worker()

    def _wake_worker(self) -> None:
        if self._idle and self._has_items is not None:
            self._idle = False
            self._has_items.set()

    def _drop_oldest(self) -> None:
        items = self.items
        for i, item in enumerate(items):
            if type(item) is not _FlushMarker:
                del items[i]
                return

    def put_marker(self, marker: _FlushMarker) -> None:
        """Markers bypass the bound: they are tiny and must never be dropped."""
        self._markers += 1
        self.items.append(marker)
        if self._has_items is not None:
            self._idle = False
            self._has_items.set()

    async def wait_for_room(self) -> None:
        """Wait until the worker has taken records out of a full lane."""
        assert self._has_room is not None
        while len(self.items) >= self.size:
            if self._task is None or self._task.done():
                return
            self._has_room.clear()
            await self._has_room.wait()

    @property
    def depth(self) -> int:
        """Records waiting in the lane or being delivered now."""
        waiting = sum(1 for r in self.items if type(r) is not _FlushMarker)
        return waiting + len(self._in_flight)

    # -- the worker ------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._has_items is not None and self._has_room is not None
        has_items, has_room = self._has_items, self._has_room
        items = self.items
        sink = self.sink
        try:
            try:
                await sink.aopen()
            except Exception:  # noqa: BLE001 - the sink retries on its first write
                self._sink_error("could not open")
            await self._work(items, has_items, has_room)
        finally:
            if not self._stopping:
                # cancelled by the loop's shutdown, not by Dispatcher.aclose()
                await self._rescue()

    async def _work(
        self, items: deque[Any], has_items: asyncio.Event, has_room: asyncio.Event
    ) -> None:
        while True:
            if not items:
                self._idle = True
                has_items.clear()
                await has_items.wait()
            batch: list[Item]
            marker: _FlushMarker | None = None
            limit = self.batch_size
            if not self._markers:
                # only records: take them in bulk (the lane is the loop's alone)
                if len(items) <= limit:
                    batch = list(items)
                    items.clear()
                else:
                    batch = [items.popleft() for _ in range(limit)]
            else:
                batch = []
                while items and len(batch) < limit:
                    item = items.popleft()
                    if type(item) is _FlushMarker:
                        self._markers -= 1
                        marker = item
                        break
                    batch.append(item)
            has_room.set()
            if batch:
                self._in_flight = batch
                await self._deliver(batch)
                self._in_flight = []
            if marker is not None:
                self._marker = marker
                await self._flush()
                self._marker = None
                marker.ack()

    async def _rescue(self) -> None:
        """Deliver the lane to the sink and close it while the loop shuts down.

        The batch that was interrupted may or may not have reached the sink: it is
        counted as undelivered and left to the fallback rather than risk writing it
        twice. What cannot be delivered within :attr:`grace` seconds is left there
        too (the dispatcher writes it to the fallback).
        """
        self._rescuing = True
        await asyncio.sleep(0)  # the pump hands over the shared queue first
        interrupted, self._in_flight = self._in_flight, []
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain_and_close(), self.grace)
        self._on_orphans(interrupted + self.take_all(), self)

    async def _drain_and_close(self) -> None:
        items = self.items
        while items:
            batch: list[Item] = []
            while items and len(batch) < self.batch_size:
                item = items.popleft()
                if type(item) is _FlushMarker:
                    self._markers -= 1
                    item.ack()
                else:
                    batch.append(item)
            if batch:
                self._in_flight = batch
                await self._deliver(batch)
                self._in_flight = []
        await self._flush()
        await self.close_sink()

    async def _deliver(self, batch: list[Item]) -> None:
        sink = self.sink
        records: Sequence[logging.LogRecord] = RecordBatch(batch)
        if sink.filters:
            records = sink.passes(records)
        self.filtered += len(batch) - len(records)
        if not records:
            return
        before = sink.error_count
        try:
            await sink.emit_batch(records)
        except Exception:  # noqa: BLE001 - lane boundary: the sink failed the whole batch
            sink.error_count += len(records) - 1
            sink._fail(records[0])
        errors = min(sink.error_count - before, len(records))
        self.emitted += len(records) - errors
        if self._unannounced and errors < len(records):
            await self._announce()

    async def _announce(self) -> None:
        count, self._unannounced = self._unannounced, 0
        record = _notice(
            "aiologsinks: %d record(s) dropped for sink %s: its lane was full (overflow=%s)",
            count,
            self.name,
            self.overflow,
        )
        try:
            await self.sink.emit_batch([record])
        except Exception:  # noqa: BLE001 - the announcement must not kill the lane
            self.sink._fail(record)

    async def _flush(self) -> None:
        try:
            await self.sink.flush()
        except Exception:  # noqa: BLE001 - a failed flush is the sink's error, not ours
            self._sink_error("flush failed")

    def _sink_error(self, what: str) -> None:
        # called inside an except block: handleError prints the active exception
        self.sink._fail(_notice("aiologsinks: %s sink %s", what, self.name))

    # -- shutdown ---------------------------------------------------------------------

    def take_all(self) -> list[Any]:
        """Remove and return what was not delivered; acknowledge pending markers."""
        left: list[Any] = list(self._in_flight)
        self._in_flight = []
        marker, self._marker = self._marker, None
        if marker is not None:
            marker.ack()
        for item in self.items:
            if type(item) is _FlushMarker:
                item.ack()
            else:
                left.append(item)
        self.items.clear()
        self._markers = 0
        return left

    async def stop(self, rescue: bool = False) -> list[Any]:
        """Stop the worker; return the records it had not delivered.

        With ``rescue``, the worker first delivers its lane and closes the sink,
        within :attr:`grace` seconds (what it could not deliver is reported).
        """
        self._stopping = not rescue
        task, self._task = self._task, None
        if task is not None and not task.done():
            if not self._rescuing:  # a rescuing worker ends by itself within its grace
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return self.take_all()

    async def close_sink(self) -> None:
        """Close the sink; an error goes to its handleError."""
        try:
            await self.sink.aclose()
        except Exception:  # noqa: BLE001 - aclose() must close every other sink too
            self._sink_error("could not close")

    def stats(self) -> SinkStats:
        from ._dispatcher import SinkStats

        return SinkStats(
            name=self.name,
            received=self.received,
            emitted=self.emitted,
            filtered=self.filtered,
            dropped=self.dropped,
            # the sink's own count: it also reports records it gives up on later
            # (an outage buffer overflowing, what is still buffered at close)
            errors=self.sink.error_count,
            depth=self.depth,
            undelivered=self.undelivered,
        )
