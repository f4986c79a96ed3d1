"""StreamSink and NullSink: the async counterparts of StreamHandler and NullHandler."""

from __future__ import annotations

import asyncio
import codecs
import io
import logging
import os
import select
import stat
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import IO, Any

from .._fastformat import PlainFormat, format_batch, plain_percent_format
from .._fileio import FileWorker, pipe_encoder, write_encoded
from .._sink import Sink, emit_one
from .._validate import ArgumentTypeError, ArgumentValueError

__all__ = ["NullSink", "StreamSink"]

#: seconds a pipe or socket may stay full before a write gives up (``write_timeout``)
WRITE_TIMEOUT = 10.0


class StreamSink(Sink):
    """Write formatted records to a stream (``sys.stderr`` by default).

    ``stream`` is any object with a ``write(str)`` method (``flush()`` is called when
    it has one); anything else raises ``TypeError`` naming ``stream``.

    As ``logging.StreamHandler``: each record is formatted and followed by
    :attr:`terminator` (``'\\n'``). A batch is written with one ``write`` and one
    ``flush`` on a worker thread, so a slow pipe or terminal never blocks the loop.

    A blocked write never keeps the process alive. When the stream is a text file
    over a pipe, FIFO or socket (``sys.stderr`` piped to a process that stopped
    reading), the worker flushes what the stream had buffered, then writes the
    encoded batch to the file descriptor in ``PIPE_BUF`` pieces, each only once
    ``poll`` says there is room — the descriptor itself stays blocking, so other
    writers to it see no change. The write gives up when the peer takes nothing for
    ``write_timeout`` seconds (default 10; ``None`` waits as long as the peer does)
    or as soon as the dispatcher abandons the batch (``aclose(timeout=...)``): the
    worker thread is then free within a fraction of a second and the records are
    counted (``errors`` on a timeout, ``undelivered`` when abandoned); a record cut
    off mid-write may reach the peer truncated. The batch is encoded as the stream
    encodes (its encoding and errors, one encoder for the stream's life: no BOM
    repeated), but ``\n`` goes out as itself: the newline translation a stream was
    opened with (``newline='\r\n'``) cannot be read from it. A regular file, a
    terminal or any other stream is written with ``write`` and ``flush`` exactly as
    ``StreamHandler`` does.
    """

    terminator = "\n"

    def __init__(
        self, stream: IO[str] | None = None, *, write_timeout: float | None = WRITE_TIMEOUT
    ) -> None:
        if write_timeout is not None:
            if isinstance(write_timeout, bool) or not isinstance(write_timeout, int | float):
                raise ArgumentTypeError(
                    "write_timeout", f"expected a number of seconds or None, got {write_timeout!r}"
                )
            if not write_timeout > 0:
                raise ArgumentValueError(
                    "write_timeout", f"must be > 0 seconds, got {write_timeout!r}"
                )
        if stream is not None and not callable(getattr(stream, "write", None)):
            # StreamHandler takes anything and fails on every record; a name such as
            # "stdout" is the likely mistake (the config loader maps those names)
            raise ArgumentTypeError(
                "stream",
                f"expected a stream with a write() method (sys.stderr, an open file,"
                f" io.StringIO) or None, got {stream!r}",
            )
        super().__init__()
        self.stream: IO[str] = sys.stderr if stream is None else stream
        #: seconds a pipe or socket may take nothing before a write gives up (None: wait)
        self.write_timeout = write_timeout
        self._worker = FileWorker(type(self).__name__)
        # each stream written to: its (encoding, errors) and its pipe/socket writes'
        # encoder (None: not a pipe or socket)
        self._encoders: weakref.WeakKeyDictionary[
            IO[str], tuple[tuple[str, str | None], codecs.IncrementalEncoder | None]
        ] = weakref.WeakKeyDictionary()

    def setStream(self, stream: IO[str]) -> IO[str] | None:
        """Write to ``stream`` from the next batch on; return the old stream, or None
        when it is the same one (as ``StreamHandler.setStream``).

        The stdlib writes every record before it returns, so records logged before a
        ``setStream`` went to the old stream. Here they may still wait in the
        dispatcher: ``await dispatcher.flush()`` first to keep that order. Every batch
        is flushed as it is written, so the old stream holds nothing of ours.
        """
        if not callable(getattr(stream, "write", None)):
            raise ArgumentTypeError(
                "stream", f"expected a stream with a write() method, got {stream!r}"
            )
        if stream is self.stream:
            return None
        old, self.stream = self.stream, stream
        return old

    def formatter_for_batch(self) -> Callable[[logging.LogRecord], str]:
        """The function that formats one record for the batch about to be written.

        :meth:`format` itself, or — when the formatter is a plain
        ``logging.Formatter`` — an inline equivalent that produces the same text with
        the date cached per second (about 3x cheaper per record).
        """
        plain = plain_percent_format(self)
        if plain is None:
            return self.format
        return PlainFormat(self.format, *plain)

    def render_each(
        self, records: Sequence[logging.LogRecord]
    ) -> tuple[list[str], Sequence[logging.LogRecord]]:
        """Format each record and add :attr:`terminator`; return the texts and their records.

        A record that cannot be formatted goes to :meth:`handleError` and is left out.
        """
        fast = format_batch(self, records, self.terminator)
        if fast is not None:
            return fast
        term = self.terminator
        fmt = self.formatter_for_batch()
        return self.contain_each(records, lambda record: fmt(record) + term)

    async def emit(self, record: logging.LogRecord) -> None:
        """Format and write one record (a batch of one)."""
        await emit_one(self, record)

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
                    self.report_error(record)
        except Exception:  # noqa: BLE001 - the chunk failed as a whole
            self.report_batch_error(records)

    async def write(self, text: str) -> None:
        """Write ``text`` to the stream and flush it, on the worker thread.

        Into a pipe or socket the write is bounded (see the class docstring): it
        raises ``TimeoutError`` when the peer takes nothing for :attr:`write_timeout`
        seconds, and stops as soon as this call is cancelled.
        """
        abandoned = threading.Event()
        try:
            await self._worker.run(self._write_on_worker, text, abandoned)
        except asyncio.CancelledError:
            # nobody waits for this write any more: free the worker thread
            abandoned.set()
            raise

    def _write_on_worker(self, text: str, abandoned: threading.Event) -> None:
        stream = self.stream
        encoder = self._pipe_encoder(stream)
        if encoder is None:
            _write_flush(stream, text)
            return
        # (what the stream holds goes out before this batch)
        write_encoded(stream, encoder, text, self.write_timeout, abandoned)

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

    def _pipe_encoder(self, stream: IO[str]) -> codecs.IncrementalEncoder | None:
        """The encoder of ``stream`` when it is a text file over a pipe, FIFO or
        socket; None for any other stream.

        One per stream and its encoding (a stateful encoding goes on from batch to
        batch, as in the stream itself; a stream swapped back by :meth:`setStream`
        finds its own; one ``reconfigure()``-d gets a new one, as the stream does).
        The stream writes its own start (utf-8-sig's BOM) first, so that it and the
        application's own writes to it count it once."""
        if not (isinstance(stream, io.TextIOWrapper) and hasattr(select, "poll")):
            return None
        key = (stream.encoding, stream.errors)
        known = self._encoders.get(stream)
        if known is not None and known[0] == key:
            return known[1]
        encoder: codecs.IncrementalEncoder | None = None
        try:
            mode = os.fstat(stream.fileno()).st_mode
        except (OSError, ValueError):
            pass
        else:
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                stream.write("")  # (its BOM, if it has one and has not written it)
                encoder = pipe_encoder(stream.encoding, stream.errors, started=True)
        self._encoders[stream] = (key, encoder)
        return encoder

    def __repr__(self) -> str:
        name = getattr(self.stream, "name", "")
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {name} ({level})>"


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
