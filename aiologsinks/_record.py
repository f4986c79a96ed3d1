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

Only exact ``LogRecord`` instances with exactly the standard attributes are frozen;
anything else (a subclass, ``extra=`` keys, attributes added by a filter) travels as
a prepared ``LogRecord`` copy, as before. Both kinds can sit in the same queue.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterator, Sequence
from typing import Any, overload

__all__ = [
    "FIELDS",
    "N_FIELDS",
    "Frozen",
    "Item",
    "RecordBatch",
    "as_record",
    "freeze",
    "frozen_dict",
    "level_name_of",
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
MSECS = FIELDS.index("msecs")

#: exact types whose values cannot change after the logging call
_IMMUTABLE = frozenset((str, int, float, bool, bytes, type(None)))
_exc_formatter = logging.Formatter()
_LogRecord = logging.LogRecord
_new = object.__new__


def freeze(record: logging.LogRecord) -> Item:
    """Return what the shim queues for ``record``: a frozen tuple when it can be.

    Either way the result is safe to hand to another thread and to keep: ``msg %
    args`` is merged into ``msg`` now (so mutating an argument after the call cannot
    change the output), exception info is rendered into ``exc_text`` and dropped
    (tracebacks hold frames).
    """
    d = record.__dict__
    if type(record) is not _LogRecord or len(d) != _N:
        return prepared_copy(record)
    try:
        tail: Frozen = _take_tail(d)
        name, msg, args = d["name"], d["msg"], d["args"]
    except KeyError:  # as many attributes, but not the standard ones
        return prepared_copy(record)
    exc_info = d["exc_info"]
    if not exc_info and type(msg) is str and type(args) is tuple and args:
        # Arguments of immutable types cannot change after the call: they travel after
        # the fields, unmerged, and are merged where the record is formatted (or
        # thawed) - off the logging call. Not as a nested tuple: the GC untracks a
        # tuple only once its items are untracked, so a nested one would keep the
        # record tracked a collection longer.
        for arg in args:
            if type(arg) not in _IMMUTABLE:
                break
        else:
            return (name, msg, None) + tail + args  # noqa: RUF005 - two copies, not three
    merged = _merged(msg, args)
    if not exc_info:
        if merged is not None:
            return (name, merged, None) + tail  # noqa: RUF005 - one copy, not two
        if type(msg) is str and not args:
            return (name, msg, args) + tail  # noqa: RUF005
    # exception info to render, or a message that cannot be merged (kept for the sinks)
    fixed = list(_take(d))
    if merged is not None:
        fixed[MSG], fixed[ARGS] = merged, None
    if exc_info:
        if not fixed[EXC_TEXT]:
            fixed[EXC_TEXT] = _exc_formatter.formatException(exc_info)
        fixed[EXC_INFO] = None
    return tuple(fixed)


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
    error to its own ``handleError``.
    """
    d = record.__dict__.copy()
    if type(record) is _LogRecord:
        merged = _merged(d["msg"], d["args"])
    else:  # a LogRecord subclass may build its message differently
        merged = _subclass_message(record)
    if merged is not None:
        d["msg"], d["args"] = merged, None
    if d.get("exc_info"):
        if not d.get("exc_text"):
            d["exc_text"] = _exc_formatter.formatException(d["exc_info"])
        d["exc_info"] = None
    new: Any = _new(type(record))
    new.__dict__ = d
    return new  # type: ignore[no-any-return]


def _subclass_message(record: logging.LogRecord) -> str | None:
    if not record.args and type(record.msg) is str:
        return None
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - kept unmerged: each sink reports it
        return None


def thaw(values: Frozen) -> logging.LogRecord:
    """The ``LogRecord`` a frozen record stands for, with ``msg % args`` merged."""
    record: Any = _new(_LogRecord)
    record.__dict__ = frozen_dict(values)
    return record  # type: ignore[no-any-return]


def frozen_dict(values: Frozen) -> dict[str, Any]:
    """The ``__dict__`` of the record :func:`thaw` builds (a new dict)."""
    d = dict(zip(FIELDS, values))  # noqa: B905 - deferred arguments follow the fields
    if len(values) > _N:
        args = values[_N:]
        try:
            d["msg"] = d["msg"] % args
        except Exception:  # noqa: BLE001 - kept unmerged: each sink reports it
            d["args"] = args
    return d


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

    def level_names(self) -> list[str]:
        """The ``levelname`` of each record."""
        return [level_name_of(i) for i in self.items]

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
    out = [i for i in items if (i[LEVELNO] if type(i) is tuple else i.levelno) >= level]  # type: ignore[union-attr]
    return items if len(out) == len(items) else out
