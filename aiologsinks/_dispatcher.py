"""Dispatcher: the event-loop side of the pipeline, and install()."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import threading
import warnings
import weakref
from _thread import get_ident
from asyncio.events import _get_running_loop
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from . import _background
from ._exceptions import DispatcherStateError
from ._fallback import FallbackWriter
from ._handler_sink import HandlerSink
from ._lane import Lane
from ._queue import OVERFLOWS, BoundedQueue, FlushMarker, Notice, Overflow, notice
from ._record import Item, passing
from ._shim import QueueHandler
from ._sink import Sink
from ._stats import DispatcherStats, SinkStats
from ._supervise import abandon, spawn, wait_bounded
from ._validate import ArgumentTypeError, ArgumentValueError

__all__ = [
    "Dispatcher",
    "DispatcherState",
    "DispatcherStats",
    "Overflow",
    "SinkStats",
]

#: seconds granted past ``aclose(timeout)``'s deadline to stop the workers, to close
#: the sinks and to hand the leftovers to the fallback: aclose(timeout=T) returns
#: within T + _STOP_GRACE + _CLOSE_GRACE + _FALLBACK_GRACE (under a second)
_STOP_GRACE = 0.2
_CLOSE_GRACE = 0.3
_FALLBACK_GRACE = 0.2
#: bound of the close a process without a loop gets at exit (and ``close()``'s default)
_EXIT_TIMEOUT = 5.0
#: seconds a dispatcher that receives records while no loop runs waits for start()
#: before it starts on the background loop
_AUTO_START_DELAY = 5.0


class DispatcherState(enum.Enum):
    """Lifecycle of a dispatcher (see :class:`Dispatcher` for the transitions)."""

    #: constructed, not started: records are queued (bounded) until start()
    NEW = "new"
    #: start() was called: the pump and the lane workers run on the loop
    RUNNING = "running"
    #: aclose() is delivering what was queued before it; new records go to the fallback
    CLOSING = "closing"
    #: every sink is closed (or the loop ended, or the process forked); a second
    #: aclose() returns at once
    CLOSED = "closed"


_live: weakref.WeakSet[Dispatcher] = weakref.WeakSet()


class Dispatcher:
    """Drain the shared queue on the event loop and fan records out to sinks.

    The async counterpart of ``logging.handlers.QueueListener``. Each sink gets a
    bounded, supervised *lane* and a worker task that calls ``sink.emit_batch`` with
    up to ``batch_size`` records, so a slow, failing or hung sink affects only its
    own lane. Plain ``logging.Handler`` objects are accepted and run on a worker thread.

    Options (keyword-only):

    * ``respect_handler_level`` (default ``True``, unlike ``QueueListener``): skip sinks whose
      level is above the record's.
    * ``queue_size``: bound of the shared queue; ``lane_size``: bound of each lane.
    * ``overflow``: what a full queue or lane does — ``"block"`` (default: foreign
      threads wait for room, the dispatcher waits for room in a lane; the loop thread
      and the pipeline's own threads never wait, so records they log are accepted
      past the bound), ``"drop_oldest"`` or ``"drop_newest"``. Every drop is counted
      in :meth:`stats` and announced by one WARNING notice when delivery resumes.
    * ``lanes``: per-sink overrides, ``{sink: {"size": int, "overflow": ...}}``.
    * ``batch_size``: most records per ``emit_batch`` call.
    * ``fallback``: where undeliverable records go (default ``logging.lastResort``);
      it is written from a fallback thread, never on the loop.

    Lifecycle — the one state machine of the pipeline::

        NEW ──start()──────────────> RUNNING ──aclose(T)──> CLOSING ──> CLOSED
         │   (on the running loop,     │                      │
         │    or the background loop:  │ loop ended without   │ 1 drain: a flush marker
         │    sync ``with``, a full    │ aclose(), or fork:   │   through queue and lanes,
         │    queue with no loop, or   │ ───────────────────> │   until it is done or T
         │    exit of a process that   │   CLOSED (orphaned)  │ 2 stop the pump (+grace);
         │    never ran a loop)        │                      │   queue leftovers: counted,
         └──aclose(): start, then close┘                      │   to the fallback
                                                              │ 3 stop the lane workers
        In CLOSING and CLOSED new records go to the fallback, │   (+grace; a worker that
        counted as ``after_close``. Cancelling the caller of  │   ignores cancellation is
        aclose() does not stop it (the dispatcher owns the    │   abandoned), leftovers
        close task); if the loop itself cancels it, the lanes │   counted undelivered
        deliver within their grace and close their sinks.     │ 4 close every sink at once
        A second aclose() waits for the first. After the loop │   (+grace; abandoned if not)
        ended without aclose() the state is CLOSED: records   │ 5 let the fallback write
        go to the fallback, ``flush()`` raises                │   (+grace) -> CLOSED
        :class:`DispatcherStateError`, ``aclose()`` settles the counts and returns.
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
        # the hot path's attributes first: the first ones an instance gets stay on
        # CPython's fast attribute path
        self._loop_thread = -1
        self._accepting = True
        self._wake_pending = False
        self._items: deque[Any] = deque()
        self._bound = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None
        _check_positive("queue_size", queue_size)
        _check_positive("lane_size", lane_size)
        _check_positive("batch_size", batch_size)
        _check_overflow("overflow", overflow)
        if fallback is not None and not isinstance(fallback, logging.Handler):
            raise ArgumentTypeError("fallback", f"expected a logging.Handler, got {fallback!r}")
        seen: dict[int, int] = {}
        for i, obj in enumerate(sinks):
            if id(obj) in seen:
                raise ValueError(
                    f"sinks[{i}]: {obj!r} is already sinks[{seen[id(obj)]}]; "
                    f"a sink can be given once (it has one lane and one worker)"
                )
            seen[id(obj)] = i
        self.respect_handler_level = respect_handler_level
        self.batch_size = batch_size
        self._fallback_handler = fallback
        self._fallback = FallbackWriter(self._fallback_target)
        overrides = dict(lanes or {})
        self._lanes: list[Lane] = []
        names: set[str] = set()
        for i, obj in enumerate(sinks):
            sink = _as_sink(obj, f"sinks[{i}]")
            opts = dict(overrides.pop(obj, {}))
            size = opts.pop("size", lane_size)
            policy = opts.pop("overflow", overflow)
            if opts:
                raise ArgumentTypeError(f"lanes[{sink!r}]", f"unknown option(s) {sorted(opts)}")
            _check_positive(f"lanes[{sink!r}].size", size)
            _check_overflow(f"lanes[{sink!r}].overflow", policy)
            name = _unique_name(sink, i, names)
            self._lanes.append(Lane(sink, name, size, policy, batch_size, self._fallback))
        if overrides:
            raise ArgumentValueError(
                "lanes", f"{list(overrides)!r} are not sinks of this dispatcher"
            )
        self.sinks: tuple[Sink, ...] = tuple(lane.sink for lane in self._lanes)
        self._queue = BoundedQueue(queue_size, overflow, self._items)
        self.handler = QueueHandler(self)
        self.state = DispatcherState.NEW
        self._wakeup: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        # serialises foreign threads' hand-offs with closing, so that no record is
        # appended after the queue was settled (the loop thread needs no lock)
        self._lock = threading.Lock()
        # foreign threads waiting for room (overflow="block") sleep on this
        self._room_cv = threading.Condition(threading.Lock())
        self._blocked = 0
        self._after_close = 0
        self._undelivered = 0
        self._fallback_warned = False
        #: started by the library on the background loop, not by the user
        self._auto = False
        self._auto_scheduled = False
        #: why the dispatcher closed without aclose() ("the loop ended", "fork")
        self._orphaned: str | None = None
        self._pid = os.getpid()
        _live.add(self)

    @property
    def queue_size(self) -> int:
        """Bound of the shared queue."""
        return self._queue.size

    @property
    def overflow(self) -> Overflow:
        """Overflow policy of the shared queue."""
        return self._queue.overflow

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the pump and one worker per sink on the running event loop.

        Must be called from a coroutine (it needs the running loop); to run without
        one, use the dispatcher as a sync context manager (``with``). Records
        submitted before ``start()`` were queued and are delivered now. Raises
        :class:`DispatcherStateError` if already started (a second ``start()``) or
        closed. A dispatcher the library started on its background loop (records
        logged while no loop ran) is adopted: it keeps running there.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise DispatcherStateError(
                "start: must be called with a running event loop "
                "(or use the dispatcher as a sync context manager: with Dispatcher(...))"
            ) from None
        with self._lock:  # the background loop may be starting it right now
            if self.state is DispatcherState.RUNNING and self._auto:
                self._auto = False
                return
            if self.state is not DispatcherState.NEW:
                raise DispatcherStateError(f"start: dispatcher is {self.state.value}, expected new")
            self._start_on(loop)

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = get_ident()
        self._wakeup = asyncio.Event()
        for lane in self._lanes:
            lane.start()
        self._pump_task = spawn(self._pump(), "aiologsinks-dispatcher")
        self.state = DispatcherState.RUNNING
        self._wake_pending = True
        self._wakeup.set()

    async def _start_here(self) -> None:
        with self._lock:
            if self.state is DispatcherState.NEW:
                self._start_on(asyncio.get_running_loop())

    def _start_in_background(self) -> None:
        """Start on the library's background loop (no loop runs here)."""
        coro = self._start_here()
        try:
            _background.run(coro, timeout=_EXIT_TIMEOUT)
        except (DispatcherStateError, RuntimeError, TimeoutError):
            coro.close()  # e.g. no new thread at interpreter exit (Python 3.12)

    def _schedule_auto_start(self) -> None:
        """Records arrived while no loop runs here: unless ``start()`` claims the
        dispatcher within :data:`_AUTO_START_DELAY` seconds, it starts on the
        background loop (which is started now, while threads can still start)."""
        self._auto_scheduled = True
        try:
            loop = _background.get_loop()
            loop.call_soon_threadsafe(loop.call_later, _AUTO_START_DELAY, self._auto_start)
        except RuntimeError:  # no new thread at interpreter exit: the exit hook settles it
            return

    def _auto_start(self) -> None:
        with self._lock:
            if self.state is DispatcherState.NEW:
                self._auto = True
                self._start_on(asyncio.get_running_loop())

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

    def __enter__(self) -> Dispatcher:
        """Start on the library's background loop, for code that runs no loop.

        Inside a coroutine use ``async with`` instead (closing would block the loop):
        that raises :class:`DispatcherStateError`.
        """
        if _get_running_loop() is not None:
            raise DispatcherStateError(
                "with Dispatcher(...): an event loop is running here; use async with"
            )
        if self.state is not DispatcherState.NEW:
            raise DispatcherStateError(f"start: dispatcher is {self.state.value}, expected new")
        _background.run(self._start_here(), timeout=_EXIT_TIMEOUT)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, timeout: float | None = _EXIT_TIMEOUT) -> DispatcherStats:
        """Synchronous :meth:`aclose` for code that runs no event loop.

        Blocks the calling thread until the close finished (at most ``timeout`` plus
        a second). Raises :class:`DispatcherStateError` when called on a thread whose
        event loop is running (``await aclose()`` there).
        """
        if _get_running_loop() is not None:
            raise DispatcherStateError("close: an event loop is running here; await aclose()")
        self._check_orphaned()
        if self.state is DispatcherState.CLOSED:
            return self.stats()
        if self.state is DispatcherState.NEW:
            self._start_in_background()
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            self._orphan("its event loop is not running")
            return self.stats()
        bound = None if timeout is None else timeout + 2.0
        future = asyncio.run_coroutine_threadsafe(self.aclose(timeout), loop)
        with contextlib.suppress(TimeoutError, Exception):
            future.result(bound)
        return self.stats()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every record submitted before this call has been handled by
        every sink and every sink's ``flush()`` has completed.

        Records from any thread count if their logging call returned before this
        call. With ``timeout``, raises :class:`TimeoutError` naming the sinks still
        pending after that many seconds (delivery goes on). May be awaited on
        another thread's loop: it completes thread-safely. After close it returns at
        once. Raises :class:`DispatcherStateError` if the dispatcher was never
        started, if its loop ended without ``aclose()``, or if its loop is not
        running while awaited from another loop.
        """
        if self.state is DispatcherState.NEW:
            raise DispatcherStateError("flush: dispatcher was not started")
        self._check_orphaned()
        if self._orphaned is not None:
            raise DispatcherStateError(
                f"flush: the dispatcher is closed: {self._orphaned}; await aclose() (or use "
                f"install()) before its loop ends, and make a new Dispatcher for a new loop"
            )
        if self.state is DispatcherState.CLOSED:
            return
        loop = self._loop
        assert loop is not None
        if loop is not asyncio.get_running_loop():
            await self._on_own_loop(self._flush_here(timeout), "flush")
            return
        await self._flush_here(timeout)

    async def _flush_here(self, timeout: float | None) -> None:
        if self.state is DispatcherState.CLOSED or self._pump_task is None:
            return
        marker = FlushMarker(asyncio.get_running_loop(), [lane.name for lane in self._lanes])
        self._put_marker(marker)
        try:
            await asyncio.wait_for(asyncio.shield(marker.done), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"flush: not done within {timeout}s; still waiting for sink(s) "
                f"{', '.join(sorted(marker.pending))}"
            ) from None

    async def _on_own_loop(self, coro: Any, what: str) -> Any:
        """Run ``coro`` on the dispatcher's loop (another thread's) and await it here."""
        loop = self._loop
        assert loop is not None
        if loop.is_closed() or not loop.is_running():
            coro.close()
            raise DispatcherStateError(
                f"{what}: the dispatcher's event loop (another thread's) is not running; "
                f"call {what}() on the loop that started it"
            )
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def aclose(self, timeout: float | None = None) -> DispatcherStats:
        """Deliver what was submitted before the call, flush and close every sink.

        Records submitted after the call go to the fallback, counted. With
        ``timeout``, returns within ``timeout`` plus under a second, whatever the
        sinks do: delivery that has not finished is abandoned (what is left is
        counted as ``undelivered`` and written to the fallback), a sink whose close
        does not end in time is abandoned (counted in ``failed_operations``).
        Returns the final :meth:`stats`. Idempotent: a second call waits for the
        first. Cancelling the awaiting task does not stop the close, which the
        dispatcher owns. May be awaited on another thread's loop.
        """
        self._check_orphaned()
        if self.state is DispatcherState.NEW:
            self._start_on(asyncio.get_running_loop())  # deliver what was queued
        if self.state is DispatcherState.CLOSED and self._close_task is None:
            return self.stats()
        loop = self._loop
        assert loop is not None
        if loop is not asyncio.get_running_loop():
            await self._on_own_loop(self.aclose(timeout), "aclose")
            return self.stats()
        if self._close_task is None:
            with self._lock:
                self._accepting = False
            self.state = DispatcherState.CLOSING
            self._close_task = loop.create_task(self._close(timeout), name="aiologsinks-close")
        await asyncio.shield(self._close_task)
        return self.stats()

    async def _close(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        marker = FlushMarker(loop, [lane.name for lane in self._lanes])
        self._put_marker(marker)
        try:
            await asyncio.wait({asyncio.shield(marker.done)}, timeout=timeout)
        except asyncio.CancelledError:
            # the loop is shutting down while aclose() runs: the lanes still deliver
            # what they hold (within their grace period) and close the sinks
            await self._shutdown(None, rescue=True)
            raise
        await self._shutdown(deadline, rescue=False)

    async def _shutdown(self, deadline: float | None, rescue: bool) -> None:
        loop = asyncio.get_running_loop()

        def left(grace: float) -> float | None:
            if deadline is None:
                return None
            return max(deadline - loop.time(), 0.0) + grace

        pump = self._pump_task
        if pump is not None and not pump.done():
            pump.cancel()
            if not await wait_bounded(pump, left(_STOP_GRACE)):
                abandon(pump)  # pragma: no cover - the pump never ignores cancellation
        with self._lock:
            self._accepting = False
            records, controls = self._queue.drain()
        self._pass_markers(controls)
        if rescue:
            self._hand_over(records)
        else:
            self._settle_queue(records)
        grace = max(lane.grace for lane in self._lanes) + _STOP_GRACE if rescue else _STOP_GRACE
        await asyncio.gather(*(lane.stop(left(grace)) for lane in self._lanes))
        await asyncio.gather(*(lane.close_sink(left(_CLOSE_GRACE)) for lane in self._lanes))
        self.state = DispatcherState.CLOSED
        self._sweep_late()
        await self._fallback.drained(_FALLBACK_GRACE)
        with self._room_cv:
            self._room_cv.notify_all()

    # -- the hand-off (called by QueueHandler from any thread) --------------------

    def submit(self, record: Item) -> None:
        """Queue a prepared record for delivery; never blocks the loop thread.

        From a foreign thread with ``overflow="block"`` and a full queue, waits for
        room (and gives up to the fallback if the dispatcher or its loop goes away).
        The pipeline's own threads never wait. After close, and once the loop is
        gone, records go to the fallback, counted.
        """
        # The hot path: no lock, no thread check. A foreign thread that appends just
        # as close settles the queue leaves its record there: close, stats() and
        # the exit hook sweep the queue of a closed dispatcher (see _sweep_late), so
        # it is counted (after_close) and written to the fallback all the same.
        if not self._accepting:
            self._to_fallback(record)
            return
        items = self._items
        if len(items) >= self._bound and self._queue.full():
            self._submit_full(record)
            return
        items.append(record)
        if not self._wake_pending:
            self._wake_up()

    def _wake_up(self) -> None:
        """Wake the pump once per burst, from the loop thread or any other."""
        self._wake_pending = True
        loop = self._loop
        if loop is None:
            # not started: start() wakes the pump; if no loop runs here, the
            # background loop starts it unless start() comes first
            if not self._auto_scheduled and _get_running_loop() is None:
                self._schedule_auto_start()
            return
        try:
            if get_ident() == self._loop_thread:
                loop.call_soon(self._wake)
            else:
                loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nothing will drain the queue
            self._orphan("its event loop ended without aclose()")

    def _submit_full(self, record: Item) -> None:
        """The queue is full: apply the overflow policy."""
        queue = self._queue
        if queue.overflow != "block":
            with self._lock:
                queue.put(record)  # drops (and counts) one record
            if not self._wake_pending:
                self._wake_up()
            return
        if get_ident() != self._loop_thread:
            if self._loop is None:
                if self.state is DispatcherState.NEW and _get_running_loop() is None:
                    # nothing runs a loop here: deliver from the background loop
                    # rather than hold an unbounded backlog until exit
                    self._auto = True
                    self._start_in_background()
            elif not _background.is_pipeline_thread():
                self._wait_for_room()
            if not self._accepting:
                self._to_fallback(record)
                return
        # the loop thread, the pipeline's own threads, a dispatcher not started:
        # never wait; accepted past the bound
        self._items.append(record)
        if not self._wake_pending:
            self._wake_up()

    def _wait_for_room(self) -> None:
        with self._room_cv:
            self._blocked += 1
            try:
                while self._queue.full():
                    loop = self._loop
                    if not self._accepting or loop is None or loop.is_closed():
                        return  # the hand-off re-checks and uses the fallback
                    if self._pump_task is None or self._pump_task.done():
                        return
                    self._room_cv.wait(0.05)
            finally:
                self._blocked -= 1

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _put_marker(self, marker: FlushMarker) -> None:
        self._queue.put_control(marker)
        self._wake_pending = True
        self._wake()

    # -- the pump: shared queue -> lanes ------------------------------------------

    async def _pump(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        queue = self._queue
        items = queue.items
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                # clear the flag before draining: a producer that appends after this
                # point sees it False and wakes us again
                self._wake_pending = False
                while items:
                    # take no more than every blocking lane has room for: the pump
                    # never holds records across an await, so each record is always
                    # in exactly one place (the queue or a lane) and counted there
                    room, full = self._room()
                    if full is not None:
                        await full.wait_for_room()
                        full.check_worker()
                        continue
                    n = min(len(items), room)
                    if queue.controls:
                        self._pump_each(n)
                    else:
                        self._pump_bulk(queue.take(n))
                    if self._blocked:
                        with self._room_cv:
                            self._room_cv.notify_all()
                    if queue.unannounced:
                        self._announce_queue_drops()
                    if items:
                        # let the loop breathe between chunks of a long backlog
                        await asyncio.sleep(0)
        finally:
            if self.state is DispatcherState.RUNNING:
                # cancelled without aclose() (e.g. asyncio.run() ended)
                self._abandoned()

    def _room(self) -> tuple[int, Lane | None]:
        """How many records every blocking lane can take now; the first full one."""
        room = self.batch_size
        for lane in self._lanes:
            if lane.overflow == "block" and not lane.dead:
                free = lane.size - lane.queue.depth
                if free <= 0:
                    return 0, lane
                if free < room:
                    room = free
        return room, None

    def _pump_bulk(self, chunk: list[Item]) -> None:
        """Move records (no markers among them) to every lane; blocking lanes have
        room (see _room), drop lanes apply their policy per record."""
        respect = self.respect_handler_level
        for lane in self._lanes:
            items = passing(chunk, lane.sink.level) if respect else chunk
            if not items or lane.put_many(items):
                continue
            for item in items:
                if not lane.put(item):
                    lane.force([item])  # pragma: no cover - _room() made room

    def _pump_each(self, n: int) -> None:
        """Move ``n`` queued items, flush markers among them, to the lanes: the records
        between two markers in bulk, each marker after the records before it."""
        # the shared queue holds no notices: its control items are flush markers
        chunk = self._queue.take(n, count=False)
        marks = [i for i, item in enumerate(chunk) if type(item) is FlushMarker]
        self._queue.controls -= len(marks)
        start = 0
        for pos in [*marks, len(chunk)]:
            if start < pos:
                self._pump_bulk(chunk[start:pos])
            if pos < len(chunk):
                marker = chunk[pos]
                assert type(marker) is FlushMarker
                for lane in self._lanes:
                    lane.put_marker(marker)
            start = pos + 1

    def _hand_over(self, records: list[Any]) -> None:
        """Give records to the lanes past their bounds (the loop is shutting down)."""
        for lane in self._lanes:
            lane.force(passing(records, lane.sink.level) if self.respect_handler_level else records)

    def _pass_markers(self, controls: list[FlushMarker | Notice]) -> None:
        for item in controls:
            if type(item) is FlushMarker:
                for lane in self._lanes:
                    lane.put_marker(item)

    def _settle_queue(self, records: list[Any]) -> None:
        """Records left in the shared queue at close: counted, to the fallback."""
        if records:
            self._undelivered += len(records)
            self._fallback.write(records, self._fallback_notice())

    def _announce_queue_drops(self) -> None:
        count, self._queue.unannounced = self._queue.unannounced, 0
        record = notice(
            "aiologsinks: %d record(s) dropped: the dispatcher queue was full (overflow=%s)",
            count,
            self.overflow,
        )
        for lane in self._lanes:
            lane.put_notice(record)

    def _abandoned(self) -> None:
        # Hand what is queued to the lanes, past their bounds: each lane worker is
        # being cancelled too, and on its way out it delivers its lane to its sink
        # (within the grace period) and closes it. See Lane._rescue().
        with self._lock:
            self._accepting = False
            records, controls = self._queue.drain()
        self._hand_over(records)
        self._pass_markers(controls)
        self.state = DispatcherState.CLOSED
        self._orphaned = "its event loop ended without aclose()"
        pending = sum(lane.depth for lane in self._lanes)
        warnings.warn(
            f"aiologsinks: {self!r} was not closed before its event loop stopped; "
            f"delivering {pending} pending record(s) during shutdown (await aclose() "
            f"or use install() to flush and close deterministically)",
            ResourceWarning,
            stacklevel=1,
        )

    # -- orphans: the loop is gone, or the process forked ------------------------------

    def _sweep_late(self) -> None:
        """Records a foreign thread appended while the dispatcher closed: after close."""
        if self.state is DispatcherState.CLOSED and self._items:
            with self._lock:
                records, _ = self._queue.drain()
            if records:
                self._after_close += len(records)
                self._fallback.write(records, self._fallback_notice())

    def _check_orphaned(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
            return
        self._sweep_late()
        loop = self._loop
        if (
            loop is not None
            and self.state is not DispatcherState.CLOSED
            and (loop.is_closed() or (self._close_task is None and _pump_gone(self._pump_task)))
        ):
            self._orphan("its event loop ended without aclose()")
        elif self._orphaned is not None and loop is not None and loop.is_closed():
            self._orphan(self._orphaned)  # settle what the lanes' rescue left behind

    def _orphan(self, why: str) -> None:
        """Nothing will ever drain this dispatcher: settle everything, counted."""
        if self._orphaned is None:
            self._orphaned = why
        with self._lock:
            self._accepting = False
            records, _ = self._queue.drain()
        self._settle_queue(records)
        for lane in self._lanes:
            if lane.depth or lane.queue.items:
                with contextlib.suppress(RuntimeError):  # futures of a closed loop
                    lane.take_all()
        self.state = DispatcherState.CLOSED
        if self._orphaned is None:
            self._orphaned = why
        with self._room_cv:
            self._room_cv.notify_all()

    def _after_fork(self) -> None:
        """In a forked child: the parent's loop and threads are not here. The parent
        delivers what was queued before the fork; the child's records go to the
        fallback, counted, after one notice saying why."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._room_cv = threading.Condition(threading.Lock())
        self._blocked = 0
        if self.state is DispatcherState.NEW:
            return  # never started: the child may start it on its own loop
        self._accepting = False
        self._queue.clear()
        for lane in self._lanes:
            lane.queue.clear()
            lane._in_flight = ()
            lane.dead = True
        self.state = DispatcherState.CLOSED
        self._orphaned = "this process was forked from the one whose loop runs it"
        self._fallback_warned = False

    # -- fallback ----------------------------------------------------------------------

    def _fallback_target(self) -> logging.Handler | None:
        return self._fallback_handler or logging.lastResort

    def _fallback_notice(self) -> logging.LogRecord | None:
        if self._fallback_warned:
            return None
        self._fallback_warned = True
        why = f" ({self._orphaned})" if self._orphaned else ""
        return notice(f"aiologsinks: dispatcher is closed{why}; records go to the fallback handler")

    def _to_fallback(self, record: Any) -> None:
        self._after_close += 1
        self._fallback.write([record], self._fallback_notice())

    # -- introspection --------------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters: per sink, and for the shared queue."""
        self._check_orphaned()
        return DispatcherStats(
            queued=self._queue.depth,
            dropped=self._queue.dropped,
            after_close=self._after_close,
            sinks={lane.name: lane.stats() for lane in self._lanes},
            undelivered=self._undelivered,
        )

    def __repr__(self) -> str:
        return f"<Dispatcher {self.state.value} sinks={len(self._lanes)}>"


def _pump_gone(task: asyncio.Task[None] | None) -> bool:
    return task is not None and task.done()


def _close_at_exit() -> None:
    """Deliver what dispatchers still hold when the interpreter exits: those never
    started (no loop ever ran), those on the background loop; count the rest."""
    can_start = _threads_can_start()
    for dispatcher in list(_live):
        try:
            state = dispatcher.state
            if state is DispatcherState.NEW and dispatcher._queue.depth:
                if can_start:
                    dispatcher.close(_EXIT_TIMEOUT)
                else:
                    # Python 3.12 starts no thread at exit, and sinks need theirs
                    dispatcher._orphan("no thread can start at interpreter exit")
            elif state is not DispatcherState.CLOSED:
                loop = dispatcher._loop
                if loop is not None and loop.is_running() and not loop.is_closed():
                    dispatcher.close(_EXIT_TIMEOUT)
                else:
                    dispatcher._orphan("its event loop ended without aclose()")
            else:
                dispatcher._check_orphaned()
        except Exception:  # noqa: BLE001, S112 - exit boundary: every other dispatcher too
            continue


def _threads_can_start() -> bool:
    try:
        probe = threading.Thread(target=int, name=f"{_background.THREAD_PREFIX}probe")
        probe.start()
    except RuntimeError:
        return False
    probe.join()
    return True


def _after_fork_in_child() -> None:
    for dispatcher in list(_live):
        dispatcher._after_fork()


_background.on_exit(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _as_sink(obj: object, where: str) -> Sink:
    if isinstance(obj, Sink):
        return obj
    if isinstance(obj, logging.Handler):
        return HandlerSink(obj)
    raise ArgumentTypeError(where, f"expected a Sink or a logging.Handler, got {obj!r}")


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
        raise ArgumentValueError(name, f"expected an int >= 1, got {value!r}")


def _check_overflow(name: str, value: object) -> None:
    if value not in OVERFLOWS:
        raise ArgumentValueError(
            f"{name}", f"expected one of {', '.join(OVERFLOWS)}, got {value!r}"
        )
