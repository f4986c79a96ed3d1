"""The fallback writer: records the pipeline could not deliver, written off the loop.

Records that arrive after close, or that a lane could not deliver, go to a fallback
handler (``logging.lastResort``, i.e. stderr, unless the dispatcher was given one).
A slow stderr must not stall the event loop, so on a thread that runs an event loop
the records are queued to a daemon thread of the dispatcher's that writes them (and
ends once idle); elsewhere (a foreign thread, no loop at all) they are written at once
by the caller, which may block.

:meth:`FallbackWriter.wait` / :meth:`FallbackWriter.drained` let a closing
dispatcher wait (bounded) until what it spilled is written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterable

from ._background import THREAD_PREFIX, mark_pipeline_thread, on_exit
from ._record import Item, as_record

__all__ = ["FallbackWriter"]

_Job = tuple[logging.Handler, logging.LogRecord] | concurrent.futures.Future[None]

_writers: weakref.WeakSet[FallbackWriter] = weakref.WeakSet()


#: seconds a dispatcher's fallback thread waits for more to write before it ends
_IDLE = 1.0


class _Spill:
    """The daemon thread of one dispatcher's fallback that writes what a thread running
    an event loop spilled, in the order it was spilled. It ends once idle for
    ``_IDLE`` seconds (the next spill starts another): it stayed for good, one more
    thread each time a process created a dispatcher that ever spilled. One thread per
    dispatcher rather than one for all: a slow fallback holds up only its own."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, job: _Job) -> None:
        self.jobs.put(job)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        thread = self.thread
        if thread is not None and thread.is_alive():
            return
        with self.lock:
            thread = self.thread
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(
                target=self._serve, name=f"{THREAD_PREFIX}fallback", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:
                # no thread can start (Python 3.12.0-3.12.2 at interpreter exit):
                # written here and now, as off a loop, rather than not at all
                self.thread = None
                self._write_queued()
                return
            self.thread = thread

    def _write_queued(self) -> None:
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            _run(job)

    def _serve(self) -> None:
        mark_pipeline_thread()
        jobs = self.jobs
        while True:
            try:
                job = jobs.get(timeout=_IDLE)
            except queue.Empty:
                with self.lock:
                    if not jobs.empty():
                        continue
                    self.thread = None
                # a job put as this thread decided to end may have found it alive
                if not jobs.empty():
                    self._ensure_thread()
                return
            _run(job)


class FallbackWriter:
    """Writes records to a fallback handler; one per dispatcher."""

    def __init__(self, handler: Callable[[], logging.Handler | None]) -> None:
        #: returns the handler to use now (``logging.lastResort`` may be reassigned)
        self._handler = handler
        self._spill = _Spill()
        #: done once what was spilled last is written (None: nothing spilled yet)
        self._last_spill: concurrent.futures.Future[None] | None = None
        #: records written (or handed to the writer thread)
        self.written = 0
        _writers.add(self)

    def write(self, items: Iterable[Item], notice: logging.LogRecord | None = None) -> None:
        """Write ``notice`` (if any) and then ``items``, off the loop."""
        handler = self._handler()
        if handler is None:
            return
        records = [as_record(i) for i in items]
        if notice is not None:
            records.insert(0, notice)
        if not records:
            return
        self.written += len(records) - (notice is not None)
        last = self._last_spill
        if asyncio.events._get_running_loop() is None and (last is None or last.done()):
            for record in records:
                _handle(handler, record)
            return
        # on a loop's thread; or behind records spilled before, still being written:
        # queued after them, so the fallback shows records in the order they came
        spill = self._spill
        for record in records:
            spill.put((handler, record))
        written: concurrent.futures.Future[None] = concurrent.futures.Future()
        spill.put(written)
        self._last_spill = written

    def marker(self) -> concurrent.futures.Future[None]:
        """A future done once everything queued before it was written."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._last_spill is None:
            future.set_result(None)
            return future
        self._spill.put(future)
        return future

    async def drained(self, timeout: float) -> bool:
        """Wait (without blocking the loop) until what was queued is written; False
        when ``timeout`` passed first."""
        future = self.marker()
        if future.done():
            return True
        done, _ = await asyncio.wait({asyncio.wrap_future(future)}, timeout=max(timeout, 0))
        return bool(done)

    def wait(self, timeout: float) -> bool:
        """Block until what was queued is written; False when ``timeout`` passed."""
        try:
            self.marker().result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def _after_fork(self) -> None:
        # the writer thread does not exist in the child; its queue may hold the
        # parent's records, which the parent writes
        self._spill = _Spill()
        self._last_spill = None


def _run(job: _Job) -> None:
    if isinstance(job, concurrent.futures.Future):
        if not job.done():
            job.set_result(None)
    else:
        _handle(*job)


def _handle(handler: logging.Handler, record: logging.LogRecord) -> None:
    # the last resort must not raise into the pipeline
    with contextlib.suppress(Exception):
        handler.handle(record)


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._after_fork()


def _write_all_at_exit() -> None:
    for writer in list(_writers):
        writer.wait(1.0)


on_exit(_write_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
