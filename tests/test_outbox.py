"""The retrying outbox: bounded buffer, back-off, ordered redelivery, exact counts,
rate-limited notices, a bounded close.

Most tests drive the outbox with a ``send`` that a test controls and a hand-moved
clock; the last ones deliver over a real loopback connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from aiologsinks._backoff import Backoff
from aiologsinks._outbox import (
    Failure,
    Loss,
    Outbox,
    OutboxStatistics,
    RetryableError,
    default_classify,
)
from aiologsinks._transport import StreamLink

from .helpers import wait_until
from .peers.records import AsyncReceiver, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """A ``send`` the test controls: up or down, records what it got."""

    def __init__(self) -> None:
        self.up = True
        self.error: BaseException = ConnectionRefusedError(111, "Connection refused")
        self.got: list[int] = []
        self.calls = 0
        self.take: int | None = None  # deliver only this many per call

    async def send(self, chunk: list[int]) -> int | None:
        self.calls += 1
        if not self.up:
            raise self.error
        n = len(chunk) if self.take is None else self.take
        self.got.extend(chunk[:n])
        return n


class Rig:
    def __init__(self, **options: Any) -> None:
        self.peer = Peer()
        self.clock = Clock()
        self.lost: list[tuple[list[int], Loss]] = []
        self.failed: list[tuple[list[int], BaseException, bool]] = []
        self.notices: list[str] = []
        options.setdefault("backoff", Backoff(1.0, 2.0, 30.0, clock=self.clock))
        self.outbox: Outbox[int] = Outbox(
            self.peer.send,
            name="<peer>",
            on_lost=lambda items, why: self.lost.append((items, why)),
            on_failed=self._failed,
            notify=self.notices.append,
            clock=self.clock,
            **options,
        )

    def _failed(self, items: list[int], exc: BaseException) -> None:
        # called inside the except block: handleError can print the traceback
        self.failed.append((items, exc, sys.exc_info()[1] is exc))

    def lost_count(self, why: Loss) -> int:
        return sum(len(items) for items, w in self.lost if w is why)


def balanced(s: OutboxStatistics) -> bool:
    return s.accepted == (
        s.delivered + s.dropped + s.unsent + s.failed + s.abandoned + s.expired + s.pending
    )


async def test_items_put_while_the_peer_is_up_are_delivered_in_order() -> None:
    rig = Rig()
    await rig.outbox.put(range(10))  # type: ignore[arg-type]
    await rig.outbox.put([10, 11])
    assert rig.peer.got == list(range(12))
    s = rig.outbox.statistics()
    assert s.delivered == 12 and s.pending == 0 and balanced(s) and not s.in_outage
    assert rig.notices == []


async def test_a_batch_larger_than_the_buffer_goes_out_in_pieces_while_the_peer_takes_it() -> None:
    rig = Rig(buffer_size=10, chunk_size=4)
    await rig.outbox.put(list(range(100)))
    assert rig.peer.got == list(range(100)) and rig.lost == []


async def test_an_outage_buffers_and_the_retry_task_redelivers_in_order_on_its_own() -> None:
    rig = Rig(backoff=Backoff(0.01, 2.0, 0.02))
    rig.peer.up = False
    await rig.outbox.put([0, 1, 2])
    await rig.outbox.put([3, 4])
    assert rig.peer.got == [] and rig.outbox.pending == 5
    rig.peer.up = True
    await wait_until(lambda: rig.peer.got == [0, 1, 2, 3, 4], 5)
    s = rig.outbox.statistics()
    assert s.delivered == 5 and balanced(s) and not s.in_outage and s.outages == 1
    await rig.outbox.aclose()


async def test_a_full_buffer_drops_the_oldest_each_counted_once() -> None:
    rig = Rig(buffer_size=5)
    rig.peer.up = False
    await rig.outbox.put(list(range(8)))
    assert rig.lost == [([0, 1, 2], Loss.DROPPED)]
    rig.peer.up = True
    rig.clock.now += 60  # the back-off elapsed
    await rig.outbox.flush()
    assert rig.peer.got == [3, 4, 5, 6, 7]
    s = rig.outbox.statistics()
    assert (s.dropped, s.delivered) == (3, 5) and balanced(s)


async def test_a_partly_sent_chunk_sends_the_rest_first() -> None:
    rig = Rig(chunk_size=4)
    rig.peer.take = 1
    await rig.outbox.put(list(range(6)))
    assert rig.peer.got == list(range(6)) and rig.peer.calls == 6


async def test_a_permanent_failure_goes_to_on_failed_once_and_the_next_chunk_goes_on() -> None:
    rig = Rig(chunk_size=2)
    rig.peer.error = ValueError("the peer can never take this")
    rig.peer.up = False
    await rig.outbox.put([0, 1])
    rig.peer.up = True
    await rig.outbox.put([2, 3])
    assert [(items, ok) for items, _, ok in rig.failed] == [([0, 1], True)]
    assert rig.peer.got == [2, 3] and rig.notices == []
    s = rig.outbox.statistics()
    assert s.failed == 2 and s.delivered == 2 and balanced(s)


def test_errors_are_classified_retryable_or_permanent_with_a_retry_after_hint() -> None:
    assert default_classify(ConnectionResetError()) == Failure(True)
    assert default_classify(TimeoutError()) == Failure(True)
    assert default_classify(RetryableError("503", retry_after=7)) == Failure(True, 7.0)
    assert default_classify(ValueError("bad")) == Failure(False)


async def test_a_retry_after_hint_stretches_the_back_off() -> None:
    rig = Rig()
    rig.peer.error = RetryableError("429", retry_after=120)
    rig.peer.up = False
    await rig.outbox.put([0])
    assert rig.outbox.backoff.delay() == pytest.approx(120)
    await rig.outbox.aclose(timeout=0)


async def test_a_long_outage_gives_one_notice_down_rate_limited_summaries_and_one_up() -> None:
    """5,000 items during an outage of 100 s (an attempt every 1 s): 1 notice when the
    peer went down, one summary per 30 s, one when it came back."""
    rig = Rig(buffer_size=1000, backoff=Backoff(1.0, 1.0, 1.0, clock=Clock()))
    clock = rig.clock
    rig.outbox.backoff.clock = clock
    rig.peer.up = False
    for i in range(100):
        await rig.outbox.put(list(range(i * 50, i * 50 + 50)))
        clock.now += 1.0
        await rig.outbox.flush()
    rig.peer.up = True
    clock.now += 1.0
    await rig.outbox.flush()
    down, *summaries, up = rig.notices
    assert down.startswith("<peer>: peer unreachable (ConnectionRefusedError: ")
    assert "buffering up to 1000" in down
    assert len(summaries) == 3 and all("still unreachable" in m for m in summaries)
    assert "1000 record(s) buffered, 3" in summaries[-1]
    assert up.startswith("<peer>: peer reachable again after 101.0s; 4000 record(s) lost")
    assert rig.peer.got == list(range(4000, 5000))
    s = rig.outbox.statistics()
    assert (s.dropped, s.delivered) == (4000, 1000) and balanced(s)


async def test_flush_never_waits_out_the_back_off() -> None:
    rig = Rig()
    rig.peer.up = False
    await rig.outbox.put([0])
    calls = rig.peer.calls
    await asyncio.wait_for(rig.outbox.flush(), 5)  # the back-off is 1 s of a frozen clock
    assert rig.peer.calls == calls and rig.outbox.pending == 1
    await rig.outbox.aclose(timeout=0)


async def test_without_a_buffer_nothing_is_attempted_during_the_back_off() -> None:
    """buffer_size=0 is the seed's behaviour: send now, or lose (counted)."""
    rig = Rig(buffer_size=0)
    rig.peer.up = False
    await rig.outbox.put([0, 1])
    await rig.outbox.put([2])
    assert rig.peer.calls == 1 and rig.lost_count(Loss.UNSENT) == 3
    rig.peer.up = True
    rig.clock.now += 1.0
    await rig.outbox.put([3])
    assert rig.peer.got == [3] and balanced(rig.outbox.statistics())


async def test_without_retry_every_chunk_is_tried_and_a_failure_loses_it() -> None:
    # a refused connection fails at once: each record is tried, as HTTPHandler tries
    # each, and only what the peer refused is lost
    rig = Rig(retry=False, chunk_size=1)
    rig.peer.up = False
    await rig.outbox.put([0, 1, 2])
    assert rig.peer.calls == 3 and rig.lost_count(Loss.UNSENT) == 3
    assert len(rig.notices) == 1  # down, once
    rig.peer.up = True
    await rig.outbox.put([3])
    assert rig.peer.got == [3] and len(rig.notices) == 2
    assert balanced(rig.outbox.statistics())


async def test_without_retry_after_a_timeout_the_back_off_counts_without_trying() -> None:
    # as SocketHandler: no attempt while the back-off runs, when an attempt costs a
    # whole timeout (a flush of N records behind a silent peer took N of them)
    rig = Rig(retry=False, chunk_size=1)
    rig.peer.up = False
    rig.peer.error = TimeoutError("no answer within 10s")
    await rig.outbox.put([0, 1, 2])
    assert rig.peer.calls == 1 and rig.lost_count(Loss.UNSENT) == 3
    rig.peer.up = True
    await rig.outbox.put([3])  # still within the back-off
    assert rig.peer.calls == 1 and rig.lost_count(Loss.UNSENT) == 4
    rig.clock.now += 1.0  # the back-off elapsed
    await rig.outbox.put([4])
    assert rig.peer.got == [4] and len(rig.notices) == 2
    assert balanced(rig.outbox.statistics())


async def test_aclose_makes_a_last_attempt_whatever_the_back_off_says() -> None:
    rig = Rig()
    rig.peer.up = False
    await rig.outbox.put([0, 1])
    rig.peer.up = True
    await rig.outbox.aclose()
    assert rig.peer.got == [0, 1] and rig.lost == []


async def test_aclose_is_bounded_by_a_send_that_never_returns_and_counts_what_it_held() -> None:
    hang = asyncio.Event()
    delivered: list[int] = []

    async def send(chunk: list[int]) -> int | None:
        if chunk[0] >= 2:
            await hang.wait()  # a peer that never answers
        delivered.extend(chunk)
        return None

    lost: list[int] = []
    outbox: Outbox[int] = Outbox(
        send, name="x", chunk_size=2, on_lost=lambda items, why: lost.extend(items)
    )
    putting = asyncio.ensure_future(outbox.put([0, 1, 2, 3, 4]))
    await wait_until(lambda: delivered == [0, 1] and outbox.pending == 2)
    putting.cancel()  # the lane gives up on the batch
    with pytest.raises(asyncio.CancelledError):
        await putting
    await asyncio.wait_for(outbox.aclose(timeout=0.05), 5)
    s = outbox.statistics()
    assert lost == [2, 3, 4] and (s.abandoned, s.delivered) == (3, 2) and balanced(s)
    await outbox.put([5])  # after close: counted, never sent
    assert lost[-1] == 5 and balanced(outbox.statistics())


@pytest.mark.parametrize("buffer_size", [1000, 0], ids=["buffered", "send once"])
async def test_a_send_cut_short_counts_what_it_said_reached_the_peer(buffer_size: int) -> None:
    # a send that got part of its chunk to the peer, then waits (a full socket): when
    # aclose() gives up on it, that part was delivered, only the rest is lost
    waiting = asyncio.Event()
    outbox: Outbox[int]

    async def send(chunk: list[int]) -> int | None:
        outbox.reached(2)
        waiting.set()
        await asyncio.Event().wait()  # never returns
        return None

    lost: list[int] = []
    outbox = Outbox(send, name="x", buffer_size=buffer_size,
                    on_lost=lambda items, why: lost.extend(items))  # fmt: skip
    putting = asyncio.ensure_future(outbox.put([0, 1, 2, 3, 4]))
    await asyncio.wait_for(waiting.wait(), 5)
    await asyncio.wait_for(outbox.aclose(timeout=0.05), 5)
    putting.cancel()  # then the lane's task ends: nothing is counted twice
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(putting, 5)
    s = outbox.statistics()
    assert lost == [2, 3, 4] and s.delivered == 2 and balanced(s)


async def test_aclose_cancels_the_retry_task_and_reports_what_it_abandons() -> None:
    rig = Rig()
    rig.peer.up = False
    await rig.outbox.put([0, 1, 2])
    task = rig.outbox._task
    assert task is not None and not task.done()
    await rig.outbox.aclose(timeout=0.05)
    assert task.done()
    assert rig.lost_count(Loss.ABANDONED) == 3
    assert rig.notices[-1].startswith("<peer>: closed with 3 record(s) undelivered")


# -- over a real connection -----------------------------------------------------------


async def test_records_put_before_a_real_peer_listens_arrive_in_order() -> None:
    from logging import LogRecord

    from aiologsinks import _wire

    port = free_port()
    link: list[StreamLink] = []

    async def send(chunk: list[bytes]) -> None:
        if not link or link[0].peer_gone:
            link[:] = [await StreamLink.connect_tcp("127.0.0.1", port, timeout=1)]
        await link[0].write(b"".join(chunk), timeout=1)

    def frame(i: int) -> bytes:
        return _wire.pickle_frame(LogRecord("t", 20, "", 0, "n %d", (i,), None))

    outbox: Outbox[bytes] = Outbox(send, name="tcp", backoff=Backoff(0.01, 2.0, 0.05))
    await outbox.put([frame(i) for i in range(50)])
    assert outbox.pending == 50
    async with AsyncReceiver(port=port) as receiver:
        got = await receiver.wait_for(50)
        await outbox.put([frame(i) for i in range(50, 60)])
        got = await receiver.wait_for(60)
        await outbox.aclose()
        await link[0].aclose()
    assert [r.getMessage() for r in got] == [f"n {i}" for i in range(60)]


def test_bad_options_name_the_parameter() -> None:
    async def send(chunk: Sequence[int]) -> None: ...

    with pytest.raises(ValueError, match="buffer_size"):
        Outbox(send, name="x", buffer_size=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        Outbox(send, name="x", chunk_size=0)


async def test_items_past_their_deadline_are_given_up_and_counted_as_expired() -> None:
    rig = Rig(deadline=lambda item: 1000.0 + item)  # item i is worth sending until 1000+i
    rig.peer.up = False
    await rig.outbox.put([1, 2, 9])
    rig.clock.now = 1003.0  # the back-off (1 s) is due; 1 and 2 are past their deadline
    await rig.outbox.flush()
    assert rig.lost == [([1, 2], Loss.EXPIRED)]
    rig.peer.up = True
    rig.clock.now = 1005.0  # the next back-off (2 s) is due; 9 is still worth sending
    await rig.outbox.flush()
    s = rig.outbox.statistics()
    assert rig.peer.got == [9] and s.expired == 2 and s.delivered == 1 and balanced(s)


async def test_drain_follows_the_back_off_until_every_item_is_delivered_or_expired() -> None:
    peer = Peer()
    peer.up = False
    give_up = time.monotonic() + 0.2
    outbox: Outbox[int] = Outbox(
        peer.send,
        name="<peer>",
        backoff=Backoff(0.001, 2.0, 0.01),
        deadline=lambda item: give_up if item < 0 else float("inf"),
    )
    await outbox.put([-1, -2])
    assert outbox.pending == 2
    await asyncio.wait_for(outbox.drain(), 5)  # retries until the deadline, then gives up
    s = outbox.statistics()
    assert s.expired == 2 and s.pending == 0 and balanced(s) and peer.calls > 1
    peer.up = True
    await outbox.put([3])
    await asyncio.wait_for(outbox.drain(), 5)
    await outbox.aclose()
    assert peer.got == [3] and balanced(outbox.statistics())


async def test_a_send_may_consume_part_of_a_chunk_out_of_order_and_refuse_some() -> None:
    got: list[int] = []
    failed: list[list[int]] = []
    calls = 0

    async def send(chunk: list[int]) -> int:
        # acknowledges the even items, refuses 1 for good, leaves the other odd ones
        nonlocal calls
        calls += 1
        if calls > 1:
            got.extend(chunk)
            return len(chunk)
        evens = [i for i in chunk if i % 2 == 0]
        rest = [i for i in chunk if i % 2 and i != 1]
        got.extend(evens)
        chunk[:] = [*evens, 1, *rest]
        try:
            raise ValueError("refused")
        except ValueError as exc:
            outbox.fail([1], exc)
        return len(evens) + 1

    outbox: Outbox[int] = Outbox(
        send, name="<peer>", on_failed=lambda items, exc: failed.append(items)
    )
    await outbox.put(list(range(6)))
    s = outbox.statistics()
    assert got == [0, 2, 4, 3, 5] and failed == [[1]]
    assert s.delivered == 5 and s.failed == 1 and s.pending == 0 and balanced(s)
