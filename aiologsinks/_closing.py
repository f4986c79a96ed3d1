"""Closing a dispatcher: aclose()/close(), and the orphans — a dispatcher whose loop
ended without aclose(), one inherited by a forked child, those still open at exit.

Every way a dispatcher ends settles its records the same way: what can still be
delivered is, what cannot is counted and written to the fallback (see
:class:`~aiologsinks._dispatcher.Dispatcher` for the states and the steps of aclose).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
import weakref
from asyncio.events import _get_running_loop
from typing import Any

from . import _background
from ._dispatch_state import _EXIT_TIMEOUT, DispatcherState
from ._exceptions import DispatcherStateError
from ._loop_binding import LoopBinding
from ._notices import is_notice
from ._queue import FlushMarker
from ._stats import DispatcherStats
from ._supervise import abandon, end_coroutines, wait_bounded
from ._validate import check_number

__all__ = ["Closing", "live"]

#: seconds granted past ``aclose(timeout)``'s deadline to stop the workers, to close
#: the sinks and to hand the leftovers to the fallback: aclose(timeout=T) returns
#: within T + _STOP_GRACE + _CLOSE_GRACE + _FALLBACK_GRACE (under a second)
_STOP_GRACE = 0.2
_CLOSE_GRACE = 0.3
#: of _CLOSE_GRACE, what a sink's close given up on (cancelled) gets to settle its
#: counts on the way out, so that the stats aclose() returns include them
_SETTLE_GRACE = 0.1
_FALLBACK_GRACE = 0.2

#: every dispatcher not yet garbage-collected: the exit and fork hooks settle them
live: weakref.WeakSet[Closing] = weakref.WeakSet()


class Closing(LoopBinding):
    """How a dispatcher ends, and the counts it ends with."""

    def close(self, timeout: float | None = _EXIT_TIMEOUT) -> DispatcherStats:
        """Synchronous :meth:`aclose` for code that runs no event loop.

        Blocks the calling thread until the close finished (at most ``timeout`` plus
        a second). Raises :class:`DispatcherStateError` when called on a thread whose
        event loop is running (``await aclose()`` there). When the dispatcher's loop
        stopped without being closed (``run_until_complete()`` returned), that loop
        is run here until the close finished.
        """
        timeout = check_number("timeout", timeout, none=True)
        if _get_running_loop() is not None:
            raise DispatcherStateError("close: an event loop is running here; await aclose()")
        self._check_orphaned()
        if self.state is DispatcherState.CLOSED:
            return self.stats()
        if self.state is DispatcherState.NEW:
            self._start_in_background()
        loop = self._loop
        if loop is not None and self._can_run_here(loop):
            close_on_stopped_loop(loop, [self], timeout)
            return self.stats()
        if loop is None or loop.is_closed() or not loop.is_running():
            self._orphan("its event loop is not running")
            return self.stats()
        bound = None if timeout is None else timeout + 2.0
        future = asyncio.run_coroutine_threadsafe(self.aclose(timeout), loop)
        with contextlib.suppress(TimeoutError, Exception):
            future.result(bound)
        return self.stats()

    def _begin_exit_close(
        self, can_start: bool
    ) -> concurrent.futures.Future[Any] | asyncio.AbstractEventLoop | bool:
        """At interpreter exit: begin closing this dispatcher, bounded by
        ``_EXIT_TIMEOUT``; the close still running is returned, to be waited for
        together with every other dispatcher's.

        One that never started is started on the background loop; where that loop's
        thread cannot start (Python 3.12.0-3.12.2) True says to close it on a loop of
        this exiting thread, with the others like it. One whose loop stopped without
        being closed returns that loop, to be run here to close it. One whose loop
        ended is settled, counted (False: nothing to wait for).
        """
        state = self.state
        if state is DispatcherState.CLOSED:
            loop = self._loop
            if loop is not None and loop.is_running() and self._still_delivering():
                # its lanes' rescue or the late delivery, on another thread's loop:
                # waited for like a close (that thread may be a daemon, frozen soon)
                closing = self.aclose(_EXIT_TIMEOUT)
                try:
                    return asyncio.run_coroutine_threadsafe(closing, loop)
                except RuntimeError:  # that loop closed meanwhile
                    closing.close()
            self._check_orphaned()
            return False
        if state is DispatcherState.NEW and self._queue.depth:
            if not can_start and _background.loop_thread_id() is None:
                return True
            self._start_in_background()
        loop = self._loop
        if loop is not None and self._can_run_here(loop):
            return loop
        if loop is None or loop.is_closed() or not loop.is_running():
            self._orphan(
                "the interpreter exited before it started"
                if self.state is DispatcherState.NEW
                else "its event loop ended without aclose()"
                if loop is None or loop.is_closed()
                else "its event loop was not running at exit"
            )
            return False
        return asyncio.run_coroutine_threadsafe(self.aclose(_EXIT_TIMEOUT), loop)

    def _still_delivering(self) -> bool:
        """Closed, with a late delivery or a lane's rescue still running."""
        late = self._late_delivery
        return (late is not None and not late.done()) or any(
            lane._task is not None and not lane._task.done() for lane in self._lanes
        )

    def _can_run_here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this thread can run ``loop`` to close this dispatcher on it: the
        loop stopped without being closed (``run_until_complete()`` returned,
        ``stop()`` ended ``run_forever()``), no loop runs here, and the thread that ran
        it is this one or has ended (a thread that may run its loop again would find
        it running here, and fail)."""
        if loop.is_closed() or loop.is_running() or _get_running_loop() is not None:
            return False
        owner = self._loop_thread
        return owner == threading.get_ident() or all(
            thread.ident != owner for thread in threading.enumerate()
        )

    def _close_here_with_the_never_started(self) -> None:
        """This dispatcher, and every other that never started and holds records,
        closed together on this thread (a handler's close at exit where no thread can
        start: logging.shutdown() closes the handlers one after another)."""
        others = [
            d
            for d in list(live)
            if d is not self and d.state is DispatcherState.NEW and d._queue.depth
        ]
        close_here([self, *others])

    def stop(self) -> None:
        """``QueueListener.stop()`` for code that runs no event loop: :meth:`close`.

        The logging cookbook registers a dictConfig queue handler's
        ``listener.stop`` with ``atexit``; with a ``DispatcherQueueHandler`` that
        delivers what is queued and closes the dispatcher. Inside a coroutine,
        ``await aclose()`` instead.
        """
        self.close()

    async def aclose(self, timeout: float | None = None) -> DispatcherStats:
        """Deliver what was submitted before the call, flush and close every sink.

        Records submitted after the call go to the fallback, counted. With
        ``timeout``, returns within ``timeout`` plus under a second, whatever the
        sinks do: delivery that has not finished is abandoned (what is left is
        counted as ``undelivered`` and written to the fallback), a sink whose close
        does not end in time is abandoned (counted in ``failed_operations``).
        Returns the final :meth:`stats`. Idempotent: a second call waits for the
        first, and a ``timeout`` it gives moves the first one's deadline earlier (a
        shutdown path bounding a close a lifespan already began), so it too returns in
        time. Cancelling the awaiting task does not stop the close, which the
        dispatcher owns. May be awaited on another thread's loop.
        """
        # checked before anything changes: a bad value must not leave it half closed
        timeout = check_number("timeout", timeout, none=True)
        if self._unstarted_here():
            # awaited in a cleanup as the loop ends, before the dispatcher's own watch
            self._begin_unstarted()
        if await self._await_late_delivery(timeout):
            await self._fallback.drained(_FALLBACK_GRACE)
            return self.stats()
        self._check_orphaned()
        if self.state is DispatcherState.NEW:
            self._start_on(asyncio.get_running_loop())  # deliver what was queued
        if self.state is DispatcherState.CLOSED and (
            self._close_task is None or self._close_task.done()
        ):
            # closed already: nothing to wait for, whichever loop this is (the one
            # that closed it may have ended since) - but for lanes still delivering
            # what a pump cancelled without aclose() handed them (asyncio.run()
            # cancelling every task, this call in a cancelled task's `finally`)
            await self._rescue_done(timeout)
            # and what went to the fallback since, written (as the close's last step)
            await self._fallback.drained(_FALLBACK_GRACE)
            return self.stats()
        loop = self._loop
        assert loop is not None
        if loop is not asyncio.get_running_loop():
            await self._on_own_loop(self.aclose(timeout), "aclose", timeout)
            return self.stats()
        if self._close_task is None:
            with self._lock:
                self._accepting = False
            self.state = DispatcherState.CLOSING
            self._close_deadline = None if timeout is None else loop.time() + timeout
            self._deadline_moved = asyncio.Event()
            self._close_task = loop.create_task(self._close(), name="aiologsinks-close")
        elif timeout is not None:
            self._move_deadline(loop.time() + timeout)
            # the close may be past the point where the deadline is read (a lane
            # stopping or a sink closing with the bound it was given): wait no longer
            # than this call's own bound, the graces included
            bound = timeout + _STOP_GRACE + _CLOSE_GRACE + _FALLBACK_GRACE
            await wait_bounded(self._close_task, bound)
            return self.stats()
        await asyncio.shield(self._close_task)
        return self.stats()

    async def _rescue_done(self, timeout: float | None) -> None:
        """Wait (bounded) for the lanes of this loop that are rescuing what they hold."""
        loop = self._loop
        if loop is None or loop is not asyncio.get_running_loop():
            return
        rescuing = [
            lane._task for lane in self._lanes if lane._task is not None and not lane._task.done()
        ]
        if not rescuing:
            return
        grace = max(lane.grace for lane in self._lanes) + _STOP_GRACE + _CLOSE_GRACE
        bound = grace if timeout is None else min(timeout, grace)
        await asyncio.wait(rescuing, timeout=bound)

    def _move_deadline(self, deadline: float) -> None:
        current = self._close_deadline
        if current is None or deadline < current:
            self._close_deadline = deadline
            if self._deadline_moved is not None:
                self._deadline_moved.set()

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        marker = FlushMarker(loop, [lane.name for lane in self._lanes])
        self._put_marker(marker)
        moved = self._deadline_moved
        assert moved is not None
        # the pump and lanes carry the marker: if one of them has ended, something
        # cancelled it (asyncio.run() cancels every task at exit, then waits for the
        # ones that close the dispatcher in their `finally`), and the marker never
        # comes: what they hold is rescued instead of waited for without end
        lanes = [lane._task for lane in self._lanes if not lane.dead]
        carriers = [t for t in (self._pump_task, *lanes) if t is not None]
        stopped = False
        try:
            while not marker.done.done():
                if any(t.done() for t in carriers):
                    stopped = True
                    break
                deadline = self._close_deadline
                wait = None if deadline is None else max(deadline - loop.time(), 0.0)
                if wait == 0.0:
                    break
                moved.clear()
                waiter: asyncio.Future[Any] = loop.create_task(moved.wait())
                done: asyncio.Future[Any] = asyncio.shield(marker.done)
                try:
                    await asyncio.wait(
                        {done, waiter, *carriers},
                        timeout=wait,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
        except asyncio.CancelledError:
            # the loop is shutting down while aclose() runs: the lanes still deliver
            # what they hold (within their grace period) and close the sinks
            await self._shutdown(None, rescue=True)
            raise
        await self._shutdown(self._close_deadline, rescue=stopped)

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
        closing = (
            lane.close_sink(left(_CLOSE_GRACE - _SETTLE_GRACE), settle=_SETTLE_GRACE)
            for lane in self._lanes
        )
        await asyncio.gather(*closing)
        self.state = DispatcherState.CLOSED
        self._end_loop_watch()
        self._sweep_late()
        await self._fallback.drained(_FALLBACK_GRACE)
        with self._room_cv:
            self._room_cv.notify_all()

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
            if self._unstarted_here():
                # read on its loop as it ends (a cleanup's stats()): deliver, not give up
                self._begin_unstarted()
            else:
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
        loop = self._loop
        if loop is not None and loop.is_closed():
            end_coroutines(
                [
                    self._pump_task,
                    self._late_delivery,
                    *(t for lane in self._lanes for t in (lane._task, *lane._inner)),
                ]
            )

    def _after_fork(self) -> None:
        """In a forked child: the parent's loop and threads are not here. The parent
        delivers what was queued before the fork; the child's records go to the
        fallback, counted, after one notice saying why."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._room_cv = threading.Condition(threading.Lock())
        self._blocked = 0
        if self.state is DispatcherState.NEW:
            # never started: the child may start it on its own loop, without the
            # records queued before the fork (the parent delivers those: the child
            # delivering them too wrote each twice). A start the parent had pending
            # on its background loop never happens here: flush() must not wait for
            # it, and the child's first record schedules a start of its own.
            self._queue.clear()
            self._starting = None
            self._by_dictconfig = False
            self._auto_scheduled = False
            self._wake_pending = False
            return
        self._accepting = False
        self._queue.clear()
        for lane in self._lanes:
            # what the lane held is the parent's to deliver: not received here, or
            # the child's stats counted it as neither delivered nor lost
            held = lane.queue.depth + sum(1 for r in lane._in_flight if not is_notice(r))
            lane.queue.received -= held
            lane.queue.clear()
            lane._in_flight = ()
            lane.dead = True
        self.state = DispatcherState.CLOSED
        self._orphaned = "this process was forked from the one whose loop runs it"
        self._fallback_warned = False

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
            rejected=self._rejected,
        )


def _pump_gone(task: asyncio.Task[None] | None) -> bool:
    return task is not None and task.done()


def _close_at_exit() -> None:
    """Deliver what dispatchers still hold when the interpreter exits: those never
    started (no loop ever ran), those on the background loop; count the rest."""
    can_start = _background.threads_can_start()
    closing: list[concurrent.futures.Future[Any]] = []
    here: list[Any] = []
    stopped: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for dispatcher in list(live):
        try:
            how = dispatcher._begin_exit_close(can_start)
        except Exception:  # noqa: BLE001, S112 - exit boundary: every other dispatcher too
            continue
        if how is True:
            here.append(dispatcher)
        elif isinstance(how, asyncio.AbstractEventLoop):
            stopped.setdefault(how, []).append(dispatcher)
        elif how is not False:
            closing.append(how)
    # all at once, each within its own bound: one after another, every destination
    # that was down held the exit for its whole bound
    if here:
        close_here(here)
    close_on_stopped_loops(stopped, _EXIT_TIMEOUT)
    concurrent.futures.wait(closing, timeout=_EXIT_TIMEOUT + 2.0)


def close_here(dispatchers: list[Any]) -> None:
    """Close ``dispatchers`` together on a loop of this thread (at exit, where no
    thread can start: Python 3.12.0-3.12.2), each within ``_EXIT_TIMEOUT``."""

    async def close_all() -> None:
        await asyncio.gather(
            *(d.aclose(_EXIT_TIMEOUT) for d in dispatchers), return_exceptions=True
        )

    _background.run_here(close_all())


def close_on_stopped_loop(
    loop: asyncio.AbstractEventLoop,
    dispatchers: list[Any],
    timeout: float | None,
    *,
    at_exit: bool = False,
) -> None:
    """Close ``dispatchers`` on ``loop``, run by this thread until they are closed.

    The loop stopped without being closed (a script's ``run_until_complete()``
    returned, a signal handler's ``stop()`` ended ``run_forever()``); their sinks'
    files, connections and tasks belong to it, so only it can deliver what they hold.
    Its other tasks run meanwhile, as in a next ``run_until_complete()``. Where it
    cannot be run here (another thread started it meanwhile) what they hold is
    settled, counted. One of its tasks raising ``SystemExit`` or
    ``KeyboardInterrupt`` propagates, what they hold settled, except ``at_exit``:
    the process is ending already, and the close goes on (it is bounded).
    """

    async def close_all() -> None:
        await asyncio.gather(*(d.aclose(timeout) for d in dispatchers), return_exceptions=True)

    task = loop.create_task(close_all())
    try:
        while not task.done():
            try:
                loop.run_until_complete(task)
            except RuntimeError:  # a callback stopped it before the close ended, or
                # another thread runs it now
                if loop.is_running() or loop.is_closed():
                    break
            except BaseException:  # one of the loop's own tasks ended the run
                if not at_exit or loop.is_running() or loop.is_closed():
                    raise
    finally:
        for dispatcher in dispatchers:
            if dispatcher.state is not DispatcherState.CLOSED:
                dispatcher._orphan("its event loop could not be run to close it")


def close_on_stopped_loops(
    groups: dict[asyncio.AbstractEventLoop, list[Any]], timeout: float
) -> None:
    """At exit: close each group of dispatchers on its stopped loop, all at once (one
    loop here, each other on a thread of its own), within ``timeout`` in all. Where no
    thread can start (Python 3.12.0-3.12.2) the rest run here after, in what is left
    of ``timeout``."""
    deadline = time.monotonic() + timeout

    def close(loop: asyncio.AbstractEventLoop, group: list[Any], bound: float) -> None:
        # an exit boundary: every other loop is closed all the same
        with contextlib.suppress(Exception):
            close_on_stopped_loop(loop, group, bound, at_exit=True)

    here = list(groups.items())[:1]
    helpers = []
    for loop, group in list(groups.items())[1:]:
        thread = threading.Thread(
            target=close,
            args=(loop, group, timeout),
            name=f"{_background.THREAD_PREFIX}exit",
            daemon=True,  # bounded by the join below; never one the exit waits for
        )
        try:
            thread.start()
        except RuntimeError:
            here.append((loop, group))
        else:
            helpers.append(thread)
    for loop, group in here:
        close(loop, group, max(0.0, deadline - time.monotonic()))
    for thread in helpers:
        thread.join(max(0.0, deadline - time.monotonic()) + 2.0)


def _after_fork_in_child() -> None:
    for dispatcher in list(live):
        dispatcher._after_fork()


_background.on_exit(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
