"""FileSink (and its watched variant): the async counterparts of FileHandler."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import IO

from .._fileio import AsyncTextFile, FileWorker, check_directory, resolve_encoding
from .._validate import check_encoding, check_errors, check_path, check_str, value_error
from .stream import StreamSink

__all__ = ["FileSink", "WatchedFileSink"]


def _abspath(filename: str) -> str:
    # os.path.abspath without its blocking-call wrapper: getcwd() reads no disk
    if not os.path.isabs(filename):
        filename = os.path.join(os.getcwd(), filename)
    return os.path.normpath(filename)


class FileSink(StreamSink):
    """Append formatted records to a file (``logging.FileHandler``).

    ``filename``, ``mode``, ``encoding``, ``delay`` and ``errors`` mean what they mean
    for the stdlib handler; the default encoding is the one ``FileHandler`` picks
    (``io.text_encoding``). The directory must exist — the constructor raises
    ``FileNotFoundError`` naming it — unless ``mkdir=True`` (keyword-only) asks the
    sink to create it; an unknown ``encoding`` or ``errors`` raises ``LookupError``
    naming the parameter. The file is opened on a worker thread: at the first batch
    when ``delay`` is true, otherwise as soon as the sink starts (:meth:`aopen`, which
    the dispatcher and ``async with`` await) or at the first batch, whichever comes
    first. Each batch is one write plus one flush, on the sink's own worker thread.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
        *,
        mkdir: bool = False,
    ) -> None:
        filename = check_path("filename", filename)
        check_str("mode", mode)
        if not mode or mode[0] not in "awx":
            value_error("mode", "a writing mode ('a', 'w', 'x')", mode)
        if "b" in mode:
            value_error("mode", "a text mode (binary modes are not supported)", mode)
        check_encoding("encoding", encoding)
        check_errors("errors", errors)
        super().__init__(stream=None)
        self.baseFilename = _abspath(filename)
        # the one disk access at construction: a missing directory is an error now
        check_directory("filename", self.baseFilename, mkdir)
        self.mode = mode
        self.encoding = resolve_encoding(mode, encoding)
        self.errors = errors
        self.delay = delay
        self._file: AsyncTextFile | None = None
        self._worker = FileWorker(os.path.basename(self.baseFilename))

    def setStream(self, stream: IO[str]) -> IO[str] | None:
        """Not for a file sink: it writes :attr:`baseFilename` through a file of its own
        (``FileHandler.setStream`` swaps the open file). Raises ``NotImplementedError``;
        a :class:`~aiologsinks.StreamSink` writes to a stream given to it."""
        raise NotImplementedError(
            f"{type(self).__name__}.setStream: a file sink writes {self.baseFilename!r}"
            " through its own file; give the stream to a StreamSink instead"
        )

    async def aopen(self) -> None:
        """Open the file now unless ``delay`` is true (errors go to the caller)."""
        if not self.delay and self._file is None:
            self._file = await self._open()

    async def _open(self) -> AsyncTextFile:
        """Open :attr:`baseFilename` with the sink's mode/encoding/errors (``_open``)."""
        return await AsyncTextFile.open(
            self.baseFilename, self.mode, self.encoding, self.errors, self._worker
        )

    async def write(self, text: str) -> None:
        """Append ``text`` to the file (opening it if needed) and flush it."""
        if self._file is None:
            self._file = await self._open()
        await self._file.write(text)

    async def flush(self) -> None:
        """Every batch is flushed as it is written; nothing else is buffered."""
        if self._file is not None:
            await self._file.flush()

    async def close_file(self) -> None:
        """Close the current file, if open (it is reopened by the next write)."""
        f, self._file = self._file, None
        if f is not None:
            await f.close()

    async def _aclose(self) -> None:
        try:
            await self.close_file()
        finally:
            self._worker.shutdown()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self.baseFilename} ({level})>"


class WatchedFileSink(FileSink):
    """A :class:`FileSink` that reopens its file when it was moved or removed.

    As ``logging.handlers.WatchedFileHandler`` (for ``newsyslog`` and ``logrotate``):
    before each batch is written the sink compares the device and inode of
    :attr:`baseFilename` with those of its open file, off the loop; when they differ,
    or the file vanished, it closes its file and opens the path again, so every record
    of the batch goes to the new file. Meant for POSIX systems, as the stdlib handler.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
        *,
        mkdir: bool = False,
    ) -> None:
        super().__init__(filename, mode, encoding, delay, errors, mkdir=mkdir)
        #: device and inode of the open file (-1 while no file is open)
        self.dev = -1
        self.ino = -1

    async def _open(self) -> AsyncTextFile:
        f = await super()._open()
        try:
            st = await f.fstat()
        except BaseException:
            await f.close()
            raise
        self.dev, self.ino = st.st_dev, st.st_ino
        return f

    async def reopenIfNeeded(self) -> None:
        """Reopen the file when the path now names another file or nothing.

        Returns at once when no file is open (the next write opens one). Awaits one
        ``stat`` on the worker thread, plus a close and an open when it reopens.
        """
        if self._file is None:
            return
        st = await self._worker.stat(self.baseFilename)
        if st is not None and st.st_dev == self.dev and st.st_ino == self.ino:
            return
        await self.close_file()
        self._file = await self._open()

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Reopen the file if it changed (see :meth:`reopenIfNeeded`), then write the batch.

        Returns when the batch reached the OS; errors go to :meth:`handleError`.
        """
        texts, kept = self.render_each(records)
        if not texts:
            return
        try:
            await self.reopenIfNeeded()
        except Exception:  # noqa: BLE001 - the batch cannot be written anywhere
            self.report_batch_error(kept)
            return
        await self.write_texts(texts, kept)
