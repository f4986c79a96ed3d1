"""The only code that touches the disk.

Every file sink owns one :class:`FileWorker`: a single worker thread that performs the
sink's disk operations in order (open, write+flush, stat, rename, remove, compress), so
nothing blocks the event loop and a rotation can never overtake a pending write.
Files are opened through ``aiofiles`` bound to that worker's executor.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiofiles
import aiofiles.threadpool.text

__all__ = ["AsyncTextFile", "FileWorker", "resolve_encoding"]

T = TypeVar("T")


def resolve_encoding(mode: str, encoding: str | None) -> str | None:
    """Return the encoding the stdlib ``FileHandler`` would use for ``mode``."""
    if "b" in mode:
        return encoding
    resolved: str = io.text_encoding(encoding)  # type: ignore[attr-defined,unused-ignore]
    return resolved


class FileWorker:
    """A single ordered worker thread for one sink's disk operations."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The executor, created on first use (a thread exists only once needed)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"aiologsinks-{self._name}")
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the worker thread; return its result."""
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        return await loop.run_in_executor(self.executor, call)

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

    async def rename(self, source: str, dest: str) -> None:
        """``os.rename(source, dest)``."""
        await self.run(os.rename, source, dest)

    async def replace(self, source: str, dest: str) -> None:
        """``os.replace(source, dest)``."""
        await self.run(os.replace, source, dest)

    async def remove(self, path: str) -> None:
        """``os.remove(path)``."""
        await self.run(os.remove, path)

    async def listdir(self, path: str) -> list[str]:
        """``os.listdir(path)``."""
        return await self.run(os.listdir, path)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class AsyncTextFile:
    """An open log file: ``write`` appends one chunk and flushes it, off the loop."""

    def __init__(
        self,
        raw: aiofiles.threadpool.text.AsyncTextIOWrapper,
        worker: FileWorker,
    ) -> None:
        self._raw = raw
        self._worker = worker
        # the wrapped blocking file: used only on the worker thread
        self._sync_file: io.TextIOBase = raw._file  # type: ignore[attr-defined]

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
        raw = await aiofiles.open(  # type: ignore[call-overload]
            path, mode, encoding=encoding, errors=errors, executor=worker.executor
        )
        return cls(raw, worker)

    async def write(self, data: str) -> None:
        """Write ``data`` and flush it to the OS in one worker-thread call."""
        await self._worker.run(_write_and_flush, self._sync_file, data)

    async def flush(self) -> None:
        """Flush Python's buffer to the OS."""
        await self._raw.flush()

    async def fstat(self) -> os.stat_result:
        """``os.fstat`` of the open file."""
        return await self._worker.run(os.fstat, self._sync_file.fileno())

    async def tell(self) -> int:
        """The current position (the file size in append mode)."""
        return await self._raw.tell()

    async def close(self) -> None:
        """Flush and close the file."""
        await self._raw.close()


def _write_and_flush(f: io.TextIOBase, data: str) -> None:
    # one hop to the worker per batch: write and flush together, as the stdlib
    # StreamHandler flushes after every record
    f.write(data)
    f.flush()
