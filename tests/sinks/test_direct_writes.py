"""A file's writes on the compiled writer's thread (``_speedups.FdWriter`` behind
``_fileio.DirectWriter``): the bytes, their order and the positions are those of the
worker-thread path, and every case it does not take goes to that path."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import sys
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks import _fileio, _record
from aiologsinks._fileio import AsyncTextFile, FileWorker
from aiologsinks._stats import assert_accounted

from ..conftest import require
from ..helpers import fresh_logger, wait_until
from ..reliability.test_faults import run_script

BOUND = 10.0
PURE = bool(os.environ.get("AIOLOGSINKS_PURE_PYTHON"))


def fd_writer() -> Any:
    if PURE:
        pytest.skip("AIOLOGSINKS_PURE_PYTHON is set: the compiled path is off")
    require(_fileio.FdWriter is not None, "the compiled accelerator (pip install -e .)")
    return _fileio.FdWriter


def collect_all(writer: Any, count: int) -> list[tuple[int, int]]:
    """Wait on the writer's pipe (as the loop does) until ``count`` chunks are done."""
    done: list[tuple[int, int]] = []
    while len(done) < count:
        readable, _, _ = select.select([writer.fileno()], [], [], BOUND)
        assert readable, f"no notification within {BOUND}s ({len(done)}/{count} done)"
        done.extend(writer.collect())
    return done


def test_chunks_are_written_in_order_with_the_position_after_each(tmp_path: Path) -> None:
    FdWriter = fd_writer()
    path = tmp_path / "x.log"
    with open(path, "ab") as f:
        writer = FdWriter(f.fileno())
        chunks = [f"line {i}\n".encode() * (i + 1) for i in range(200)]
        for chunk in chunks:
            writer.submit(chunk)
        done = collect_all(writer, len(chunks))
        writer.close()
    assert path.read_bytes() == b"".join(chunks)
    ends = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]
    assert done == [(0, end) for end in ends]
    with pytest.raises(ValueError, match="closed"):
        writer.submit(b"late")


def test_a_failed_write_reports_its_errno_and_the_next_chunks_still_run(tmp_path: Path) -> None:
    FdWriter = fd_writer()
    path = tmp_path / "ro.log"
    path.write_bytes(b"")
    with open(path, "rb") as f:  # read-only: write() fails with EBADF
        writer = FdWriter(f.fileno())
        writer.submit(b"a")
        writer.submit(b"b")
        done = collect_all(writer, 2)
        writer.close()
    assert done == [(errno.EBADF, -1), (errno.EBADF, -1)]


def test_close_still_writes_what_was_queued(tmp_path: Path) -> None:
    FdWriter = fd_writer()
    path = tmp_path / "late.log"
    f = open(path, "ab")
    writer = FdWriter(f.fileno())
    for i in range(50):
        writer.submit(b"%d\n" % i)
    writer.close()  # the writer holds its own descriptor: closing ours loses nothing
    f.close()
    expected = b"".join(b"%d\n" % i for i in range(50))
    asyncio.run(wait_until(lambda: path.read_bytes() == expected, BOUND))


async def test_a_file_sink_writes_ascii_directly_and_other_text_through_its_worker(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mixed.log"
    reference = tmp_path / "reference.log"
    sink = als.FileSink(path)
    sink.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler = logging.FileHandler(reference)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    messages = ["plain", "caf\u00e9", "plain again", "\u65e5\u672c", "tail"]
    async with sink:
        for i, msg in enumerate(messages):
            record = logging.makeLogRecord({"msg": f"{msg} {i}", "levelname": "INFO"})
            await sink.emit_batch([record, record])
            handler.handle(record)
            handler.handle(record)
            assert sink._file is not None
            direct = sink._file._direct
            assert (direct is not None) == (_fileio.FdWriter is not None and not PURE)
    handler.close()
    assert path.read_bytes() == reference.read_bytes()


async def test_rotation_sizes_come_from_direct_writes_as_from_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    reference = tmp_path / "ref" / "r.log"
    reference.parent.mkdir()
    sink = als.RotatingFileSink(path, maxBytes=300, backupCount=3)
    handler = logging.handlers.RotatingFileHandler(reference, maxBytes=300, backupCount=3)
    for target in (sink, handler):
        target.setFormatter(logging.Formatter("%(message)s"))
    async with sink:
        for i in range(60):
            record = logging.makeLogRecord({"msg": f"record number {i:03d}"})
            await sink.emit_batch([record])
            handler.handle(record)
    handler.close()
    for suffix in ("", ".1", ".2", ".3"):
        ours = Path(f"{path}{suffix}").read_bytes()
        assert ours == Path(f"{reference}{suffix}").read_bytes(), suffix


async def test_a_file_that_is_not_regular_gets_no_direct_writer() -> None:
    opened = await AsyncTextFile.open(os.devnull, "a", "utf-8", None, FileWorker("null"))
    try:
        assert opened._direct is None
        await opened.write("to the worker\n")
    finally:
        await opened.close()


async def test_an_encoding_that_does_not_write_ascii_as_itself_gets_no_direct_writer(
    tmp_path: Path,
) -> None:
    for encoding in ("utf-16", "utf-8-sig"):
        path = tmp_path / f"{encoding}.log"
        opened = await AsyncTextFile.open(str(path), "w", encoding, None, FileWorker("enc"))
        try:
            assert opened._direct is None
            await opened.write("abc\n")
        finally:
            await opened.close()
        assert path.read_text(encoding) == "abc\n"


def test_a_file_sink_used_from_two_loops_in_turn_writes_everything(tmp_path: Path) -> None:
    path = tmp_path / "loops.log"
    sink = als.FileSink(path)
    sink.setFormatter(logging.Formatter("%(message)s"))

    async def write(start: int) -> None:
        for i in range(start, start + 20):
            await sink.emit_batch([logging.makeLogRecord({"msg": f"m{i}"})])

    async def close() -> None:
        await sink.aclose()

    asyncio.run(write(0))
    asyncio.run(write(20))  # the writer's pipe is watched by this loop now
    asyncio.run(close())
    assert path.read_text().splitlines() == [f"m{i}" for i in range(40)]


FORK_SCRIPT = """
import asyncio, logging, os, sys
import aiologsinks as als

sink = als.FileSink(sys.argv[1])
sink.setFormatter(logging.Formatter("%(message)s"))

async def write(tag, n):
    for i in range(n):
        await sink.emit_batch([logging.makeLogRecord({"msg": f"{tag} {i}"})])

asyncio.run(write("parent", 3))
pid = os.fork()
if pid == 0:
    # neither the compiled writer's thread nor the worker's exists here
    asyncio.run(asyncio.wait_for(write("child", 3), 10))
    print("child direct", sink._file._direct, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
asyncio.run(write("parent after", 3))
asyncio.run(sink.aclose())
"""


def test_a_forked_child_writes_through_a_worker_of_its_own(tmp_path: Path) -> None:
    require(hasattr(os, "fork"), "os.fork")
    path = tmp_path / "fork.log"
    proc = run_script(FORK_SCRIPT, str(path))
    assert proc.returncode == 0, proc.stderr
    assert "child direct None" in proc.stdout
    expected = [f"{tag} {i}" for tag in ("parent", "child", "parent after") for i in range(3)]
    assert path.read_text().splitlines() == expected


class ReadOnlyFileSink(als.FileSink):
    """A file sink whose file takes no writes: every write fails in the OS."""

    reported: list[BaseException | None]

    async def _open(self) -> AsyncTextFile:
        return await AsyncTextFile.open(self.baseFilename, "r", "utf-8", None, self._worker)

    def handleError(self, record: logging.LogRecord) -> None:
        self.reported.append(sys.exc_info()[1])


async def test_a_write_the_os_refuses_is_counted_and_reported_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "ro.log"
    path.write_text("")
    sink = ReadOnlyFileSink(path)
    sink.reported = []
    dispatcher = als.Dispatcher(sink)
    dispatcher.start()
    log = fresh_logger("t.direct.refused")
    log.addHandler(dispatcher.handler)
    try:
        for i in range(30):
            log.warning("refused %d", i)
        await dispatcher.flush(timeout=BOUND)
        assert sink._file is not None
        # the direct writer took the writes (EBADF), or the worker did on the pure path
        assert (sink._file._direct is not None) == (_fileio.FdWriter is not None)
        stats = await dispatcher.aclose(timeout=BOUND)
    finally:
        log.removeHandler(dispatcher.handler)
    (only,) = stats.sinks.values()
    assert only.delivered == 0 and only.errors == 30
    # one report per failed batch (one write), each with the OS's error
    assert 1 <= len(sink.reported) <= 30
    assert all(isinstance(exc, OSError) for exc in sink.reported), sink.reported
    assert path.read_text() == ""
    assert_accounted(stats, logged=30)


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch a descriptor (as the Windows proactor loop cannot)."""

    def add_reader(self, *args: Any) -> Any:  # type: ignore[override]
        raise NotImplementedError


def test_a_loop_that_cannot_watch_a_pipe_writes_through_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "noreader.log"
    sink = als.FileSink(path)
    sink.setFormatter(logging.Formatter("%(message)s"))

    async def write() -> None:
        async with sink:
            for i in range(10):
                await sink.emit_batch([logging.makeLogRecord({"msg": f"m{i}"})])
            assert sink._file is not None and sink._file._direct is None

    loop = NoReaderLoop()
    try:
        loop.run_until_complete(asyncio.wait_for(write(), BOUND))
    finally:
        loop.close()
    assert path.read_text().splitlines() == [f"m{i}" for i in range(10)]


def test_direct_writes_are_on_exactly_when_the_accelerator_is() -> None:
    if PURE:
        assert _fileio.FdWriter is None
        return
    require(_record.ACCELERATED, "the compiled accelerator (pip install -e .)")
    assert _fileio.FdWriter is not None
