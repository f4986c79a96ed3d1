"""Dispatcher: the event-loop side of the pipeline (assembled from the parts that
``_dispatch_state`` lists), and the shim's hand-off into it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.thread
import logging
import os
import threading
import time
from _thread import get_ident
from asyncio.events import _get_running_loop
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any

from . import _background
from ._closing import Closing, live
from ._dispatch_state import _EXIT_TIMEOUT, DispatcherState
from ._exceptions import DispatcherStateError
from ._fallback import FallbackWriter
from ._handler_sink import HandlerSink
from ._lane import Lane
from ._loop_binding import running_elsewhere
from ._queue import OVERFLOWS, BoundedQueue, FlushMarker, Overflow
from ._record import Item
from ._shim import QueueHandler
from ._sink import Sink
from ._stats import DispatcherStats, SinkStats
from ._supervise import in_pipeline
from ._validate import ArgumentTypeError, ArgumentValueError, check_int, check_number, type_error

__all__ = [
    "Dispatcher",
    "DispatcherState",
    "DispatcherStats",
    "Overflow",
    "SinkStats",
]

#: seconds a dispatcher that receives records while no loop runs waits for start()
#: before it starts on the background loop
_AUTO_START_DELAY = 5.0
#: with overflow="block", seconds an executor's thread waits for room while the queue
#: does not drain at all (see Dispatcher._wait_for_room)
_STALLED = 1.0
#: with overflow="block", a thread running an event loop other than the dispatcher's
#: never waits for room: its records go past the bound up to this many times the
#: queue's size, then are dropped (counted); so are those of any thread while the
#: dispatcher's loop is stopped (nothing drains the queue then); the dispatcher's own
#: loop thread, its loop running, has no such limit (the pump drains the queue
#: between its awaits)
_LOOP_SLACK = 2


class Dispatcher(Closing):
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
      past the bound; while the loop is stopped nothing makes room, and past twice
      the bound records are dropped), ``"drop_oldest"`` or ``"drop_newest"``. Every
      drop is counted in :meth:`stats` and announced by one WARNING notice when
      delivery resumes.
    * ``lanes``: per-sink overrides, ``{sink: {"size": int, "overflow": ...}}``.
    * ``batch_size``: most records per ``emit_batch`` call.
    * ``linger`` (seconds, default 0.005): how long the first record of a burst waits
      for the records logged after it before the dispatcher moves them to the lanes.
      A busy service's records then travel in fewer, larger batches, and the per-batch
      work (waking the lanes, a write, a request) is shared by more records; ``0``
      moves each burst at the loop's next iteration. ``flush()`` and ``aclose()``
      never wait for it.
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
        linger: float = 0.005,
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
        self.linger: float = check_number("linger", linger)
        if fallback is not None and not isinstance(fallback, logging.Handler):
            raise ArgumentTypeError("fallback", f"expected a logging.Handler, got {fallback!r}")
        seen: dict[int, int] = {}
        for i, obj in enumerate(sinks):
            if id(obj) in seen:
                raise ArgumentValueError(
                    f"sinks[{i}]",
                    f"{obj!r} is already sinks[{seen[id(obj)]}]; "
                    f"a sink can be given once (it has one lane and one worker)",
                )
            seen[id(obj)] = i
        if not isinstance(respect_handler_level, bool):
            raise ArgumentTypeError(
                "respect_handler_level", f"expected True or False, got {respect_handler_level!r}"
            )
        self.respect_handler_level = respect_handler_level
        self.batch_size = batch_size
        self._fallback_handler = fallback
        self._fallback = FallbackWriter(self._fallback_target)
        if lanes is not None and not isinstance(lanes, Mapping):
            raise ArgumentTypeError(
                "lanes", f"expected a mapping of sink to options, got {lanes!r}"
            )
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
            other = running_elsewhere(sink, self)
            if other is not None:
                raise ArgumentValueError(
                    f"sinks[{i}]",
                    f"{sink!r} runs in another dispatcher ({other!r}); a sink can be in one"
                    " running dispatcher at a time: attach that dispatcher's handler to more"
                    " loggers instead",
                )
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
        self._loop_end_watch: tuple[AsyncGenerator[None, None], list[Any]] | None = None
        self._late_delivery: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._close_deadline: float | None = None
        self._deadline_moved: asyncio.Event | None = None
        # serialises foreign threads' hand-offs with closing, so that no record is
        # appended after the queue was settled (the loop thread needs no lock)
        self._lock = threading.Lock()
        # foreign threads waiting for room (overflow="block") sleep on this
        self._room_cv = threading.Condition(threading.Lock())
        self._blocked = 0
        #: records the pump took from the queue so far, and that count when a thread
        #: last found the queue not draining (see _wait_for_room)
        self._drained = 0
        self._stalled_at = -1
        self._after_close = 0
        #: records the shim could not take (see DispatcherStats.rejected)
        self._rejected = 0
        self._undelivered = 0
        self._fallback_warned = False
        #: started by the library on the background loop, not by the user
        self._auto = False
        self._auto_scheduled = False
        #: a start submitted to the background loop and not waited for (dictConfig
        #: before any loop runs): flush() waits for it
        self._starting: concurrent.futures.Future[None] | None = None
        #: made and started by dictConfig (a DispatcherQueueHandler's listener): a
        #: later start() does nothing, as QueueListener.start() in the cookbook recipe
        self._by_dictconfig = False
        #: why the dispatcher closed without aclose() ("the loop ended", "fork")
        self._orphaned: str | None = None
        self._pid = os.getpid()
        live.add(self)

    @property
    def queue_size(self) -> int:
        """Bound of the shared queue."""
        return self._queue.size

    @property
    def overflow(self) -> Overflow:
        """Overflow policy of the shared queue."""
        return self._queue.overflow

    # -- lifecycle ----------------------------------------------------------------

    def _schedule_auto_start(self) -> None:
        """Records arrived while no loop runs here: unless ``start()`` claims the
        dispatcher within :data:`_AUTO_START_DELAY` seconds, it starts on the
        background loop (which is started now, while threads can still start)."""
        self._auto_scheduled = True
        try:
            # not get_loop(): this record may come from making that loop (asyncio
            # logs as it makes one)
            _background.call_soon(self._arm_auto_start)
        except RuntimeError:  # no new thread at interpreter exit: the exit hook settles it
            return

    def _arm_auto_start(self) -> None:
        asyncio.get_running_loop().call_later(_AUTO_START_DELAY, self._auto_start)

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

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every record submitted before this call has been handled by
        every sink and every sink's ``flush()`` has completed.

        Records from any thread count if their logging call returned before this
        call. With ``timeout``, raises :class:`TimeoutError` naming the sinks still
        pending after that many seconds (delivery goes on). May be awaited on
        another thread's loop: it completes thread-safely. After close it returns at
        once. A start still pending on the background loop (a dispatcher made by
        dictConfig before any loop ran) is waited for. Raises
        :class:`DispatcherStateError` if the dispatcher was never started, if its loop
        ended without ``aclose()``, or if its loop is not
        running while awaited from another loop.
        """
        timeout = check_number("timeout", timeout, none=True)
        if self.state is DispatcherState.NEW:
            if self._starting is None:
                raise DispatcherStateError("flush: dispatcher was not started")
            timeout = await self._await_start(self._starting, timeout)
            if self.state is DispatcherState.NEW:  # the start found it closed, or taken
                raise DispatcherStateError("flush: dispatcher was not started")
        if self._unstarted_here():
            # awaited in a cleanup as the loop ends: its pump never ran, nor will it
            self._begin_unstarted()
        await self._await_late_delivery(timeout)
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
            await self._on_own_loop(self._flush_here(timeout), "flush", timeout)
            return
        await self._flush_here(timeout)

    async def _await_start(
        self, starting: concurrent.futures.Future[None], timeout: float | None
    ) -> float | None:
        """Wait for a start already submitted to the background loop; what is left
        of ``timeout`` after it."""
        loop = asyncio.get_running_loop()
        begun = loop.time()
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(starting)), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"flush: not done within {timeout}s; the dispatcher was still starting"
            ) from None
        except Exception as exc:
            raise DispatcherStateError(f"flush: the dispatcher did not start: {exc!r}") from exc
        return None if timeout is None else max(0.0, timeout - (loop.time() - begun))

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
        linger = self.linger
        try:
            if get_ident() == self._loop_thread:
                if linger:
                    loop.call_later(linger, self._wake)
                else:
                    loop.call_soon(self._wake)
            elif linger:
                loop.call_soon_threadsafe(loop.call_later, linger, self._wake)
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
        loop = self._loop
        if get_ident() != self._loop_thread:
            if loop is None:
                if self.state is DispatcherState.NEW and _get_running_loop() is None:
                    # nothing runs a loop here: deliver from the background loop
                    # rather than hold an unbounded backlog until exit
                    self._auto = True
                    self._start_in_background()
            elif not _background.is_pipeline_thread():
                if _get_running_loop() is None and self._wait_for_room():
                    pass
                elif self._accepting and self._dropped_past_slack():
                    # a thread that runs an event loop never waits either, not only
                    # the dispatcher's: the application's loop, when the dispatcher
                    # runs on the background loop (started before any loop ran, or by
                    # dictConfig). Its awaits do not drain this queue, though; nor does
                    # waiting while the dispatcher's loop is stopped. Nor does an
                    # executor's thread once the queue stopped draining (see
                    # _wait_for_room)
                    return
            elif in_pipeline.get() and self._accepting and self._dropped_past_slack():
                # a sink's own work on another thread (asyncio.to_thread): it never
                # waits (the sink waits for it), and what it logs has the same second
                # bound as another loop's, not none
                return
            if not self._accepting:
                self._to_fallback(record)
                return
        elif loop is not None and not loop.is_running() and self._dropped_past_slack():
            # the loop thread goes on without its loop running (run_until_complete()
            # returned): nothing drains the queue until the loop runs again
            return
        # the loop thread, any thread running a loop, the pipeline's own threads, a
        # dispatcher not started: never wait; accepted past the bound, up to a second
        self._items.append(record)
        if not self._wake_pending:
            self._wake_up()

    def _dropped_past_slack(self) -> bool:
        """Past the second bound (``_LOOP_SLACK`` times the queue's) of a queue whose
        thread cannot wait for room: drop the record, counted and announced."""
        queue = self._queue
        if len(self._items) - queue.controls < _LOOP_SLACK * queue.size:
            return False
        with self._lock:
            queue.drop_offered()
        if not self._wake_pending:
            self._wake_up()
        return True

    def _wait_for_room(self) -> bool:
        """Wait for room in the queue: True once there is, False when nothing will
        make room (the dispatcher closed, its loop stopped or ended).

        A thread of an executor (the loop's default one above all) waits only while
        the queue drains: after ``_STALLED`` seconds without a record taken, it goes
        on (its record past the bound, then dropped and counted). A sink may need such
        a thread to make room (``asyncio.to_thread``, aiofiles, a host name's lookup),
        and with every one of them waiting here or busy, nothing drained the queue,
        for good.
        """
        with self._room_cv:
            self._blocked += 1
            try:
                seen, since = self._drained, time.monotonic()
                if seen == self._stalled_at and _executor_thread(self._loop):
                    return False  # found stalled already, and nothing drained since
                while self._queue.full():
                    loop = self._loop
                    if not self._accepting or loop is None or not loop.is_running():
                        return False  # the hand-off re-checks and uses the fallback
                    if self._pump_task is None or self._pump_task.done():
                        return False
                    if self._drained != seen:
                        seen, since = self._drained, time.monotonic()
                    elif time.monotonic() - since >= _STALLED and _executor_thread(loop):
                        self._stalled_at = seen
                        return False
                    self._room_cv.wait(0.05)
            finally:
                self._blocked -= 1
        return True

    def __repr__(self) -> str:
        return f"<Dispatcher {self.state.value} sinks={len(self._lanes)}>"


#: what a ThreadPoolExecutor's threads run (CPython's own, the same from 3.10 to 3.13)
_POOL_WORKER = getattr(concurrent.futures.thread, "_worker", None)


def _executor_thread(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether this thread is an executor's: ``loop``'s default one, or any
    ``ThreadPoolExecutor`` by its threads' names (uvloop keeps its default executor to
    itself, and one set with ``set_default_executor`` names its threads as any pool)."""
    thread = threading.current_thread()
    if thread.name.startswith(("asyncio_", "uvloop_", "ThreadPoolExecutor-")):
        return True
    if getattr(thread, "_target", None) is _POOL_WORKER:
        return True  # a ThreadPoolExecutor's thread under any name
    threads = getattr(getattr(loop, "_default_executor", None), "_threads", None)
    return threads is not None and thread in threads


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
    check_int(name, value, min=1)  # TypeError for a str or a float, ValueError below 1


def _check_overflow(name: str, value: object) -> None:
    if not isinstance(value, str):
        type_error(name, f"one of {', '.join(OVERFLOWS)}", value)
    if value not in OVERFLOWS:
        raise ArgumentValueError(
            f"{name}", f"expected one of {', '.join(OVERFLOWS)}, got {value!r}"
        )
