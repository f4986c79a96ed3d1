"""Dispatcher: the event-loop side of the pipeline, and install()."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import warnings
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from ._exceptions import DispatcherStateError
from ._handler_sink import HandlerSink
from ._lane import Lane, _FlushMarker, _notice
from ._record import Item, as_record, passing
from ._shim import QueueHandler
from ._sink import Sink

__all__ = ["Dispatcher", "DispatcherStats", "Overflow", "SinkStats", "install"]

Overflow = Literal["drop_oldest", "drop_newest", "block"]
_OVERFLOWS = ("drop_oldest", "drop_newest", "block")


class DispatcherState(enum.Enum):
    """Lifecycle of a dispatcher."""

    #: constructed, not started: records are queued (bounded) until start()
    NEW = "new"
    #: start() was called: the pump and the lane workers run on the loop
    RUNNING = "running"
    #: aclose() is delivering what was queued before it; new records go to the fallback
    CLOSING = "closing"
    #: every sink is closed; a second aclose() returns at once
    CLOSED = "closed"


@dataclass(frozen=True)
class SinkStats:
    """Counters of one sink's lane (a snapshot)."""

    name: str
    #: records offered to the lane (after the sink's level)
    received: int
    #: records the sink accepted (a network sink may still give up on one later:
    #: then it is also counted in ``errors``)
    emitted: int
    #: records the sink's filters rejected
    filtered: int
    #: records dropped because the lane was full
    dropped: int
    #: records the sink reported to its handleError, whenever that happened
    errors: int
    #: records waiting in the lane now
    depth: int
    #: records still in the lane when aclose() gave up (timeout), sent to the fallback
    undelivered: int


@dataclass(frozen=True)
class DispatcherStats:
    """A snapshot of a dispatcher's counters; ``sinks`` is keyed by sink name."""

    #: records waiting in the shared queue now
    queued: int
    #: records dropped because the shared queue was full
    dropped: int
    #: records that arrived after close (or after the loop was gone): sent to the fallback
    after_close: int
    sinks: dict[str, SinkStats]

    @property
    def lost(self) -> int:
        """Every record that did not reach a sink it was meant for."""
        return (
            self.dropped
            + self.after_close
            + sum(s.dropped + s.errors + s.undelivered for s in self.sinks.values())
        )


class Dispatcher:
    """Drain the shared queue on the event loop and fan records out to sinks.

    The async counterpart of ``logging.handlers.QueueListener``. Each sink gets a
    bounded *lane* and a worker task that calls ``sink.emit_batch`` with up to
    ``batch_size`` records, so a slow or failing sink affects only its own lane.
    Plain ``logging.Handler`` objects are accepted and run on a worker thread.

    Options (keyword-only):

    * ``respect_handler_level`` (default ``True``, unlike the seed): skip sinks whose
      level is above the record's.
    * ``queue_size``: bound of the shared queue; ``lane_size``: bound of each lane.
    * ``overflow``: what a full queue or lane does — ``"block"`` (default: foreign
      threads wait for room, the dispatcher waits for room in a lane; the loop thread
      is never blocked, so records it logs are accepted past the bound),
      ``"drop_oldest"`` or ``"drop_newest"``. Every drop is counted in
      :meth:`stats` and announced by one WARNING record when delivery resumes.
    * ``lanes``: per-sink overrides, ``{sink: {"size": int, "overflow": ...}}``.
    * ``batch_size``: most records per ``emit_batch`` call. Large enough that a lane
      keeps up with a loop that logs in bursts: a lane completes one batch per write
      round trip, so a small batch lets the backlog (and memory) grow.
    * ``fallback``: where records go after close (default ``logging.lastResort``).
    """

    def __init__(
        self,
        *sinks: Sink | logging.Handler,
        respect_handler_level: bool = True,
        queue_size: int = 10_000,
        lane_size: int = 10_000,
        overflow: Overflow = "block",
        batch_size: int = 4000,
        lanes: Mapping[Sink | logging.Handler, Mapping[str, Any]] | None = None,
        fallback: logging.Handler | None = None,
    ) -> None:
        _check_positive("queue_size", queue_size)
        _check_positive("lane_size", lane_size)
        _check_positive("batch_size", batch_size)
        _check_overflow("overflow", overflow)
        self.respect_handler_level = respect_handler_level
        self.queue_size = queue_size
        self.overflow: Overflow = overflow
        self.batch_size = batch_size
        self._fallback = fallback
        overrides = dict(lanes or {})
        self._lanes: list[Lane] = []
        names: set[str] = set()
        for i, obj in enumerate(sinks):
            sink = _as_sink(obj, f"sinks[{i}]")
            opts = dict(overrides.pop(obj, {}))
            size = opts.pop("size", lane_size)
            policy = opts.pop("overflow", overflow)
            if opts:
                raise TypeError(f"lanes[{sink!r}]: unknown option(s) {sorted(opts)}")
            _check_positive(f"lanes[{sink!r}].size", size)
            _check_overflow(f"lanes[{sink!r}].overflow", policy)
            name = _unique_name(sink, i, names)
            self._lanes.append(Lane(sink, name, size, policy, batch_size, self._spill))
        if overrides:
            raise ValueError(f"lanes: {list(overrides)!r} are not sinks of this dispatcher")
        self.sinks: tuple[Sink, ...] = tuple(lane.sink for lane in self._lanes)
        self.handler = QueueHandler(self)
        self.state = DispatcherState.NEW
        self._queue: deque[Any] = deque()
        # flush markers now in the queue: while there are none, the pump moves
        # records to the lanes in bulk
        self._markers = 0
        self._accepting = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = -1
        self._wake_pending = False
        self._wakeup: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[DispatcherStats] | None = None
        # foreign threads waiting for room (overflow="block") sleep on this
        self._room = threading.Condition(threading.Lock())
        self._blocked = 0
        self._dropped = 0
        self._unannounced = 0
        self._after_close = 0
        self._fallback_warned = False

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the pump and one worker per sink on the running event loop.

        Must be called from a coroutine (it needs the running loop). Records
        submitted before ``start()`` were queued and are delivered now. Raises
        :class:`DispatcherStateError` if already started or closed.
        """
        if self.state is not DispatcherState.NEW:
            raise DispatcherStateError(f"start: dispatcher is {self.state.value}, expected new")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise DispatcherStateError("start: must be called with a running event loop") from None
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        for lane in self._lanes:
            lane.start()
        self._pump_task = loop.create_task(self._pump(), name="aiologsinks-dispatcher")
        self.state = DispatcherState.RUNNING
        self._wake_pending = True
        self._wakeup.set()

    async def __aenter__(self) -> Dispatcher:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def flush(self) -> None:
        """Wait until every record submitted before this call has been handled by
        every sink and every sink's ``flush()`` has completed.

        Records from any thread count if their logging call returned before this
        call. After close it returns at once. Raises :class:`DispatcherStateError`
        if the dispatcher was never started.
        """
        if self.state is DispatcherState.NEW:
            raise DispatcherStateError("flush: dispatcher was not started")
        if self.state is DispatcherState.CLOSED or self._pump_task is None:
            return
        marker = _FlushMarker(asyncio.get_running_loop(), len(self._lanes))
        self._put_marker(marker)
        await asyncio.shield(marker.done)

    async def aclose(self, timeout: float | None = None) -> DispatcherStats:
        """Deliver what was submitted before the call, flush and close every sink.

        Records submitted after the call go to the fallback. With ``timeout``,
        delivery that has not finished after ``timeout`` seconds is abandoned:
        what is left in the lanes is counted as ``undelivered`` and written to the
        fallback, and the sinks are closed anyway. Returns the final :meth:`stats`.
        Idempotent: a second call waits for the first. Cancelling the awaiting task
        does not stop the close, which the dispatcher owns.
        """
        if self.state is DispatcherState.NEW:
            self._accepting = False
            self.state = DispatcherState.CLOSED
            self._spill(list(self._queue))
            self._queue.clear()
            for lane in self._lanes:
                await _aclose_quietly(lane)
            return self.stats()
        if self._close_task is None:
            self._accepting = False
            self.state = DispatcherState.CLOSING
            self._close_task = asyncio.get_running_loop().create_task(
                self._close(timeout), name="aiologsinks-close"
            )
        await asyncio.shield(self._close_task)
        return self.stats()

    async def _close(self, timeout: float | None) -> DispatcherStats:
        marker = _FlushMarker(asyncio.get_running_loop(), len(self._lanes))
        self._put_marker(marker)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(marker.done), timeout)
        except asyncio.CancelledError:
            # asyncio.run() is shutting down while aclose() runs: the lanes still
            # deliver what they hold (within their grace period) and close the sinks
            await self._shutdown(rescue=True)
            raise
        await self._shutdown(rescue=False)
        return self.stats()

    async def _shutdown(self, rescue: bool) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if rescue:
            self._hand_over_queue()
        self._spill(self._drain_queue())
        for lane in self._lanes:
            self._spill(await lane.stop(rescue=rescue), lane)
        await asyncio.gather(*(_aclose_quietly(lane) for lane in self._lanes))
        self.state = DispatcherState.CLOSED
        with self._room:
            self._room.notify_all()

    # -- the hand-off (called by QueueHandler from any thread) --------------------

    def submit(self, record: Item) -> None:
        """Queue a prepared record for delivery; never blocks the loop thread.

        From a foreign thread with ``overflow="block"`` and a full queue, waits for
        room (and gives up to the fallback if the dispatcher or its loop goes away).
        """
        if not self._accepting:
            self._to_fallback(record)
            return
        queue = self._queue
        if len(queue) >= self.queue_size and not self._make_room():
            return
        queue.append(record)
        if self._wake_pending:
            return
        self._wake_pending = True
        loop = self._loop
        if loop is None:
            return  # not started: start() wakes the pump
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self._wake)
            return
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            # the loop is closed: nothing will ever drain the queue
            self._accepting = False
            self._spill(self._drain_queue())

    def _make_room(self) -> bool:
        """Apply the overflow policy to a full queue; False when the record is dropped."""
        policy = self.overflow
        on_loop = threading.get_ident() == self._loop_thread
        if policy == "block":
            if on_loop or self._loop is None:
                return True  # never block the loop: accept past the bound
            return self._wait_for_room()
        if policy == "drop_newest":
            self._count_drop()
            return False
        try:
            head = self._queue.popleft()
        except IndexError:
            return True
        self._count_drop()
        if type(head) is _FlushMarker:
            # a flush marker is never dropped: the record being logged is, instead
            self._queue.appendleft(head)
            return False
        return True

    def _count_drop(self) -> None:
        self._dropped += 1
        self._unannounced += 1

    def _wait_for_room(self) -> bool:
        with self._room:
            self._blocked += 1
            try:
                while len(self._queue) >= self.queue_size:
                    loop = self._loop
                    if not self._accepting or loop is None or loop.is_closed():
                        self._accepting = False
                        return True  # submit() re-checks and uses the fallback
                    if self._pump_task is not None and self._pump_task.done():
                        return True
                    self._room.wait(0.05)
            finally:
                self._blocked -= 1
        return True

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _put_marker(self, marker: _FlushMarker) -> None:
        self._markers += 1
        self._queue.append(marker)
        self._wake_pending = True
        self._wake()

    def _drain_queue(self) -> list[Any]:
        items = self._take(len(self._queue))
        self._markers -= sum(1 for i in items if type(i) is _FlushMarker)
        return items

    def _take(self, n: int) -> list[Any]:
        """Pop up to ``n`` items off the head of the queue.

        Item by item, not ``list()`` + ``clear()``: foreign threads append meanwhile,
        and with ``overflow="drop_oldest"`` they also pop, so the queue may hold
        fewer than ``n`` by the time we get there.
        """
        popleft = self._queue.popleft
        if self.overflow != "drop_oldest":
            # only this loop thread ever pops: the queue holds at least n
            return [popleft() for _ in range(n)]
        chunk: list[Any] = []
        append = chunk.append
        try:
            for _ in range(n):
                append(popleft())
        except IndexError:
            pass
        return chunk

    # -- the pump: shared queue -> lanes ------------------------------------------

    async def _pump(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        queue = self._queue
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                # clear the flag before draining: a producer that appends after this
                # point sees it False and wakes us again
                self._wake_pending = False
                while queue:
                    n = min(len(queue), self.batch_size)
                    if self._markers:
                        await self._pump_each(n)
                    else:
                        await self._pump_bulk(self._take(n))
                    if self._blocked:
                        with self._room:
                            self._room.notify_all()
                    if self._unannounced:
                        self._announce_queue_drops()
                    if queue:
                        # let the loop breathe between chunks of a long backlog
                        await asyncio.sleep(0)
        finally:
            if self.state is DispatcherState.RUNNING:
                # cancelled without aclose() (e.g. asyncio.run() ended): nothing will
                # deliver what is queued, so it must not vanish silently
                self._accepting = False
                self._abandoned()

    async def _pump_bulk(self, chunk: list[Item]) -> None:
        """Move records (no markers among them) to every lane, in bulk when there is room."""
        respect, lanes = self.respect_handler_level, self._lanes
        for k, lane in enumerate(lanes):
            items = passing(chunk, lane.sink.level) if respect else chunk
            if not items or lane.put_many(items):
                continue
            for i, item in enumerate(items):
                if lane.put(item):
                    continue
                try:
                    await lane.wait_for_room()
                except asyncio.CancelledError:
                    # shut down while this lane was full: what it and the lanes after
                    # it did not get yet goes in past their bounds, where close counts
                    # and spills it, instead of vanishing with this coroutine
                    lane.force(items[i:])
                    for later in lanes[k + 1 :]:
                        later.force(passing(chunk, later.sink.level) if respect else chunk)
                    raise
                if not lane.put(item):
                    lane.force([item])  # the worker is gone: stop() will spill it

    async def _pump_each(self, n: int) -> None:
        """Move ``n`` queued items, flush markers among them, to the lanes: the records
        between two markers in bulk, each marker after the records before it."""
        chunk = self._take(n)
        marks = [i for i, item in enumerate(chunk) if type(item) is _FlushMarker]
        start = 0
        for pos in [*marks, len(chunk)]:
            if start < pos:
                try:
                    await self._pump_bulk(chunk[start:pos])
                except asyncio.CancelledError:
                    # _pump_bulk placed its segment; what follows goes back to the queue
                    self._requeue(chunk[pos:])
                    raise
            if pos < len(chunk):
                self._markers -= 1
                for lane in self._lanes:
                    lane.put_marker(chunk[pos])
            start = pos + 1

    def _requeue(self, items: list[Any]) -> None:
        self._queue.extendleft(reversed(items))
        self._markers += sum(1 for i in items if type(i) is _FlushMarker)

    def _hand_over_queue(self) -> None:
        """Move the shared queue into the lanes, past their bounds (shutdown only)."""
        items = [i for i in self._drain_queue() if type(i) is not _FlushMarker]
        for lane in self._lanes:
            lane.force(passing(items, lane.sink.level) if self.respect_handler_level else items)

    def _announce_queue_drops(self) -> None:
        count, self._unannounced = self._unannounced, 0
        record = _notice(
            "aiologsinks: %d record(s) dropped: the dispatcher queue was full (overflow=%s)",
            count,
            self.overflow,
        )
        for lane in self._lanes:
            lane.put(record)

    def _abandoned(self) -> None:
        # Hand what is queued to the lanes, past their bounds: each lane worker is
        # being cancelled too, and on its way out it delivers its lane to its sink
        # (within the grace period) and closes it. See Lane.rescue().
        self._hand_over_queue()
        pending = sum(lane.depth for lane in self._lanes)
        warnings.warn(
            f"aiologsinks: {self!r} was not closed before its event loop stopped; "
            f"delivering {pending} pending record(s) during shutdown (await aclose() "
            f"or use install() to flush and close deterministically)",
            ResourceWarning,
            stacklevel=1,
        )

    # -- fallback ----------------------------------------------------------------------

    def _to_fallback(self, record: Any) -> None:
        if type(record) is _FlushMarker:
            return
        self._after_close += 1
        self._spill([record], count=False)

    def _spill(self, items: Iterable[Any], lane: Lane | None = None, count: bool = True) -> None:
        handler = self._fallback or logging.lastResort
        records = [r for r in items if type(r) is not _FlushMarker]
        if not records:
            return
        if lane is not None:
            lane.undelivered += len(records)
        elif count:
            self._after_close += len(records)
        if handler is None:
            return
        if not self._fallback_warned:
            self._fallback_warned = True
            handler.handle(
                _notice("aiologsinks: dispatcher is closed; records go to the fallback handler")
            )
        for record in records:
            handler.handle(as_record(record))

    # -- introspection --------------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters: per sink, and for the shared queue."""
        return DispatcherStats(
            queued=sum(1 for r in self._queue if type(r) is not _FlushMarker),
            dropped=self._dropped,
            after_close=self._after_close,
            sinks={lane.name: lane.stats() for lane in self._lanes},
        )

    def __repr__(self) -> str:
        return f"<Dispatcher {self.state.value} sinks={len(self._lanes)}>"


@contextlib.asynccontextmanager
async def install(
    *sinks: Sink | logging.Handler,
    logger: logging.Logger | str | None = None,
    level: int | str | None = None,
    **dispatcher_options: Any,
) -> AsyncIterator[Dispatcher]:
    """Run a :class:`Dispatcher` for ``sinks`` and attach its handler to ``logger``.

    ``logger`` is a Logger, a logger name, or ``None`` for the root logger; when
    ``level`` is given the logger's level is set for the duration and restored
    afterwards. Yields the started Dispatcher. On exit the handler is detached and
    ``await dispatcher.aclose()`` delivers everything logged before, flushes and
    closes the sinks. Use it in a FastAPI lifespan, an aiohttp cleanup context, or
    around the body of ``asyncio.run(main())``.
    """
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    dispatcher = Dispatcher(*sinks, **dispatcher_options)
    old_level = target.level
    dispatcher.start()
    if level is not None:
        target.setLevel(level)
    target.addHandler(dispatcher.handler)
    try:
        yield dispatcher
    finally:
        target.removeHandler(dispatcher.handler)
        if level is not None:
            target.setLevel(old_level)
        await dispatcher.aclose()


def _as_sink(obj: object, where: str) -> Sink:
    if isinstance(obj, Sink):
        return obj
    if isinstance(obj, logging.Handler):
        return HandlerSink(obj)
    raise TypeError(f"{where}: expected a Sink or a logging.Handler, got {obj!r}")


def _unique_name(sink: Sink, index: int, taken: set[str]) -> str:
    base = sink.name or f"{type(sink).__name__}#{index}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}#{n}"
    taken.add(name)
    return name


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def _check_overflow(name: str, value: object) -> None:
    if value not in _OVERFLOWS:
        raise ValueError(f"{name}: expected one of {', '.join(_OVERFLOWS)}, got {value!r}")


async def _aclose_quietly(lane: Lane) -> None:
    await lane.close_sink()
