"""Binding a dispatcher to its event loop: start() on the running loop or the
library's background loop, and running a call on the dispatcher's loop from another."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from _thread import get_ident
from collections.abc import AsyncGenerator
from typing import Any

from . import _background
from ._dispatch_state import _EXIT_TIMEOUT, DispatcherState
from ._exceptions import DispatcherStateError
from ._pump import Pump
from ._supervise import spawn

__all__ = ["LoopBinding", "running_elsewhere"]

#: seconds a flush()/aclose() awaited on another loop waits past its timeout for the
#: dispatcher's own loop to answer, and how often it looks whether that loop still runs
_CROSS_LOOP_GRACE = 1.0
_CROSS_LOOP_POLL = 0.05

#: each sink -> the dispatcher that last started a lane for it, weakly: the dispatcher
#: holds the sink (its lanes), so a strong value kept both alive for ever
_started_in: weakref.WeakKeyDictionary[Any, weakref.ref[LoopBinding]] = weakref.WeakKeyDictionary()


#: the dispatchers running now, held until their pump ends: one whose every other
#: reference was dropped still delivers what it holds and is closed at exit (collected,
#: its tasks were destroyed pending)
_running: set[Any] = set()  # Dispatchers (see Closing._check_orphaned)


_running_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # another thread may have held it at the fork: in the child nothing would release it
    global _running_lock
    _running_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget_running(dispatcher: LoopBinding) -> None:
    with _running_lock:
        _running.discard(dispatcher)


def _loop_closed(dispatcher: LoopBinding) -> bool:
    loop = dispatcher._loop
    return loop is not None and loop.is_closed()


def running_elsewhere(sink: Any, dispatcher: object) -> LoopBinding | None:
    """The other dispatcher whose lane runs ``sink`` now, or None.

    Two lanes would open the sink twice (the first file or connection leaks) and the
    first dispatcher to close would close it under the other.
    """
    ref = _started_in.get(sink)
    other = None if ref is None else ref()
    if other is None or other is dispatcher:
        return None
    if other.state not in (DispatcherState.RUNNING, DispatcherState.CLOSING):
        return None
    loop = other._loop
    return None if loop is None or loop.is_closed() else other


async def _loop_end_watch(cell: list[Any]) -> AsyncGenerator[None, None]:
    """Suspended for the dispatcher's life; the loop's ``shutdown_asyncgens()`` (which
    ``asyncio.run()`` awaits after it cancelled every task) closes it while the loop
    still runs. ``cell`` holds a weak reference to the dispatcher; emptied, nothing is
    done (the dispatcher closed, see LoopBinding._end_loop_watch)."""
    try:
        yield
    finally:
        dispatcher = cell[0]() if cell else None
        if dispatcher is not None:
            try:
                if dispatcher._unstarted_at_loop_end():
                    dispatcher._begin_unstarted()  # its warning may be raised (-W error)
            finally:
                # begun here, or by the application's cleanup (stats(), flush(timeout=...))
                late = dispatcher._late_delivery
                if (
                    late is not None
                    and not late.done()
                    and late.get_loop() is asyncio.get_running_loop()
                ):
                    await late


class LoopBinding(Pump):
    """The loop a dispatcher runs on: chosen once, by :meth:`start`."""

    def start(self) -> None:
        """Start the pump and one worker per sink on the running event loop.

        Must be called from a coroutine (it needs the running loop); to run without
        one, use the dispatcher as a sync context manager (``with``). Records
        submitted before ``start()`` were queued and are delivered now. Raises
        :class:`DispatcherStateError` if already started (a second ``start()``) or
        closed. A dispatcher the library started on its background loop (records
        logged while no loop ran) is adopted: it keeps running there. On a dispatcher
        that ``dictConfig`` made and started (the listener of a
        ``DispatcherQueueHandler``, where the logging cookbook calls
        ``listener.start()``), it does nothing, with or without a running loop.
        """
        if self._by_dictconfig and self.state is not DispatcherState.CLOSED:
            # dictConfig's, started (or starting) on the running loop or the background
            # one: it stays there whatever the timing (moved onto a loop here, it was
            # orphaned when that loop ended), as QueueListener.start() on a started
            # listener
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self.state is not DispatcherState.NEW:
                self._check_startable()  # the reason it cannot start: it is not new
            raise DispatcherStateError(
                "start: must be called with a running event loop "
                "(or use the dispatcher as a sync context manager: with Dispatcher(...))"
            ) from None
        with self._lock:  # the background loop may be starting it right now
            if self.state is DispatcherState.RUNNING and self._auto:
                self._auto = False
                return
            self._check_startable()
            self._start_on(loop)

    def _check_startable(self) -> None:
        """Raise :class:`DispatcherStateError` when :meth:`start` would: not new, or a
        sink already running in another dispatcher."""
        if self.state is not DispatcherState.NEW:
            raise DispatcherStateError(f"start: dispatcher is {self.state.value}, expected new")
        for lane in self._lanes:
            other = running_elsewhere(lane.sink, self)
            if other is not None:
                raise DispatcherStateError(
                    f"start: {lane.sink!r} runs in another dispatcher ({other!r}); a sink"
                    " can be in one running dispatcher at a time: attach that"
                    " dispatcher's handler to more loggers instead"
                )

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = get_ident()
        self._wakeup = asyncio.Event()
        for lane in self._lanes:
            _started_in[lane.sink] = weakref.ref(self)
            lane.sink._reopen()
            lane.start()
        self._pump_task = spawn(self._pump(), "aiologsinks-dispatcher")
        # those whose loop was closed under them never end their pump: let them go
        with _running_lock:  # dispatchers start and end on every thread's loop
            held = list(_running)
            _running.add(self)
        for gone in [d for d in held if d.state is DispatcherState.CLOSED or _loop_closed(d)]:
            gone._check_orphaned()  # its loop closed under it: its records settled, counted
            _forget_running(gone)
        self._pump_task.add_done_callback(lambda _: _forget_running(self))
        self.state = DispatcherState.RUNNING
        self._watch_loop_end(loop)
        self._wake_pending = True
        self._wakeup.set()

    def _watch_loop_end(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have the loop's end reach the dispatcher when its tasks cannot.

        A task created in the step that raises ``SystemExit`` or ``KeyboardInterrupt``
        out of ``asyncio.run()`` (``sys.exit()`` before the first ``await``) is
        cancelled before its first step, so the pump's and the lanes' rescue never
        run and everything logged went to the fallback. An async generator started
        here is registered by the loop's hooks, and the loop's shutdown closes it
        after cancelling the tasks, while it can still run the delivery.
        """
        if getattr(loop, "_asyncgens_shutdown_called", False):
            return  # started during the loop's shutdown: a watch now only warns
        cell: list[Any] = [weakref.ref(self)]
        watch = _loop_end_watch(cell)
        try:
            # to its yield (StopIteration), which the loop's firstiter hook sees
            watch.asend(None).send(None)
        except StopIteration:
            self._loop_end_watch = (watch, cell)
        except Warning:
            # the hook's warning as an error (-W error): a loop whose shutdown began
            # (uvloop hides whether it did), which would not close the watch anyway
            cell.clear()

    def _end_loop_watch(self) -> None:
        """The dispatcher closed: end its watch now rather than when it is collected
        (the loop's finalizer hook would schedule a task to close it)."""
        held, self._loop_end_watch = self._loop_end_watch, None
        if held is not None:
            watch, cell = held
            cell.clear()
            # RuntimeError: the watch itself is running the delivery that closed it
            with contextlib.suppress(StopIteration, RuntimeError):
                watch.aclose().send(None)

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

    async def _on_own_loop(self, coro: Any, what: str, timeout: float | None) -> Any:
        """Run ``coro`` on the dispatcher's loop (another thread's) and await it here.

        ``timeout`` bounds the wait here too (a second more, for what ``coro`` does
        past its own deadline): that loop may be blocked, and ``coro``'s own bound
        runs on it. A loop that stops or closes meanwhile ends the wait at once, with
        :class:`DispatcherStateError` (nothing would finish it).
        """
        loop = self._loop
        assert loop is not None
        if loop.is_closed() or not loop.is_running():
            coro.close()
            raise DispatcherStateError(
                f"{what}: the dispatcher's event loop is not running (it is not the loop"
                f" this runs on); call {what}() on the loop that started it"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        waiting = asyncio.wrap_future(future)
        here = asyncio.get_running_loop()
        deadline = None if timeout is None else here.time() + timeout + _CROSS_LOOP_GRACE
        try:
            while not waiting.done():
                left = None if deadline is None else deadline - here.time()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"{what}: the dispatcher's event loop (another thread's) did not"
                        f" answer within {timeout:g}s"
                    )
                if loop.is_closed() or not loop.is_running():
                    raise DispatcherStateError(
                        f"{what}: the dispatcher's event loop (another thread's) stopped"
                        " before it finished"
                    )
                # (polled: a loop that stops tells no other thread)
                step = _CROSS_LOOP_POLL if left is None else min(_CROSS_LOOP_POLL, left)
                await asyncio.wait({waiting}, timeout=step)
        except BaseException:
            future.cancel()
            raise
        try:
            return waiting.result()
        except asyncio.CancelledError:
            # cancelled there (that loop's end cancelled it), not here
            raise DispatcherStateError(
                f"{what}: cancelled on the dispatcher's event loop (another thread's), which"
                " is ending"
            ) from None
