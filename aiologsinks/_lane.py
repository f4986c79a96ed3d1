"""A sink's lane: a bounded queue and the one supervised worker task that feeds the sink.

Supervision: whatever the sink, its filters, its formatter or its ``handleError``
raise — any exception, a ``CancelledError`` the sink raised on its own included — is
contained at the record or batch boundary, counted in :class:`SinkStats` and reported
to the sink's ``handleError`` (or, when that raises too, to the fallback). Only the
cancellation of the worker's own task ends it. Should the lane machinery itself fail
repeatedly, the lane gives up: its records go to the fallback, counted as
undelivered, and every other lane and the pump carry on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._fallback import FallbackWriter
from ._fastformat import FORMATTER_HOOKS
from ._handler_sink import HandlerSink
from ._hooks import own_hook
from ._notices import delivering_notice
from ._queue import BoundedQueue, FlushMarker, Notice, Overflow, notice
from ._record import Item, RecordBatch, as_record, own_items
from ._sink import Sink, deliver, per_record_hook
from ._stats import SinkStats
from ._supervise import abandon, containable, interrupt_deferred, spawn, wait_bounded

__all__ = ["Lane"]

#: consecutive failures of the lane machinery (not of the sink) before it gives up
_MAX_FAILURES = 10
#: records a lingering lane lets wait before it delivers anyway (None: a full batch).
#: A bound below the cyclic GC's young threshold (700 on 3.10-3.12) keeps the waiting
#: records from triggering collections (50 times fewer young collections at 15,000
#: records/s), but the extra requests cost as much on the clock: paired against no
#: bound, a FastAPI service's requests/s moved by -2% to +1%, within the noise
#: (benchmarks/README.md, "The sinks' own HTTP client"). Benchmarks set it
#: (``--linger-max``); the default stays the full batch.
LINGER_MAX_RECORDS: int | None = None


def linger_max_records() -> int:
    """How many waiting records end a lingering lane's wait, besides a full batch."""
    return LINGER_MAX_RECORDS if LINGER_MAX_RECORDS else 1 << 30


class Lane:
    """One sink's bounded queue and worker; owned by a Dispatcher."""

    def __init__(
        self,
        sink: Sink,
        name: str,
        size: int,
        overflow: Overflow,
        batch_size: int,
        fallback: FallbackWriter,
    ) -> None:
        self.sink = sink
        #: it wraps a stdlib handler, whose filters and formatter may change (see _deliver)
        self._wraps_handler = isinstance(sink, HandlerSink)
        #: the sink formats with a format() of its own, which may change the records
        self._own_format = own_hook(sink, "format", Sink.format)
        self.name = name
        self.batch_size = batch_size
        self.queue = BoundedQueue(size, overflow)
        # a lingering lane delivers when this many records wait
        self._linger_limit = min(batch_size, size, linger_max_records())
        self._fallback = fallback
        self.emitted = 0
        self.filtered = 0
        #: records that went to handleError during our calls into the sink
        self.errors = 0
        self.undelivered = 0
        self.failed_operations = 0
        # sink.error_count when the lane was made, plus what changed it while we
        # called the sink (those are counted above): the rest are the sink's later
        # give-ups (an outage buffer overflowing, what is buffered at close)
        self._base = sink.error_count
        self._seen = 0
        self._call_base: int | None = None
        # sink._taken_count when the call in flight began (see Sink._take_over)
        self._taken_base = 0
        # sink._vetoed when it began (records its own handle() returned False for)
        self._vetoed_base = sink._vetoed
        self._in_flight: Sequence[Item] = ()
        self._marker: FlushMarker | None = None
        self._idle = False
        self._has_items: asyncio.Event | None = None
        self._has_room: asyncio.Event | None = None
        # set while the worker lingers between deliveries (see sink.linger)
        self._lingering: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        #: the loop the worker runs on (set by start())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._rescuing = False
        #: the worker's coroutine began (a task cancelled before its first step never
        #: runs its own rescue: see rescue_unstarted)
        self._ran = False
        #: the tasks the worker's rescue and close run their steps in: closed with the
        #: worker's when its loop is closed under them (see Closing._orphan)
        self._inner: list[asyncio.Task[None]] = []
        #: the worker gave up (or is gone): records go to the fallback
        self.dead = False
        #: seconds a cancelled worker may spend delivering its lane on the way out
        self.grace = 2.0

    @property
    def size(self) -> int:
        """The lane's bound (records)."""
        return self.queue.size

    @property
    def overflow(self) -> Overflow:
        """The lane's overflow policy."""
        return self.queue.overflow

    # -- producer side (the dispatcher's pump, on the loop) ------------------------

    def start(self) -> None:
        """Start the worker on the running loop."""
        if self._wraps_handler:
            self.sink._check_context()
        self._has_items = asyncio.Event()
        self._has_room = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = spawn(self._run(), f"aiologsinks-lane-{self.name}")

    def _collected(self, exc: BaseException) -> bool:
        """Whether ``exc`` closes the worker's coroutine itself: GeneratorExit while
        its loop no longer runs (the task collected pending, its loop closed under
        it). A sink raising GeneratorExit does so on the running loop: contained."""
        loop = self._loop
        return isinstance(exc, GeneratorExit) and (loop is None or not loop.is_running())

    def put(self, record: Item) -> bool:
        """Offer a record; False only when the lane is full and its policy is block."""
        if self.dead:
            self.force([record])
            return True
        if not self.queue.put(record):
            return False
        self._wake_worker()
        return True

    def put_many(self, records: list[Any]) -> bool:
        """Offer records (no markers) at once; False, taking none, when they do not fit."""
        if self.dead:
            self.force(records)
            return True
        if not self.queue.put_many(records):
            return False
        self._wake_worker()
        return True

    def force(self, records: list[Any]) -> None:
        """Append records past the bound (shutdown: the lane is drained or spilled next)."""
        if self.dead:
            self.refuse(records)
            return
        self.queue.force(records)
        self._wake_worker(force=True)

    def refuse(self, records: list[Any]) -> None:
        """Received, never to be delivered: counted undelivered, to the fallback."""
        self.queue.received += len(records)
        self._spill(records)

    def put_marker(self, marker: FlushMarker) -> None:
        """Markers bypass the bound: they are tiny and must never be dropped."""
        if self.dead:
            marker.ack(self.name)
            return
        self.queue.put_control(marker)
        self._wake_worker(force=True)

    def put_notice(self, record: logging.LogRecord) -> None:
        """Queue a library notice, delivered in order but not counted as a record."""
        if not self.dead:
            self.queue.put_control(Notice(record))
            self._wake_worker(force=True)

    def _wake_worker(self, force: bool = False) -> None:
        if (self._idle or force) and self._has_items is not None:
            self._idle = False
            self._has_items.set()
        lingering = self._lingering
        if lingering is not None and (force or self.queue.depth >= self._linger_limit):
            _release(lingering)

    async def wait_for_room(self) -> None:
        """Wait until the worker has taken records out of a full lane (or is gone)."""
        assert self._has_room is not None
        while self.queue.full() and not self.dead:
            if self._task is None or self._task.done():
                return
            self._has_room.clear()
            await self._has_room.wait()

    def check_worker(self) -> None:
        """After waiting for room: a lane still full whose worker is gone gives up
        (its records go to the fallback, counted), so the pump never spins on it."""
        if self.queue.full() and not self.dead and (self._task is None or self._task.done()):
            self._give_up()

    @property
    def depth(self) -> int:
        """Records waiting in the lane or being delivered now."""
        return self.queue.depth + len(self._in_flight)

    # -- the worker ------------------------------------------------------------------

    async def _run(self) -> None:
        self._ran = True
        collected = False
        try:
            await self._open()
            await self._supervise()
        except GeneratorExit as exc:
            # collected pending, its loop closed under it: nothing can be awaited now
            # (the dispatcher settled its records when it found the loop closed)
            collected = self._collected(exc)
            raise
        finally:
            if not collected and not self._stopping and not self.dead:
                # cancelled by the loop's shutdown, not by Dispatcher.aclose()
                await self._rescue()

    async def _open(self) -> None:
        await self._contained(self.sink.aopen, "could not open")  # retried on first write

    async def _contained(self, operation: Callable[[], Awaitable[object]], what: str) -> None:
        """Await one of the sink's operations; its failure is counted and reported."""
        try:
            await operation()
        except BaseException as exc:
            if not containable(exc):
                raise
            self._operation_failed(what, exc)

    async def _supervise(self) -> None:
        failures = 0
        while True:
            try:
                await self._work()
            except BaseException as exc:
                if not containable(exc) or self._collected(exc):
                    raise
                # a failure of the lane itself (the sink's are contained inside):
                # what was in flight goes to the fallback, counted, and the lane goes on
                failures += 1
                self._settle_in_flight()
                self._tell(f"aiologsinks: lane {self.name} failed: {exc!r}")
                if failures >= _MAX_FAILURES:
                    self._give_up()
                    return

    async def _work(self) -> None:
        assert self._has_items is not None and self._has_room is not None
        has_items, has_room = self._has_items, self._has_room
        queue = self.queue
        items = queue.items
        limit = self.batch_size
        while True:
            if not items:
                self._idle = True
                has_items.clear()
                await has_items.wait()
            batch, control = queue.take_batch(limit)
            has_room.set()
            if batch:
                linger = self.sink.linger
                if linger > 0:
                    started = asyncio.get_running_loop().time()
                await self._deliver(batch)
                if linger > 0 and control is None:
                    await self._linger(started + linger)
            if control is None:
                continue
            if type(control) is Notice:
                await self._emit_notice(control.record)
                continue
            assert type(control) is FlushMarker
            self._marker = control
            await self._flush()
            self._marker = None
            control.ack(self.name)

    async def _linger(self, until: float) -> None:
        """Wait until ``until`` (loop time) while the records that arrive stay few;
        a marker, a notice, a full batch (or :func:`linger_max_records` records) or
        shutdown ends the wait."""
        queue = self.queue
        if queue.controls or queue.depth >= self._linger_limit:
            return
        loop = asyncio.get_running_loop()
        if until <= loop.time():
            return
        waiter = self._lingering = loop.create_future()
        timer = loop.call_at(until, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._lingering = None

    async def _deliver(self, batch: list[Item]) -> None:
        sink = self.sink
        if self._wraps_handler:
            # the wrapped handler may have got a filter or formatter since: records
            # logged from now on carry the caller's context for it
            sink._check_context()
        formatter = sink.formatter
        hook = per_record_hook(sink)
        # its filters, or a filter() of its own (a subclass's, or set on it)
        filtering = bool(sink.filters) or own_hook(sink, "filter", logging.Filterer.filter)
        if (
            filtering
            or sink.changes_records
            or hook is not None  # a handle/emit set on the instance, or later on the class
            or self._own_format
            or (
                formatter is not None
                and (
                    type(formatter) is not logging.Formatter
                    or formatter.__dict__.keys() & FORMATTER_HOOKS  # patched on it
                )
            )
        ):
            # it may change the records it is given (a filter adding a field, a
            # formatter colouring levelname): its own copies, so that what the other
            # sinks write does not depend on which lane ran first
            batch = own_items(batch)
        records: Sequence[logging.LogRecord] = RecordBatch(batch)
        failed = 0
        if filtering and hook != "handle":  # its own handle() filters, stdlib order
            # in flight while filtered too: a filter raising SystemExit or
            # KeyboardInterrupt leaves the batch where stop()/rescue settle it
            self._in_flight = records
            records, failed = self._filter(records)
            self._in_flight = ()
        self.filtered += len(batch) - len(records) - failed
        self.errors += failed
        if not records:
            return
        self._in_flight = records
        self._call_base = before = sink.error_count
        self._taken_base = sink._taken_count
        self._vetoed_base = vetoed = sink._vetoed
        raised = False
        try:
            await deliver(sink, records, hook)
        except BaseException as exc:
            if not containable(exc):
                raise  # the batch stays in flight: stop()/rescue settle it
            raised = True
            self._report(records[0], exc)
        self._in_flight = ()
        self._call_base = None
        changed = sink.error_count - before
        # more than this call's records: the sink gave up on records of earlier calls
        # (an outbox overflowing, records expiring); stats() counts those as later losses
        self._seen += min(changed, len(records))
        if raised:
            # what the sink took over is its to count; the rest failed with the call
            errors, emitted, rest = self._split(len(records), changed)
            errors += rest
        else:
            errors = min(changed, len(records))
            emitted = len(records) - errors
        vetoed = min(sink._vetoed - vetoed, emitted)
        if vetoed:
            # the class's own handle() returned False for them: filtered
            emitted -= vetoed
            self.filtered += vetoed
        self.errors += errors
        self.emitted += emitted
        if self.queue.unannounced and errors < len(records):
            await self._announce()

    def _filter(self, records: Sequence[logging.LogRecord]) -> tuple[list[Any], int]:
        """Apply the sink's filters; a filter raising on a record is that record's
        error (counted, reported), the others are filtered as usual."""
        sink = self.sink
        try:
            return sink.passes(records), 0
        except BaseException as exc:
            if not containable(exc):
                raise
        passed: list[Any] = []
        failed = 0
        for record in records:
            try:
                passed.extend(sink.passes([record]))
            except BaseException as exc:
                if not containable(exc):
                    raise
                failed += 1
                self._report(record, exc)
        return passed, failed

    def _report(self, record: Item, exc: BaseException) -> None:
        """Give ``record``'s error to the sink's handleError; if that raises too, tell
        the fallback. Called inside the ``except`` block that caught ``exc``."""
        try:
            self.sink.handleError(as_record(record))
        except BaseException as again:
            if not containable(again):
                raise
            self._tell(
                f"aiologsinks: handleError of sink {self.name} raised {again!r} "
                f"while reporting {exc!r}"
            )

    async def _emit_notice(self, record: logging.LogRecord) -> None:
        # a notice is not a record: its failure is never counted as one, neither now
        # nor when an outbox gives up on it later (see _notices); what the sink counts
        # meanwhile are records it gave up on, counted by stats()
        try:
            with delivering_notice():
                await self.sink.emit_batch([record])
        except BaseException as exc:
            if not containable(exc):
                raise
            self._tell(f"aiologsinks: sink {self.name} could not take a notice: {exc!r}")

    async def _announce(self) -> None:
        count, self.queue.unannounced = self.queue.unannounced, 0
        await self._emit_notice(
            notice(
                "aiologsinks: %d record(s) dropped for sink %s: its lane was full (overflow=%s)",
                count,
                self.name,
                self.overflow,
            )
        )

    async def _flush(self) -> None:
        await self._contained(self.sink.flush, "flush failed")

    def _operation_failed(self, what: str, exc: BaseException) -> None:
        # an operation, not a record: counted apart from record errors; called inside
        # the except block, so handleError prints the active exception
        self.failed_operations += 1
        self._report(notice("aiologsinks: %s sink %s", what, self.name), exc)

    def _tell(self, message: str) -> None:
        self._fallback.write((), notice("%s", message))

    # -- settling what could not be delivered ------------------------------------------

    def _split(self, count: int, changed: int) -> tuple[int, int, int]:
        """Split the ``count`` records of the call in flight: (errors the sink counted
        during it, emitted — taken over by the sink, which delivers them or counts
        them in ``error_count`` later —, the rest the sink never took)."""
        errors = min(changed, count)
        taken = max(min(self.sink._taken_count - self._taken_base, count), errors)
        return errors, taken - errors, count - taken

    def _settle_in_flight(self) -> None:
        """Count an interrupted batch: what the sink already failed as errors, what
        it took over (buffered, see ``Sink._take_over``) as emitted — it counts them
        itself if it gives up on them —, the rest as undelivered (to the fallback: it
        may or may not have been written)."""
        records, self._in_flight = self._in_flight, ()
        before, self._call_base = self._call_base, None
        if not records:
            return
        changed = 0 if before is None else self.sink.error_count - before
        self._seen += min(changed, len(records))  # the rest: later losses (see _deliver)
        errors, emitted, rest = self._split(len(records), changed)
        vetoed = min(self.sink._vetoed - self._vetoed_base, emitted)
        self.filtered += vetoed  # its own handle() returned False for them
        self.errors += errors
        self.emitted += emitted - vetoed
        self.undelivered += rest
        if rest:
            self._fallback.write(list(records[len(records) - rest :]))

    def _spill(self, records: list[Any]) -> None:
        """Records the lane cannot deliver: counted undelivered, to the fallback."""
        records = [r for r in records if not isinstance(r, (FlushMarker, Notice))]
        if records:
            self.undelivered += len(records)
            self._fallback.write(records)

    def take_all(self) -> None:
        """Settle everything not delivered (to the fallback); acknowledge markers."""
        self._settle_in_flight()
        marker, self._marker = self._marker, None
        if marker is not None:
            marker.ack(self.name)
        records, controls = self.queue.drain()
        for item in controls:
            if type(item) is FlushMarker:
                item.ack(self.name)
        self._spill(records)

    def _give_up(self) -> None:
        self.dead = True
        self._tell(f"aiologsinks: lane {self.name} gave up; its records go to the fallback")
        self.take_all()

    async def _rescue(self, opening: bool = False) -> None:
        """Deliver the lane to the sink and close it while the loop shuts down.

        The batch that was interrupted may or may not have reached the sink: it is
        counted and left to the fallback rather than risk writing it twice. What
        cannot be delivered within :attr:`grace` seconds (``opening``: the sink
        first) goes to the fallback too.
        """
        self._rescuing = True
        await asyncio.sleep(0)  # the pump hands over the shared queue first
        self._settle_in_flight()
        # spawned: on 3.10 only such a task tells its own cancellation from a
        # CancelledError a sink raises (see own_cancel)
        task = spawn(self._drain_and_close(opening), f"aiologsinks-rescue-{self.name}")
        self._inner.append(task)
        if not await wait_bounded(task, self.grace):
            abandon(task)
        self.take_all()

    def _take_in_flight(self) -> tuple[list[Any], FlushMarker | Notice | None]:
        """A batch from the lane's queue, in flight at once: a second Ctrl-C before the
        sink's call has it leaves it counted (see _settle_in_flight), not nowhere."""
        with interrupt_deferred():
            batch, control = self.queue.take_batch(self.batch_size)
            self._in_flight = batch
            self._call_base = None
            self._taken_base = self.sink._taken_count
            self._vetoed_base = self.sink._vetoed
        return batch, control

    def rescue_unstarted(self) -> asyncio.Task[None] | None:
        """A worker cancelled before its first step (its loop ending) ran no rescue:
        open the sink and deliver the lane in a new task, as that rescue would have
        (None: the worker ran, or the lane is stopped or dead)."""
        task = self._task
        if self._ran or self._stopping or self.dead or task is None or not task.done():
            return None
        self._ran = True
        self._task = spawn(self._rescue(opening=True), f"aiologsinks-lane-{self.name}")
        return self._task

    async def _drain_and_close(self, opening: bool = False) -> None:
        if opening:
            await self._open()
        queue = self.queue
        while queue.items:
            batch, control = self._take_in_flight()
            if batch:
                await self._deliver(batch)
            if type(control) is FlushMarker:
                control.ack(self.name)
        await self._flush()
        await self.close_sink(None)

    # -- shutdown ---------------------------------------------------------------------

    async def stop(self, timeout: float | None) -> None:
        """Stop the worker (waiting at most ``timeout`` for it to end: a sink that
        ignores cancellation is abandoned) and settle what it had not delivered."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            if not self._rescuing:  # a rescuing worker ends by itself within its grace
                task.cancel()
            if not await wait_bounded(task, timeout):
                abandon(task)
                self.failed_operations += 1
                self._tell(f"aiologsinks: sink {self.name} ignored cancellation; abandoned")
        elif task is not None:
            abandon(task)  # retrieves its outcome
        self.dead = True
        before = self.undelivered
        self.take_all()
        if self.undelivered > before:
            # the records alone, in the fallback, would not say why they are there
            self._tell(
                f"aiologsinks: sink {self.name} ran out of time to deliver"
                f" {self.undelivered - before} record(s); they went to the fallback"
            )

    async def close_sink(self, timeout: float | None, settle: float = 0.0) -> None:
        """Close the sink, waiting at most ``timeout``; a failure goes to its
        handleError, a close that does not end in time is abandoned and counted.

        An abandoned close is cancelled, and waited for ``settle`` seconds more: on
        its way out it may still count what it held (an outbox giving up on its
        buffer), which the stats read right after should include."""
        task = spawn(self._close_sink(), f"aiologsinks-close-{self.name}")  # (see _rescue)
        self._inner.append(task)
        if not await wait_bounded(task, timeout):
            abandon(task)
            await wait_bounded(task, settle)
            self.failed_operations += 1
            self._tell(
                f"aiologsinks: sink {self.name} did not close within {timeout:.3g}s; abandoned"
            )

    async def _close_sink(self) -> None:
        await self._contained(self.sink.aclose, "could not close")

    def stats(self) -> SinkStats:
        """A snapshot of the lane's counters."""
        sink_errors = self.sink.error_count if self._call_base is None else self._call_base
        later = min(max(sink_errors - self._base - self._seen, 0), self.emitted)
        return SinkStats(
            name=self.name,
            received=self.queue.received,
            emitted=self.emitted,
            filtered=self.filtered,
            dropped=self.queue.dropped,
            errors=self.errors + later,
            depth=self.depth,
            undelivered=self.undelivered,
            delivered=self.emitted - later,
            failed_operations=self.failed_operations,
        )


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
