"""Context that travels with records: bound fields and the caller's contextvars.

Two things a stdlib user gets for free because a stdlib handler runs inside the
logging call, and that a pipeline has to carry across the hand-off:

* **Bound fields** — :func:`context` binds fields for a block of code (``with
  als.context(request_id=rid): ...``, in sync or async code; each asyncio task sees
  its own). Every record logged inside carries them as attributes, in every sink, so
  ``%(request_id)s`` works without ``extra=``. A field given with ``extra=`` at the
  call wins over a bound one of the same name.

* **The caller's contextvars** — a sink's filters and formatters run in the caller's
  :class:`contextvars.Context`, as on a stdlib handler (a request-id filter reading a
  ``ContextVar`` sees the request's id, not the lane's). Capturing a context costs a
  ``copy_context()`` (O(1)) plus a weak reference per record, so it is done only once
  some sink has a filter or a formatter that may read contextvars (anything but a
  plain ``logging.Formatter``), and only while that sink is open: :func:`need_context`
  and :func:`release_context` switch it on and off. The context rides
  beside the record in a weak table, never in the record itself, so nothing
  unpicklable is added to it.
"""

from __future__ import annotations

import contextvars
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._validate import ArgumentValueError

__all__ = [
    "capturing",
    "context",
    "context_of",
    "fields",
    "need_context",
    "release_context",
    "remember",
    "run_in",
]

T = TypeVar("T")

_bound: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "aiologsinks_bound_fields", default=None
)
#: the bound fields of the calling context (None when nothing is bound): one C call
fields = _bound.get

# names a bound field may not take: what LogRecord sets, and what formatting adds
_RESERVED = frozenset(logging.LogRecord("", logging.NOTSET, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}

#: record -> the Context it was logged in (only while capturing is on)
_contexts: weakref.WeakKeyDictionary[logging.LogRecord, contextvars.Context] = (
    weakref.WeakKeyDictionary()
)


class _Switch:
    def __init__(self) -> None:
        # an instance attribute from the start: the compiled shim reads it from the
        # instance's dict
        self.on = False


_switch = _Switch()
#: the live, open sinks that need the caller's context (by id; weakly held)
_owners: dict[int, weakref.ref[object]] = {}


def capturing() -> bool:
    """True while some open sink needs the caller's context (see :func:`need_context`)."""
    return _switch.on


def need_context(owner: object) -> None:
    """Records carry the context they were logged in while ``owner`` needs it.

    A sink calls it when it gets a filter or a formatter that may read contextvars;
    :func:`release_context` (the sink closed) or the sink's collection ends it. While
    no sink needs it, records are frozen without a context and cost nothing more.
    """
    key = id(owner)
    if key not in _owners:
        _owners[key] = weakref.ref(owner, lambda _, key=key: release_key(key))  # type: ignore[misc]
        _switch.on = True


def release_context(owner: object) -> None:
    """``owner`` no longer needs the caller's context (it was closed)."""
    release_key(id(owner))


def release_key(key: int) -> None:
    """Forget the owner with this id (closed or collected)."""
    _owners.pop(key, None)
    _switch.on = bool(_owners)


def remember(record: logging.LogRecord, ctx: contextvars.Context) -> None:
    """Attach ``ctx`` to ``record`` (weakly: it goes when the record goes)."""
    _contexts[record] = ctx


def context_of(record: object) -> contextvars.Context | None:
    """The context ``record`` was logged in, or None (not captured, or not a record)."""
    if not _switch.on:
        return None
    if not isinstance(record, logging.LogRecord):
        return None  # a frozen tuple: logged before capturing was on
    return _contexts.get(record)


def run_in(record: object, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the context ``record`` was logged in (or here, without one)."""
    ctx = context_of(record)
    if ctx is None:
        return fn(*args)
    try:
        return ctx.run(fn, *args)
    except RuntimeError as exc:
        # Context.run raises before calling fn when the context is entered already:
        # here (a format() calling the sink's own format, a formatter called from a
        # filter), or on another thread (a wrapped handler handling the same record
        # on its worker thread). Only then does the traceback end in this frame;
        # fn's own RuntimeError has fn's frames after it and must not make fn run
        # twice. A copy holds the same values and can be entered anywhere.
        if exc.__traceback__ is None or exc.__traceback__.tb_next is not None:
            raise
        return ctx.copy().run(fn, *args)


class context:  # noqa: N801 - used like a function: `with als.context(...)`
    """Bind fields for a block: every record logged inside carries them.

    ``with als.context(request_id=rid, user=name): ...`` — also ``async with``. Each
    field becomes an attribute of every record logged in the block (by this task or
    thread, and by tasks it starts there), in every sink: ``%(request_id)s`` in a
    format, a JSON formatter's extra fields, a filter's ``record.request_id``. Blocks
    nest; an inner block adds to (and may override) the outer fields, and leaving it
    restores them. Field names must be identifiers other than the ``LogRecord``
    attributes (``ValueError`` naming the field otherwise). Values are not copied: a
    mutable value is read when the record is prepared.
    """

    __slots__ = ("_fields", "_tokens")

    def __init__(self, **fields: Any) -> None:
        for name in fields:
            if name in _RESERVED:
                raise ArgumentValueError(
                    f"{name}", "a LogRecord attribute cannot be bound as a field"
                )
        self._fields = fields
        self._tokens: list[contextvars.Token[Mapping[str, Any] | None]] = []

    def __enter__(self) -> context:
        outer = _bound.get()
        merged = {**outer, **self._fields} if outer else dict(self._fields)
        self._tokens.append(_bound.set(merged))
        return self

    def __exit__(self, *exc_info: object) -> None:
        # the exception (if any) goes on unchanged: unbinding does not depend on it
        _bound.reset(self._tokens.pop())

    async def __aenter__(self) -> context:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()

    def __repr__(self) -> str:
        return f"context({', '.join(f'{k}={v!r}' for k, v in self._fields.items())})"
