"""StreamSink and NullSink: the async counterparts of StreamHandler and NullHandler."""

from __future__ import annotations

import logging
import operator
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, cast

from .._fileio import FileWorker
from .._record import (
    ARGS,
    CREATED,
    EXC_TEXT,
    FIELDS,
    MSECS,
    MSG,
    STACK_INFO,
    Frozen,
    Item,
    RecordBatch,
    as_record,
)
from .._sink import Sink, _default_formatter

__all__ = ["NullSink", "StreamSink"]


class StreamSink(Sink):
    """Write formatted records to a stream (``sys.stderr`` by default).

    As ``logging.StreamHandler``: each record is formatted and followed by
    :attr:`terminator` (``'\\n'``). A batch is written with one ``write`` and one
    ``flush`` on a worker thread, so a slow pipe or terminal never blocks the loop.
    """

    terminator = "\n"

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream: IO[str] = sys.stderr if stream is None else stream
        self._worker = FileWorker(type(self).__name__)

    def formatter_for_batch(self) -> Callable[[logging.LogRecord], str]:
        """The function that formats one record for the batch about to be written.

        :meth:`format` itself, or — when the formatter is a plain
        ``logging.Formatter`` — an inline equivalent that produces the same text with
        the date cached per second (about 3x cheaper per record).
        """
        plain = _plain_percent_format(self)
        if plain is None:
            return self.format
        return _PlainFormat(self.format, *plain)

    def render_each(
        self, records: Sequence[logging.LogRecord]
    ) -> tuple[list[str], Sequence[logging.LogRecord]]:
        """Format each record and add :attr:`terminator`; return the texts and their records.

        A record that cannot be formatted goes to :meth:`handleError` and is left out.
        """
        if type(records) is RecordBatch and not records.thawed:
            plain = _plain_percent_format(self)
            fast = _FrozenFormat.compile(*plain, self.terminator) if plain is not None else None
            if fast is not None:
                return self._render_frozen(records.items, fast)
        term = self.terminator
        fmt = self.formatter_for_batch()
        texts: list[str] = []
        kept: list[logging.LogRecord] = []
        for record in records:
            try:
                texts.append(fmt(record) + term)
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(record)
                continue
            kept.append(record)
        return texts, kept

    def _render_frozen(
        self, items: list[Item], fast: _FrozenFormat
    ) -> tuple[list[str], RecordBatch]:
        # formats straight from the frozen tuples: no LogRecord is ever built for them
        term = self.terminator
        failed = False

        def slow(item: Item) -> str | None:
            nonlocal failed
            record = as_record(item)
            try:
                return self.format(record) + term
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(record)
                failed = True
                return None

        texts = fast.lines(items, slow)
        if not failed:
            return cast("list[str]", texts), RecordBatch(items)
        kept = [item for item, text in zip(items, texts, strict=True) if text is not None]
        return [t for t in texts if t is not None], RecordBatch(kept)

    async def emit(self, record: logging.LogRecord) -> None:
        """Format and write one record (a batch of one)."""
        await self.emit_batch((record,))

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Format every record, then write them with one write and one flush.

        Returns when the batch was written. A record that cannot be formatted or
        encoded goes to :meth:`handleError`; the others are written.
        """
        texts, kept = self.render_each(records)
        await self.write_texts(texts, kept)

    async def write_texts(self, texts: list[str], records: Sequence[logging.LogRecord]) -> None:
        """Write ``texts`` (one per record) as one chunk; errors go to :meth:`handleError`.

        When the chunk cannot be encoded, nothing of it was written (``TextIOWrapper``
        encodes a whole chunk before buffering it), so the records are written one by
        one and only the ones that cannot be encoded fail.
        """
        if not texts:
            return
        try:
            await self.write("".join(texts))
        except UnicodeError:
            for text, record in zip(texts, records, strict=True):
                try:
                    await self.write(text)
                except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                    self._fail(record)
        except Exception:  # noqa: BLE001 - the chunk failed as a whole
            self._fail_batch(records)

    def _fail_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """A write of the whole batch failed: count every record, report the first."""
        self.error_count += max(len(records) - 1, 0)
        self._fail(records[0])

    async def write(self, text: str) -> None:
        """Write ``text`` to the stream and flush it, on the worker thread."""
        await self._worker.run(_write_flush, self.stream, text)

    async def flush(self) -> None:
        """Flush the stream (on the worker thread)."""
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            await self._worker.run(flush)

    async def _aclose(self) -> None:
        # as StreamHandler.close: the stream is the caller's, it is flushed, not closed
        try:
            await self.flush()
        finally:
            self._worker.shutdown()

    def __repr__(self) -> str:
        name = getattr(self.stream, "name", "")
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {name} ({level})>"


def _plain_percent_format(sink: Sink) -> tuple[str, bool, str | None, str, str] | None:
    """``(fmt, uses_time, datefmt, time_format, msec_format)`` when ``sink.format`` is
    exactly ``logging.Formatter.format`` with %-style, no defaults and local time;
    None otherwise (any override falls back to the formatter itself)."""
    f = sink.formatter or _default_formatter
    if type(sink).format is not Sink.format or type(f) is not logging.Formatter:
        return None
    if f.__dict__.keys() & _FORMATTER_HOOKS:
        return None  # a method patched on the instance
    style = f._style
    if type(style) is not logging.PercentStyle or getattr(style, "_defaults", None):
        return None
    if f.converter is not time.localtime or not f.default_msec_format:
        return None
    return style._fmt, style.usesTime(), f.datefmt, f.default_time_format, f.default_msec_format


_FORMATTER_HOOKS = frozenset(
    ("format", "formatTime", "formatMessage", "usesTime", "formatException", "formatStack")
)


class _PlainFormat:
    """``logging.Formatter.format`` for the common case, byte for byte.

    Records with args still to merge, exception or stack text go through the real
    formatter, as do the ones whose message cannot be built.
    """

    __slots__ = ("_datefmt", "_fmt", "_mfmt", "_sec", "_slow", "_stamp", "_tfmt", "_uses_time")

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
        self._fmt, self._uses_time, self._datefmt = fmt, uses_time, datefmt
        self._tfmt, self._mfmt = tfmt, mfmt
        self._sec = -1
        self._stamp = ""

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
            created = record.created
            sec = int(created) if created >= 0 else -1
            if sec != self._sec or sec < 0:
                stamp = time.strftime(self._datefmt or self._tfmt, time.localtime(created))
                self._sec, self._stamp = sec, stamp
            else:
                stamp = self._stamp
            record.asctime = stamp if self._datefmt else self._mfmt % (stamp, record.msecs)
        return self._fmt % record.__dict__


# a %-style field, as logging.PercentStyle validates it, or an escaped percent sign
_FIELD = re.compile(r"%%|%\((\w+)\)([#0+ -]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxefgcrsa%])")
_SAMPLE: Frozen = tuple(
    logging.LogRecord("name", logging.INFO, "path", 1, "m", None, None).__dict__.values()
)


class _FrozenFormat:
    """``logging.Formatter.format`` on frozen records, for the common case.

    The formatter's ``%(key)`` fields are turned into positional ones once and the
    time stamp is written into the format itself (it changes once a millisecond), so
    each record is one ``%`` of an ``itemgetter`` tuple: no ``LogRecord``, no dict.
    Records it does not cover (exception or stack text, a message that could not be
    merged) go to the real formatter, which produces the same text or reports the
    error.
    """

    __slots__ = ("_datefmt", "_fields", "_mfmt", "_pieces", "_sec", "_stamp", "_tfmt")

    def __init__(
        self,
        pieces: list[str],
        fields: Callable[[Frozen], tuple[Any, ...]],
        datefmt: str | None,
        tfmt: str,
        mfmt: str,
    ) -> None:
        #: positional format text, with a ``%(asctime)`` spec at every odd index
        self._pieces = pieces
        self._fields = fields
        self._datefmt, self._tfmt, self._mfmt = datefmt, tfmt, mfmt
        self._sec = -1
        self._stamp = ""

    @classmethod
    def compile(
        cls, fmt: str, uses_time: bool, datefmt: str | None, tfmt: str, mfmt: str, term: str
    ) -> _FrozenFormat | None:
        """The formatter for the %-style ``fmt`` followed by ``term``, or None when a
        field is not one every frozen record has (the real formatter then decides)."""
        pieces: list[str] = []
        text: list[str] = []
        indices: list[int] = []
        pos = 0
        for m in _FIELD.finditer(fmt):
            if "%" in fmt[pos : m.start()]:
                return None  # a stray "%": the real formatter reports it
            text.append(fmt[pos : m.start()])
            pos = m.end()
            key, spec = m.group(1), m.group(2)
            if key is None:
                text.append("%%")
            elif key == "asctime":
                pieces.append("".join(text))
                pieces.append("%" + spec)
                text = []
            else:
                index = _field_index(key)
                if index < 0:
                    return None
                indices.append(index)
                text.append("%" + spec)
        rest = fmt[pos:]
        if "%" in rest:
            return None
        text.append(rest + term.replace("%", "%%"))
        pieces.append("".join(text))
        if len(pieces) > 1 and not uses_time:
            return None
        fields = _getter(indices)
        self = cls(pieces, fields, datefmt, tfmt, mfmt)
        try:
            self._timed("asctime") % fields(_SAMPLE)
        except (TypeError, ValueError):
            return None  # a conversion the positional form does not take (e.g. "*")
        return self

    def _timed(self, asctime: str) -> str:
        """The positional format with ``asctime`` written in."""
        pieces = self._pieces
        if len(pieces) == 1:
            return pieces[0]
        out = [pieces[0]]
        for i in range(1, len(pieces), 2):
            out.append((pieces[i] % asctime).replace("%", "%%"))
            out.append(pieces[i + 1])
        return "".join(out)

    def lines(self, items: list[Item], slow: Callable[[Item], str | None]) -> list[str | None]:
        """The line of each item; ``slow(item)`` for those this formatter does not cover.

        Not covered: a record that is not frozen, has exception or stack text, or
        whose message could not be merged (``args`` kept).
        """
        fields, timed = self._fields, len(self._pieces) > 1
        fmt = self._pieces[0]
        out: list[str | None] = []
        append = out.append
        # the time stamp is the same within one millisecond of one second
        lo, hi, ms = 0.0, -1.0, -1.0
        for v in items:
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
                if v[MSECS] != ms or not lo <= created < hi:
                    ms = v[MSECS]
                    lo = float(int(created))
                    hi = lo + 1.0
                    fmt = self._timed(self._asctime(created, ms))
            append(fmt % fields(v))
        return out

    def _asctime(self, created: float, msecs: float) -> str:
        """``Formatter.formatTime`` with ``converter=time.localtime``, cached per second."""
        sec = int(created) if created >= 0 else -1
        if sec != self._sec or sec < 0:
            self._stamp = time.strftime(self._datefmt or self._tfmt, time.localtime(created))
            self._sec = sec
        return self._stamp if self._datefmt else self._mfmt % (self._stamp, msecs)


def _field_index(key: str) -> int:
    """Where a format field's value is in a frozen record (-1: it has none)."""
    if key == "message":
        return MSG  # a covered record's msg is its merged message
    return FIELDS.index(key) if key in FIELDS else -1


def _getter(indices: list[int]) -> Callable[[Frozen], tuple[Any, ...]]:
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    if indices:
        i = indices[0]
        return lambda v: (v[i],)
    return lambda v: ()


def _write_flush(stream: Any, text: str) -> None:
    stream.write(text)
    flush = getattr(stream, "flush", None)
    if flush is not None:
        flush()


class NullSink(Sink):
    """A sink that does nothing (``logging.NullHandler``), for libraries and tests."""

    async def emit(self, record: logging.LogRecord) -> None:
        """Do nothing."""

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Do nothing."""

    async def handle(self, record: logging.LogRecord) -> bool:
        """Do nothing; return ``True``."""
        return True
