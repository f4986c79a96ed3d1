"""The dispatcher's state: its lifecycle, the fields its parts share, its fallback.

:class:`~aiologsinks._dispatcher.Dispatcher` is assembled from one class per part,
each in its own module, each building on the one before::

    DispatcherFields   (here)           the fields, and the fallback for what cannot be delivered
      Pump             (_pump)          the shared queue -> the lanes, on the loop
      LoopBinding      (_loop_binding)  start() on a loop; running a call on the dispatcher's loop
      Closing          (_closing)       aclose()/close(), orphans (loop gone, fork, exit), stats()
      Dispatcher       (_dispatcher)    construction, the hand-off from the shim, flush()

The parts share one instance's fields, declared once here, and never import upward.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from ._fallback import FallbackWriter
from ._lane import Lane
from ._queue import BoundedQueue, notice

__all__ = ["DispatcherFields", "DispatcherState"]

#: bound of the close a process without a loop gets at exit (and ``close()``'s default)
_EXIT_TIMEOUT = 5.0


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


class DispatcherFields:
    """The fields of a dispatcher (set by ``Dispatcher.__init__``) and its fallback."""

    # the hand-off's hot path (the shim calls ``submit`` on every record)
    _loop_thread: int
    _accepting: bool
    _wake_pending: bool
    _items: deque[Any]
    _bound: int
    _loop: asyncio.AbstractEventLoop | None
    # the pipeline
    respect_handler_level: bool
    batch_size: int
    _queue: BoundedQueue
    _lanes: list[Lane]
    _wakeup: asyncio.Event | None
    _pump_task: asyncio.Task[None] | None
    #: the async generator the loop closes at its end, and the cell that points it at
    #: the dispatcher (see LoopBinding._watch_loop_end)
    _loop_end_watch: tuple[AsyncGenerator[None, None], list[Any]] | None
    #: what the loop's end delivers for a dispatcher whose tasks never ran (see
    #: Pump._begin_unstarted)
    _late_delivery: asyncio.Task[None] | None
    _close_task: asyncio.Task[None] | None
    #: when a running close abandons delivery (loop time; None: no bound), and the
    #: event a later aclose(timeout=...) sets when it moves that earlier
    _close_deadline: float | None
    _deadline_moved: asyncio.Event | None
    # the lifecycle
    state: DispatcherState
    #: serialises foreign threads' hand-offs with closing
    _lock: threading.Lock
    #: foreign threads waiting for room (overflow="block") sleep on this
    _room_cv: threading.Condition
    _blocked: int
    _drained: int
    _stalled_at: int
    _auto: bool
    _auto_scheduled: bool
    _starting: concurrent.futures.Future[None] | None
    _by_dictconfig: bool
    _orphaned: str | None
    _pid: int
    # the fallback and its counts
    _fallback_handler: logging.Handler | None
    _fallback: FallbackWriter
    _fallback_warned: bool
    _after_close: int
    _undelivered: int
    _rejected: int

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

    def _settle_queue(self, records: list[Any]) -> None:
        """Records left in the shared queue at close: counted, to the fallback."""
        if records:
            self._undelivered += len(records)
            self._fallback.write(records, self._fallback_notice())
