"""FileSink (and its watched variant): the async counterparts of FileHandler."""

from __future__ import annotations

import logging
import os

from .._fileio import AsyncTextFile, FileWorker, resolve_encoding
from .stream import StreamSink

__all__ = ["FileSink"]


def _abspath(filename: str) -> str:
    # os.path.abspath without its blocking-call wrapper: getcwd() reads no disk
    if not os.path.isabs(filename):
        filename = os.path.join(os.getcwd(), filename)
    return os.path.normpath(filename)


class FileSink(StreamSink):
    """Append formatted records to a file (``logging.FileHandler``).

    ``filename``, ``mode``, ``encoding``, ``delay`` and ``errors`` mean what they mean
    for the stdlib handler; the default encoding is the one ``FileHandler`` picks
    (``io.text_encoding``). The file is opened on a worker thread: at the first batch
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
    ) -> None:
        try:
            filename = os.fspath(filename)
        except TypeError:
            raise TypeError(f"filename: expected a path, got {filename!r}") from None
        if not isinstance(mode, str) or not mode or mode[0] not in "awx":
            raise ValueError(f"mode: expected a writing mode ('a', 'w', 'x'), got {mode!r}")
        if "b" in mode:
            raise ValueError(f"mode: binary modes are not supported, got {mode!r}")
        super().__init__(stream=None)
        self.baseFilename = _abspath(filename)
        self.mode = mode
        self.encoding = resolve_encoding(mode, encoding)
        self.errors = errors
        self.delay = delay
        self._file: AsyncTextFile | None = None
        self._worker = FileWorker(os.path.basename(self.baseFilename))

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
