"""The private pipeline behind a Sink used as a ``logging.Handler``.

``logger.addHandler(FileSink("app.log"))`` or dictConfig's ``"class":
"aiologsinks.FileSink"`` call the sink's synchronous entry points (see ``_sink.py``).
The first record that passes the sink's filters creates, for that sink, a private
:class:`~aiologsinks.Dispatcher` with one lane. It runs on the background loop
(``_background.py``), never on the application's loop, so it does not matter whether
a loop runs in the caller's thread, or ends before the process does:

* ``handle()`` hands the record over thread-safely (``Dispatcher.submit``);
* ``flush()`` waits (bounded) until everything handed over was written and flushed;
* ``close()`` — ``logging.shutdown()`` at exit, or dictConfig replacing handlers —
  delivers, flushes and closes the sink (bounded). At interpreter exit the
  background loop's exit hook closes every such pipeline even before
  ``logging.shutdown()`` runs, while worker threads still accept work.

A process killed by a signal runs no hook at all: records logged in its last
milliseconds, not yet written by the background loop, are lost (uvicorn's workers
re-raise SIGTERM after their shutdown, so their last lines may not arrive). A
process that exits normally — including after SIGTERM handled as uvicorn's parent
does — delivers everything.

The lane feeds a :class:`_Delivery` adapter: the sink's level and filters already ran
at the logging call (in the caller's thread and context, as on a stdlib handler), so
the lane must not run them a second time; the adapter passes each batch to the sink's
own ``emit_batch`` and its flush and close to the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

from . import _background
from ._dispatcher import Dispatcher, DispatcherState
from ._sink import Sink, deliver, per_record_hook, set_entry_factory

__all__ = ["HandlerPipeline"]

#: the most a synchronous flush() or close() waits for the background loop
SYNC_TIMEOUT = 10.0


class _OnSink:
    """An attribute of ``_Delivery`` that is its sink's (read and written there)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, delivery: Any, owner: type | None = None) -> Any:
        return self if delivery is None else getattr(delivery.sink, self.name)

    def __set__(self, delivery: Any, value: int) -> None:
        if "sink" in delivery.__dict__:  # nothing to set before the sink is there
            setattr(delivery.sink, self.name, value)


class _Delivery(Sink):
    """The lane's view of a sink used as a handler: delivery only (no level, no filters).

    Errors are the sink's: its ``handleError`` and ``error_count``.
    """

    # the counters the lane reads are the sink's own: errors are reported once, by it
    error_count = _OnSink("error_count")
    _vetoed = _OnSink("_vetoed")
    _taken_count = _OnSink("_taken_count")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        super().__init__()
        self._name = f"{sink.name or type(sink).__name__} (handler)"

    def report_error(self, record: Any) -> None:
        """Count and report an error of ``record`` on the sink itself."""
        self.sink.report_error(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.sink.handleError(record)

    async def aopen(self) -> None:
        await self.sink.aopen()

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        sink = self.sink
        await deliver(sink, records, per_record_hook(sink))

    async def flush(self) -> None:
        await self.sink.flush()

    async def _aclose(self) -> None:
        await self.sink.aclose()

    def __repr__(self) -> str:
        return f"<handler pipeline of {self.sink!r}>"


class HandlerPipeline:
    """One sink's private Dispatcher on the background loop (see the module doc)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.dispatcher = Dispatcher(_Delivery(sink))
        self._closed = False
        self._close_lock = threading.Lock()

    def start(self) -> None:
        """Start the private dispatcher on the background loop, without waiting;
        records submitted before wait in its queue."""
        # no thread can start (RuntimeError: Python 3.12.0-3.12.2 at interpreter exit, a
        # first record from an exit callback): its records wait in the queue for the
        # close at exit, which delivers them on the exiting thread
        with contextlib.suppress(RuntimeError):
            # not get_loop() and a coroutine: this may run while that loop is being
            # made (a record asyncio logged making it); the callback waits for it
            _background.call_soon(self._begin)

    def _begin(self) -> None:
        if self.dispatcher.state is DispatcherState.NEW:
            self.dispatcher.start()

    async def _start(self) -> None:
        # for flush(): in a child forked before the parent's start ran, nothing else
        # starts it (that start was the parent's background loop's)
        self._begin()

    def submit(self, item: Any) -> None:
        """Hand over a record (thread-safe; after close it goes to the fallback)."""
        self.dispatcher.submit(item)

    def flush(self) -> None:
        """Wait until every record handed over so far was delivered and flushed.

        Returns at once on the background loop's own thread (a sink logging from
        inside the pipeline must not wait for itself) and after close.
        """
        if self._closed or _on_loop_thread() or self._settled():
            return  # orphaned or closed (at exit): nothing to wait for (see _flush)
        if self._stranded():
            return  # close() delivers, on this thread (logging.shutdown() calls it next)
        _background.run(self._flush(), SYNC_TIMEOUT)

    def aflush(self) -> Coroutine[Any, Any, None] | None:
        """:meth:`flush` for a coroutine on another loop (None: nothing to wait for
        here, as where :meth:`flush` returns at once)."""
        if self._closed or _on_loop_thread() or self._settled() or self._stranded():
            return None
        return self._flush_from_elsewhere()

    async def _flush_from_elsewhere(self) -> None:
        future = _background.submit(self._flush())
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), SYNC_TIMEOUT)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"aiologsinks: {self.sink!r} did not flush within {SYNC_TIMEOUT}s"
            ) from None

    def _settled(self) -> bool:
        # orphaned, or closed by the exit hook that closes every dispatcher
        return (
            self.dispatcher._orphaned is not None or self.dispatcher.state is DispatcherState.CLOSED
        )

    def _stranded(self) -> bool:
        # never started, and no background loop runs nor can any thread start
        # (Python 3.12.0-3.12.2 once exit has begun: a first record from an atexit
        # callback)
        return (
            self.dispatcher.state is DispatcherState.NEW
            and _background.loop_thread_id() is None
            and not _background.threads_can_start()
        )

    async def _flush(self) -> None:
        await self._start()
        dispatcher = self.dispatcher
        dispatcher._check_orphaned()
        if dispatcher._orphaned is not None:
            # forked from the process whose loop runs it (or that loop ended): its
            # records went to the fallback as they came, and there is nothing to wait
            # for; a handler's flush() does not raise (logging.shutdown() calls it)
            return
        await dispatcher.flush()

    def close(self) -> None:
        """Deliver what was handed over, flush and close the sink; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._settled():
            # orphaned (its records went to the fallback as they came), or closed by
            # the exit hook: nothing left to deliver
            return
        if _on_loop_thread():
            _background.submit(self.dispatcher.aclose(SYNC_TIMEOUT))
            return
        if self._stranded():
            # its start could not begin: the records are delivered on this thread,
            # with every other pipeline's in that state (closed one after another, each
            # destination that was down held the exit for its whole bound)
            self.dispatcher._close_here_with_the_never_started()
            return
        _background.run(self.dispatcher.aclose(SYNC_TIMEOUT), SYNC_TIMEOUT + 2.0)


def _on_loop_thread() -> bool:
    return threading.get_ident() == _background.loop_thread_id()


set_entry_factory(HandlerPipeline)
