"""The retrying outbox: the one place where "a peer is down" is handled.

Every sink that can be disconnected from its peer (the stream sinks, HTTP, and the
sinks built on them) hands what it wants delivered to an :class:`Outbox` and gives it
one coroutine that delivers a chunk. The outbox owns everything else:

* a bounded FIFO of items waiting for the peer (the oldest dropped first when full);
* ``SocketHandler``'s exponential back-off between attempts
  (:class:`~aiologsinks._backoff.Backoff`), stretched by a ``Retry-After`` hint when
  the peer gives one;
* ordered redelivery: a chunk that failed goes back to the front, before newer items;
* optional deadlines: an item not delivered by its deadline is given up (counted), so
  an outage costs bounded time as well as bounded memory;
* one owned retry task that delivers when the back-off is due, also when nothing
  else is logged; :meth:`Outbox.aclose` cancels and awaits it;
* exact counts (:meth:`Outbox.statistics`): every item accepted is delivered,
  dropped, failed, abandoned at close, or still pending;
* rate-limited outage notices: one when the peer becomes unreachable (with the
  error), a summary at most every ``summary_interval`` seconds while it stays down
  ("N buffered, M dropped"), one when it recovers — never one per item.

The interface a sink implements::

    async def send(chunk: list[T]) -> int | None
        # deliver ``chunk`` (at most ``chunk_size`` items, in order); return how many
        # items from its front were consumed (None: all). Raise to fail the chunk:
        # ``classify(exc)`` decides whether the chunk is retried or lost. A peer that
        # acknowledges parts of a chunk independently (Kafka partitions) may reorder
        # ``chunk`` in place so that what it consumed comes first; what it gives up
        # on for good it hands to ``Outbox.fail`` and counts as consumed.

    def classify(exc: BaseException) -> Failure
        # retryable (connection refused, timeout, 5xx, 429) or permanent (4xx, a
        # certificate, an item the peer can never take); may carry retry_after.

    def on_lost(items: list[T], reason: Loss) -> None
        # count items that will never be delivered (no per-item report)
    def on_failed(items: list[T], exc: BaseException) -> None
        # a permanent failure, called inside the ``except`` block (handleError)
    def notify(message: str) -> None
        # one outage notice (a line of text), already rate-limited

A sink built on it (an exporter that POSTs encoded records; see ``sinks/http.py``)::

    class Exporter(OutboxSinkMixin, Sink):
        def __init__(self) -> None:
            super().__init__()
            self.outbox: Outbox[bytes] = Outbox(
                self._post, name=repr(self), classify=self._classify,
                on_lost=self._count_lost, on_failed=self._count_failed,
                notify=self.report_outage,
            )

        async def emit_batch(self, records):  # returns once delivered or buffered
            await self.outbox.put(self._encode(RecordBatch.of(records)))

        async def flush(self):  # never waits out a back-off
            await self.outbox.flush()

        async def _aclose(self):  # bounded; what is left is counted
            await self.outbox.aclose(timeout=1.0)

``_post(chunk)`` raises :class:`RetryableError` (with ``retry_after`` from a
``Retry-After`` header) for 429/5xx and an ``OSError`` when the peer is unreachable;
``_classify`` may refine :func:`default_classify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._backoff import Backoff, OutageBuffer
from ._notices import handing_over_notice
from ._validate import ArgumentValueError

__all__ = [
    "Failure",
    "Loss",
    "Outbox",
    "OutboxSinkMixin",
    "OutboxStatistics",
    "RetryableError",
    "default_classify",
]

T = TypeVar("T")

#: most items handed to ``send`` at once; bounds what a broken chunk re-sends
CHUNK = 512
#: seconds between two "still unreachable" summaries of one outage
SUMMARY_INTERVAL = 30.0
#: the longest Retry-After hint honoured, in seconds (a bad hint must not stall forever)
MAX_RETRY_AFTER = 3600.0


class Loss(enum.Enum):
    """Why items were lost without being delivered (each is counted once)."""

    #: the buffer was full during an outage: the oldest items made room
    DROPPED = "dropped: outage buffer full"
    #: a retryable failure without retrying (``retry=False`` or ``buffer_size=0``)
    UNSENT = "not sent: peer unreachable"
    #: still waiting when the outbox was closed
    ABANDONED = "abandoned: undelivered when the sink closed"
    #: not delivered by its deadline (the ``deadline`` of the outbox)
    EXPIRED = "expired: not delivered by its deadline"


@dataclass(frozen=True)
class Failure:
    """How a failed ``send`` is treated.

    ``retryable``: the chunk goes back to the front of the buffer and is sent again
    after the back-off; otherwise it is given to ``on_failed`` (counted, reported
    once). ``retry_after``: the peer's hint (seconds) for the next attempt.
    """

    retryable: bool
    retry_after: float | None = None


class RetryableError(Exception):
    """Raised by a ``send`` for a failure that waiting may heal (a 5xx, a 429).

    ``retry_after`` carries the peer's ``Retry-After`` hint, in seconds.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def default_classify(exc: BaseException) -> Failure:
    """Connection errors, timeouts and :class:`RetryableError` are retryable; the rest
    is permanent. A ``retry_after`` attribute on the error is the hint."""
    hint = getattr(exc, "retry_after", None)
    retry_after = float(hint) if isinstance(hint, (int, float)) else None
    if isinstance(exc, (OSError, asyncio.TimeoutError, RetryableError)):
        return Failure(True, retry_after)
    return Failure(False)


@dataclass(frozen=True)
class OutboxStatistics:
    """A snapshot of an outbox's counters.

    Always: ``accepted == delivered + dropped + unsent + failed + abandoned + expired
    + pending``.
    """

    #: items handed to :meth:`Outbox.put`
    accepted: int
    #: items ``send`` consumed
    delivered: int
    #: items dropped because the buffer was full during an outage
    dropped: int
    #: items lost to a retryable failure that was not retried
    unsent: int
    #: items given to ``on_failed`` (a permanent failure)
    failed: int
    #: items still waiting when the outbox closed
    abandoned: int
    #: items buffered or in flight now
    pending: int
    #: True between a failed attempt and the next success
    in_outage: bool
    #: outages that began so far
    outages: int
    #: items given up because their deadline passed before they were delivered
    expired: int = 0


#: notices an outbox remembers at most (a few per outage are made)
_NOTICES_MAX = 64


def _silent(message: str) -> None:
    """The default ``notify``: outage notices are the sink's to show."""


class Outbox(Generic[T]):
    """A bounded, retrying, ordered delivery queue in front of one peer.

    ``send``, ``on_lost``, ``on_failed``, ``notify`` and ``classify`` are described in
    the module docstring. ``buffer_size`` bounds what waits during an outage (0: send
    now or lose, as the stdlib handlers do). With ``retry=False`` every chunk is tried
    once, whatever the back-off says, and a retryable failure loses it (counted);
    the back-off then only tracks the outage for the notices. ``name`` prefixes the
    notices (say which sink and peer). ``deadline(item)`` (optional) is the ``clock``
    time after which an item is not worth sending any more: it is then given up,
    counted as :attr:`Loss.EXPIRED`; deadlines must not decrease in the order items are
    put (``put`` time plus a constant does). ``clock`` is for tests.

    Not thread-safe: use it from one event loop. At most one ``send`` runs at a time
    (the caller's and the retry task's deliveries take turns), so items reach the peer
    in the order they were put.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[int | None]],
        *,
        name: str,
        buffer_size: int = 1000,
        chunk_size: int = CHUNK,
        backoff: Backoff | None = None,
        retry: bool = True,
        classify: Callable[[BaseException], Failure] = default_classify,
        on_lost: Callable[[list[T], Loss], None] | None = None,
        on_failed: Callable[[list[T], BaseException], None] | None = None,
        notify: Callable[[str], None] = _silent,
        summary_interval: float = SUMMARY_INTERVAL,
        deadline: Callable[[T], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ArgumentValueError("chunk_size", f"expected an int >= 1, got {chunk_size!r}")
        self._send = send
        self.name = name
        self.buffer: OutageBuffer[T] = OutageBuffer(buffer_size)
        self.chunk_size = chunk_size
        self.backoff = backoff if backoff is not None else Backoff(clock=clock)
        self.retry = retry
        self._classify = classify
        self._on_lost = on_lost
        self._on_failed = on_failed
        self._notify = notify
        self.summary_interval = summary_interval
        self._deadline = deadline
        self._clock = clock
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[T] = []
        # how many items of the chunk in flight its send said reached the peer (see
        # reached()): what a send cut short still delivered
        self._progress = 0
        # whether the failure that began (or extended) the back-off was a timeout
        self._timed_out = False
        self._closed = False
        # counters (see OutboxStatistics)
        self._accepted = self._delivered = self._dropped = 0
        self._unsent = self._failed = self._abandoned = self._expired = 0
        # items of the send in progress that it handed to fail() (part of what it consumed)
        self._refused = 0
        self._outages = 0
        # the outage being reported: when it began, its error, what it cost so far
        self._down_since: float | None = None
        self._last_error = ""
        self._last_notice = 0.0
        self._lost_in_outage = 0
        # the items a pipeline notice was encoded into, by id (kept alive here, so an
        # id is not reused meanwhile): their loss is not a record's (see _notices)
        self._notices: dict[int, T] = {}

    # -- the public surface --------------------------------------------------------------

    @property
    def maxlen(self) -> int:
        """The buffer's bound (``buffer_size``)."""
        return self.buffer.maxlen

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started."""
        return self._closed

    @property
    def pending(self) -> int:
        """Items buffered or in flight now."""
        return len(self.buffer) + len(self._in_flight)

    def statistics(self) -> OutboxStatistics:
        """A snapshot of the counters (see :class:`OutboxStatistics`)."""
        return OutboxStatistics(
            accepted=self._accepted,
            delivered=self._delivered,
            dropped=self._dropped,
            unsent=self._unsent,
            failed=self._failed,
            abandoned=self._abandoned,
            pending=self.pending,
            in_outage=self._down_since is not None,
            outages=self._outages,
            expired=self._expired,
        )

    async def put(self, items: Sequence[T]) -> None:
        """Queue ``items`` and deliver what the back-off allows now.

        Returns when the items were delivered, lost (counted), or buffered because
        the peer is unreachable; then the retry task delivers them when the back-off
        is due. The bound is for an outage: while the peer takes items, a batch
        larger than the buffer goes out piece by piece instead of losing its oldest.
        """
        if not items:
            return
        self._accepted += len(items)
        if handing_over_notice():
            self._mark_notices(items)
        if self._closed:
            self._lose(list(items), Loss.ABANDONED)
            return
        if not self.retry or self.buffer.maxlen == 0:
            await self._send_once(list(items))
            return
        step = max(1, min(self.chunk_size, self.buffer.maxlen))
        start = 0
        try:
            while (
                start < len(items)
                and not self._closed
                and not (self.buffer and self.backoff.in_outage)
            ):
                self._buffer(items[start : start + step])
                start += step
                await self._deliver()
            if start < len(items):
                rest, start = items[start:], len(items)
                self._buffer(rest)  # unreachable: keep the newest
                await self._deliver()
        finally:
            if start < len(items):  # cancelled: what was not buffered yet waits too
                self._buffer(items[start:])

    async def flush(self) -> None:
        """Deliver what waits now if the back-off allows an attempt; never waits one out."""
        await self._deliver()

    async def drain(self) -> None:
        """Deliver what waits, following the back-off, until nothing waits.

        Returns when every item put before or during the call was delivered or lost
        (counted), or when the outbox closes. With a ``deadline`` that is bounded by
        the last item's deadline (plus one ``send``); without one an unreachable peer
        keeps it waiting: bound it yourself.
        """
        while self.pending and not self._closed:
            await self._deliver()
            if self.buffer and not self._closed:
                # the back-off (or the next deadline) is what we wait for here
                await asyncio.sleep(max(self._next_due(), 0.001))

    def fail(self, items: list[T], exc: BaseException) -> None:
        """Give up, for good, on ``items`` of the chunk that ``send`` is delivering.

        For a ``send`` whose peer refused part of a chunk: the items are counted as
        failed and given to ``on_failed``; ``send`` counts them among the items it
        consumed (its return value). Call it inside the ``except`` block of ``exc``.
        """
        if self._closed and not self._in_flight:
            return  # aclose() gave up on the chunk and counted it as abandoned
        self._refused += len(items)
        self._failed += len(items)
        records = self._records(items)
        if self._on_failed is not None and records:
            self._on_failed(records, exc)

    async def aclose(self, timeout: float | None = 1.0) -> bool:
        """Stop retrying, make one last attempt within ``timeout`` seconds, count the rest.

        The last attempt ignores the back-off (it waits for a ``send`` in progress
        elsewhere, within the same ``timeout``). What is still buffered or in flight
        after it (or when it times out or is cancelled) is counted as abandoned and
        given to ``on_lost``; a ``send`` still running then no longer counts.
        Returns within ``timeout`` plus a small constant: True when nothing was
        abandoned. Idempotent (a second call returns True).
        """
        if self._closed:
            return True
        self._closed = True
        task, self._task = self._task, None
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._last_delivery(task), timeout)
        finally:
            if task is not None and not task.done():  # still in a send: give up on it
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            left = self._cut_short() + self.buffer.take()
            if left:
                self._lose(left, Loss.ABANDONED)
                self._say(
                    f"{self.name}: closed with {len(left)} record(s) undelivered"
                    f" ({self._last_error or 'peer unreachable'})"
                )
        return not left

    def reached(self, n: int) -> None:
        """Called by ``send`` as it goes: the first ``n`` items of its chunk reached the
        peer. A send cut short (``aclose`` gave up on it, or it was cancelled) counts
        those as delivered and only the rest as lost or to send again; a send that
        returns says what it sent by its result, as before."""
        self._progress = n

    def record_failure(self, exc: BaseException, retry_after: float | None = None) -> None:
        """Note a failed attempt made outside the outbox (e.g. an eager connect).

        The back-off grows and the outage notices go on, as after a failed ``send``.
        """
        self._went_down(exc, retry_after)

    def record_success(self) -> None:
        """Note a successful attempt made outside the outbox (the peer is reachable)."""
        self._came_up()

    async def _last_delivery(self, task: asyncio.Task[None] | None) -> None:
        # Taking the lock waits for a send in progress (a put()'s or the retry task's):
        # its chunk is then delivered or back in the buffer, never counted as abandoned
        # while the peer is still taking it. Under the lock the retry task sleeps or
        # waits for the lock, never sends: cancelling it then cannot cut a request the
        # peer may already have taken (which would be sent twice).
        async with self._lock:
            if task is not None:
                task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.buffer:
            self.backoff.retryTime = None  # the last attempt is not subject to it
            await self._deliver(final=True)

    # -- delivery ------------------------------------------------------------------------

    def _buffer(self, items: Sequence[T]) -> None:
        if self._closed:  # aclose() already counted what waited: these too
            self._lose(list(items), Loss.ABANDONED)
            return
        dropped = self.buffer.extend(items)
        if dropped:
            self._lose(dropped, Loss.DROPPED)

    async def _deliver(self, final: bool = False) -> None:
        """Send chunks in order while the buffer holds some and the back-off allows
        (after close only the ``final`` attempt of :meth:`aclose` sends)."""
        async with self._lock:
            while True:
                self._expire()
                if not (self.buffer and self.backoff.ready() and (final or not self._closed)):
                    break
                chunk = self.buffer.take(self.chunk_size)
                self._in_flight = chunk
                try:
                    sent = await self._attempt(chunk)
                finally:
                    # cancelled mid-send: the chunk waits again (aclose counts it)
                    rest = self._cut_short()
                    if rest:
                        self._put_back(rest)
                if sent is None:  # a retryable failure: the chunk went back
                    break
            if self.buffer:  # what waits is delivered when the back-off is due
                self._arm_retry()

    async def _attempt(self, chunk: list[T]) -> int | None:
        """One ``send`` of ``chunk``: return how many items left the outbox (delivered
        or failed), None after a retryable failure (``_in_flight`` keeps the rest)."""
        self._refused = 0
        self._progress = 0
        try:
            n = await self._send(chunk)
        except Exception as exc:  # noqa: BLE001 - every send error is classified here
            self._refused = self._progress = 0  # (a send that raises has consumed nothing)
            if self._in_flight is not chunk:  # aclose() gave up on it and counted it
                return len(chunk)
            failure = self._classify(exc)
            if failure.retryable:
                self._went_down(exc, failure.retry_after)
                return None
            self._in_flight = []
            self._failed += len(chunk)
            records = self._records(chunk)
            if self._on_failed is not None and records:
                self._on_failed(records, exc)
            self._came_up()  # the peer answered: it is reachable
            return len(chunk)
        self._progress = 0  # its result says what went
        if self._in_flight is not chunk:  # aclose() gave up on it and counted it
            return len(chunk)
        refused, self._refused = self._refused, 0
        n = len(chunk) if n is None else max(refused, min(n, len(chunk)))
        if n == 0:  # nothing went: treat it as a failure, or the loop would spin
            self._went_down(RuntimeError("send delivered nothing"), None)
            return None
        self._delivered += n - refused
        if self._notices:
            self._records(chunk[:n])  # delivered: forget the notices among them
        self._in_flight = chunk[n:]
        self._came_up()
        return n

    async def _send_once(self, items: list[T]) -> None:
        """No buffering (``buffer_size=0`` or ``retry=False``): send now or lose."""
        async with self._lock:
            start = 0
            try:
                while start < len(items):
                    chunk = items[start : start + self.chunk_size]
                    start += len(chunk)
                    if not self.backoff.ready() and (self.retry or self._timed_out):
                        # ``SocketHandler``'s behaviour: no attempt during the back-off.
                        # Without retry only after a timeout: an attempt then costs a
                        # whole timeout (a flush of N records behind a peer that never
                        # answers took N of them), while a refused connection or a 503
                        # fails at once, and trying each record, as ``HTTPHandler``
                        # does, loses only what the peer actually refused
                        self._lose(chunk, Loss.UNSENT)
                        self._summarise()
                        continue
                    self._in_flight = chunk
                    while self._in_flight:
                        if await self._attempt(self._in_flight) is None:
                            break
                    rest, self._in_flight = self._in_flight, []
                    if rest:
                        self._lose(rest, Loss.UNSENT)
            finally:
                # cancelled (a close that gave up on the send): the chunk in flight and
                # the ones not tried are lost too, and said so, as a close says it
                rest = self._cut_short() + items[start:]
                if rest:
                    self._lose(rest, Loss.UNSENT)
                    self._say(
                        f"{self.name}: {len(rest)} record(s) undelivered, their send cut"
                        f" short ({self._last_error or 'no answer yet'})"
                    )

    def _cut_short(self) -> list[T]:
        """Take the chunk in flight: what its send said reached the peer is counted
        delivered (a send cut short), the rest is returned."""
        done, self._progress = self._progress, 0
        chunk, self._in_flight = self._in_flight, []
        if done:
            self._delivered += done
            if self._notices:
                self._records(chunk[:done])  # delivered: forget the notices among them
        return chunk[done:]

    def _put_back(self, items: list[T]) -> None:
        dropped = self.buffer.appendleft_all(items)
        if dropped:
            self._lose(dropped, Loss.DROPPED)

    def _lose(self, items: list[T], why: Loss) -> None:
        n = len(items)
        if why is Loss.DROPPED:
            self._dropped += n
        elif why is Loss.UNSENT:
            self._unsent += n
        elif why is Loss.EXPIRED:
            self._expired += n
        else:
            self._abandoned += n
        if self._down_since is not None:
            self._lost_in_outage += n
        records = self._records(items)
        if self._on_lost is not None and records:
            self._on_lost(records, why)

    def _mark_notices(self, items: Sequence[T]) -> None:
        notices = self._notices
        for item in items:
            notices[id(item)] = item
        while len(notices) > _NOTICES_MAX:  # notices are rare; this only bounds a leak
            del notices[next(iter(notices))]

    def _records(self, items: list[T]) -> list[T]:
        """``items`` without the pipeline's notices, which are forgotten here."""
        notices = self._notices
        if not notices:
            return items
        kept = []
        for item in items:
            if notices.get(id(item)) is item:
                del notices[id(item)]
            else:
                kept.append(item)
        return kept

    def _expire(self) -> None:
        """Give up on the items at the front whose deadline has passed."""
        deadline = self._deadline
        if deadline is None or not self.buffer:
            return
        now = self._clock()
        n = 0
        for item in self.buffer:
            if deadline(item) > now:
                break
            n += 1
        if n:
            self._lose(self.buffer.take(n), Loss.EXPIRED)
            self._summarise()

    def _next_due(self) -> float:
        """Seconds until the next attempt or the front item's deadline."""
        wait = self.backoff.delay()
        if self._deadline is not None and self.buffer:
            front = next(iter(self.buffer))
            wait = min(wait, self._deadline(front) - self._clock())
        return wait

    # -- the retry task ------------------------------------------------------------------

    def _arm_retry(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(
            self._retry(), name=f"aiologsinks-retry {self.name}"
        )

    async def _retry(self) -> None:
        # Owned by the outbox (aclose cancels and awaits it): sleeps until the back-off
        # allows the next attempt and delivers, until the buffer is empty.
        while self.buffer and not self._closed:
            await asyncio.sleep(max(self._next_due(), 0.001))
            await self._deliver()

    # -- outage notices ------------------------------------------------------------------

    def _went_down(self, exc: BaseException, retry_after: float | None) -> None:
        self._timed_out = _is_timeout(exc)
        self.backoff.failed()
        if retry_after is not None and retry_after > 0:
            due = self._clock() + min(retry_after, MAX_RETRY_AFTER)
            if self.backoff.retryTime is None or due > self.backoff.retryTime:
                self.backoff.retryTime = due
        self._last_error = _describe(exc)
        if self._down_since is None:
            self._down_since = self._last_notice = self._clock()
            self._lost_in_outage = 0
            self._outages += 1
            keep = (
                f"buffering up to {self.buffer.maxlen} record(s)"
                if self.retry and self.buffer.maxlen
                else "records are lost until it is back"
            )
            self._say(f"{self.name}: peer unreachable ({self._last_error}); {keep}")
        else:
            self._summarise()

    def _summarise(self) -> None:
        """A "still unreachable" notice, at most one per ``summary_interval``."""
        if self._down_since is None:
            return
        now = self._clock()
        if now - self._last_notice < self.summary_interval:
            return
        self._last_notice = now
        self._say(
            f"{self.name}: still unreachable after {now - self._down_since:.0f}s"
            f" ({self._last_error}): {self.pending} record(s) buffered,"
            f" {self._lost_in_outage} lost"
        )

    def _came_up(self) -> None:
        self._timed_out = False
        self.backoff.succeeded()
        if self._down_since is None:
            return
        took = self._clock() - self._down_since
        lost, self._lost_in_outage = self._lost_in_outage, 0
        self._down_since = None
        self._say(f"{self.name}: peer reachable again after {took:.1f}s; {lost} record(s) lost")

    def _say(self, message: str) -> None:
        # a broken notice must not break delivery
        with contextlib.suppress(Exception):
            self._notify(message)


def _is_timeout(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, is a timeout."""
    seen = 0
    while exc is not None and seen < 8:  # a chain, not a cycle
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _describe(exc: BaseException) -> str:
    """One line naming an error: its type and message (never a traceback); for an
    error raised from another (a sink's own error wrapping the transport's), the
    root cause, which says what happened."""
    for _ in range(5):
        cause = exc.__cause__
        if not isinstance(cause, Exception):  # none, or a cancellation inside a timeout
            break
        exc = cause
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, asyncio.TimeoutError) and not text:
        text = "timed out"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class OutboxSinkMixin:
    """What a sink with an outbox gives it: where notices go, how losses are counted.

    Losses are counted in the sink's ``error_count`` (``stats().errors``) without a
    report per record; the outbox's rate-limited notices say what happened.
    """

    error_count: int

    def report_outage(self, message: str) -> None:
        """Show one outage notice (peer down, still down with counts, back, closed).

        The outbox calls it a few times per outage, never once per record. The
        default writes the line to ``sys.stderr``; override it to route notices
        elsewhere (a metric, another sink).
        """
        stream = sys.stderr
        if stream is not None:
            with contextlib.suppress(Exception):  # stderr itself is gone: nothing to do
                stream.write(message + "\n")

    def _count_lost(self, items: Sequence[object], why: Loss) -> None:
        self.error_count += len(items)

    def _count_failed(self, items: Sequence[object], exc: BaseException) -> None:
        # called inside the except block: handleError shows the error, once per chunk
        self.error_count += len(items) - 1
        notice = logging.makeLogRecord(
            {
                "name": "aiologsinks",
                "levelno": logging.ERROR,
                "levelname": "ERROR",
                "msg": f"aiologsinks: {len(items)} record(s) refused by {self!r}",
            }
        )
        self.report_error(notice)  # type: ignore[attr-defined]
