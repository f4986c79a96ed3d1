"""The one bounded queue type of the pipeline: the shared queue and every lane.

A :class:`BoundedQueue` holds records and *control items* (flush markers and library
notices). Its bound counts records only: control items are tiny, never dropped and
never counted as records. The overflow policy decides what a full queue does with
one more record; the queue's counters (``received``, ``dropped``) sit beside it and
:meth:`BoundedQueue.statistics` takes a snapshot, as trio's memory channels do.

The queue itself is not thread-safe beyond what ``collections.deque`` guarantees:
its owner (the dispatcher for the shared queue, the lane for a lane) decides who may
append and pop from which thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat, starmap
from typing import Any, Literal

from ._notices import mark

__all__ = [
    "OVERFLOWS",
    "BoundedQueue",
    "FlushMarker",
    "Notice",
    "Overflow",
    "QueueStatistics",
    "notice",
]

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOWS: tuple[Overflow, ...] = ("drop_oldest", "drop_newest", "block")


class FlushMarker:
    """Travels through the shared queue and every lane; ``done`` once each lane has
    flushed its sink. ``pending`` names the lanes that have not yet (for error
    messages: a flush that timed out says what it waited for)."""

    __slots__ = ("done", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, lanes: Iterable[str]) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.pending = set(lanes)
        if not self.pending:
            self.done.set_result(None)

    def ack(self, lane: str) -> None:
        """Lane ``lane`` has flushed its sink (or given up on it)."""
        self.pending.discard(lane)
        if not self.pending and not self.done.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                self.done.set_result(None)


class Notice:
    """A record from the library itself (drop announcements): delivered in order with
    the records around it, but never counted as a user record."""

    __slots__ = ("record",)

    def __init__(self, record: logging.LogRecord) -> None:
        self.record = record


def notice(msg: str, *args: object) -> logging.LogRecord:
    """A WARNING record from aiologsinks itself, its message already merged."""
    record = logging.LogRecord("aiologsinks", logging.WARNING, __file__, 0, msg, args, None)
    record.msg, record.args = record.getMessage(), None
    return mark(record)


#: the item types that are not records
CONTROL = (FlushMarker, Notice)


@dataclass(frozen=True)
class QueueStatistics:
    """A snapshot of one :class:`BoundedQueue`."""

    #: the bound (records)
    size: int
    #: records waiting now
    depth: int
    #: records offered (accepted or dropped)
    received: int
    #: records dropped by the overflow policy
    dropped: int
    #: flush markers and notices waiting now
    controls: int


class BoundedQueue:
    """A deque of records and control items with a bound and an overflow policy.

    ``put`` applies the policy; ``force`` appends past the bound (used where waiting
    is impossible: shutdown hand-overs, the loop's own records); control items bypass
    the bound. ``controls`` counts control items in the queue: while it is zero,
    consumers take records in bulk.
    """

    __slots__ = (
        "_draining",
        "controls",
        "dropped",
        "items",
        "overflow",
        "received",
        "size",
        "unannounced",
    )

    def __init__(self, size: int, overflow: Overflow, items: deque[Any] | None = None) -> None:
        self.size = size
        self.overflow: Overflow = overflow
        self.items: deque[Any] = deque() if items is None else items
        self.controls = 0
        # what an interrupted drain() had taken (see there)
        self._draining: list[Any] = []
        self.received = 0
        self.dropped = 0
        #: drops not yet announced by a notice
        self.unannounced = 0

    def __len__(self) -> int:
        return len(self.items)

    def full(self) -> bool:
        """True when one more record would exceed the bound."""
        return len(self.items) - self.controls >= self.size

    def put(self, item: Any) -> bool:
        """Offer one record; False (taking nothing) when full and the policy is block.

        With a drop policy the record is accepted or dropped, and the drop counted.
        """
        items = self.items
        if len(items) - self.controls >= self.size:
            if self.overflow == "block":
                return False
            self.received += 1
            if self.overflow == "drop_newest":
                self._count_drop()
                return True
            try:
                head = items.popleft()
            except IndexError:  # the pump emptied it meanwhile: room, nothing dropped
                items.append(item)
                return True
            self._count_drop()  # only now: counted before the pop, a drop was counted
            # for a queue the pump had just emptied, and the record delivered as well
            if type(head) in CONTROL:
                # a control item is never dropped: the record being offered is instead
                items.appendleft(head)
                return True
        else:
            self.received += 1
        items.append(item)
        return True

    def put_many(self, records: list[Any]) -> bool:
        """Offer records (no control items) at once; False, taking none, when they do
        not all fit."""
        if len(self.items) - self.controls + len(records) > self.size:
            return False
        self.received += len(records)
        self.items.extend(records)
        return True

    def force(self, records: list[Any]) -> None:
        """Append records past the bound."""
        self.received += len(records)
        self.items.extend(records)

    def put_control(self, item: FlushMarker | Notice) -> None:
        """Append a flush marker or notice: never dropped, not bounded."""
        self.controls += 1
        self.items.append(item)

    def drop_offered(self) -> None:
        """Count one offered record as received and dropped (it is not queued)."""
        self.received += 1
        self._count_drop()

    def _count_drop(self) -> None:
        self.dropped += 1
        self.unannounced += 1

    def take(self, n: int, count: bool = True) -> list[Any]:
        """Pop up to ``n`` items off the head (records and control items).

        With ``count=False`` the caller, which looks at every item anyway, takes the
        control items it found off :attr:`controls` itself (one pass, not two)."""
        items = self.items
        popleft = items.popleft
        if self.overflow != "drop_oldest":
            # Nobody else pops (only drop_oldest does, from producer threads), so what
            # is counted now is there to pop. Never list(items) + items.clear() here:
            # producer threads append to this deque, the GIL can pass to one between
            # the two calls, and clear() would drop what it appended, uncounted.
            # (starmap: the pops in one C loop, half the cost of a comprehension)
            chunk = list(starmap(popleft, repeat((), min(n, len(items)))))
        else:
            chunk = []
            append = chunk.append
            try:
                for _ in range(n):
                    append(popleft())
            except IndexError:  # a producer thread popped meanwhile (drop_oldest)
                pass
        if count and self.controls:
            self.controls -= sum(1 for i in chunk if type(i) is FlushMarker or type(i) is Notice)
        return chunk

    def take_batch(self, limit: int) -> tuple[list[Any], FlushMarker | Notice | None]:
        """Pop up to ``limit`` records, stopping at (and returning) the first control
        item, so that it is handled after the records before it."""
        items = self.items
        if not self.controls:
            if len(items) <= limit:
                # a lane's queue: only the loop thread appends to it (the pump), so
                # nothing can arrive between these two calls (unlike take())
                everything = list(items)
                items.clear()
                return everything, None
            popleft = items.popleft
            return [popleft() for _ in range(limit)], None
        batch: list[Any] = []
        append = batch.append
        popleft = items.popleft
        for _ in range(min(limit, len(items))):
            item = popleft()
            kind = type(item)
            if kind is FlushMarker or kind is Notice:
                self.controls -= 1
                return batch, item
            append(item)
        return batch, None

    def drain(self) -> tuple[list[Any], list[FlushMarker | Notice]]:
        """Remove everything; return (records, control items).

        The items move in one call that runs no Python code (no signal handler can
        interrupt it, no other thread can run in it), to a list kept here until the
        drain returns: a KeyboardInterrupt (a second Ctrl-C as a loop ends) before
        then leaves them to the next drain, neither lost nor taken twice."""
        taken = self._draining
        items = self.items
        taken.extend(starmap(items.popleft, repeat((), len(items))))
        records = [item for item in taken if type(item) not in CONTROL]
        controls = [item for item in taken if type(item) in CONTROL]
        self._draining = []
        self.controls = 0
        return records, controls

    def clear(self) -> None:
        """Forget everything queued, uncounted (benchmarks; a forked child)."""
        self.items.clear()
        self.controls = 0

    @property
    def depth(self) -> int:
        """Records (not control items) waiting now."""
        return len(self.items) - self.controls

    def statistics(self) -> QueueStatistics:
        """A snapshot of the queue's bound, depth and counters."""
        return QueueStatistics(
            size=self.size,
            depth=self.depth,
            received=self.received,
            dropped=self.dropped,
            controls=self.controls,
        )
