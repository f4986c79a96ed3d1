"""The one bounded queue type: bound, overflow policies, control items, counters."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from aiologsinks._queue import BoundedQueue, FlushMarker, Notice, QueueStatistics, notice


def test_block_refuses_past_the_bound_and_takes_nothing() -> None:
    q = BoundedQueue(3, "block")
    assert all(q.put(i) for i in range(3))
    assert not q.put(3)
    assert not q.put_many([4])
    assert q.statistics() == QueueStatistics(size=3, depth=3, received=3, dropped=0, controls=0)


def test_drop_newest_counts_the_drop_and_keeps_the_old() -> None:
    q = BoundedQueue(2, "drop_newest")
    for i in range(5):
        assert q.put(i)
    assert list(q.items) == [0, 1]
    assert (q.received, q.dropped, q.unannounced) == (5, 3, 3)


def test_drop_oldest_keeps_the_newest() -> None:
    q = BoundedQueue(2, "drop_oldest")
    for i in range(5):
        q.put(i)
    assert list(q.items) == [3, 4]
    assert q.dropped == 3


async def test_control_items_are_never_dropped_nor_counted_against_the_bound() -> None:
    q = BoundedQueue(2, "drop_oldest")
    marker = FlushMarker(asyncio.get_running_loop(), ["a"])
    q.put_control(marker)
    q.put(1)
    q.put(2)
    assert q.depth == 2 and not q.put_many([3])
    q.put(3)  # the head is a marker: the newest record is dropped instead
    assert list(q.items) == [marker, 1, 2]
    assert q.dropped == 1
    q.put_control(Notice(notice("n")))
    assert q.statistics().controls == 2 and q.depth == 2


async def test_take_batch_stops_at_the_first_control_item() -> None:
    q = BoundedQueue(10, "block")
    marker = FlushMarker(asyncio.get_running_loop(), ["a"])
    q.put_many([1, 2])
    q.put_control(marker)
    q.put(3)
    assert q.take_batch(10) == ([1, 2], marker)
    assert q.take_batch(10) == ([3], None)
    assert q.controls == 0


async def test_take_counts_control_items_out_and_drain_splits_them() -> None:
    q = BoundedQueue(10, "block")
    marker = FlushMarker(asyncio.get_running_loop(), ["a", "b"])
    q.put(1)
    q.put_control(marker)
    q.put(2)
    assert q.take(2) == [1, marker] and q.controls == 0
    q.put_control(marker)
    assert q.drain() == ([2], [marker])
    assert len(q) == 0


async def test_a_marker_is_done_once_every_lane_acknowledged() -> None:
    marker = FlushMarker(asyncio.get_running_loop(), ["a", "b"])
    marker.ack("a")
    assert not marker.done.done() and marker.pending == {"b"}
    marker.ack("b")
    marker.ack("b")  # twice is harmless
    assert marker.done.done()


def test_force_appends_past_the_bound_and_counts_it() -> None:
    q = BoundedQueue(1, "block")
    q.force([1, 2, 3])
    assert q.depth == 3 and q.received == 3 and q.full()


@pytest.mark.parametrize("policy", ["block", "drop_newest", "drop_oldest"])
def test_received_is_what_stayed_plus_what_was_dropped(policy: str) -> None:
    q = BoundedQueue(4, policy)  # type: ignore[arg-type]
    for i in range(10):
        q.put(i)
    taken = q.take(2)
    assert q.received == len(taken) + q.depth + q.dropped


class _ProducerMidTake(deque):  # type: ignore[type-arg]
    """A deque a producer thread appends to in the middle of a take: the GIL can pass
    to another thread between any two calls the taker makes on it."""

    def __init__(self, items: list[str]) -> None:
        super().__init__(items)
        self.appended = False

    def _producer_runs(self) -> None:
        if not self.appended:
            self.appended = True
            self.append("late")

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._producer_runs()
        return super().__iter__()

    def popleft(self) -> str:
        item: str = super().popleft()
        self._producer_runs()
        return item

    def clear(self) -> None:
        self._producer_runs()
        super().clear()


@pytest.mark.parametrize("n", [2, 3, 10])
def test_a_record_appended_by_a_thread_during_take_is_taken_or_left_never_lost(n: int) -> None:
    """The dispatcher's queue is appended to by producer threads while the pump takes
    from it on the loop; whatever a producer appends mid-take stays in the queue or is
    taken, in order (taking the whole deque and clearing it lost a thread's slice)."""
    items = _ProducerMidTake(["a", "b", "c"])
    q = BoundedQueue(100, "block", items)  # type: ignore[arg-type]
    taken = q.take(n)
    assert items.appended
    assert taken + list(items) == ["a", "b", "c", "late"]
    assert len(taken) == min(n, 3)


class _PumpEmptiesFirst(deque):  # type: ignore[type-arg]
    """A full deque the pump empties between a producer's "full?" and its pop."""

    def popleft(self) -> object:
        self.clear()
        return super().popleft()


def test_drop_oldest_counts_no_drop_when_the_pump_emptied_the_queue_meanwhile() -> None:
    q = BoundedQueue(2, "drop_oldest", _PumpEmptiesFirst(["a", "b"]))  # type: ignore[arg-type]
    assert q.put("c")
    assert list(q.items) == ["c"]
    assert (q.received, q.dropped) == (1, 0)


class _InterruptedAt(deque):  # type: ignore[type-arg]
    """A deque whose n-th popleft() is interrupted (a Ctrl-C) before it takes an item."""

    def __init__(self, items: list[object], at: int) -> None:
        super().__init__(items)
        self.at = at

    def popleft(self) -> object:
        self.at -= 1
        if self.at == 0:
            raise KeyboardInterrupt
        return super().popleft()


def test_an_interrupted_drain_leaves_what_it_took_to_the_next_one() -> None:
    """A KeyboardInterrupt in the middle of drain() (a second Ctrl-C as the loop's
    shutdown drains the shared queue): the items it had taken were in its local lists
    only and were lost, neither delivered nor counted. The next drain returns them,
    each once, before the rest."""
    marker = Notice(notice("n"))
    queue = BoundedQueue(100, "block", _InterruptedAt([0, 1, marker, 3, 4, 5], at=3))
    queue.controls = 1
    with pytest.raises(KeyboardInterrupt):
        queue.drain()
    assert queue.drain() == ([0, 1, 3, 4, 5], [marker])
    assert queue.drain() == ([], [])
