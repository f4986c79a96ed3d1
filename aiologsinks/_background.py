"""A private, process-wide event loop on a daemon thread: where the pipeline runs
when the application never runs one of its own.

A process that configures logging but never runs an event loop (a uvicorn parent
process, a script that logs and exits, a ``dictConfig`` at import time) still needs
its records delivered. This module owns one event loop on one daemon thread, started
lazily by the first caller, and a hook that runs at interpreter exit, *before* worker
thread pools stop accepting work (``threading``'s exit hooks run before
``concurrent.futures`` refuses new jobs, and before ``atexit``).

The API (stable; other modules build on exactly this):

* :func:`get_loop` — the background loop, starting its thread on first use.
* :func:`run` — run a coroutine on it from synchronous code and wait, with a timeout.
* :func:`submit` — schedule a coroutine on it; returns a ``concurrent.futures.Future``.
* :func:`call_soon` — schedule a callback on it, also while the loop is being made
  (by a record that making it logged).
* :func:`on_exit` — register a callable run at interpreter exit (before the loop
  stops); :func:`shutdown` runs those hooks and stops the loop (tests, ``fork``).
* :func:`run_here` — run a coroutine to its end on a loop of the calling thread: at
  exit, where the background loop's thread cannot start.
* :func:`is_pipeline_thread` / :func:`mark_pipeline_thread` — whether the current
  thread belongs to the pipeline (the background loop, a sink's worker thread, the
  fallback writer). A record logged from such a thread must never wait for room in a
  queue: that thread may be the one that makes the room.

After ``os.fork()`` the child forgets the parent's loop (its thread does not exist in
the child); the next :func:`get_loop` starts a fresh one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.thread  # our exit hook must run before this module's
import contextlib
import contextvars
import functools
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._supervise import in_pipeline

__all__ = [
    "call_soon",
    "get_loop",
    "is_pipeline_thread",
    "loop_thread_id",
    "mark_pipeline_thread",
    "on_exit",
    "run",
    "run_here",
    "shutdown",
    "submit",
    "threads_can_start",
]

T = TypeVar("T")

#: every thread the pipeline starts is named with this prefix (FileWorker pools,
#: the background loop, the fallback writer), so it is recognised without a registry
THREAD_PREFIX = "aiologsinks-"

# re-entrant: making the loop may log, and a record may need the loop (see get_loop)
_lock = threading.RLock()
_loop: asyncio.AbstractEventLoop | None = None
#: callbacks scheduled while this module's lock-holder was making the loop
_deferred: list[Callable[[], object]] = []
_thread: threading.Thread | None = None
_hooks: list[Callable[[], None]] = []
_local = threading.local()
_exiting = False


def mark_pipeline_thread() -> None:
    """Mark the current thread as part of the pipeline (see :func:`is_pipeline_thread`)."""
    _local.pipeline = True


def is_pipeline_thread() -> bool:
    """True on a thread the pipeline owns, or running the pipeline's work with its
    context (a sink's ``asyncio.to_thread``): its records never wait for queue room
    (the pipeline would wait for itself)."""
    if getattr(_local, "pipeline", False) or in_pipeline.get():
        return True
    return threading.current_thread().name.startswith(THREAD_PREFIX)


def get_loop() -> asyncio.AbstractEventLoop:
    """Return the background event loop, starting its daemon thread on first use.

    Safe from any thread. The loop runs until :func:`shutdown` (or the process ends).
    Raises ``RuntimeError`` when no thread can start (Python 3.12.0-3.12.2 at
    interpreter exit), or when called again on the thread that is making the loop (a
    record logged meanwhile: :func:`call_soon` waits for the loop instead).
    """
    global _loop, _thread
    loop = _loop
    if loop is not None and not loop.is_closed():
        return loop
    with _lock:
        if _loop is not None and not _loop.is_closed():
            return _loop
        if getattr(_local, "making", False):
            raise RuntimeError("aiologsinks: the background loop is being started here")
        # Making the loop may log (asyncio's "Using selector" at DEBUG), and a sink on
        # that logger may need this loop for its first record: such a re-entry finds
        # the flag set, and what it schedules waits in _deferred (a second loop, or
        # waiting on this lock, hung the process)
        _local.making = True
        try:
            loop = _new_loop()
            thread = threading.Thread(
                target=_serve, args=(loop,), name=f"{THREAD_PREFIX}loop", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:
                loop.close()
                raise
        finally:
            _local.making = False
        # Not waiting for the loop to run: what is scheduled on it thread-safely before
        # then runs once it does, and a caller may hold logging's lock (dictConfig
        # starting a dispatcher) that the new thread's first steps can need too (a
        # collection there running a handler's weakref callback): waiting deadlocked.
        _loop, _thread = loop, thread
        deferred = _deferred[:]
        _deferred.clear()
    for callback in deferred:
        loop.call_soon_threadsafe(callback)
    return loop


def call_soon(callback: Callable[[], object]) -> None:
    """Run ``callback()`` on the background loop, soon (from any thread).

    Also while this thread is making the loop (a record logged by that): then it runs
    once the loop exists. Raises ``RuntimeError`` when no thread can start (Python
    3.12.0-3.12.2 at interpreter exit).
    """
    # in a context of its own: the tasks it starts (a handler's private pipeline) would
    # otherwise keep the first caller's context, and its values, for good
    callback = functools.partial(contextvars.Context().run, callback)
    with _lock:
        if getattr(_local, "making", False):
            _deferred.append(callback)
            return
    get_loop().call_soon_threadsafe(callback)


class ExitSafeExecutor(concurrent.futures.ThreadPoolExecutor):
    """The default executor of the loops this module makes: a thread pool that runs a
    call in the submitting thread, blocking it, when no worker thread can take it.

    That happens only as the interpreter exits: Python 3.12.0-3.12.2 start no thread
    once exit has begun, and ``concurrent.futures`` takes no job after its own exit
    hook. The loop then resolves a host name (``getaddrinfo``) or compresses a body
    here, slowly but delivered, where the stock pool raised and every record queued
    for the destination went to the fallback.
    """

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """``fn(*args, **kwargs)`` on a worker thread, or here when none can run it."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        claim = threading.Lock()

        def once() -> None:
            # a worker may still pick the job up after a failed thread start queued it
            # (another worker was busy): whoever claims it first runs it
            if not claim.acquire(blocking=False) or not done.set_running_or_notify_cancel():
                return
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - the awaiting caller gets it
                done.set_exception(exc)

        try:
            super().submit(once)
        except RuntimeError as exc:
            if "shutdown" not in str(exc):
                raise
            once()
        return done


def _new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ExitSafeExecutor(thread_name_prefix=f"{THREAD_PREFIX}executor"))
    return loop


def run_here(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on a new event loop of the calling thread, then close it.

    For the interpreter's exit where the background loop's thread cannot start (Python
    3.12.0-3.12.2): what a pipeline still holds is delivered by the exiting thread
    itself, its thread-pool calls made inline (see :class:`ExitSafeExecutor`).
    """
    loop = _new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        with contextlib.suppress(Exception):  # best effort: the process is ending
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def threads_can_start() -> bool:
    """Whether this process can start a thread now (not during Python 3.12.0-3.12.2's
    interpreter exit): tried with one that ends at once."""
    try:
        probe = threading.Thread(target=int, name=f"{THREAD_PREFIX}probe")
        probe.start()
    except RuntimeError:
        return False
    probe.join()
    return True


def loop_thread_id() -> int | None:
    """The ident of the background loop's thread, or None when it is not running."""
    thread = _thread
    return thread.ident if thread is not None and thread.is_alive() else None


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    mark_pipeline_thread()
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        with contextlib.suppress(Exception):  # best effort: the process may be ending
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the background loop; return a thread-safe future."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop from synchronous code and return its result.

    Blocks the calling thread until the coroutine finishes, for at most ``timeout``
    seconds: then the coroutine is cancelled and :class:`TimeoutError` is raised.
    Raises :class:`RuntimeError` when called on the background loop's own thread
    (it would wait for itself).
    """
    if threading.get_ident() == loop_thread_id():
        coro.close()
        raise RuntimeError("aiologsinks: run() called on the background loop's own thread")
    future = submit(coro)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"aiologsinks: background call did not finish in {timeout}s") from None


def on_exit(hook: Callable[[], None]) -> None:
    """Run ``hook()`` (synchronous; it may call :func:`run`) at interpreter exit.

    Hooks run in reverse order of registration, on the main thread, while worker
    thread pools still accept work; an exception in one is printed and the next
    runs. A hook registered twice runs once.
    """
    with _lock:
        if hook not in _hooks:
            _hooks.append(hook)


def _run_hooks() -> None:
    with _lock:
        hooks = list(reversed(_hooks))
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - exit boundary: every other hook must still run
            import traceback

            traceback.print_exc()


def shutdown(timeout: float = 5.0) -> None:
    """Run the exit hooks, then stop the background loop and wait for its thread.

    Called at interpreter exit; tests may call it. A later :func:`get_loop` starts a
    new loop.
    """
    global _loop, _thread
    _run_hooks()
    with _lock:
        loop, thread = _loop, _thread
        _loop, _thread = None, None
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            loop.call_soon_threadsafe(loop.stop)
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


#: how long the exit hook waits for the program's own threads to end (see _at_exit)
_THREADS_GRACE = 30.0


def _ends_after_us(thread: threading.Thread) -> bool:
    # concurrent.futures' workers (the file workers and asyncio's executor among them)
    # end only when its own exit hook runs, after this one: waiting for them would
    # never end
    target = getattr(thread, "_target", None)
    module = getattr(target, "__module__", None) or type(thread).__module__
    return module.startswith("concurrent.futures")


def _wait_for_program_threads(timeout: float) -> None:
    """Wait (bounded) for the non-daemon threads the interpreter is about to join.

    threading's exit hooks, this module's among them, run before the interpreter joins
    the threads that outlive the main thread. A worker still logging then would find
    the pipelines closed and its records in the fallback; the stdlib's handlers take
    them until ``logging.shutdown()``. So the pipelines wait for those threads first,
    as the interpreter itself is about to.
    """
    deadline = time.monotonic() + timeout
    current = threading.current_thread()
    while True:
        waiting = [
            t
            for t in threading.enumerate()
            if t is not current and not t.daemon and t.is_alive() and not _ends_after_us(t)
        ]
        left = deadline - time.monotonic()
        if not waiting or left <= 0:
            return
        waiting[0].join(left)  # then look again: a thread may have started another


def _at_exit() -> None:
    global _exiting
    _wait_for_program_threads(_THREADS_GRACE)
    _exiting = True
    shutdown()


def _after_fork_in_child() -> None:
    # the loop's thread does not exist in the child: forget it (closing it would touch
    # the parent's selector), and start afresh on the next get_loop()
    global _loop, _thread, _lock
    _lock = threading.RLock()
    _loop, _thread = None, None
    _deferred.clear()


def _register_exit_hook() -> None:
    # threading's own exit hooks run before concurrent.futures stops accepting jobs
    # (it registers the same way, at import, above): FileWorker pools still work then
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_at_exit)
            return
        except RuntimeError:  # pragma: no cover - imported during interpreter exit
            pass
    import atexit  # pragma: no cover - interpreters without threading._register_atexit

    atexit.register(_at_exit)  # pragma: no cover


_register_exit_hook()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
