"""The Sink base class: a ``logging.Handler`` whose I/O hooks are coroutines.

One class, two callers. The pipeline (a Dispatcher's lane, ``async with`` use, a
MemorySink's target) awaits the coroutine hooks: ``emit``, ``emit_batch``,
``handle``, ``flush``, ``aclose``. The logging module calls the handler entry points
synchronously: ``handle`` (``Logger.callHandlers``, ``QueueListener``,
``MemoryHandler``), ``flush`` and ``close`` (``logging.shutdown()``, dictConfig), and
``acquire``/``release``.

``handle`` and ``flush`` therefore have a *dual entry*: called directly from a
coroutine (``await sink.handle(record)``, ``await sink.flush()``, ``asyncio.gather``,
``wait_for``) they return the coroutine of the hook; called from plain code, they are
the synchronous handler entry points. The caller's frame says which — one flag test
on its code object. A subclass simply overrides ``async def flush`` (or ``handle``):
:meth:`Sink.__init_subclass__` puts the same dual entry in front of it.

The synchronous entries hand over to a private pipeline per sink (see
``_handler_entry.py``): ``handle`` runs the sink's filters at once, in the caller's
thread and context (as a stdlib handler does), then hands the record to that
pipeline, which delivers it on the background loop; ``flush`` waits until it has been
delivered and flushed; ``close`` delivers, flushes and closes.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import inspect
import logging
import os
import sys
import threading
import traceback
import types
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from ._context import context_of, need_context, release_context, remember, run_in
from ._exceptions import SinkDeliveryError
from ._hooks import is_dual, overridden, own_hook
from ._notices import is_notice
from ._record import Frozen, as_record, freeze
from ._supervise import containable, in_pipeline
from ._validate import check_level

__all__ = ["HandlerEntry", "Sink", "SinkState", "is_dual", "overridden"]

_default_formatter = logging.Formatter()

# a call made straight from one of these runs as a coroutine hook (see the module doc)
_CO_ASYNC = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR
_getframe = sys._getframe
#: the code of a generator expression, or of a comprehension before Python 3.12 (which
#: inlines them): a frame of its own, run by the code that holds it
_COMPREHENSIONS = frozenset({"<genexpr>", "<listcomp>", "<setcomp>", "<dictcomp>"})


class SinkState(enum.Enum):
    """Lifecycle of a sink."""

    #: constructed; I/O resources may be opened lazily on first emit
    OPEN = "open"
    #: ``aclose()`` is running: no new records are accepted
    CLOSING = "closing"
    #: ``aclose()`` finished; a second ``aclose()`` is a no-op
    CLOSED = "closed"


class HandlerEntry(Protocol):
    """The private pipeline behind a sink's synchronous handler entry points."""

    def start(self) -> None:
        """Start delivering (records submitted before wait for it); never blocks."""

    def submit(self, item: Any) -> None:
        """Hand over a record that passed the sink's filters (never blocks a loop)."""

    def flush(self) -> None:
        """Wait (bounded) until everything submitted was delivered and flushed."""

    def aflush(self) -> Coroutine[Any, Any, None] | None:
        """The same wait for a coroutine (``await sink.flush()`` of a sink used as a
        handler); None where there is nothing to wait for here (the pipeline's own
        loop, a closed or settled pipeline): the sink's own flush hook then runs."""

    def close(self) -> None:
        """Deliver, flush and close the sink (bounded)."""


#: builds a sink's private pipeline; installed by ``_handler_entry`` (which knows the
#: Dispatcher: this module must not, or sinks would import the pipeline)
_entry_factory: Callable[[Sink], HandlerEntry] | None = None
_entry_lock = threading.RLock()  # re-entrant: a signal handler may log


def _reset_entry_lock() -> None:
    # in a forked child: another thread of the parent may have held it at the fork,
    # and that thread is not here to release it
    global _entry_lock
    _entry_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_entry_lock)


def set_entry_factory(factory: Callable[[Sink], HandlerEntry]) -> None:
    """Install the factory of handler-mode pipelines (``_handler_entry`` does)."""
    global _entry_factory
    _entry_factory = factory


def _dual(
    hook: Callable[..., Any], sync: Callable[..., Any], awaits_entry: bool = False
) -> Callable[..., Any]:
    """``hook`` for a caller that is a coroutine, ``sync`` for plain code.

    ``awaits_entry`` (flush): a coroutine's call on a sink used as a handler waits
    for the records handed to its pipeline, as the synchronous call does; the hook
    alone flushed what the sink had written, before they reached it."""

    def entry(self: Sink, *args: Any, **kwargs: Any) -> Any:
        frame: Any = _getframe(1)
        while frame.f_code.co_name in _COMPREHENSIONS and frame.f_back is not None:
            # gather(*(sink.flush() for sink in sinks)) in a coroutine: the coroutine's
            frame = frame.f_back
        if frame.f_code.co_flags & _CO_ASYNC:
            # (not the pipeline's own call: a Dispatcher's lane flushing the sink)
            handler_entry = self._entry if awaits_entry and not in_pipeline.get() else None
            if handler_entry is not None:
                waiting = handler_entry.aflush()
                if waiting is not None:
                    return waiting
            # bound as the class would bind it (a partialmethod, a staticmethod)
            return hook.__get__(self, type(self))(*args, **kwargs)
        return sync(self, *args, **kwargs)

    functools.update_wrapper(entry, hook)
    entry.__dual__ = True  # type: ignore[attr-defined]
    return entry


#: plain hooks whose result a library sink awaits when it is awaitable (an async
#: override is as welcome as a plain one)
_MAY_BE_ASYNC = frozenset({"rotation_filename"})
#: hooks a library sink awaits: an override of one of them must be a coroutine function
_HOOK_NAMES = (
    "emit", "emit_batch", "handle", "flush", "aopen", "aclose", "_aclose",
    "send", "createSocket", "makeSocket", "doRollover", "rotate",
)  # fmt: skip


def is_library(klass: type) -> bool:
    """Whether ``klass`` is one of aiologsinks' own classes (not an application's)."""
    return klass.__module__ == "aiologsinks" or klass.__module__.startswith("aiologsinks.")


def defining(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO whose own ``name`` the attribute resolves to."""
    return next((k for k in cls.__mro__ if name in k.__dict__), None)


def _library_attr(cls: type, name: str) -> Any:
    """``name`` as the library classes of ``cls``'s MRO define it (None: none does)."""
    klass = next((k for k in cls.__mro__ if is_library(k) and name in k.__dict__), None)
    return None if klass is None else klass.__dict__[name]


def _user_defined(cls: type, name: str) -> bool:
    klass = defining(cls, name)
    return klass is not None and not is_library(klass)


def _function_of(hook: Any) -> Any:
    """The function under staticmethod, classmethod, partialmethod and decorators
    that set ``__wrapped__``."""
    f = getattr(hook, "__func__", hook)
    f = getattr(f, "func", f)  # partialmethod, partial
    return inspect.unwrap(f)


def _plain_function(hook: Any) -> bool:
    """Whether ``hook`` is a plain (not async) function (see :func:`_function_of`)."""
    if is_dual(hook):
        return False
    f = _function_of(hook)
    return inspect.isfunction(f) and not inspect.iscoroutinefunction(f)


def _base_attr(cls: type, name: str) -> Any:
    """``name`` as the first of ``cls``'s library or stdlib bases defines it (None:
    none does): what an application's class overrides."""
    for klass in cls.__mro__:
        if name in klass.__dict__ and (
            is_library(klass) or klass.__module__ in ("logging", "logging.handlers")
        ):
            return klass.__dict__[name]
    return None


def per_record_hook(sink: Sink) -> str | None:
    """``"handle"`` or ``"emit"`` when the pipeline delivers ``sink``'s records one at
    a time through its own hook, as the stdlib calls a handler's: a subclass (or a
    mixin, or the instance) has its own ``handle`` or ``emit``, and no ``emit_batch``
    of its own below it. ``None``: the pipeline calls ``emit_batch`` (the library's
    batching one, which never calls them, or a subclass's own, which takes the batch).
    """
    own = sink.__dict__
    cls = type(sink)
    if not cls._user_class and "handle" not in own and "emit" not in own:
        return None  # the library's sinks as they are: the fast path
    for name in ("handle", "emit"):
        if name in own:
            return name
    mro = cls.__mro__
    batch = defining(cls, "emit_batch")
    below = len(mro) if batch is None or is_library(batch) else mro.index(batch)
    for name in ("handle", "emit"):
        klass = defining(cls, name)
        # its own, a mixin's, or a subclass's over a parent's own emit_batch
        if klass is not None and not is_library(klass) and mro.index(klass) < below:
            return name
    return None


async def deliver(sink: Sink, records: Sequence[logging.LogRecord], hook: str | None) -> None:
    """Deliver ``records`` as the pipeline does: ``sink.emit_batch(records)``, or with
    ``hook`` (see :func:`per_record_hook`) each record through the sink's own
    ``handle`` (which filters; a ``False`` from it counts the record in
    ``sink._vetoed``) or ``emit``. Their ``super().emit(record)`` delivers that record
    by ``emit_batch`` (see :func:`emit_one`)."""
    if hook is None:
        if type(sink)._user_class:
            await batch_from(sink, records, None)  # marked, if it is the application's
        else:
            await sink.emit_batch(records)
        return
    start = sink._taken_count
    own = sink.handle if hook == "handle" else sink.emit
    for i, record in enumerate(records, 1):
        try:
            if (await own(record)) is False and hook == "handle":
                sink._vetoed += 1  # filtered (a None from it is no veto: stdlib)
        except BaseException as exc:
            if not containable(exc):
                raise
            sink.report_error(record)
        sink._settled(start, i)


async def emit_one(sink: Sink, record: logging.LogRecord) -> None:
    """A batching sink's ``emit``: ``record`` as a batch of one, by ``emit_batch``.

    By the sink's own (an application's, which may redact, count, tag, is called),
    unless an application's own ``emit_batch`` of the sink's is what called ``emit``
    (a loop over ``self.emit``): then by the one ``super()`` finds from that class
    (a parent's own, or the library's), or the record would go round for good. The
    pipeline and this function mark each such ``emit_batch`` they run, for the calls
    whose frames do not show it (a task of its own, a decorator hiding it).
    """
    cls = type(sink)
    if not cls._user_class:
        await sink.emit_batch((record,))
        return
    after = _own_batch_caller(sink, _getframe(2))  # the nearest, where frames show it
    running = _batching.get().get(id(sink))
    if (
        running is not None
        and running.live
        and (running.gave(record) or running.depth >= _MAX_ROUNDS)
        and (after is None or cls.__mro__.index(running.klass) > cls.__mro__.index(after))
    ):
        # one of the records it was given, coming back (a fresh one, from a task it
        # started, goes through the sink's own as any caller's), or a round too many
        # (records copied on their way back): on past it. The frames may not show it
        # (a task of its own, a decorator hiding it), or not tell it from a class
        # above it whose emit_batch has the same code
        after = running.klass
    await batch_from(sink, (record,), after)


async def batch_from(sink: Sink, records: Sequence[logging.LogRecord], after: type | None) -> None:
    """``records`` by the ``emit_batch`` that ``super(after, sink)`` finds (``after``
    None: the sink's own); an application's own is marked running meanwhile (see
    :func:`emit_one`)."""
    mro = type(sink).__mro__
    start = 0 if after is None else mro.index(after) + 1
    klass = next((k for k in mro[start:] if "emit_batch" in k.__dict__), None)
    method = sink.emit_batch if after is None else super(after, sink).emit_batch  # type: ignore[arg-type]
    if klass is None or is_library(klass):
        await method(records)
        return
    marks = _batching.get()
    outer = marks.get(id(sink))
    depth = outer.depth + 1 if outer is not None and outer.live else 0
    running = _Running(klass, records, depth)
    token = _batching.set({**marks, id(sink): running})
    try:
        await method(records)
    finally:
        running.live = False  # a task it started and that outlives it is on its own
        # (closed by the collector, the coroutine runs outside its task's context)
        with contextlib.suppress(ValueError):
            _batching.reset(token)


class _Running:
    """An application's own ``emit_batch`` (of ``klass``) running for a sink, on
    ``records``, inside ``depth`` others for it."""

    __slots__ = ("depth", "ids", "klass", "live", "records")

    def __init__(self, klass: type, records: Sequence[logging.LogRecord], depth: int) -> None:
        self.klass = klass
        self.records = records
        self.depth = depth
        self.live = True
        self.ids: set[int] | None = None

    def gave(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is one of those it was given (alive while it runs)."""
        if self.ids is None:
            self.ids = {id(r) for r in self.records}
        return id(record) in self.ids


#: own emit_batch calls nested for one sink before a record that is none of theirs
#: goes on past them anyway (a loop that copies its records)
_MAX_ROUNDS = 8


#: per sink (by id), the application's own emit_batch running for it in this context;
#: a task started meanwhile inherits it while it runs (``live``)
_batching: contextvars.ContextVar[Mapping[int, _Running]] = contextvars.ContextVar(
    "aiologsinks_batching", default=types.MappingProxyType({})
)


def _own_batch_caller(sink: Sink, frame: Any) -> type | None:
    """The class whose own ``emit_batch`` runs for ``sink`` in ``frame`` or a frame
    that called it (the nearest; None: none does)."""
    codes: dict[Any, type] = {}
    for klass in type(sink).__mro__:
        own = klass.__dict__.get("emit_batch")
        if own is not None and not is_library(klass):
            with contextlib.suppress(Exception):  # not a function: no frame of its
                codes.setdefault(_function_of(own).__code__, klass)
    while frame is not None:
        found = codes.get(frame.f_code)
        if found is not None and frame.f_locals.get("self") is sink:
            return found
        frame = frame.f_back
    return None


def _in_context(format: Callable[[Any, logging.LogRecord], str]) -> Callable[..., str]:
    """``format`` run in the context its record was logged in (see ``_context``)."""

    def in_context(self: Any, record: logging.LogRecord) -> str:
        return run_in(record, format, self, record)

    functools.update_wrapper(in_context, format)
    in_context.__in_context__ = True  # type: ignore[attr-defined]
    return in_context


# A Sink is a logging.Handler at runtime. For type checkers its base is Any: its I/O
# hooks are coroutines where Handler's are plain methods, which no override of
# Handler.emit/flush/handle could state; with an Any base, subclasses override them
# as coroutines and `logger.addHandler(sink)` still type-checks.
_HandlerBase: Any = logging.Handler


class _Filters(list):  # type: ignore[type-arg]
    """A sink's filters list: a filter added in place (``sink.filters.append(f)``)
    makes records carry the caller's context, as :meth:`Sink.addFilter` does."""

    __slots__ = ("_sink",)

    def __init__(self, sink: Sink, filters: Iterable[Any] = ()) -> None:
        super().__init__(filters)
        # weakly: a sink dropped without close() is freed at once, which ends its
        # need for the context (need_context holds it weakly too)
        self._sink = weakref.ref(sink)

    def _added(self) -> None:
        sink = self._sink()
        if sink is not None:
            need_context(sink)

    def append(self, item: Any) -> None:
        self._added()
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self._added()
        super().extend(items)

    def insert(self, index: Any, item: Any) -> None:
        self._added()
        super().insert(index, item)

    def __setitem__(self, index: Any, item: Any) -> None:
        self._added()
        super().__setitem__(index, item)

    def __iadd__(self, items: Iterable[Any]) -> _Filters:  # type: ignore[misc]
        self._added()
        return super().__iadd__(items)


class Sink(_HandlerBase):  # type: ignore[misc]
    """Base class of every sink: a ``logging.Handler`` whose I/O methods are coroutines.

    A sink has the handler's ``level``, ``formatter``, filters (``addFilter``,
    ``removeFilter``, ``filter``), ``name`` and ``handleError``, with the same
    meaning as in :class:`logging.Handler`. ``emit``, ``emit_batch``, ``handle``,
    ``flush`` and ``aclose`` are coroutines. Subclasses override :meth:`emit` (one
    record) or :meth:`emit_batch` (a batch: one write, one request, one mail).

    A sink does not know the dispatcher exists: a :class:`~aiologsinks.Dispatcher`
    calls :meth:`emit_batch` from one worker task per sink, so a sink's coroutines are
    never entered concurrently by the pipeline. A sink is also usable on its own as an
    async context manager (``async with FileSink(path) as sink: await sink.handle(r)``).

    It is also a real ``logging.Handler``: ``logger.addHandler(FileSink("app.log"))``
    and dictConfig's ``"class": "aiologsinks.FileSink"`` deliver every record, with or
    without a running event loop; ``logging.shutdown()`` (at exit) delivers, flushes
    and closes it. Called from plain code, ``handle()`` runs the filters in the
    caller's context and hands the record to a private pipeline on a background loop;
    ``flush()`` waits until it was written; ``close()`` also closes the sink. Use a
    sink either as a handler or in a Dispatcher, not both at once.
    """

    level: int
    #: seconds the sink's lane waits after a delivery before the next one, so that a
    #: busy service's records reach a sink with a cost per request (an HTTP POST, an
    #: export) in fewer, larger batches; a flush, a notice, a close or a full batch
    #: end the wait. 0 (the default): deliver as soon as the last delivery returned.
    linger: float = 0.0
    #: the sink may change the records it is given beyond what a formatter sets (a
    #: wrapped handler's filters, on another thread): in a dispatcher it then gets
    #: copies of its own, as a sink with filters does, so that other sinks' output
    #: does not depend on it
    changes_records: bool = False
    #: an application's subclass (not one of the library's sinks as they are)
    _user_class: bool = False

    def __init__(self, level: int | str = logging.NOTSET) -> None:
        super().__init__(_check_level(level))
        self.state = SinkState.OPEN
        #: records that went to handleError through the pipeline (read by stats())
        self.error_count = 0
        #: records whose fate the sink took over during emit_batch calls (read by the
        #: lane; see :meth:`_take_over`)
        self._taken_count = 0
        #: records the class's own handle() returned False for (read by the lane)
        self._vetoed = 0
        #: the private pipeline of handler-mode use, made by the first sync handle()
        self._entry: HandlerEntry | None = None
        cls = type(self)
        if overridden(cls, "format", Sink.format) or overridden(
            cls, "filter", logging.Filterer.filter
        ):
            need_context(self)  # its own format/filter may read the caller's contextvars

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._user_class = not is_library(cls)
        if cls._user_class:
            cls._check_hooks()
        # an `async def handle/flush` (a subclass's, a mixin's, or ours) gets the dual
        # entry in front of it, so logging's synchronous calls still work (module doc)
        for name, sync in (("handle", Sink._handle_sync), ("flush", Sink._flush_sync)):
            klass = defining(cls, name)
            hook: Any = None if klass is None else klass.__dict__[name]
            if (
                klass is not None
                and not is_dual(hook)
                and (inspect.iscoroutinefunction(hook) or not is_library(klass))
            ):
                setattr(cls, name, _dual(hook, sync, awaits_entry=name == "flush"))
        own = cls.__dict__.get("format")
        if callable(own) and not getattr(own, "__in_context__", False):
            # a format() of its own runs in the caller's context too, as Sink.format
            # runs the formatter (it may read a ContextVar, as a formatter may)
            cls.format = _in_context(own)  # type: ignore[method-assign]

    @classmethod
    def _check_hooks(cls) -> None:
        """An application's subclass: its I/O hooks (its own, or a mixin's) must be
        coroutine functions."""
        for name in _HOOK_NAMES:
            klass = defining(cls, name)
            if klass is None or is_library(klass):
                continue
            hook = klass.__dict__[name]
            library = _library_attr(cls, name)
            library = getattr(library, "__wrapped__", library)  # a dual entry
            if inspect.iscoroutinefunction(library) and (
                _plain_function(hook) or not hasattr(hook, "__get__")  # a callable object
            ):
                raise TypeError(
                    f"{cls.__qualname__}.{name} must be a coroutine function "
                    f"(async def {name}): the pipeline awaits a sink's I/O hooks; "
                    f"call the base as await super().{name}(...)"
                )
        for klass in cls.__mro__:
            if is_library(klass) or klass.__module__ in ("logging", "logging.handlers"):
                continue
            for name, hook in klass.__dict__.items():
                if name in _HOOK_NAMES or name in _MAY_BE_ASYNC or defining(cls, name) is not klass:
                    continue
                # only what overrides a plain hook is looked into (any other attribute
                # may be an object that answers every getattr, or raises)
                if not _plain_function(_base_attr(cls, name)):
                    continue
                try:
                    coroutine = inspect.iscoroutinefunction(_function_of(hook))
                except Exception:  # noqa: BLE001 - not a function we could call anyway
                    coroutine = False
                if coroutine:
                    # the natural slip of a port: the sink calls it and never awaits
                    # the coroutine, so its answer is always true (a rollover test
                    # rolling over at every record, a filter passing everything)
                    raise TypeError(
                        f"{cls.__qualname__}.{name} must be a plain function (def "
                        f"{name}, not async def): the sink calls it without awaiting "
                        "it, as logging.handlers does"
                    )
        if _user_defined(cls, "emit") or _user_defined(cls, "handle"):
            # they may change the record (stdlib overrides do): copies of their own in
            # a dispatcher, so that what the other sinks write does not depend on them
            cls.changes_records = True

    # -- logging.Handler-compatible surface -------------------------------------------

    def setLevel(self, level: int | str) -> None:
        """Set the threshold below which records are ignored by this sink."""
        self.level = _check_level(level)

    def addFilter(self, filter: Any) -> None:
        """Add a filter; it runs in the context of the logging call (as on a stdlib
        handler), so a filter reading a ``ContextVar`` sees the caller's value."""
        super().addFilter(filter)  # the list's append: see _Filters

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        """Set the formatter used by :meth:`format`.

        A formatter other than a plain ``logging.Formatter`` runs in the context of
        the logging call, as filters do (a plain one reads only record attributes).
        """
        self.formatter = fmt

    # Assigning ``formatter`` or ``filters``, or changing the filters list in place,
    # is as common as setFormatter()/addFilter() in code written for logging.handlers:
    # each of them makes records carry the caller's context from the next logging call.

    @property
    def formatter(self) -> logging.Formatter | None:
        """The formatter :meth:`format` uses (None: the stdlib default one)."""
        return self._formatter

    @formatter.setter
    def formatter(self, fmt: logging.Formatter | None) -> None:
        if fmt is not None and type(fmt) is not logging.Formatter:
            need_context(self)
        self._formatter = fmt

    @property
    def filters(self) -> list[Any]:
        """The sink's filters; they run in the context of the logging call."""
        return self._filters

    @filters.setter
    def filters(self, filters: Iterable[Any]) -> None:
        self._filters = _Filters(self, filters)
        if self._filters:
            need_context(self)

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` with this sink's formatter, or the stdlib default one.

        The formatter runs in the context the record was logged in (see
        :meth:`setFormatter`).
        """
        fmt = self.formatter or _default_formatter
        return run_in(record, fmt.format, record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Handle an error that occurred while delivering ``record``.

        Called from within the ``except`` block that caught it. As
        ``logging.Handler.handleError``: when ``logging.raiseExceptions`` is true,
        print the traceback and the offending record to ``sys.stderr``; otherwise
        ignore the error. Override it to route delivery errors elsewhere.
        """
        if not (logging.raiseExceptions and sys.stderr):
            return
        exc_type, exc, tb = sys.exc_info()
        try:
            parts = ["--- Logging error ---\n"]
            parts.extend(traceback.format_exception(exc_type, exc, tb))
            parts.append(f"Sink: {self!r}\n")
            try:
                parts.append(f"Message: {record.msg!r}\nArguments: {record.args!r}\n")
            except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the error
                parts.append("Unable to print the message and arguments.\n")
            sys.stderr.write("".join(parts))
        except Exception as again:  # noqa: BLE001 - no import works (module teardown)
            # a logging call must never raise: the error in one line, if stderr takes it
            with contextlib.suppress(Exception):
                sys.stderr.write(f"--- Logging error ---\n{exc!r} ({again!r})\n")
        finally:
            del exc_type, exc, tb

    # -- error accounting, for sink implementations (and the lane) ----------------------

    def report_error(self, record: logging.LogRecord | Frozen) -> None:
        """Count one record that could not be delivered and pass it to
        :meth:`handleError` (a frozen record is built first). Call it inside the
        ``except`` block that caught the error: handleError reports that exception.
        A notice of the pipeline's own is reported but not counted: it is not a record
        the application logged."""
        if not is_notice(record):
            self.error_count += 1
        self.handleError(as_record(record))

    def _take_over(self, count: int) -> None:
        """Say that ``count`` more records of the ``emit_batch`` call in progress are
        now the sink's to account for, in the order they were given.

        A sink that buffers records for later delivery (an outbox) calls it when it
        accepts them: from then on each is delivered later or counted in
        ``error_count`` when the sink gives up on it (including records it already
        reported while encoding them). Should the dispatcher interrupt the call
        (``aclose(timeout=...)``, the loop ending), it then counts only the records
        not taken over as undelivered, so that a lost record is counted once. Call it
        right before the ``await`` that hands the records over.
        """
        self._taken_count += count

    def _settled(self, start: int, done: int) -> None:
        """The first ``done`` records of a call that delivers one record at a time
        (begun when ``_taken_count`` was ``start``) are settled: a batch interrupted
        now (``aclose(timeout=...)``) sends only the records not reached yet to the
        fallback. (Their own ``emit_batch`` may have taken some over already.)"""
        self._taken_count = max(self._taken_count, start + done)

    def report_batch_error(self, records: Sequence[Any]) -> None:
        """A failure of a whole batch (one write, one request): count every record,
        report the first one with the active exception — one traceback, not one per
        record. Call it inside the ``except`` block."""
        if not records:
            return
        self.error_count += sum(1 for r in records[1:] if not is_notice(r))
        self.report_error(records[0])

    def _report_lost(
        self, records: Sequence[Any], reason: str, cause: BaseException | None = None
    ) -> None:
        """Count ``records`` as lost for ``reason``, a loss that raised nothing of its
        own (a close that gave up, a peer gone mid-batch): one
        :class:`~aiologsinks.SinkDeliveryError` saying why goes to :meth:`handleError`
        with the first record, every record is counted."""
        try:
            raise SinkDeliveryError(reason) from cause
        except SinkDeliveryError:
            self.report_batch_error(records)

    def contain_each(
        self, records: Iterable[Any], fn: Callable[[Any], Any]
    ) -> tuple[list[Any], list[Any]]:
        """``fn(record)`` for each record with per-record containment: a record whose
        call raises is reported (:meth:`report_error`) and left out. Returns the
        results and the records they belong to."""
        results: list[Any] = []
        kept: list[Any] = []
        for record in records:
            try:
                results.append(fn(record))
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self.report_error(record)
                continue
            kept.append(record)
        return results, kept

    # -- the synchronous handler entry points (called by the logging module) ----------

    def _handle_sync(self, record: logging.LogRecord) -> Any:
        """``logging.Handler.handle``: filter now, in the caller's context, then hand
        the record to the private pipeline. Returns what the filters returned. A
        subclass's own ``handle`` filters on the pipeline instead (in the caller's
        context too): it may change the record first, as a stdlib one may."""
        rv: Any = True if per_record_hook(self) == "handle" else self.filter(record)
        if not rv:
            return rv
        if isinstance(rv, logging.LogRecord):
            record = rv
        try:
            self._handler_entry().submit(freeze(record))
        except Exception:  # noqa: BLE001 - a logging call must never raise
            self.report_error(record)
        return rv

    def _flush_sync(self) -> None:
        """``logging.Handler.flush``: wait until what was handed over is delivered."""
        entry = self._entry
        if entry is not None:
            entry.flush()

    def close(self) -> None:
        """``logging.Handler.close``: deliver what was handed over, flush and close.

        Called by ``logging.shutdown()`` (at exit) and by dictConfig when it replaces
        handlers; bounded in time. A sink used only in a Dispatcher is closed by the
        dispatcher (``aclose``): here only the handler bookkeeping is done.
        """
        entry = self._entry
        try:
            if entry is not None:
                entry.close()
        finally:
            release_context(self)
            super().close()

    def _handler_entry(self) -> HandlerEntry:
        entry = self._entry
        if entry is None:
            with _entry_lock:
                entry = self._entry
                if entry is not None:
                    return entry
                if _entry_factory is None:  # pragma: no cover - set by the package
                    raise RuntimeError("aiologsinks: handler entry not installed")
                entry = self._entry = _entry_factory(self)
            # Started once it is in place (starting may log: asyncio making the
            # background loop, and such a record must find this entry), and outside
            # the lock: the thread making that loop holds its lock and may need this
            # one for another sink's first record, while starting needs that lock
            entry.start()
        return entry

    # -- the I/O surface ----------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Deliver one record. Subclasses override this or :meth:`emit_batch`.

        May raise: :meth:`handle` and the default :meth:`emit_batch` route the
        exception to :meth:`handleError` and go on with the next record.
        """
        raise NotImplementedError(f"{type(self).__name__} must override emit or emit_batch")

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Deliver records that already passed this sink's level and filters.

        The default awaits :meth:`emit` per record; an exception from one record goes
        to :meth:`handleError` and the next record is delivered normally. Batching
        sinks override this to make one write, one request or one mail per batch.
        Returns when every record was delivered or handed to :meth:`handleError`.
        """
        for record in records:
            try:
                await self.emit(record)
            except BaseException as exc:
                # per-record boundary: the next record goes on, also after a
                # CancelledError the sink raised on its own (not our task's cancel)
                if not containable(exc):
                    raise
                self.report_error(record)

    async def handle(self, record: logging.LogRecord) -> bool:
        """Filter ``record`` and, if it passes, emit it (``logging.Handler.handle``).

        Awaited, returns whether the record passed the filters (``False`` when it was
        dropped). Called from plain code (the logging module), it is the synchronous
        handler entry instead (see the class doc).
        A filter may return a replacement record (Python 3.12 semantics), which is
        then emitted instead. Delivery errors go to :meth:`handleError`.
        """
        # in the caller's context, as on a stdlib handler (the pipeline leaves filtering
        # to a subclass's own handle: it may change the record before)
        rv: Any = run_in(record, self.filter, record)
        if isinstance(rv, logging.LogRecord):
            record = rv
        if rv:
            try:
                await self.emit(record)
            except BaseException as exc:
                if not containable(exc):
                    raise
                self.report_error(record)
        return bool(rv)

    def passes(self, records: Iterable[logging.LogRecord]) -> list[logging.LogRecord]:
        """Return the records that pass this sink's filters (replacements applied)."""
        if not self.filters and not own_hook(self, "filter", logging.Filterer.filter):
            return list(records)
        out: list[logging.LogRecord] = []
        for record in records:
            # in the context of the logging call, as on a stdlib handler
            rv: Any = run_in(record, self.filter, record)
            if isinstance(rv, logging.LogRecord):
                if rv is not record:
                    # a replacement: formatted in the caller's context all the same
                    ctx = context_of(record)
                    if ctx is not None:
                        remember(rv, ctx)
                out.append(rv)
            elif rv:
                out.append(record)
        return out

    async def aopen(self) -> None:
        """Acquire resources eagerly (open a file, connect); the base does nothing.

        The dispatcher awaits it when it starts the sink's lane, and ``async with``
        awaits it on entry. Sinks must still open lazily on first emit when this was
        not called or failed, so a failure here is never fatal.
        """

    async def flush(self) -> None:
        """Make every record emitted so far durable at the destination.

        The base implementation does nothing. Returns when the flush completed.
        Called from plain code (``logging.shutdown()``), it waits instead until the
        records handed to the sink as a handler were delivered (see the class doc).
        """

    async def aclose(self) -> None:
        """Release the sink's resources; idempotent (a second call returns at once).

        Subclasses override :meth:`_aclose` (not this method) to close their
        resources; it is awaited once, and the sink counts as closed even when it
        raises.
        """
        if self.state is not SinkState.OPEN:
            return
        self.state = SinkState.CLOSING
        try:
            await self._aclose()
        finally:
            self.state = SinkState.CLOSED
            release_context(self)

    async def _aclose(self) -> None:
        """Close the sink's resources. Called once by :meth:`aclose`."""

    def _reopen(self) -> None:
        """A closed sink started again, in a new dispatcher (as a closed stdlib handler
        may be used again): open once more, so that its next close closes what it
        opens this time (a file opened again by the first write stayed open)."""
        if self.state is not SinkState.CLOSED:
            return
        self.state = SinkState.OPEN
        cls = type(self)
        formatter = self._formatter
        if (
            self._filters
            or (formatter is not None and type(formatter) is not logging.Formatter)
            or overridden(cls, "format", Sink.format)
            or overridden(cls, "filter", logging.Filterer.filter)
        ):
            need_context(self)  # released by the close, as at construction

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started."""
        return self.state is not SinkState.OPEN

    async def __aenter__(self) -> Sink:
        await self.aopen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} ({level})>"


# the base class's own hooks get the dual entry too (subclasses get it at definition)
Sink.handle = _dual(Sink.__dict__["handle"], Sink._handle_sync)  # type: ignore[method-assign]
Sink.flush = _dual(Sink.__dict__["flush"], Sink._flush_sync, awaits_entry=True)  # type: ignore[method-assign]


def _check_level(level: int | str) -> int:
    """Validate a level the way ``logging`` does, naming the parameter on failure."""
    return check_level("level", level)
