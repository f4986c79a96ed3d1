"""Task ownership helpers: own-cancellation, containment, bounded waits, abandonment.

A ``CancelledError`` means two different things inside a lane worker: *our* task is
being cancelled (``aclose()``, the loop ending) — it must propagate — or a sink raised
it on its own — that is the sink's error, contained like any other. On Python 3.11+
``Task.cancelling()`` tells them apart; on 3.10 our tasks are a ``Task`` subclass
that counts ``cancel()`` requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import sys
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["abandon", "containable", "end_coroutines", "own_cancel", "spawn", "wait_bounded"]

T = TypeVar("T")

#: tasks we gave up waiting for (a sink ignoring cancellation): held so they are not
#: garbage-collected while pending, and forgotten once they end
_abandoned: set[asyncio.Task[Any]] = set()

_HAS_CANCELLING = sys.version_info >= (3, 11)


class _CountingTask(asyncio.Task):  # type: ignore[type-arg]  # pragma: no cover - 3.10
    """3.10 only: a Task that remembers it was asked to cancel."""

    cancel_requests = 0

    def cancel(self, msg: Any = None) -> bool:
        self.cancel_requests += 1
        return super().cancel(msg)


#: True in the pipeline's tasks (:func:`spawn`), and so in what they run on other
#: threads with their context (a sink's ``asyncio.to_thread``): see
#: :func:`~aiologsinks._background.is_pipeline_thread`
in_pipeline: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "aiologsinks_in_pipeline", default=False
)


def spawn(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Create a pipeline task on the running loop (:data:`in_pipeline` set in its
    context) whose own cancellation :func:`own_cancel` sees."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    context.run(in_pipeline.set, True)
    # (a task takes a copy of the context it is made in: 3.10's takes no context=)
    if _HAS_CANCELLING:
        return context.run(loop.create_task, coro, name=name)
    task: asyncio.Task[T] = context.run(
        _CountingTask, coro, loop=loop, name=name
    )  # pragma: no cover
    return task  # pragma: no cover


def own_cancel() -> bool:
    """True when the current task has been asked to cancel."""
    task = asyncio.current_task()
    if task is None:
        return False
    if _HAS_CANCELLING:
        cancelling: int = getattr(task, "cancelling")()  # noqa: B009 - 3.11+ only
        return cancelling > 0
    requests: int = getattr(task, "cancel_requests", 1)  # pragma: no cover - 3.10
    return requests > 0  # pragma: no cover - 3.10


#: ``on`` while this thread closes coroutines in :func:`end_coroutines`
_ending = threading.local()


def end_coroutines(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Close now the coroutines of ``tasks``, pending on a loop that was closed under
    them: a GeneratorExit ends each, contained nowhere. Left to be collected, they
    were closed wherever a collection happened, and the sink or lane code they were
    suspended in took the GeneratorExit for a sink's error (its batch counted twice,
    "Logging error" tracebacks, a sink called again on the closed loop)."""
    _ending.on = True
    try:
        for task in tasks:
            if task is None or task.done():
                continue
            with contextlib.suppress(BaseException):  # what its finally blocks raise
                task.get_coro().close()
    finally:
        _ending.on = False


def containable(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a sink or callback, is contained as that sink's error.

    Everything short of the process ending is, except the cancellation of our own
    task (which must propagate).
    """
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False
    if isinstance(exc, GeneratorExit) and getattr(_ending, "on", False):
        return False  # end_coroutines() closing it: not a sink's error
    if isinstance(exc, asyncio.CancelledError):
        return not own_cancel()
    return True


async def wait_bounded(task: asyncio.Task[Any], timeout: float | None) -> bool:
    """Wait for ``task`` at most ``timeout`` seconds without cancelling it; True if it
    ended. Cancelling the caller does not cancel ``task``."""
    if task.done():
        return True
    done, _ = await asyncio.wait({task}, timeout=None if timeout is None else max(timeout, 0))
    return bool(done)


def abandon(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and stop waiting for it (it may ignore the cancellation)."""
    if task.done():
        _consume(task)
        return
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    _consume(task)


def _consume(task: asyncio.Task[Any]) -> None:
    # retrieve the outcome so asyncio does not report "exception never retrieved"
    if not task.cancelled():
        task.exception()


@contextlib.contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold a SIGINT's ``KeyboardInterrupt`` until the block ends, then raise it.

    For the few statements of a shutdown that move records between two places (a
    queue and a lane, a lane and the sink's call): a second Ctrl-C landing between
    them left the records in neither, delivered and counted nowhere. Only on the
    main thread (where Python runs signal handlers), and only where the handler was
    installed from Python (it can then be put back). Each signal held is given to
    the displaced handler after the block; a handler the application installs
    meanwhile stays, and a copy of ours kept by anyone passes signals on afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    caught: list[tuple[int, Any]] = []
    ended = False

    def _pass_on(signum: int, frame: Any) -> None:
        if ended:
            _call_handler(previous, signum, frame)
        else:
            caught.append((signum, frame))

    held = False
    if previous is not None:
        with contextlib.suppress(ValueError):  # not the main interpreter: nothing to hold
            signal.signal(signal.SIGINT, _pass_on)
            held = True
    if not held:
        yield
        return
    try:
        yield
    finally:
        ended = True
        if signal.getsignal(signal.SIGINT) is _pass_on:  # else the application's own now
            signal.signal(signal.SIGINT, previous)
        for signum, frame in caught:
            _call_handler(previous, signum, frame)


def _call_handler(handler: Any, signum: int, frame: Any) -> None:
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action: the process ends
