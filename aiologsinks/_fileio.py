"""The only code that touches the disk.

Every file sink owns one :class:`FileWorker`: a single worker thread that performs the
sink's disk operations in order (open, write+flush, stat, rename, remove, compress), so
nothing blocks the event loop and a rotation can never overtake a pending write. It is
a daemon thread, so an operation that never returns cannot keep the process alive. The
file objects are plain ``open()`` files used only on that thread: one hop per batch
(write and flush together), which a per-call wrapper such as ``aiofiles`` (one hop
per method call, on a shared pool) could not give.

With the compiled accelerator, the writes of a regular file whose text is ASCII (in
an encoding that writes ASCII as itself) go to a :class:`DirectWriter` instead: a
thread of the compiled module that never takes the GIL (``_speedups.FdWriter``). A
Python worker thread takes the GIL to wake up, to write and to hand back its result,
and each time a loop thread serving requests waits for it; at a few hundred batches
a second that costs a busy service requests. The order of operations is kept: a
file sink awaits each write before the next operation, and closing a file writes
what its direct writer still holds first.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import functools
import gzip
import io
import locale
import math
import os
import queue
import select
import shutil
import stat
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import IO, Any, TypeVar

from ._record import ACCELERATED
from ._validate import ArgumentPathError

#: the compiled writer (see DirectWriter), or None: every write goes to the worker
FdWriter: Any = None
if ACCELERATED:
    from . import _speedups

    FdWriter = getattr(_speedups, "FdWriter", None)  # absent on Windows

__all__ = [
    "AsyncTextFile",
    "ByteCounter",
    "DirectWriter",
    "FileWorker",
    "check_directory",
    "gzip_file",
    "pipe_encoder",
    "resolve_encoding",
    "shift_backups",
    "write_bounded",
    "write_encoded",
]

T = TypeVar("T")


def resolve_encoding(mode: str, encoding: str | None) -> str | None:
    """Return the encoding the stdlib ``FileHandler`` would use for ``mode``."""
    if "b" in mode:
        return encoding
    resolved: str = io.text_encoding(encoding)  # type: ignore[attr-defined,unused-ignore]
    return resolved


def off_loop(executor: Executor | None, call: Callable[[], T]) -> asyncio.Future[T]:
    """``call()`` in ``executor`` (None: the loop's default one), as a future of the
    running loop; when the executor takes no more jobs (the loop or the interpreter is
    shutting down), ``call()`` runs here, once, and the future holds its outcome."""
    loop = asyncio.get_running_loop()
    try:
        return loop.run_in_executor(executor, call)
    except RuntimeError as exc:
        if "shutdown" not in str(exc):
            raise
    done: asyncio.Future[T] = loop.create_future()
    try:
        done.set_result(call())
    except Exception as exc:  # noqa: BLE001 - the caller awaits it as the executor's
        done.set_exception(exc)
    return done


class _DaemonThreadExecutor(Executor):
    """One daemon thread running the submitted calls in order.

    Not a ``ThreadPoolExecutor``: the interpreter joins its threads at exit, so one
    stuck in an ``open`` or ``write`` that never returns (a FIFO nobody reads, a hung
    network file system) kept the process alive after ``aclose(timeout=...)`` had
    already counted the batch and sent it to the fallback. Nothing is lost by not
    waiting: whoever needs an operation's outcome awaits it before the exit.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` for the thread, starting it on first use.

        Raises ``RuntimeError`` (mentioning shutdown) after :meth:`shutdown`, or when
        the interpreter refuses new threads because it is exiting.
        """
        future: Future[T] = Future()
        call = functools.partial(fn, *args, **kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._thread is None:
                # the thread holds the queue, not the executor: an executor nobody
                # shut down (a sink never closed) ends its thread when collected
                thread = threading.Thread(
                    target=_serve, args=(self._calls,), name=self._name, daemon=True
                )
                try:
                    thread.start()
                except RuntimeError as exc:  # Python 3.12+ during interpreter shutdown
                    raise RuntimeError(f"cannot start a worker at shutdown: {exc}") from exc
                self._thread = thread
                weakref.finalize(self, self._calls.put, None)
            self._calls.put((future, call))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; the thread ends after those already queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._calls.put(None)
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()


def _serve(calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]) -> None:
    while True:
        item = calls.get()
        if item is None:
            return
        future, call = item
        del item
        if not future.set_running_or_notify_cancel():
            continue
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - the awaiting caller gets it
            future.set_exception(exc)
        else:
            future.set_result(result)
        del future, call  # free the call's arguments (a file, a batch) while idle


class FileWorker:
    """A single ordered worker thread for one sink's disk operations."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: _DaemonThreadExecutor | None = None
        self._pid = os.getpid()

    @property
    def executor(self) -> Executor:
        """The executor, created on first use (a thread exists only once needed), and
        again in a forked child, where the parent's thread does not exist: the old
        executor would queue the child's operations for it forever."""
        if self._executor is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._executor = _DaemonThreadExecutor(f"aiologsinks-{self._name}")
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the worker thread; return its result."""
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        return await self.start(call)

    def start(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """``call()`` on the worker thread, as a future of the running loop.

        At interpreter exit no worker thread may be able to start (Python 3.12 refuses
        new threads once exit has begun; ``concurrent.futures`` refuses new jobs after
        its own exit hook): a script that logs its first record and ends would lose it.
        Then no thread holds the call (the pool's one thread was never started, or the
        pool took nothing), and it runs here, once, blocking this thread for it.
        """
        return off_loop(self.executor, call)

    def shutdown(self) -> None:
        """Let the worker thread end once its queued operations are done."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # the usual operations, named so sinks read like the stdlib handlers

    async def stat(self, path: str) -> os.stat_result | None:
        """``os.stat(path)``, or ``None`` when the file does not exist."""
        return await self.run(_stat_or_none, path)

    async def exists(self, path: str) -> bool:
        """``os.path.exists(path)``."""
        return await self.run(os.path.exists, path)

    async def listdir(self, path: str) -> list[str]:
        """``os.listdir(path)``."""
        return await self.run(os.listdir, path)

    async def remove_all(self, paths: list[str]) -> None:
        """``os.remove`` each of ``paths``, in order, in one worker call."""
        await self.run(_remove_all, paths)

    async def rename_if_exists(self, source: str, dest: str) -> None:
        """``os.rename(source, dest)`` when ``source`` exists (it may not, with ``delay``)."""
        await self.run(_rename_if_exists, source, dest)


def check_directory(param: str, path: str, mkdir: bool) -> None:
    """Fail fast when the directory of ``path`` does not exist (create it if ``mkdir``).

    Called once by a file sink's constructor — the one disk access made at
    construction, as the stdlib handlers open their file there — so a wrong path is
    an error at startup, naming the path, instead of records lost at the first write.
    Raises :class:`~aiologsinks._validate.ArgumentPathError` (a ``FileNotFoundError``)
    naming ``param``; a path that exists but is not a directory raises
    ``NotADirectoryError``, and a file name that is a directory ``IsADirectoryError``
    (what the stdlib handler's ``open`` raises).
    """
    # where open() will write: a symbolic link to a file in a missing directory is
    # such a path too
    real = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(real) or os.curdir
    if os.path.isdir(directory):
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, f"{param}: {path!r} is a directory", path)
        return
    if os.path.exists(directory):
        raise NotADirectoryError(
            errno.ENOTDIR, f"{param}: {directory!r} is not a directory", directory
        )
    if not mkdir:
        raise ArgumentPathError(
            param,
            f"directory {directory!r} of {path!r} does not exist (pass mkdir=True to create it)",
            directory,
        )
    os.makedirs(directory, exist_ok=True)


def _remove_all(paths: list[str]) -> None:
    for path in paths:
        os.remove(path)


def _rename_if_exists(source: str, dest: str) -> None:
    # bpo-18940: with delay=True the file may never have been created
    if os.path.exists(source):
        os.rename(source, dest)


def shift_backups(moves: list[tuple[str, str]], clear: str) -> None:
    """Move each existing ``source`` over ``dest`` in order, then remove ``clear``.

    The backup shuffle of ``RotatingFileHandler.doRollover`` (``app.log.4`` ->
    ``app.log.5``, ..., then make room for ``app.log.1``), done in one worker call.
    """
    for source, dest in moves:
        if os.path.exists(source):
            if os.path.exists(dest):
                os.remove(dest)
            os.rename(source, dest)
    if os.path.exists(clear):
        os.remove(clear)


def gzip_file(source: str, dest: str) -> None:
    """Compress ``source`` into ``dest`` (gzip) and remove ``source``; blocking.

    Writes to a temporary name first and renames it into place, so ``dest`` is never
    a truncated archive. The gzip header carries the source's mtime, so compressing
    the same file twice yields the same bytes. A missing ``source`` (``delay=True``
    and nothing logged yet) is not an error.
    """
    try:
        st = os.stat(source)
    except FileNotFoundError:
        return
    tmp = dest + ".tmp"
    with open(source, "rb") as f_in, open(tmp, "wb") as raw:
        name = os.path.basename(dest[:-3] if dest.endswith(".gz") else dest)
        with gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=int(st.st_mtime)) as out:
            shutil.copyfileobj(f_in, out, 1 << 20)
    os.replace(tmp, dest)
    os.remove(source)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class DirectWriter:
    """One open file's writes on the compiled writer's thread (``_speedups.FdWriter``).

    The thread writes each chunk in order to its own duplicate of the descriptor and
    tells the loop through a pipe the loop watches (``add_reader``): the loop then
    resolves the chunks' futures in order, with the file position after each write.
    It belongs to the process that made it (a forked child writes through the worker)
    and follows the running loop (a sink used from a second loop rebinds it).
    """

    def __init__(self, fd: int) -> None:
        self._writer = FdWriter(fd)
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[asyncio.Future[int]] = deque()

    @property
    def usable(self) -> bool:
        """False in a forked child: its thread stayed in the parent."""
        return self._pid == os.getpid()

    def write(self, data: bytes) -> asyncio.Future[int]:
        """Queue ``data``; the future is the file position after it was written.

        Raises ``NotImplementedError`` when the running loop cannot watch a pipe.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        future: asyncio.Future[int] = loop.create_future()
        self._writer.submit(data)
        self._waiting.append(future)
        return future

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._unbind()
        loop.add_reader(self._writer.fileno(), self._ready)
        self._loop = loop

    def _unbind(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._writer.fileno())

    def _ready(self) -> None:
        for err, position in self._writer.collect():
            future = self._waiting.popleft()
            if future.done():  # its writer stopped waiting (cancelled)
                continue
            try:
                if err:
                    future.set_exception(OSError(err, os.strerror(err)))
                else:
                    future.set_result(position)
            except RuntimeError:  # a future of an earlier loop, now closed
                pass

    async def aclose(self, worker: FileWorker) -> None:
        """Wait for the chunks still queued (on this loop), then close: when this
        returns, the thread has closed its descriptor of the file (unless a write
        still held it after ``_CLOSE_WAIT`` seconds)."""
        pending = [f for f in self._waiting if not f.done()]
        loop = self._loop
        if pending and loop is asyncio.get_running_loop():
            await asyncio.wait(pending)
        if not self.usable:
            self.close()
            return
        self._unbind()
        try:
            # on the worker: the thread may still be writing (a slow disk), and a
            # network file system flushes at the close itself
            await worker.run(self._writer.close_wait, _CLOSE_WAIT)
        finally:
            self.close()  # cancelled before the worker ran it: close without waiting

    def close(self) -> None:
        """Stop watching; the thread writes what it still holds, then ends."""
        if self.usable:
            self._unbind()
        self._writer.close()
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed
                    future.cancel()


def _direct_writer(f: io.TextIOBase, regular: bool) -> DirectWriter | None:
    """A :class:`DirectWriter` for ``f`` when its writes can bypass the file object:
    a regular file, in an encoding that writes ASCII as itself, with no newline
    translation; None otherwise (or without the accelerator)."""
    if FdWriter is None or not regular or os.linesep != "\n":
        return None
    encoding = getattr(f, "encoding", None)
    if not isinstance(encoding, str) or codecs.lookup(encoding).name not in _ASCII_COMPATIBLE:
        return None
    return DirectWriter(f.fileno())


class AsyncTextFile:
    """An open log file: ``write`` appends one chunk and flushes it, off the loop.

    The file object is touched only on the sink's worker thread. Chunks of ASCII text
    go to the file's :class:`DirectWriter` when it has one; the file object holds
    nothing buffered between calls (every write is flushed), so the two never mix
    their bytes out of order.
    """

    def __init__(
        self, file: io.TextIOBase, worker: FileWorker, direct: DirectWriter | None = None
    ) -> None:
        self._file = file
        self._worker = worker
        self._direct = direct
        #: no write reached the file object yet, and its encoding starts with a BOM
        self._bom_pending = codecs.lookup(file.encoding).name in _BOM_ENCODINGS
        #: the encoder of a FIFO or socket's bounded writes (None: any other file)
        self._pipe_encoder: codecs.IncrementalEncoder | None = None

    def _direct_for(self, data: str) -> DirectWriter | None:
        direct = self._direct
        if direct is None or not data.isascii():
            return None
        if not direct.usable:
            self._direct = None  # a forked child: the worker writes from now on
            direct.close()
            return None
        return direct

    async def _write_direct(self, direct: DirectWriter, data: str) -> int | None:
        """The position after writing ``data`` directly, or None: this loop cannot."""
        try:
            future = direct.write(data.encode("ascii"))
        except NotImplementedError:  # no add_reader on this loop
            self._direct = None
            direct.close()
            return None
        return await future

    @classmethod
    async def open(
        cls,
        path: str,
        mode: str,
        encoding: str | None,
        errors: str | None,
        worker: FileWorker,
    ) -> AsyncTextFile:
        """Open ``path`` on the worker thread, as ``open(path, mode, encoding=..., errors=...)``."""
        opening = worker.start(functools.partial(_open_probe, path, mode, encoding, errors))
        try:
            f, st_mode = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # the open still completes on the worker: close what it returns, or the
            # file object would leak (the loop may be shutting down right now)
            opening.add_done_callback(_close_orphan)
            raise
        try:
            direct = _direct_writer(f, stat.S_ISREG(st_mode))
        except BaseException:
            await worker.run(f.close)
            raise
        opened = cls(f, worker, direct)
        if _POLLABLE_WRITES and (stat.S_ISFIFO(st_mode) or stat.S_ISSOCK(st_mode)):
            opened._pipe_encoder = pipe_encoder(f.encoding, f.errors)
        return opened

    async def write(self, data: str) -> None:
        """Write ``data`` and flush it to the OS in one worker-thread call (or with
        the direct writer)."""
        direct = self._direct_for(data)
        if direct is not None and await self._write_direct(direct, data) is not None:
            return
        if self._pipe_encoder is not None:
            await self._write_pipe(data)
            return
        await self._write_file(_write_and_flush, data)

    async def _write_file(self, write: Callable[[io.TextIOBase, str], T], data: str) -> T:
        """``write(file, data)`` on the worker; the first write of a file that starts
        with a BOM checks first that ``data`` can be encoded."""
        if not self._bom_pending:
            return await self._worker.run(write, self._file, data)
        result: T = await self._worker.run(_encodable_then, write, self._file, data)
        self._bom_pending = False
        return result

    async def _write_pipe(self, data: str) -> None:
        """Write ``data`` to a FIFO or socket without ever blocking in ``write``.

        A reader that stops reading would otherwise hold the worker thread in a
        ``write`` for good: the batch abandoned by ``aclose(timeout=...)`` could still
        reach the reader later, after it was counted and sent to the fallback, and
        every later operation (the close) would wait behind it. As
        :class:`~aiologsinks.sinks.stream.StreamSink`: waits as long as the reader
        takes something, and stops as soon as this call is cancelled.
        """
        abandoned = threading.Event()
        try:
            await self._worker.run(_write_pipe, self._file, self._pipe_encoder, data, abandoned)
        except asyncio.CancelledError:
            abandoned.set()  # nobody waits for this write any more: free the thread
            raise

    async def flush(self) -> None:
        """Flush Python's buffer to the OS."""
        await self._worker.run(self._file.flush)

    async def fstat(self) -> os.stat_result:
        """``os.fstat`` of the open file."""
        return await self._worker.run(os.fstat, self._file.fileno())

    async def append(self, data: str) -> int:
        """Write ``data``, flush it, and return the OS file position after the write.

        In append mode that position is the file's size as of this write, including
        what other writers appended before it (what ``stream.tell()`` reports to the
        stdlib ``RotatingFileHandler``).
        """
        direct = self._direct_for(data)
        if direct is not None:
            position = await self._write_direct(direct, data)
            if position is not None:
                return position
        return await self._write_file(_write_flush_position, data)

    async def position(self) -> int:
        """The OS file position (``lseek``); raises ``OSError`` when the file cannot
        seek (a pipe), as ``tell()`` does for the stdlib ``RotatingFileHandler``."""
        return await self._worker.run(_position, self._file)

    async def close(self) -> None:
        """Flush and close the file (after what its direct writer still holds)."""
        direct, self._direct = self._direct, None
        if direct is not None:
            await direct.aclose(self._worker)
        await self._worker.run(self._file.close)


def _open_probe(
    path: str, mode: str, encoding: str | None, errors: str | None
) -> tuple[io.TextIOBase, int]:
    """``open(path, mode, ...)`` and its ``st_mode`` (one worker call)."""
    f: Any = open(path, mode, encoding=encoding, errors=errors)  # noqa: SIM115 - returned open
    try:
        st_mode = os.fstat(f.fileno()).st_mode
    except BaseException:
        f.close()
        raise
    return f, st_mode


def _write_flush_position(f: io.TextIOBase, data: str) -> int:
    f.write(data)
    f.flush()
    return os.lseek(f.fileno(), 0, os.SEEK_CUR)


def _position(f: io.TextIOBase) -> int:
    return os.lseek(f.fileno(), 0, os.SEEK_CUR)


def _close_orphan(opening: asyncio.Future[Any]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        return
    opening.result()[0].close()


def _encodable_then(write: Callable[[io.TextIOBase, str], T], f: io.TextIOBase, data: str) -> T:
    # TextIOWrapper forgets that its stream starts (and so the BOM) even when the
    # encoding of its first write fails: a first batch holding one record that cannot
    # be encoded, retried record by record, would leave a file with no BOM
    data.encode(f.encoding, f.errors or "strict")
    return write(f, data)


def _write_pipe(f: io.TextIOBase, encoder: Any, data: str, abandoned: threading.Event) -> None:
    write_encoded(f, encoder, data, None, abandoned)


def pipe_encoder(
    encoding: str, errors: str | None, *, started: bool = False
) -> codecs.IncrementalEncoder:
    """The encoder of a text stream over a pipe or socket, kept for the stream's life
    and starting as ``TextIOWrapper`` starts for one: a stream it cannot seek on is
    never at its start, so utf-16 and utf-32 write no BOM (native byte order), while
    utf-8-sig writes its BOM once, unless ``started`` (the stream wrote it). (A fresh
    encoder per write put a BOM before every batch.)"""
    encoder = codecs.getincrementalencoder(encoding)(errors or "strict")
    name = codecs.lookup(encoding).name
    if name in ("utf-16", "utf-32") or (started and name == "utf-8-sig"):
        encoder.setstate(0)
    return encoder


def write_encoded(
    f: IO[str] | io.TextIOBase,
    encoder: Any,
    data: str,
    timeout: float | None,
    abandoned: threading.Event,
) -> None:
    """``data`` encoded by ``encoder`` (see :func:`pipe_encoder`), written to the pipe or
    socket under ``f`` with :func:`write_bounded` after what ``f`` holds."""
    # encode first: a text that cannot be encoded fails before anything is written;
    # a failed encode must not use up the encoder's start-of-stream BOM
    state = encoder.getstate()
    try:
        encoded = encoder.encode(data)
    except UnicodeError:
        encoder.setstate(state)
        raise
    f.flush()
    write_bounded(f.fileno(), encoded, timeout, abandoned)


def write_bounded(fd: int, data: bytes, timeout: float | None, abandoned: threading.Event) -> None:
    """Write ``data`` to the pipe or socket ``fd`` without ever blocking in ``write``.

    Each piece is at most ``PIPE_BUF`` bytes and is written only once ``poll`` reports
    room, which for a pipe means a free buffer slot, so the blocking ``write`` returns
    at once. Raises ``TimeoutError`` when nothing could be written for ``timeout``
    seconds (None: no limit), and stops when ``abandoned`` is set.
    """
    view = memoryview(data)
    piece = select.PIPE_BUF
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    patience = math.inf if timeout is None else timeout
    deadline = time.monotonic() + patience
    while view:
        if abandoned.is_set():
            raise TimeoutError(f"write abandoned with {len(view)} of {len(data)} bytes unwritten")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"stream took nothing for {patience:g} s: "
                f"{len(view)} of {len(data)} bytes unwritten"
            )
        if not poller.poll(min(_CHECK_ABANDONED, left) * 1000):
            continue
        try:
            # POLLERR/POLLHUP/POLLNVAL also end the wait: the write raises the error
            written = os.write(fd, view[:piece])
        except (BlockingIOError, InterruptedError):
            continue  # a non-blocking fd, or another writer took the room first
        view = view[written:]
        deadline = time.monotonic() + patience  # the timeout is for a peer taking nothing


def _write_and_flush(f: io.TextIOBase, data: str) -> None:
    # one hop to the worker per batch: write and flush together, as the stdlib
    # StreamHandler flushes after every record
    f.write(data)
    f.flush()


class ByteCounter:
    """Count the bytes a text-mode file writes for a string, as ``TextIOWrapper`` would.

    Used to track a rotating file's size record by record without asking the disk.
    ``count`` raises ``UnicodeEncodeError`` (nothing counted) for text the file could
    not write either, so a bad record is found before it joins a chunk.
    """

    def __init__(self, encoding: str | None, errors: str | None, at_start: bool) -> None:
        name = encoding or "locale"
        if name == "locale":
            name = locale.getpreferredencoding(False)
        self._encoder = codecs.getincrementalencoder(name)(errors or "strict")
        if not at_start:
            # as TextIOWrapper does when it opens a non-empty file: no second BOM
            self._encoder.setstate(0)
        # plain ASCII text is one byte per character in these codecs: skip encoding
        self._ascii_fast = codecs.lookup(name).name in _ASCII_COMPATIBLE
        # text mode translates "\n" to os.linesep on write
        self._extra_per_newline = len(os.linesep) - 1

    def count(self, text: str) -> int:
        """Return how many bytes writing ``text`` adds to the file."""
        fast = self._ascii_fast and text.isascii()
        n = len(text) if fast else len(self._encoder.encode(text))
        if self._extra_per_newline:
            n += text.count("\n") * self._extra_per_newline
        return n


#: how long closing a file waits for its direct writer's thread to close its descriptor
_CLOSE_WAIT = 5.0
#: how often a waiting bounded write checks whether it was abandoned (seconds)
_CHECK_ABANDONED = 0.05
#: FIFOs and sockets are written with write_bounded (poll, "\n" written as itself)
_POLLABLE_WRITES = hasattr(select, "poll") and os.linesep == "\n"

#: encodings whose first write starts with a byte order mark
_BOM_ENCODINGS = frozenset({"utf-16", "utf-32", "utf-8-sig"})

_ASCII_COMPATIBLE = frozenset({"utf-8", "ascii", "latin-1", "iso8859-15", "cp1252", "iso8859-1"})
