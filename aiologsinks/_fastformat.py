"""``logging.Formatter.format``, byte for byte, for the common case, made cheap.

The stream and file sinks spend most of their loop time formatting. When a sink's
formatter is a plain ``logging.Formatter`` (%-style, local time, no overridden
method) these formatters produce exactly its text, much faster:

* :class:`PlainFormat` formats a ``LogRecord`` with the time stamp cached per second;
* :class:`FrozenFormat` formats the shim's frozen records (see ``_record.py``)
  without building a ``LogRecord`` at all: the format's fields become positional,
  the time stamp (and, for messages whose arguments were deferred, the message
  template itself) is written into the format, and each record is one ``%`` of one
  ``itemgetter`` tuple.

Anything they do not cover goes to the real formatter, which then produces the same
text or raises the same error.
"""

from __future__ import annotations

import logging
import math
import operator
import re
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

from ._hooks import own_hook
from ._record import (
    ACCELERATED,
    ARGS,
    CREATED,
    EXC_TEXT,
    MSECS,
    MSG,
    N_FIELDS,
    SAMPLE,
    STACK_INFO,
    Frozen,
    Item,
    RecordBatch,
    as_record,
    deferred,
    deferred_positions,
    field_index,
    travelled,
)
from ._sink import Sink, _default_formatter

#: the compiled inner loop of FrozenFormat.lines (see _speedups.c), or None: the
#: loop in Python is complete
_format_run: Callable[..., int] | None = None
_Fields: Callable[[list[int]], Callable[[Frozen], tuple[Any, ...]]] | None = None
if ACCELERATED:
    from ._speedups import Fields as _Fields
    from ._speedups import format_run as _format_run

__all__ = ["FrozenFormat", "PlainFormat", "format_batch", "plain_percent_format"]

PlainSpec = tuple[str, bool, "str | None", str, str]

#: each sink's compiled FrozenFormat and what it was compiled for (weakly: per sink)
_compiled: weakref.WeakKeyDictionary[Sink, tuple[tuple[PlainSpec, str], FrozenFormat | None]] = (
    weakref.WeakKeyDictionary()
)


def plain_percent_format(sink: Sink) -> PlainSpec | None:
    """``(fmt, uses_time, datefmt, time_format, msec_format)`` when ``sink.format`` is
    exactly ``logging.Formatter.format`` with %-style, no defaults and local time;
    None otherwise (any override falls back to the formatter itself)."""
    f = sink.formatter or _default_formatter
    if own_hook(sink, "format", Sink.format) or type(f) is not logging.Formatter:
        return None
    if f.__dict__.keys() & FORMATTER_HOOKS:
        return None  # a method patched on the instance
    style = f._style
    if type(style) is not logging.PercentStyle or getattr(style, "_defaults", None):
        return None
    if f.converter is not time.localtime or not f.default_msec_format:
        return None
    return style._fmt, style.usesTime(), f.datefmt, f.default_time_format, f.default_msec_format


#: a Formatter's methods that, set on an instance, make it not a plain one
FORMATTER_HOOKS = frozenset(
    ("format", "formatTime", "formatMessage", "usesTime", "formatException", "formatStack")
)


def format_batch(
    sink: Sink, records: Sequence[logging.LogRecord], term: str
) -> tuple[list[str], RecordBatch] | None:
    """``(texts, kept)``: each record formatted by ``sink`` plus ``term``, and the
    records that were; None unless the frozen fast path applies (a dispatcher's batch,
    not thawed, and a plain formatter). A record that cannot be formatted goes to the
    sink's ``handleError`` (counted) and is left out.
    """
    items = travelled(records)
    if items is None:
        return None
    spec = plain_percent_format(sink)
    if spec is None:
        return None
    # compiled once per sink and format; it also remembers the message templates
    cached = _compiled.get(sink)
    if cached is not None and cached[0] == (spec, term):
        fast: FrozenFormat | None = cached[1]
    else:
        fast = FrozenFormat.compile(spec, term)
        _compiled[sink] = ((spec, term), fast)
    if fast is None:
        return None
    failed = False

    def slow(item: Item) -> str | None:
        nonlocal failed
        record = as_record(item)
        try:
            return sink.format(record) + term
        except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
            sink.report_error(record)
            failed = True
            return None

    texts = fast.lines(items, slow)
    if not failed:
        return cast("list[str]", texts), RecordBatch(items)
    kept = [item for item, text in zip(items, texts, strict=True) if text is not None]
    return [t for t in texts if t is not None], RecordBatch(kept)


class _Stamps:
    """``Formatter.formatTime`` with ``converter=time.localtime``, cached per second."""

    __slots__ = ("_datefmt", "_mfmt", "_sec", "_stamp", "_tfmt")

    def __init__(self, datefmt: str | None, tfmt: str, mfmt: str) -> None:
        self._datefmt, self._tfmt, self._mfmt = datefmt, tfmt, mfmt
        self._sec = -1
        self._stamp = ""

    def asctime(self, created: float, msecs: float) -> str:
        stamp = self.second(created)
        return stamp if self._datefmt else self._mfmt % (stamp, msecs)

    def second(self, created: float) -> str:
        """The stamp of ``created``'s second, before the milliseconds are added."""
        sec = int(created) if created >= 0 else -1
        if sec != self._sec or sec < 0:
            self._stamp = time.strftime(self._datefmt or self._tfmt, time.localtime(created))
            self._sec = sec
        return self._stamp


class PlainFormat:
    """``logging.Formatter.format`` of a ``LogRecord``, for the common case.

    Records with args still to merge, exception or stack text go through the real
    formatter, as do the ones whose message cannot be built.
    """

    __slots__ = ("_fmt", "_slow", "_stamps", "_uses_time")

    def __init__(
        self,
        slow: Callable[[logging.LogRecord], str],
        fmt: str,
        uses_time: bool,
        datefmt: str | None,
        tfmt: str,
        mfmt: str,
    ) -> None:
        self._slow = slow
        self._fmt, self._uses_time = fmt, uses_time
        self._stamps = _Stamps(datefmt, tfmt, mfmt)

    def __call__(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if (
            record.args
            or type(msg) is not str
            or record.exc_info
            or record.exc_text
            or record.stack_info
        ):
            return self._slow(record)
        record.message = msg
        if self._uses_time:
            record.asctime = self._stamps.asctime(record.created, record.msecs)
        return self._fmt % record.__dict__


# a %-style field, as logging.PercentStyle validates it, or an escaped percent sign
_FIELD = re.compile(r"%%|%\((\w+)\)([#0+ -]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxefgcrsa%])")
# in FrozenFormat's token list: literal positional text, an asctime spec, the message,
# the seconds part of an asctime whose milliseconds are a field of their own
_TEXT, _TIME, _MESSAGE, _SECOND = 0, 1, 2, 3
# a msec format that appends the milliseconds to the seconds' stamp, as the default
_MSEC_FORMAT = re.compile(r"%s([^%]*)%03d([^%]*)")
_MESSAGE_AT = -1  # stands for the message's place in the field indices
_CACHE_MAX = 256
_UNSEEN: Any = object()  # message templates remembered (call sites; bounded for f-strings)


class FrozenFormat:
    """``logging.Formatter.format`` of frozen records, for the common case.

    Covered: frozen records without exception or stack text whose message is merged
    or mergeable. A record whose immutable arguments were deferred by the shim is
    formatted with its template written into the format (where the format has one
    ``%(message)s``), its arguments taken by the same ``itemgetter``: merging and
    formatting in one ``%``. That is the template's own ``%`` merge, positionally:
    a template is used that way only after ``template % args`` succeeded once with
    as many arguments, which proves it consumes exactly them.
    """

    __slots__ = (
        "_fields",
        "_formats",
        "_indices",
        "_joined",
        "_merged",
        "_split",
        "_stamps",
        "_templates",
        "_timed",
        "_tokens",
    )

    def __init__(
        self,
        tokens: list[tuple[int, str]],
        indices: list[int],
        joined: bool,
        stamps: _Stamps,
    ) -> None:
        self._tokens = tokens
        self._indices = indices
        #: templates can be written into the format (one plain %(message)s)
        self._joined = joined
        self._stamps = stamps
        self._timed = any(kind in (_TIME, _SECOND) for kind, _ in tokens)
        #: the milliseconds are a field: the format changes once a second, not once a
        #: millisecond (with records spread over time, most lines start a millisecond)
        self._split = any(kind == _SECOND for kind, _ in tokens)
        regular = [MSG if i == _MESSAGE_AT else i for i in indices]
        self._fields = _getter(regular)
        # from (merged message,) + a frozen record
        self._merged = _getter([0 if i == MSG else i + 1 for i in regular])
        #: template -> (number of arguments, getter), or None: not joinable
        self._templates: dict[str, tuple[int, Callable[[Frozen], tuple[Any, ...]]] | None] = {}
        #: the formats for the current time stamp: None -> the regular one, or a template
        self._formats: dict[str | None, str] = {}

    @classmethod
    def compile(cls, spec: PlainSpec, term: str) -> FrozenFormat | None:
        """The formatter for ``spec`` (see :func:`plain_percent_format`) followed by
        ``term``, or None when a field is not one every frozen record has."""
        fmt, uses_time, datefmt, tfmt, mfmt = spec
        tokens: list[tuple[int, str]] = []
        indices: list[int] = []
        messages = 0
        pos = 0
        msec = _MSEC_FORMAT.fullmatch(mfmt)
        # asctime as "<second's stamp><sep>%03d" % msecs: only a plain %(asctime)s
        split = (
            datefmt is None
            and msec is not None
            and all(m.group(2) == "s" for m in _FIELD.finditer(fmt) if m.group(1) == "asctime")
        )
        for m in _FIELD.finditer(fmt):
            if "%" in fmt[pos : m.start()]:
                return None  # a stray "%": the real formatter reports it
            tokens.append((_TEXT, fmt[pos : m.start()]))
            pos = m.end()
            key, conv = m.group(1), m.group(2)
            if key is None:
                tokens.append((_TEXT, "%%"))
            elif key == "asctime" and split:
                assert msec is not None
                tokens.append((_SECOND, ""))
                tokens.append((_TEXT, msec.group(1) + "%03d" + msec.group(2)))
                indices.append(MSECS)
            elif key == "asctime":
                tokens.append((_TIME, "%" + conv))
            elif key in ("msg", "args"):
                return None  # as the caller gave them: the real formatter reads them
            elif key == "message" and conv == "s":
                messages += 1
                tokens.append((_MESSAGE, ""))
                indices.append(_MESSAGE_AT)
            else:
                index = field_index(key)
                if index < 0:
                    return None
                indices.append(index)
                tokens.append((_TEXT, "%" + conv))
        if "%" in fmt[pos:]:
            return None
        tokens.append((_TEXT, fmt[pos:] + term.replace("%", "%%")))
        if not uses_time and any(kind in (_TIME, _SECOND) for kind, _ in tokens):
            return None
        # joinable: the message is used once, as a plain %s (no other field reads msg)
        joined = messages == 1 and MSG not in indices
        self = cls(tokens, indices, joined, _Stamps(datefmt, tfmt, mfmt))
        try:
            self._format("asctime", None) % self._fields(SAMPLE)
        except (TypeError, ValueError):
            return None  # a conversion the positional form does not take (e.g. "*")
        return self

    def _format(self, asctime: str, template: str | None) -> str:
        """The positional format with ``asctime`` (in split mode the second's stamp)
        and the message template written in."""
        out = []
        for kind, text in self._tokens:
            if kind == _TEXT:
                out.append(text)
            elif kind == _TIME:
                out.append((text % asctime).replace("%", "%%"))
            elif kind == _SECOND:
                out.append(asctime.replace("%", "%%"))
            else:
                out.append("%s" if template is None else template)
        return "".join(out)

    def _learn(self, template: str, v: Frozen) -> tuple[int, Any] | None:
        """Whether ``template`` (with ``v``'s deferred arguments) can be written into
        the format; None when not (or not now: a merge that fails depends on values)."""
        if not self._joined:
            return None
        args = deferred(v)
        try:
            template % args
        except Exception:  # noqa: BLE001 - the merge path reports it
            return None
        indices: list[int] = []
        for i in self._indices:
            indices.extend(deferred_positions(len(args)) if i == _MESSAGE_AT else (i,))
        if len(self._templates) >= _CACHE_MAX:
            self._templates.clear()
        entry = self._templates[template] = (len(args), _getter(indices))
        return entry

    def lines(self, items: list[Item], slow: Callable[[Item], str | None]) -> list[str | None]:
        """The line of each item; ``slow(item)`` for those this formatter does not cover.

        Not covered: a record that is not frozen, has exception or stack text, or
        whose message could not be merged.
        """
        fields, merged, timed, split = self._fields, self._merged, self._timed, self._split
        templates, formats = self._templates, self._formats
        asctime = ""
        fmt = formats.get(None) or self._format(asctime, None)
        out: list[str | None] = []
        append = out.append
        last: str | None = None  # the template of the previous deferred record ...
        entry: tuple[int, Any] | None = None  # ... what is known of it ...
        last_joined: str | None = None  # ... and its format for the current time stamp
        # the time stamp is the same within one millisecond of one second (within the
        # second in split mode, where ms stays negative: not compared)
        lo, hi, ms = 0.0, -1.0, -1.0
        i, n = 0, len(items)
        run = _format_run if type(items) is list else None
        while i < n:
            if run is not None:
                # the compiled loop formats the records this state covers, the same
                # way; this loop takes the one it stops at
                i = run(items, i, out, fmt, fields, templates, formats, lo, hi, ms, timed)
                if i >= n:
                    break
            v = items[i]
            i += 1
            if (
                type(v) is not tuple
                or v[EXC_TEXT]
                or v[STACK_INFO]
                or v[ARGS]
                or type(v[MSG]) is not str
            ):
                append(slow(v))
                continue
            if timed:
                created = v[CREATED]
                if (ms >= 0.0 and v[MSECS] != ms) or not lo <= created < hi:
                    lo = float(math.floor(created))  # localtime() rounds down, as floor
                    hi = lo + 1.0
                    if split:
                        asctime = self._stamps.second(created)
                    else:
                        ms = v[MSECS]
                        asctime = self._stamps.asctime(created, ms)
                    formats.clear()
                    fmt = formats[None] = self._format(asctime, None)
                    last_joined = None
            args = deferred(v) if len(v) != N_FIELDS else ()
            if not args:  # nothing to merge (extra= attributes at most)
                try:
                    append(fmt % fields(v))
                except Exception:  # noqa: BLE001 - a field that does not fit: the real formatter reports it
                    append(slow(v))
                continue
            # arguments deferred by the shim: merge while formatting
            template = v[MSG]
            if template is not last:  # consecutive records mostly share their template
                entry = templates.get(template, _UNSEEN)
                if entry is _UNSEEN:
                    entry = self._learn(template, v)
                last, last_joined = template, None
            if entry is not None and entry[0] == len(args):
                if last_joined is None:
                    joined = formats.get(template)
                    if joined is None:
                        if len(formats) >= _CACHE_MAX:
                            formats.clear()
                            formats[None] = fmt
                        joined = formats[template] = self._format(asctime, template)
                    last_joined = joined
                try:
                    append(last_joined % entry[1](v))
                except Exception:  # noqa: BLE001 - these values do not fit: the real formatter reports it
                    append(slow(v))
                continue
            try:
                message = template % args
            except Exception:  # noqa: BLE001 - the real formatter reports it
                append(slow(v))
                continue
            try:
                append(fmt % merged((message,) + v))  # noqa: RUF005 - one copy
            except Exception:  # noqa: BLE001 - a field that does not fit: the real formatter reports it
                append(slow(v))
        return out


def _getter(indices: list[int]) -> Callable[[Frozen], tuple[Any, ...]]:
    if _Fields is not None and len(indices) <= 64:
        # the compiled loop reads a record's values through it without a tuple
        return _Fields(indices)
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    if indices:
        i = indices[0]
        return lambda v: (v[i],)
    return lambda v: ()
