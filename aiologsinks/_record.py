"""Frozen records: how a record travels from the shim to the sinks.

A prepared ``LogRecord`` held in a queue is a GC-tracked instance plus a tracked dict;
records that wait a few thousand calls in the pipeline survive collections, get
promoted to the oldest generation and make the cyclic GC run full collections (tens
of milliseconds each, inside some unlucky logging call). So a plain ``LogRecord`` is
frozen into a flat tuple of its attribute values, in the order ``LogRecord.__init__``
sets them. Its values are strings, numbers and ``None``: the GC untracks such a tuple
at its first collection, so a queued record costs the collector nothing.

A frozen record is thawed into a ``LogRecord`` equal to the one the stdlib's
``QueueHandler.prepare`` would build — only when a sink asks for one. Sinks that can
format straight from the tuple (the stream and file sinks with a plain
``logging.Formatter``) never thaw it at all.

Only exact ``LogRecord`` instances are frozen, with the standard attributes in their
order, optionally followed by ``extra=`` attributes whose values are of immutable
types (captured at the call, as the stdlib's handler reads them then); anything else
(a subclass, a mutable ``extra=`` value, bound fields) travels as a prepared
``LogRecord`` copy. Both kinds can sit in the same queue.

The layout of a frozen record (this module is its only home; other modules use the
index constants and accessors below)::

    fields (N_FIELDS values, FIELDS order) [+ deferred args] [+ extra values + (extra names,)]

* ``v[ARGS]`` is None when the message is merged or its arguments were deferred;
  otherwise (the merge failed: each sink reports it) it holds the original arguments.
* deferred arguments (immutable values of ``msg % args``) follow the fields: see
  :func:`deferred`, :func:`deferred_positions`;
* ``extra=`` values follow them, and the tuple of their names is the last item (the
  only item after the fields that is a tuple): see :func:`extras`;
* ``v[EXC_TEXT]`` may be a :class:`ExcText`: the exception captured at the call,
  rendered when the record is thawed (off the logging call); ``v[EXC_INFO]`` is None.
"""

from __future__ import annotations

import linecache
import logging
import operator
import os
import pickle
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from contextvars import copy_context
from typing import Any, overload

from ._context import _switch, context_of, remember
from ._context import fields as _bound_fields

__all__ = [
    "FIELDS",
    "N_FIELDS",
    "SAMPLE",
    "ExcText",
    "Frozen",
    "Item",
    "RecordBatch",
    "as_record",
    "deferred",
    "deferred_positions",
    "exc_text",
    "extras",
    "field_index",
    "freeze",
    "frozen_dict",
    "level_name_of",
    "own_items",
    "passing",
    "prepared_copy",
    "thaw",
    "travelled",
]

#: a frozen record: the values of ``FIELDS``, in that order; when ``msg`` is still to
#: be merged (its arguments are immutable), ``args`` is None and they follow
Frozen = tuple[Any, ...]
#: what travels through the queue and the lanes (besides flush markers)
Item = Frozen | logging.LogRecord

# The attribute names LogRecord.__init__ sets, in its order (it differs between
# Python versions: 3.12 added taskName). Thawing restores this order, so a thawed
# record's __dict__ — and a pickle of it — is the same as the original's.
FIELDS: tuple[str, ...] = tuple(
    logging.LogRecord("", logging.NOTSET, "", 0, "", None, None).__dict__
)
N_FIELDS = _N = len(FIELDS)
_take = operator.itemgetter(*FIELDS)
MSG = FIELDS.index("msg")
ARGS = FIELDS.index("args")
LEVELNO = FIELDS.index("levelno")
LEVELNAME = FIELDS.index("levelname")
_levelno = operator.itemgetter(LEVELNO)
EXC_INFO = FIELDS.index("exc_info")
EXC_TEXT = FIELDS.index("exc_text")
STACK_INFO = FIELDS.index("stack_info")
CREATED = FIELDS.index("created")
if FIELDS[:3] != ("name", "msg", "args"):  # freeze() builds (name, msg, args, *rest)
    raise ImportError(f"aiologsinks: unexpected LogRecord layout {FIELDS}")
_take_tail = operator.itemgetter(*FIELDS[3:])
# the fields with exc_info's value where args' goes: what freeze() queues when the
# record has no exception info and its arguments follow the fields
_take_head = operator.itemgetter("name", "msg", "exc_info", *FIELDS[3:])
MSECS = FIELDS.index("msecs")

#: exact types whose values cannot change after the logging call
_IMMUTABLE = frozenset((str, int, float, bool, bytes, type(None)))
#: mutable containers an ``extra=`` value is copied out of at the call (one level)
_COPIED = frozenset((dict, list, set))
_exc_formatter = logging.Formatter()
_LogRecord = logging.LogRecord
_new = object.__new__
_TracebackType = types.TracebackType


class ExcText:
    """Exception text captured at the logging call and rendered when first read.

    ``logging.Formatter.formatException`` costs tens to hundreds of µs per exception,
    most of it reading source lines and laying the text out; done in the logging call,
    that is on the event loop when the caller is a coroutine. At the call only a
    ``traceback.TracebackException`` is built, without looking source lines up (the
    stdlib builds the same one, with the lookups): it holds the exception's message,
    notes, chained and grouped exceptions and the frames' positions as they are at the
    call, and no frame. :meth:`text` renders it later (where the record is thawed,
    in a sink's lane or worker) into the text ``formatException`` returns.
    """

    __slots__ = ("_te", "_text", "exc_type", "message")

    def __init__(self, te: traceback.TracebackException, exc_type: type[BaseException]) -> None:
        self._te: traceback.TracebackException | None = te
        self._text: str | None = None
        #: the exception's class and ``str()`` at the call: what a mapping of the record
        #: (OTLP's ``exception.type``/``exception.message``) reads without parsing the
        #: text, which cannot tell a message from its notes or a group's parts
        self.exc_type = exc_type
        self.message: str = getattr(te, "_str", "")

    def text(self) -> str:
        """The text ``logging.Formatter().formatException(exc_info)`` gave at the call."""
        if self._text is None:
            with _render_lock:  # sinks on several threads may thaw the same record
                if self._text is None:
                    self._text = _render(self._te)
                    self._te = None  # the frames' summaries are not needed any more
        return self._text

    def __repr__(self) -> str:
        return f"<ExcText {'rendered' if self._text is not None else 'pending'}>"


_render_lock = threading.Lock()


def _new_render_lock() -> None:
    # a fork while another thread renders must not leave the child's lock held
    global _render_lock
    _render_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_render_lock)


def _render(te: traceback.TracebackException | None) -> str:
    # what Formatter.formatException does with print_exception's lines
    try:
        text = "".join(te.format(chain=True)) if te is not None else ""
    except Exception as exc:  # noqa: BLE001 - the record still goes out, with the reason
        return f"<exception text could not be rendered: {exc!r}>"
    return text[:-1] if text[-1:] == "\n" else text


#: The stdlib's own steps of building a stack summary from a traceback (3.11+): each
#: frame's code position is found by walking the code's position table from its start
#: up to the frame's instruction (``traceback._get_code_position``), thousands of
#: instructions a frame, at the logging call. A service logs the same exceptions from
#: the same places, so positions are remembered by (code, instruction) and the rest of
#: the summary is built by the stdlib's own function.
_code_position = getattr(traceback, "_get_code_position", None)
_REMEMBER_POSITIONS = (
    sys.version_info >= (3, 11)
    and _code_position is not None
    and hasattr(traceback.StackSummary, "_extract_from_extended_frame_gen")
)
#: exceptions whose text the stdlib completes from the traceback's last frame (3.12+'s
#: "Did you mean"): their stack is left to the stdlib's own walk
_READS_FRAMES = (NameError, AttributeError, ImportError)
#: (id(code), instruction offset) -> (code, position); the code object is kept with its
#: position so that the id cannot be reused while the entry exists
_positions: dict[tuple[int, int], tuple[types.CodeType, tuple[Any, ...]]] = {}
_POSITIONS_MAX = 1024


def _position(code: types.CodeType, lasti: int) -> tuple[Any, ...]:
    """``traceback._get_code_position(code, lasti)``, remembered."""
    key = (id(code), lasti)
    entry = _positions.get(key)
    if entry is not None and entry[0] is code:
        return entry[1]
    assert _code_position is not None
    position: tuple[Any, ...] = _code_position(code, lasti)
    if len(_positions) >= _POSITIONS_MAX:
        _positions.clear()
    _positions[key] = (code, position)
    return position


def _walk(tb: types.TracebackType | None) -> Iterator[tuple[types.FrameType, tuple[Any, ...]]]:
    """``traceback._walk_tb_with_full_positions``, with remembered positions."""
    while tb is not None:
        position = _position(tb.tb_frame.f_code, tb.tb_lasti)
        if position[0] is None:
            position = (tb.tb_lineno, *position[1:])
        yield tb.tb_frame, position
        tb = tb.tb_next


def _capture(value: BaseException, tb: types.TracebackType | None) -> traceback.TracebackException:
    """``traceback.TracebackException(type(value), value, tb)`` as print_exception builds
    it, minus the source line lookups; the exception's own stack from remembered
    positions where the stdlib's summary depends on nothing else."""
    if not _REMEMBER_POSITIONS or tb is None or isinstance(value, _READS_FRAMES):
        return traceback.TracebackException(
            type(value), value, tb, limit=None, compact=True, lookup_lines=False
        )
    te = traceback.TracebackException(
        type(value), value, None, limit=None, compact=True, lookup_lines=False
    )
    # the stdlib's own summary of the walk: the traceback limit, linecache's lazy
    # entries and checks, and each version's FrameSummary fields as it makes them
    te.stack = _Stack._extract_from_extended_frame_gen(  # type: ignore[attr-defined]
        _walk(tb), limit=None, lookup_lines=False, capture_locals=False
    )
    return te


def exc_text(exc_info: Any) -> str | ExcText:
    """What a frozen record carries for ``exc_info``: an :class:`ExcText` when the
    exception can be rendered later to the same text, else the text itself."""
    if type(exc_info) is tuple and len(exc_info) == 3:
        value, tb = exc_info[1], exc_info[2]
        if isinstance(value, BaseException) and (tb is None or type(tb) is _TracebackType):
            try:
                # exactly traceback.print_exception's, minus the source line lookups
                te = _capture(value, tb)
            except Exception:  # noqa: BLE001 - the stdlib's own call reports it below
                te = None
            if te is not None and _snapshot_notes(te):
                return ExcText(te, type(value))
    return _exc_formatter.formatException(exc_info)


def _snapshot_notes(te: traceback.TracebackException) -> bool:
    """Copy each captured exception's ``__notes__`` (the summary keeps the exception's
    own list: a note added after the call must not show). False when a note is not a
    plain string (its text could change): then the text is rendered at the call.
    Each captured stack becomes a :class:`_Stack` on the way."""
    todo = [te]
    seen: set[int] = set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if type(node.stack) is traceback.StackSummary:
            node.stack.__class__ = _Stack
        notes = node.__dict__.get("__notes__")
        if notes is not None:
            if type(notes) not in (list, tuple):
                return False
            for note in notes:
                if type(note) is not str:
                    return False
            node.__notes__ = tuple(notes)  # type: ignore[attr-defined]
        for nxt in (node.__cause__, node.__context__):
            if nxt is not None:
                todo.append(nxt)
        todo.extend(getattr(node, "exceptions", None) or ())
    return True


class _Stack(traceback.StackSummary):
    """A captured stack whose text is remembered by what it is made of.

    A service logs the same exception from the same place again and again, and
    formatting a stack is most of what rendering an exception costs: each frame's
    source line is read and, from Python 3.11, parsed to place the ``^`` markers (tens
    of µs an exception, on the loop for a sink formatting there). The text depends
    only on each frame's file, positions, name and source lines, and on the options
    it is formatted with, so it is kept by those: the same stack text as the stdlib's
    for the same source, read again if the file changed.
    """

    __slots__ = ()

    def format(self, **kwargs: Any) -> list[str]:
        """The stdlib's ``StackSummary.format``, from the cache when it has the key."""
        key = _stack_key(self, kwargs)
        if key is None:
            return super().format(**kwargs)
        try:
            lines = _stack_texts.get(key)
        except TypeError:  # an option that cannot be a key
            return super().format(**kwargs)
        if lines is None:
            lines = tuple(super().format(**kwargs))
            if len(_stack_texts) >= _STACK_TEXTS_MAX:
                _stack_texts.clear()
            _stack_texts[key] = lines
        return list(lines)


#: stack key -> its formatted lines (see _Stack)
_stack_texts: dict[tuple[Any, ...], tuple[str, ...]] = {}
_STACK_TEXTS_MAX = 256
#: frames whose source spans more lines are formatted every time
_STACK_SPAN_MAX = 20


def _stack_key(stack: traceback.StackSummary, options: dict[str, Any]) -> tuple[Any, ...] | None:
    """What the text of ``stack`` depends on, or None when it is not worth a key
    (captured locals, a line given instead of read)."""
    parts: list[Any] = [tuple(sorted(options.items()))]
    for frame in stack:
        if frame.locals is not None:
            return None
        # the slot of a line that was given (or already read): 3.10-3.12 / 3.13
        if getattr(frame, "_line", None) is not None or getattr(frame, "_lines", None):
            return None
        first = frame.lineno
        last = getattr(frame, "end_lineno", None)
        lines: tuple[str, ...] = ()
        if first is not None:
            end = first if last is None else last
            if not first <= end <= first + _STACK_SPAN_MAX:
                return None
            lines = tuple(linecache.getline(frame.filename, n) for n in range(first, end + 1))
        parts.append(
            (
                frame.filename,
                first,
                last,
                getattr(frame, "colno", None),
                getattr(frame, "end_colno", None),
                frame.name,
                lines,
            )
        )
    return tuple(parts)


# ``extra=`` names by the shape of a record's __dict__ (all its keys, in order); a
# call site logs the same names each time, so the shapes are few
_shapes: dict[tuple[str, ...], tuple[tuple[str, ...], Any] | None] = {}
_SHAPES_MAX = 256
_NOT_EXTRA = frozenset(FIELDS) | {"message", "asctime"}


def _shape(keys: tuple[str, ...]) -> tuple[tuple[str, ...], Any] | None:
    """``(extra names, getter of their values)`` for a record whose ``__dict__`` has
    ``keys``; None when such a record cannot be frozen (a standard attribute
    missing or moved, or a formatter's cached ``message``/``asctime``: a
    ``SocketHandler`` drops that one)."""
    names = keys[_N:]
    ok = keys[:_N] == FIELDS and all(type(k) is str and k not in _NOT_EXTRA for k in names)
    if len(_shapes) >= _SHAPES_MAX:
        _shapes.clear()
    if not ok:
        _shapes[keys] = None
        return None
    getter: Any = _one(names[0]) if len(names) == 1 else operator.itemgetter(*names)
    entry: tuple[tuple[str, ...], Any] = (names, getter)
    _shapes[keys] = entry
    return entry


def _one(name: str) -> Any:
    return lambda d: (d[name],)


def _freeze_accelerated(record: logging.LogRecord) -> Item:
    # the compiled common case (see _speedups.c), the same tuple as _freeze_pure's,
    # GC-untracked from the start; anything else takes the pure-Python path
    if type(record) is not _LogRecord or _switch.on or _bound_fields():
        return prepared_copy(record)  # what _freeze_pure does first, not checked twice
    frozen = _freeze_plain(record.__dict__)  # type: ignore[misc]
    return frozen if frozen is not None else _freeze_pure(record)


def _freeze_pure(record: logging.LogRecord) -> Item:
    """Return what the shim queues for ``record``: a frozen tuple when it can be.

    Either way the result is safe to hand to another thread and to keep: ``msg %
    args`` is merged into ``msg`` now (so mutating an argument after the call cannot
    change the output), or deferred when its arguments are immutable; exception info
    is captured (see :class:`ExcText`) or rendered into ``exc_text``, and dropped
    (tracebacks hold frames).
    """
    d = record.__dict__
    if type(record) is not _LogRecord or _switch.on or _bound_fields():
        # a subclass, bound fields, or a context to carry: a prepared copy
        return prepared_copy(record)
    extra: Frozen = ()
    if len(d) != _N:
        keys = tuple(d)
        shape = _shapes.get(keys, _UNSEEN)
        if shape is _UNSEEN:
            shape = _shape(keys)
        if shape is None:
            return prepared_copy(record)
        names, values = shape
        extra = values(d)
        for value in extra:
            if type(value) not in _IMMUTABLE:
                return prepared_copy(record)  # a value that can change after the call
        extra += (names,)
    try:
        msg, args, exc_info = d["msg"], d["args"], d["exc_info"]
        if type(msg) is dict:
            return prepared_copy(record)  # a structured message: kept a dict (see there)
        if exc_info is None and type(msg) is str and type(args) is tuple and args:
            # Arguments of immutable types cannot change after the call: they travel
            # after the fields, unmerged, and are merged where the record is formatted
            # (or thawed) - off the logging call. Not as a nested tuple: the GC
            # untracks a tuple only once its items are untracked, so a nested one
            # would keep the record tracked a collection longer.
            for arg in args:
                if type(arg) not in _IMMUTABLE:
                    break
            else:
                # exc_info (None) read in args' place: the fields in one read
                return _take_head(d) + args + extra  # type: ignore[no-any-return]
        tail: Frozen = _take_tail(d)
        name = d["name"]
    except KeyError:  # as many attributes, but not the standard ones
        return prepared_copy(record)
    merged = _merged(msg, args)
    if not exc_info:
        if merged is not None:
            return (name, merged, None) + tail + extra  # noqa: RUF005 - fewest copies
        if type(msg) is str and not args:
            return (name, msg, args) + tail + extra  # noqa: RUF005
    # exception info to capture, or a message that cannot be merged (kept for the sinks)
    fixed = list(_take(d))
    if merged is not None:
        fixed[MSG], fixed[ARGS] = merged, None
    if exc_info:
        if not fixed[EXC_TEXT]:
            fixed[EXC_TEXT] = exc_text(exc_info)
        fixed[EXC_INFO] = None
    return tuple(fixed) + extra


def _accelerator() -> Callable[[dict[str, Any]], Frozen | None] | None:
    """The compiled ``freeze_plain``, or None: not built (no compiler where the package
    was installed), or ``AIOLOGSINKS_PURE_PYTHON`` is set (the pure path is complete)."""
    if os.environ.get("AIOLOGSINKS_PURE_PYTHON"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    if not all(hasattr(_speedups, name) for name in ("Shim", "format_run")):
        return None  # built from an older source: the pure path is complete
    _speedups.configure(FIELDS)
    return _speedups.freeze_plain


_freeze_plain = _accelerator()
#: the compiled accelerator is in use (``aiologsinks._speedups``)
ACCELERATED = _freeze_plain is not None
freeze = _freeze_accelerated if ACCELERATED else _freeze_pure
freeze.__doc__ = _freeze_pure.__doc__

_UNSEEN: Any = object()


def _merged(msg: Any, args: Any) -> str | None:
    """``msg % args`` as a prepared record's ``msg``; None when there is nothing to
    merge (a str without arguments) or it cannot be merged (each sink reports that)."""
    if not args and type(msg) is str:
        return None
    try:
        text = msg if type(msg) is str else str(msg)
        return text % args if args else text
    except Exception:  # noqa: BLE001 - kept unmerged: each sink reports it
        return None


def prepared_copy(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` with ``msg % args`` merged and exception text rendered.

    When the merge fails, ``msg`` and ``args`` are kept so that each sink reports the
    error to its own ``handleError``. Fields bound with :func:`aiologsinks.context`
    are added (an attribute already on the record wins), and, once a sink needs it,
    the caller's context is remembered beside the copy (see ``_context.py``). An
    ``extra=`` value that cannot be pickled is replaced by its ``repr()``, so the
    record can still cross a process boundary (``SocketSink``).
    """
    d = record.__dict__.copy()
    cls = type(record)
    if cls is _LogRecord:
        msg, args = d["msg"], d["args"]
        if type(msg) is dict and not args:
            # a structured message (structlog's event dict, python-json-logger's
            # fields): formatters read it as a dict; a copy, so that changing it after
            # the call does not change the output
            d["msg"] = msg.copy()
            merged = None
        elif (
            type(msg) is str
            and type(args) is tuple
            and not d["exc_info"]
            and all(type(a) in _IMMUTABLE for a in args)
        ):
            # cannot change after the call: kept as the caller gave them, for the
            # formatter's own getMessage() (one that reads args, as uvicorn's does),
            # as freeze() keeps them (it merges where there is exception info too)
            merged = None
        else:
            merged = _merged(msg, args)
    else:  # a LogRecord subclass may build its message differently
        own = cls.getMessage is not _LogRecord.getMessage
        merged = _subclass_message(record, own)
        if merged is not None and own:
            # the sinks' formatters call getMessage() again: the subclass's would
            # build its message a second time from this one (or fail on args None)
            cls = _LogRecord
    if merged is not None:
        d["msg"], d["args"] = merged, None
    if d.get("exc_info"):
        if not d.get("exc_text"):
            # a copy travels as a LogRecord: its text is rendered now
            d["exc_text"] = _exc_formatter.formatException(d["exc_info"])
        d["exc_info"] = None
    bound = _bound_fields()
    if bound:
        for key, value in bound.items():
            d.setdefault(key, value)
    if len(d) > _N:
        _picklable_extras(d)
    new: Any = _new(cls)
    new.__dict__ = d
    if _switch.on:
        remember(new, copy_context())
    return new  # type: ignore[no-any-return]


def _picklable_extras(d: dict[str, Any]) -> None:
    """Replace each extra value that cannot be pickled by its ``repr()`` (in place),
    and each dict, list or set by a copy: a stdlib handler formats the value as it is
    at the call, and the caller may change it right after."""
    for key, value in d.items():
        if key in _NOT_EXTRA or type(value) in _IMMUTABLE:
            continue
        if type(value) in _COPIED:
            value = d[key] = value.copy()
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - any failure: the value cannot travel as is
            d[key] = _safe_repr(value)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not cost the record
        return f"<unrepresentable {type(value).__name__}>"


def _subclass_message(record: logging.LogRecord, own: bool) -> str | None:
    """The message of a subclass's record, built now; None to leave it to the sinks:
    nothing to merge; immutable arguments where the subclass has its ``own``
    ``getMessage()`` (the record stays of its class, and each sink's formatter builds
    the message with it, as a handler does); or a message that cannot be built (each
    sink reports it)."""
    args, msg = record.args, record.msg
    if type(msg) is str and (
        not args or (own and type(args) is tuple and all(type(a) in _IMMUTABLE for a in args))
    ):
        return None
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - kept unmerged: each sink reports it
        return None


def own_items(items: list[Item]) -> list[Item]:
    """``items`` with each ``LogRecord`` replaced by a copy of its own (carrying the
    context it was logged in): one object is queued to every lane, and a lane whose
    sink changes its records (a filter adding a field, a handler on another thread)
    must not change what the other lanes format, in whatever order the lanes run.
    Frozen records are thawed per lane already."""
    out: list[Item] = []
    for item in items:
        if type(item) is not tuple:
            record: Any = item
            new: Any = _new(type(record))
            new.__dict__ = record.__dict__.copy()
            ctx = context_of(record)
            if ctx is not None:
                remember(new, ctx)
            item = new
        out.append(item)
    return out


def thaw(values: Frozen) -> logging.LogRecord:
    """The ``LogRecord`` a frozen record stands for: deferred arguments are its
    ``args`` again, beside the unmerged ``msg``, as on the record the caller made (a
    formatter that reads ``record.args``, as uvicorn's access formatter does, or swaps
    ``msg`` before ``getMessage()``, gets what it would on a stdlib handler)."""
    record: Any = _new(_LogRecord)
    record.__dict__ = frozen_dict(values, merge=False)
    return record  # type: ignore[no-any-return]


def frozen_dict(values: Frozen, merge: bool = True) -> dict[str, Any]:
    """The ``__dict__`` of the record a frozen record stands for (a new dict), with
    ``msg % args`` merged (``merge``: as ``SocketHandler.makePickle`` sends it; kept
    unmerged when it fails, for the sink to report) or with the arguments as
    ``args``."""
    d = dict(zip(FIELDS, values))  # noqa: B905 - deferred arguments and extras follow
    if len(values) > _N:
        args = deferred(values)
        last = values[-1]
        if type(last) is tuple:  # extra= attributes, after the standard ones
            d.update(zip(last, values[-1 - len(last) : -1]))  # noqa: B905
        if args:
            if not merge:
                d["args"] = args
            else:
                try:
                    d["msg"] = d["msg"] % args
                except Exception:  # noqa: BLE001 - kept unmerged: each sink reports it
                    d["args"] = args
    text = d["exc_text"]
    if type(text) is ExcText:
        d["exc_text"] = text.text()
    return d


def deferred(v: Frozen) -> tuple[Any, ...]:
    """The arguments of ``v``'s message deferred by the shim (``()``: none)."""
    n = len(v)
    if n == _N:
        return ()
    last = v[-1]
    if type(last) is tuple:  # extras follow the arguments
        return v[_N : n - 1 - len(last)]
    return v[_N:]


def deferred_positions(nargs: int) -> range:
    """Where in a frozen record its ``nargs`` deferred arguments are."""
    return range(_N, _N + nargs)


def extras(v: Frozen) -> dict[str, Any]:
    """The ``extra=`` attributes a frozen record carries (a new dict)."""
    last = v[-1]
    if len(v) == _N or type(last) is not tuple:
        return {}
    return dict(zip(last, v[-1 - len(last) : -1]))  # noqa: B905


def field_index(key: str) -> int:
    """Where a ``%(key)s`` format field's value is in every frozen record (-1: not
    in every one). ``message`` is ``msg``: a merged message, when the formatter
    takes the record (records whose message is not merged take another path)."""
    if key == "message":
        return MSG
    return FIELDS.index(key) if key in FIELDS else -1


#: a frozen record of a plain message (to try a compiled format on)
SAMPLE: Frozen = tuple(
    logging.LogRecord("name", logging.INFO, "path", 1, "m", None, None).__dict__.values()
)


def as_record(item: Item) -> logging.LogRecord:
    """``item`` as a ``LogRecord`` (thawed when it is frozen)."""
    return thaw(item) if type(item) is tuple else item  # type: ignore[return-value]


def level_name_of(item: Item) -> str:
    """The ``levelname`` of a frozen or plain record."""
    if type(item) is tuple:
        return item[LEVELNAME]  # type: ignore[no-any-return]
    return item.levelname  # type: ignore[union-attr]


class RecordBatch(Sequence[logging.LogRecord]):
    """The records of one ``emit_batch`` call: a sequence of ``LogRecord``.

    Frozen records are thawed on first access to the sequence (all of them, once);
    sinks that can work from :attr:`items` directly never pay for it.
    """

    __slots__ = ("_records", "items")

    def __init__(self, items: list[Item]) -> None:
        #: the records as they travelled: frozen tuples and ``LogRecord`` objects
        self.items = items
        self._records: list[logging.LogRecord] | None = None

    @property
    def thawed(self) -> bool:
        """True once the records were built (a sink or a filter asked for them)."""
        return self._records is not None

    def records(self) -> list[logging.LogRecord]:
        """Every record as a ``LogRecord`` (thawed once, then cached)."""
        if self._records is None:
            self._records = [
                thaw(i) if type(i) is tuple else i  # type: ignore[misc]
                for i in self.items
            ]
        return self._records

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> logging.LogRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[logging.LogRecord]: ...

    def __getitem__(self, index: int | slice) -> logging.LogRecord | list[logging.LogRecord]:
        return self.records()[index]

    def __iter__(self) -> Iterator[logging.LogRecord]:
        return iter(self.records())

    def __repr__(self) -> str:
        return f"<RecordBatch of {len(self.items)}>"

    # -- what sinks read, without touching the frozen format (added for the network
    # sinks; they never see a frozen tuple)

    @classmethod
    def of(cls, records: Sequence[logging.LogRecord]) -> RecordBatch:
        """``records`` as a batch: a dispatcher's batch as it travelled, or a batch of
        the given ``LogRecord`` objects (also of a batch already thawed, whose records
        a filter may have changed)."""
        if type(records) is cls:
            return records if records._records is None else cls(list(records._records))
        return cls(list(records))

    def record(self, i: int) -> logging.LogRecord:
        """Record ``i`` as a ``LogRecord``, thawing only that one (e.g. to report it)."""
        if self._records is not None:
            return self._records[i]
        item = self.items[i]
        return thaw(item) if type(item) is tuple else item  # type: ignore[return-value]

    def level_name(self, index: int) -> str:
        """The ``levelname`` of record ``index``."""
        return level_name_of(self.items[index])

    def pickle_dicts(self) -> list[dict[str, Any] | None]:
        """For each record, the dict ``SocketHandler.makePickle`` pickles (``msg``
        merged, ``args``/``exc_info`` None), built without a ``LogRecord``; None for a
        record that must go through ``makePickle`` itself (a ``LogRecord``, or a
        message that could not be merged: ``makePickle`` raises as the stdlib's)."""
        out: list[dict[str, Any] | None] = []
        for item in self.items:
            if type(item) is tuple:
                d = frozen_dict(item)
                if not d["args"]:  # merged (exception info is already rendered)
                    d["args"] = None
                    out.append(d)
                    continue
            out.append(None)
        return out


def travelled(records: Sequence[logging.LogRecord]) -> list[Item] | None:
    """The items of a dispatcher's batch as they travelled (frozen records still
    frozen), or None when ``records`` is not such a batch or was already thawed."""
    if type(records) is RecordBatch and not records.thawed:
        return records.items
    return None


def passing(items: list[Item], level: int) -> list[Item]:
    """The records of ``items`` whose level is at least ``level`` (``items`` if all are)."""
    try:
        # all frozen (the common case): one C-level pass finds that every one passes
        if min(map(_levelno, items), default=level) >= level:  # type: ignore[arg-type]
            return items
    except TypeError:  # a LogRecord among them
        pass
    out = []
    for i in items:
        levelno = i[LEVELNO] if type(i) is tuple else i.levelno  # type: ignore[union-attr]
        try:
            if levelno < level:
                continue
        except TypeError:
            pass  # not a level (a hand-made record): the sink gets it and reports it
        out.append(i)
    return items if len(out) == len(items) else out
