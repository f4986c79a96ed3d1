"""QueueHandler: the synchronous ``logging.Handler`` that feeds a Dispatcher."""

from __future__ import annotations

import logging
from types import MethodType
from typing import Any, Protocol

from . import _context, _trace
from ._hooks import overridden
from ._record import ACCELERATED, Item, freeze, prepared_copy

if ACCELERATED:
    from ._speedups import Shim as _Shim

__all__ = ["QueueHandler", "Submitter"]


class Submitter(Protocol):
    """What the shim hands records to (a :class:`~aiologsinks.Dispatcher`)."""

    def submit(self, record: Item) -> None:
        """Queue a prepared record; never raises, never blocks the loop thread."""


class _NoLock:
    """The shim's lock: nothing to lock (the hand-off is thread-safe), but usable both
    as ``if handler.lock:`` (false) and ``with handler.lock:`` (Python 3.13's
    ``Handler.handle``), so stdlib code that locks a handler keeps working."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        return None


_NO_LOCK = _NoLock()


class QueueHandler(logging.Handler):
    """A plain ``logging.Handler`` that hands records to a :class:`Dispatcher`.

    Attach it to any logger. :meth:`emit` never raises into the caller and never
    blocks the event loop: on the dispatcher's loop thread the hand-off is an O(1)
    append; from another thread it is a thread-safe append that wakes the loop at
    most once per burst (and, with ``overflow="block"`` and a full queue, waits for
    room — foreign threads only). After the dispatcher is closed, or once its loop is
    gone, records go to the fallback (``logging.lastResort``) and are counted.

    Unlike the stdlib ``QueueHandler`` it does not format records: :meth:`prepare`
    merges ``msg % args`` and renders exception text, and each sink formats with its
    own formatter.
    """

    def __init__(self, dispatcher: Submitter, level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        self.dispatcher = dispatcher
        #: the dispatcher, under the name the stdlib's QueueHandler (3.12) gives its
        #: QueueListener
        self.listener = dispatcher
        cls = type(self)
        # with none of the hooks overridden, handle() can take the short path
        self._plain = not any(
            overridden(cls, name, getattr(QueueHandler, name))
            for name in ("emit", "enqueue", "prepare")
        )
        if self._plain and not overridden(cls, "handle", QueueHandler.handle):
            if ACCELERATED:
                self._compile_handle()
            else:
                self._bind_handle()

    def _compile_handle(self) -> None:
        """Install the compiled :meth:`handle` (see ``_speedups.c``) for a Dispatcher's
        handler: the common record in one C call, everything else through
        :meth:`handle` itself."""
        from ._dispatcher import Dispatcher  # the shim's module is imported first

        # it appends to the queue as Dispatcher.submit does, so only to a Dispatcher's
        if getattr(type(self.dispatcher), "submit", None) is not Dispatcher.submit:
            return
        self.handle = _Shim(  # type: ignore[method-assign,assignment]
            self,
            self.dispatcher,
            MethodType(QueueHandler.handle, self),
            vars(_trace),
            _context._switch,
            _context._bound,
            logging.LogRecord,
        )

    def _bind_handle(self) -> None:
        """Install the pure-Python :meth:`handle` for a Dispatcher's handler: the
        compiled one's short path, with what it reads bound once. A record that is
        filtered, traced, or finds the queue full, closed or the pump to wake takes
        :meth:`handle` and ``submit()`` themselves."""
        from ._dispatcher import Dispatcher

        dispatcher = self.dispatcher
        if getattr(type(dispatcher), "submit", None) is not Dispatcher.submit:
            return
        assert isinstance(dispatcher, Dispatcher)
        slow = MethodType(QueueHandler.handle, self)
        room = dispatcher._bound
        submit = dispatcher.submit
        trace = _trace

        def handle(record: logging.LogRecord) -> Any:
            if self.filters or trace.hook is not None:
                return slow(record)
            try:
                item = freeze(record)
                # what submit() does when the queue is open, has room and the pump
                # was woken already: a burst's every record but its first
                items = dispatcher._items
                if dispatcher._accepting and dispatcher._wake_pending and len(items) < room:
                    items.append(item)
                else:
                    submit(item)
            except Exception:  # noqa: BLE001 - a logging call must never raise
                self._rejected(record)
            return record

        self.handle = handle  # type: ignore[method-assign]

    def createLock(self) -> None:
        # enqueue() is thread-safe without a handler-level lock, and a lock taken
        # per record would be the most expensive thing on the hot path
        self.lock = _NO_LOCK  # type: ignore[assignment]

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Return a copy of ``record`` that is safe to hand to another thread.

        ``msg % args`` is merged into ``msg`` and ``args`` cleared when an argument
        could change after the logging call (so mutating it cannot change the output);
        arguments of immutable types are kept as given, for each sink's formatter;
        ``exc_info`` is rendered into ``exc_text`` and dropped, as tracebacks hold
        frames that must not outlive the call or cross threads. When the merge
        fails, ``msg`` and ``args`` are kept so that each sink reports the error to
        its own ``handleError`` (and counts it in ``stats()``).
        """
        return prepared_copy(record)

    def enqueue(self, record: logging.LogRecord) -> None:
        """Hand a prepared record to the dispatcher (never blocks the loop)."""
        self.dispatcher.submit(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Prepare and enqueue ``record``; errors go to :meth:`handleError`."""
        try:
            self.enqueue(self.prepare(record))
        except Exception:  # noqa: BLE001 - a logging call must never raise
            self._rejected(record)

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit without the per-record handler lock (enqueue is thread-safe)."""
        if self.filters:
            rv: Any = self.filter(record)
            if isinstance(rv, logging.LogRecord):
                record = rv
            if not rv:
                return rv
        if _trace.hook is not None:  # the caller's span, read at the call (see _trace)
            _trace.hook(record)
        if self._plain:
            # skip two calls per record on the hot path, and queue the record frozen
            # (see _record.py: queued records then cost the cyclic GC nothing)
            try:
                self.dispatcher.submit(freeze(record))
            except Exception:  # noqa: BLE001 - a logging call must never raise
                self._rejected(record)
        else:
            self.emit(record)
        return record

    def _rejected(self, record: logging.LogRecord) -> None:
        # inside the except block: handleError reports the error; the record is counted
        dispatcher = self.dispatcher
        if hasattr(dispatcher, "_rejected"):  # a Dispatcher (another Submitter: reported)
            dispatcher._rejected += 1
        self.handleError(record)

    def __repr__(self) -> str:
        return f"<QueueHandler {self.dispatcher!r}>"
