"""Rotating file sinks: the async counterparts of the stdlib's rotating file handlers.

The decisions (when to roll over, which names the backups get, which backups to
delete) are the stdlib's, so the files left on disk are the same; the disk work
(renames, removals, ``stat``, ``listdir``, compression) runs on the sink's own
worker thread, in order with its writes.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence

from .._fastformat import format_batch
from .._fileio import AsyncTextFile, ByteCounter, gzip_file, shift_backups
from .._hooks import own_hook
from .._record import Item, RecordBatch
from .._sink import emit_one
from .._validate import check_callable, check_instance, check_int, check_str, value_error
from .file import FileSink

__all__ = [
    "BaseRotatingSink",
    "RotatingFileSink",
    "TimedRotatingFileSink",
    "gzip_namer",
    "gzip_rotator",
]

_MIDNIGHT = 24 * 60 * 60  # seconds in a day
_YIELD_EVERY = 128  # records formatted between two yields to the loop

#: a namer: ``namer(default_name) -> name``, plain or async
Namer = Callable[[str], str | Awaitable[str]]
#: a rotator: ``rotator(source, dest)``, plain (run on the worker thread) or async
Rotator = Callable[[str, str], Awaitable[None] | None]


def gzip_namer(default_name: str) -> str:
    """Namer to pair with :func:`gzip_rotator`: ``app.log.1`` -> ``app.log.1.gz``."""
    return default_name + ".gz"


def gzip_rotator(source: str, dest: str) -> None:
    """Rotator that gzips ``source`` into ``dest`` and removes ``source``.

    Set ``sink.rotator = gzip_rotator`` and ``sink.namer = gzip_namer``. A rotating
    sink calls a plain rotator on its worker thread, so compression never blocks the
    event loop; called directly, this function blocks (it is plain file I/O). The
    archive is written under a temporary name and renamed into place.
    """
    gzip_file(source, dest)


class BaseRotatingSink(FileSink):
    """Base of the rotating sinks (``logging.handlers.BaseRotatingHandler``).

    Subclasses define :meth:`shouldRollover` (a plain function, called per record
    before it is written) and :meth:`doRollover` (a coroutine). A batch is written in
    chunks: records are rendered and collected until one needs a rollover; then the
    chunk is written, the rollover awaited, and collecting goes on in the new file.
    So a batch that crosses several rollovers splits exactly where the stdlib's
    record-by-record handler would.

    ``namer`` and ``rotator`` are attributes, as in the stdlib, and may be plain or
    async callables. A plain rotator runs on the sink's worker thread; an async one is
    awaited on the loop and must not block it. A namer runs on the loop (it computes
    a name). When either raises, the record that triggered the rollover goes to
    :meth:`handleError` and is dropped, as with the stdlib handler.
    """

    namer: Namer | None = None
    rotator: Rotator | None = None

    #: True when shouldRollover needs the file open (it reads the file's size)
    _check_needs_open = False

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str,
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
        *,
        mkdir: bool = False,
    ) -> None:
        super().__init__(filename, mode, encoding, delay, errors, mkdir=mkdir)
        #: the per-record formatter of the batch being written (see formatter_for_batch)
        self._batch_format: Callable[[logging.LogRecord], str] = self.format
        #: the record being written and its text (shouldRollover needs it too)
        self._known: tuple[object, str] | None = None

    def rotation_filename(self, default_name: str) -> str | Awaitable[str]:
        """Return the name for a rotated file: ``namer(default_name)``, or unchanged.

        With an async namer this returns its awaitable; the sink awaits it.
        """
        if not callable(self.namer):
            return default_name
        return self.namer(default_name)

    async def _rotation_filename(self, default_name: str) -> str:
        name = self.rotation_filename(default_name)
        if inspect.isawaitable(name):
            name = await name
        return name

    async def rotate(self, source: str, dest: str) -> None:
        """Rotate the current log ``source`` to ``dest``.

        Awaits the rotator: a plain one runs on the worker thread, an async one on the
        loop. Without a rotator, ``source`` is renamed to ``dest`` if it exists.
        """
        rotator = self.rotator
        if not callable(rotator):
            await self._worker.rename_if_exists(source, dest)
        elif _is_async_callable(rotator):
            result = rotator(source, dest)
            if inspect.isawaitable(result):
                await result
        else:
            result = await self._worker.run(rotator, source, dest)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                await result

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Return True when ``record`` must go to a new file; subclasses decide."""
        raise NotImplementedError

    def _rollover_due(self, text: str) -> bool:
        """The built-in rollover test on a record's formatted ``text`` (what the
        subclasses' own ``shouldRollover`` decides on); see :meth:`_preformat`."""
        raise NotImplementedError

    async def doRollover(self) -> None:
        """Close the current file and rotate it; subclasses decide how."""
        raise NotImplementedError

    async def _prepare_check(self) -> None:
        """Get ready for :meth:`shouldRollover` (open the file when it needs the size)."""
        if self._check_needs_open and self._file is None:
            self._file = await self._open()

    async def emit(self, record: logging.LogRecord) -> None:
        """Roll over if needed, then write one record (a batch of one)."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Write ``records`` record by record, rolling over exactly where needed.

        Returns when every record was written or handed to :meth:`handleError`.
        """
        fast = self._preformat(records)
        self._batch_format = self.formatter_for_batch()
        try:
            if fast is None:
                await self._emit_records(records, None)
            else:
                await self._emit_records(*fast)
        finally:
            self._batch_format = self.format
            self._known = None

    def _preformat(
        self, records: Sequence[logging.LogRecord]
    ) -> tuple[list[Item], list[str]] | None:
        """A dispatcher's batch formatted up front from its frozen records, when this
        sink's rollover test is the built-in one (it then reads only the text); None
        otherwise, and every record is built and formatted on its own."""
        if own_hook(self, "shouldRollover", *_BUILT_IN_CHECKS) or own_hook(
            self, "_formatted", _formatted
        ):
            return None
        fast = format_batch(self, records, "")
        if fast is None:
            return None
        texts, kept = fast
        return kept.items, texts

    async def _emit_records(self, records: Sequence[Item], msgs: list[str] | None) -> None:
        term = self.terminator
        texts: list[str] = []
        kept: list[Item] = []
        settled = 0  # records of the batch already taken over (see Sink._take_over)
        # formatted up front, a record costs the loop little here: yield less often
        every = _YIELD_EVERY if msgs is None else _YIELD_EVERY * 16
        for n, record in enumerate(records):
            if n and not n % every:
                # let other tasks in between slices of a large batch, so a batch never
                # stalls the loop for long
                await asyncio.sleep(0)
            try:
                await self._prepare_check()
                # formatted up front (a frozen record, built-in test): the test reads
                # the text; otherwise the public hook gets the LogRecord
                due = self.shouldRollover(record) if msgs is None else self._rollover_due(msgs[n])  # type: ignore[arg-type]
                if due and not await self._worker.run(_may_roll_over, self.baseFilename):
                    self._rollover_refused()
                    due = False
                if due:
                    await self.write_texts(texts, RecordBatch(kept))
                    texts, kept = [], []
                    # the records before this one are written or reported: should the
                    # rollover be abandoned (aclose(timeout=...)), only the rest of the
                    # batch is undelivered, and none of these goes to the fallback
                    self._take_over(n - settled)
                    settled = n
                    await self.doRollover()
                    await self._prepare_check()
                text = (self._formatted(record) if msgs is None else msgs[n]) + term  # type: ignore[arg-type]
                self._count(text)
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self.report_error(record)
                continue
            texts.append(text)
            kept.append(record)
        await self.write_texts(texts, RecordBatch(kept))

    def _rollover_refused(self) -> None:
        """A rollover was due but the path is not a regular file (see :func:`_may_roll_over`)."""

    def _formatted(self, record: logging.LogRecord) -> str:
        # shouldRollover and the write need the same text: format once per record
        known = self._known
        if known is not None and known[0] is record:
            return known[1]
        msg = self._batch_format(record)
        self._known = (record, msg)
        return msg

    def _count(self, text: str) -> None:
        """Account for ``text`` about to join the chunk (raises if it cannot be written)."""
        self._known = None


class RotatingFileSink(BaseRotatingSink):
    """Roll over to a new file when the current one would reach ``maxBytes``.

    As ``logging.handlers.RotatingFileHandler``: with ``backupCount`` > 0 the full
    file becomes ``app.log.1`` (after ``app.log.1`` became ``app.log.2``, and so on);
    ``maxBytes=0`` never rolls over; ``maxBytes`` > 0 forces append mode. The test
    is the stdlib's, record by record: the file's size in bytes plus the length of
    ``format(record) + "\\n"`` in characters, ``>= maxBytes``. The size is tracked
    as bytes are written (and re-read from the OS after every write), so the decision
    never blocks; with ``maxBytes=0`` the position is never asked for, so a path that
    cannot seek (``/dev/stdout`` into a pipe) is written as by the stdlib. Follows
    CPython 3.13: an empty file never rolls over (gh-116263), nor does a path that
    exists and is not a regular file (bpo-45401), checked off the loop when a
    rollover is due.
    """

    _check_needs_open = True

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        maxBytes: int = 0,
        backupCount: int = 0,
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
        *,
        mkdir: bool = False,
    ) -> None:
        check_int("maxBytes", maxBytes, min=0)
        check_int("backupCount", backupCount, min=0)
        if maxBytes > 0:
            mode = "a"  # as the stdlib: a truncating mode would lose the previous run
        super().__init__(filename, mode, encoding, delay, errors, mkdir=mkdir)
        self.maxBytes = maxBytes
        self.backupCount = backupCount
        self._pos = 0
        self._counter: ByteCounter | None = None

    async def _open(self) -> AsyncTextFile:
        f = await super()._open()
        self._pos = 0
        if self.maxBytes > 0:
            # only a size test needs the position: with maxBytes=0 a pipe such as
            # /dev/stdout is written, as by the stdlib (whose tell() fails otherwise)
            try:
                self._pos = await f.position()
            except BaseException:
                await f.close()
                raise
        self._counter = ByteCounter(self.encoding, self.errors, at_start=self._pos == 0)
        return f

    async def write(self, text: str) -> None:
        """Append ``text`` and flush it; the tracked size becomes the OS's."""
        if self._file is None:
            self._file = await self._open()
        if self.maxBytes > 0:
            self._pos = await self._file.append(text)
        else:
            await self._file.write(text)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Return True when writing ``record`` would make the file reach ``maxBytes``.

        The stdlib's test, on the tracked size: never for an empty file. When the path
        is not a regular file the sink then skips the rollover, as the stdlib does.
        """
        return self._rollover_due(self._formatted(record))

    def _rollover_due(self, text: str) -> bool:
        if self.maxBytes <= 0 or not self._pos:
            return False
        return self._pos + len(text) + 1 >= self.maxBytes

    def _count(self, text: str) -> None:
        super()._count(text)
        if self._counter is not None:
            self._pos += self._counter.count(text)

    async def doRollover(self) -> None:
        """Close the file, shift the backups, rotate it to ``.1`` and open a new one.

        As the stdlib: ``.N-1`` -> ``.N`` ... ``.1`` -> ``.2`` (names passed through
        the namer), then :meth:`rotate` the file to ``.1``. With ``backupCount`` 0
        the file is only closed and reopened (in append mode, so it keeps growing and
        every later record rolls over again: the stdlib's behaviour). The new file is
        opened now unless ``delay`` is true. Returns when all of it is done.
        """
        await self.close_file()
        self._pos = 0
        if self.backupCount > 0:
            base = self.baseFilename
            moves = [
                (
                    await self._rotation_filename(f"{base}.{i}"),
                    await self._rotation_filename(f"{base}.{i + 1}"),
                )
                for i in range(self.backupCount - 1, 0, -1)
            ]
            dest = await self._rotation_filename(base + ".1")
            await self._worker.run(shift_backups, moves, dest)
            await self.rotate(base, dest)
        if not self.delay:
            self._file = await self._open()


class TimedRotatingFileSink(BaseRotatingSink):
    """Roll over at timed intervals (``logging.handlers.TimedRotatingFileHandler``).

    ``when`` is ``'S'``, ``'M'``, ``'H'``, ``'D'``, ``'MIDNIGHT'`` or ``'W0'``-``'W6'``
    (Monday is 0), case-insensitive; the period is ``interval`` of those units. The
    rotated file is named after the start of the period it covers (:attr:`suffix`);
    with ``backupCount`` > 0 the oldest backups beyond it are deleted. ``utc`` and
    ``atTime`` (a :class:`datetime.time`, for MIDNIGHT and weekly rollover) mean what
    they mean for the stdlib.

    Follows CPython 3.13, including its fixes over earlier versions: ``interval`` is
    honoured for MIDNIGHT and weekly rollover, a rollover at exactly ``atTime`` waits
    for the next day, the DST correction is applied once and not when the changed
    hour does not exist, ``extMatch`` matches the suffix anywhere in a custom-named
    file, and a rollover whose target already exists is skipped rather than
    overwriting it.

    The first rollover time is computed from the existing file's modification time
    (read off the loop when the sink opens or writes first), otherwise from the time
    of construction. ``clock`` (keyword-only, default :func:`time.time`) is the
    sink's time source, for tests and simulations.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        when: str = "h",
        interval: int = 1,
        backupCount: int = 0,
        encoding: str | None = None,
        delay: bool = False,
        utc: bool = False,
        atTime: datetime.time | None = None,
        errors: str | None = None,
        *,
        clock: Callable[[], float] | None = None,
        mkdir: bool = False,
    ) -> None:
        check_str("when", when)
        check_int("interval", interval, min=1)
        check_int("backupCount", backupCount, min=0)
        if atTime is not None:
            check_instance("atTime", atTime, datetime.time, "a datetime.time or None")
        check_callable("clock", clock, none=True)
        self.when = when.upper()
        spec = _WHEN.get(self.when[0] if self.when[:1] == "W" else self.when)
        if spec is None or (self.when[0] == "W" and self.when[1:] not in tuple("0123456")):
            value_error("when", "S, M, H, D, MIDNIGHT or W0-W6", when)
        super().__init__(filename, "a", encoding, delay, errors, mkdir=mkdir)
        unit, self.suffix, ext = spec
        # extMatch finds the date suffix even inside a custom-named file; the
        # look-arounds keep it from matching part of a longer run of digits
        self.extMatch = re.compile(rf"(?<!\d){ext}(?!\d)", re.ASCII)
        self.interval = unit * interval
        self.backupCount = backupCount
        self.utc = utc
        self.atTime = atTime
        if self.when[0] == "W":
            self.dayOfWeek = int(self.when[1])
        # None: time.time looked up at each call, so a patched clock (monkeypatch,
        # freezegun) is followed as by the stdlib handler
        self._clock: Callable[[], float] = clock if clock is not None else _now
        # corrected from the file's mtime by the first look at the disk
        self.rolloverAt = self.computeRollover(int(self._clock()))
        self._started = False

    def computeRollover(self, currentTime: int) -> int:
        """Return the rollover time (seconds since the epoch) following ``currentTime``.

        Pure computation, as the stdlib's (CPython 3.13) method, DST included.
        """
        result = currentTime + self.interval
        if self.when != "MIDNIGHT" and self.when[0] != "W":
            return result
        t = time.gmtime(currentTime) if self.utc else time.localtime(currentTime)
        hour, minute, second, day = t[3], t[4], t[5], t[6]
        if self.atTime is None:
            rotate_ts = _MIDNIGHT
        else:
            at = self.atTime
            rotate_ts = (at.hour * 60 + at.minute) * 60 + at.second
        # seconds from now to the next rotation time of day; at exactly that time the
        # rotation is the next day's
        r = rotate_ts - ((hour * 60 + minute) * 60 + second)
        if r <= 0:
            r += _MIDNIGHT
            day = (day + 1) % 7
        result = currentTime + r
        if self.when[0] == "W":
            if day != self.dayOfWeek:
                result += ((self.dayOfWeek - day) % 7) * _MIDNIGHT
            result += self.interval - _MIDNIGHT * 7
        else:
            result += self.interval - _MIDNIGHT
        if not self.utc:
            dst_now = t[-1]
            dst_then = time.localtime(result)[-1]
            if dst_now != dst_then:
                if not dst_now:
                    # DST starts before the rollover: an hour earlier, unless that
                    # hour is still standard time (the rollover falls in the gap)
                    addend = 0 if not time.localtime(result - 3600)[-1] else -3600
                else:
                    # DST ends before the rollover: an hour later
                    addend = 3600
                result += addend
        return result

    async def _start(self) -> None:
        # the stdlib reads the mtime in __init__; a constructor must not touch the
        # disk here, so the first look at the disk does it
        if self._started:
            return
        st = await self._worker.stat(self.baseFilename)
        self._started = True
        if st is not None:
            self.rolloverAt = self.computeRollover(int(st.st_mtime))

    async def aopen(self) -> None:
        """Read the initial rollover time from the file, then open it unless ``delay``."""
        await self._start()
        await super().aopen()

    async def _prepare_check(self) -> None:
        await self._start()

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Return True when the clock reached :attr:`rolloverAt`.

        ``record`` is not used. When the path is not a regular file the sink then
        skips the rollover and computes the next rollover time, as the stdlib does.
        """
        return self._rollover_due("")

    def _rollover_due(self, text: str) -> bool:
        return int(self._clock()) >= self.rolloverAt

    def _rollover_refused(self) -> None:
        # as the stdlib: the next rollover time, so the path is not checked per record
        self.rolloverAt = self.computeRollover(int(self._clock()))

    async def getFilesToDelete(self) -> list[str]:
        """Return the oldest backups beyond ``backupCount``, oldest first.

        Lists the directory on the worker thread. Without a namer a backup is
        ``<base>.<suffix>``; with one, a file whose name contains a date suffix that
        the namer turns into exactly that name (the namer may be async).
        """
        dir_name, base_name = os.path.split(self.baseFilename)
        names = await self._worker.listdir(dir_name)
        result: list[str] = []
        namer = self.namer
        if namer is None:
            prefix = base_name + "."
            plen = len(prefix)
            for name in names:
                if name[:plen] == prefix and self.extMatch.fullmatch(name[plen:]):
                    result.append(os.path.join(dir_name, name))
        else:
            for name in names:
                m = self.extMatch.search(name)
                while m:
                    candidate = namer(self.baseFilename + "." + m[0])
                    if inspect.isawaitable(candidate):
                        candidate = await candidate
                    if os.path.basename(candidate) == name:
                        result.append(os.path.join(dir_name, name))
                        break
                    m = self.extMatch.search(name, m.start() + 1)
        if len(result) < self.backupCount:
            return []
        result.sort()
        return result[: len(result) - self.backupCount]

    async def doRollover(self) -> None:
        """Rotate the file to ``<base>.<start of its period>`` and start a new one.

        As the stdlib (3.13): when that name already exists the rollover is skipped
        (another process did it); otherwise the file is closed and rotated, the
        oldest backups beyond ``backupCount`` removed, a new file opened unless
        ``delay``, and :attr:`rolloverAt` advanced. Returns when all of it is done.
        """
        current = int(self._clock())
        t = self.rolloverAt - self.interval
        if self.utc:
            tt = time.gmtime(t)
        else:
            tt = time.localtime(t)
            dst_now = time.localtime(current)[-1]
            if dst_now != tt[-1]:
                tt = time.localtime(t + (3600 if dst_now else -3600))
        dfn = await self._rotation_filename(
            self.baseFilename + "." + time.strftime(self.suffix, tt)
        )
        if await self._worker.exists(dfn):
            return
        await self.close_file()
        await self.rotate(self.baseFilename, dfn)
        if self.backupCount > 0:
            await self._worker.remove_all(await self.getFilesToDelete())
        if not self.delay:
            self._file = await self._open()
        self.rolloverAt = self.computeRollover(current)


#: unit seconds, strftime suffix and suffix pattern per ``when``
_WHEN: dict[str, tuple[int, str, str]] = {
    "S": (1, "%Y-%m-%d_%H-%M-%S", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"),
    "M": (60, "%Y-%m-%d_%H-%M", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}"),
    "H": (3600, "%Y-%m-%d_%H", r"\d{4}-\d{2}-\d{2}_\d{2}"),
    "D": (_MIDNIGHT, "%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
    "MIDNIGHT": (_MIDNIGHT, "%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
    "W": (_MIDNIGHT * 7, "%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
}


def _now() -> float:
    # the module attribute, read at each call: never a clock captured at import
    return time.time()


def _may_roll_over(path: str) -> bool:
    # bpo-45401 / gh-89564 (3.13): never roll over a path that exists and is not a
    # regular file (a FIFO, /dev/stdout, a directory that replaced the log), whatever
    # the open file is: rotating it would move the directory into the backups
    return not os.path.exists(path) or os.path.isfile(path)


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


_formatted = BaseRotatingSink._formatted
_BUILT_IN_CHECKS = (RotatingFileSink.shouldRollover, TimedRotatingFileSink.shouldRollover)
