"""StreamSink and NullSink."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

import aiologsinks as als

from ..helpers import fresh_logger


async def test_stream_sink_writes_formatted_records_with_the_terminator() -> None:
    stream = io.StringIO()
    sink = als.StreamSink(stream)
    sink.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = fresh_logger("t.stream")
    async with als.install(sink, logger=log) as dispatcher:
        log.info("one")
        log.warning("two")
        await dispatcher.flush()
        sink.terminator = "|"
        log.error("three")
    assert stream.getvalue() == "INFO one\nWARNING two\nERROR three|"


async def test_set_stream_swaps_the_stream_as_stream_handler_does(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    sink, stdlib = als.StreamSink(first), logging.StreamHandler(io.StringIO())
    log = fresh_logger("t.stream.set")
    async with als.install(sink, logger=log) as dispatcher:
        log.info("one")
        await dispatcher.flush()  # what was logged before goes to the old stream
        assert sink.setStream(second) is first
        assert stdlib.setStream(second) is not None  # the stdlib's return, for comparison
        assert sink.setStream(second) is None and stdlib.setStream(second) is None
        log.info("two")
    assert (first.getvalue(), second.getvalue()) == ("one\n", "two\n")
    with pytest.raises(TypeError, match=r"^stream: "):
        sink.setStream("stdout")  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="StreamSink instead"):
        als.FileSink(tmp_path / "app.log").setStream(second)


def _piped(encoding: str, write: Callable[[IO[str]], None]) -> bytes:
    """What ``write`` wrote to a text stream over a pipe, as the reader got it."""
    read_fd, write_fd = os.pipe()
    got: list[bytes] = []
    reader = threading.Thread(
        target=lambda: got.append(b"".join(iter(lambda: os.read(read_fd, 65536), b"")))
    )
    reader.start()
    with open(write_fd, "w", encoding=encoding) as stream:
        write(stream)
    reader.join(10)
    os.close(read_fd)
    return got[0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig", "utf-8"])
def test_a_pipe_gets_the_bytes_stream_handler_writes_batch_after_batch(encoding: str) -> None:
    # one encoder for the stream's life: a BOM (utf-16/32 write none to what cannot
    # seek, utf-8-sig one) came before every batch when each was encoded afresh
    def stdlib(stream: IO[str]) -> None:
        handler = logging.StreamHandler(stream)
        for text in ("one", "two", "three"):
            handler.handle(logging.makeLogRecord({"msg": text}))

    def ours(stream: IO[str]) -> None:
        async def run() -> None:
            log = fresh_logger("t.stream.pipe")
            async with als.install(als.StreamSink(stream), logger=log) as dispatcher:
                for text in ("one", "two", "three"):
                    log.warning(text)
                    await dispatcher.flush()  # a batch each

        asyncio.run(run())

    assert _piped(encoding, ours) == _piped(encoding, stdlib)


def test_a_pipe_shared_with_the_application_and_reconfigured_gets_stream_handlers_bytes() -> None:
    # the application writes to the same stream between batches (utf-8-sig: one BOM
    # for both), then reconfigures it (ascii errors: the sink follows, as the stream)
    def steps(stream: IO[str], emit: Callable[[str], None]) -> None:
        emit("one")
        stream.write("app\n")
        stream.flush()
        emit("two")
        stream.reconfigure(encoding="ascii", errors="backslashreplace")  # type: ignore[attr-defined]
        emit("café")

    def stdlib(stream: IO[str]) -> None:
        handler = logging.StreamHandler(stream)
        steps(stream, lambda text: handler.handle(logging.makeLogRecord({"msg": text})))

    def ours(stream: IO[str]) -> None:
        async def run() -> None:
            log = fresh_logger("t.stream.shared")
            async with als.install(als.StreamSink(stream), logger=log) as dispatcher:
                loop = asyncio.get_running_loop()

                def emit(text: str) -> None:
                    log.warning(text)
                    asyncio.run_coroutine_threadsafe(dispatcher.flush(), loop).result(10)

                await asyncio.to_thread(steps, stream, emit)

        asyncio.run(run())

    assert _piped("utf-8-sig", ours) == _piped("utf-8-sig", stdlib)


def test_a_pipe_swapped_away_and_back_goes_on_where_it_was() -> None:
    # setStream A, B, then A again: A's BOM once (its encoder is A's, kept)
    def stdlib(stream: IO[str]) -> None:
        handler = logging.StreamHandler(stream)
        for text in ("a1", "a2"):
            handler.handle(logging.makeLogRecord({"msg": text}))

    def ours(stream: IO[str]) -> None:
        async def run() -> None:
            log = fresh_logger("t.stream.swap")
            other = io.StringIO()
            sink = als.StreamSink(stream)
            async with als.install(sink, logger=log) as dispatcher:
                for text, to in (("a1", other), ("b1", stream), ("a2", other)):
                    log.warning(text)
                    await dispatcher.flush()
                    sink.setStream(to)
            assert other.getvalue() == "b1\n"

        asyncio.run(run())

    assert _piped("utf-8-sig", ours) == _piped("utf-8-sig", stdlib)


async def test_stream_sink_defaults_to_stderr() -> None:
    import sys

    assert als.StreamSink().stream is sys.stderr


async def test_a_slow_pipe_does_not_block_the_loop() -> None:
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w")
    sink = als.StreamSink(writer)
    payload = "x" * 200_000  # far more than a pipe buffer holds
    log = fresh_logger("t.pipe")
    ticks = 0
    async with als.install(sink, logger=log) as dispatcher:
        log.info(payload)
        flushed = __import__("asyncio").ensure_future(dispatcher.flush())
        # the loop keeps running while the write is stuck on the full pipe
        for _ in range(20):
            await __import__("asyncio").sleep(0.001)
            ticks += 1
        assert not flushed.done()
        chunks: list[bytes] = []

        def drain() -> None:
            while sum(map(len, chunks)) < len(payload) + 1:
                chunks.append(os.read(read_fd, 65536))

        reader = threading.Thread(target=drain)
        reader.start()
        await flushed
        await __import__("asyncio").to_thread(reader.join, 10)
    writer.close()
    os.close(read_fd)
    assert ticks == 20
    assert b"".join(chunks) == payload.encode() + b"\n"


async def test_null_sink_accepts_everything_and_does_nothing() -> None:
    sink = als.NullSink()
    log = fresh_logger("t.null")
    async with als.install(sink, logger=log) as dispatcher:
        log.info("gone")
        await dispatcher.flush()
        assert dispatcher.stats().sinks["NullSink#0"].emitted == 1
    assert await sink.handle(logging.makeLogRecord({"msg": "x"})) is True


async def test_sink_level_validation_names_the_parameter() -> None:
    import pytest

    with pytest.raises(ValueError, match="level: unknown level name 'LOUD'"):
        als.NullSink().setLevel("LOUD")
    with pytest.raises(TypeError, match="level: expected an int or a level name"):
        als.NullSink().setLevel(1.5)  # type: ignore[arg-type]


async def test_sink_handle_filters_and_routes_errors_to_handle_error() -> None:
    class Bad(als.Sink):
        def __init__(self) -> None:
            super().__init__()
            self.errors: list[logging.LogRecord] = []

        async def emit(self, record: logging.LogRecord) -> None:
            raise ValueError("nope")

        def handleError(self, record: logging.LogRecord) -> None:
            self.errors.append(record)

    sink = Bad()
    sink.addFilter(lambda r: r.levelno >= logging.WARNING)
    quiet = logging.makeLogRecord({"msg": "quiet", "levelno": logging.INFO})
    loud = logging.makeLogRecord({"msg": "loud", "levelno": logging.ERROR})
    assert await sink.handle(quiet) is False
    assert await sink.handle(loud) is True
    assert sink.errors == [loud]
    assert sink.error_count == 1


FORMATS = [
    None,
    "%(asctime)s %(levelname)s %(name)s %(message)s",
    "%(asctime)s.%(msecs)03d [%(process)d:%(thread)d] %(module)s:%(lineno)d %(message)s",
    "%(relativeCreated)d %(levelno)s %(pathname)s %(funcName)s %(message)r",
    "%(message)s|%(exc_text)s",
]


async def test_the_batch_formatter_writes_what_logging_formatter_writes() -> None:
    records = []
    for i, created in enumerate([1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5]):
        record = logging.LogRecord("app.db", 10 * (i + 1), "/a/b.py", 7, "m %s", ("x",), None)
        record.created, record.msecs = created, (created % 1) * 1000
        records.append(record)
    merged = logging.LogRecord("n", 20, "/a/b.py", 1, "merged already", None, None)
    with_exc = logging.LogRecord("n", 40, "/a/b.py", 1, "boom", None, None)
    with_exc.exc_text = "Traceback...\nValueError: x"
    with_stack = logging.LogRecord("n", 40, "/a/b.py", 1, "s", None, None, sinfo="Stack:")
    records += [merged, with_exc, with_stack]
    for fmt in FORMATS:
        for datefmt in (None, "%H:%M:%S"):
            formatter = logging.Formatter(fmt, datefmt)
            sink = als.StreamSink(io.StringIO())
            sink.setFormatter(formatter)
            fast = sink.formatter_for_batch()
            assert fast is not sink.format  # the inline path is in use
            for record in records:
                assert fast(record) == formatter.format(record), (fmt, datefmt)
    custom = als.StreamSink(io.StringIO())
    custom.setFormatter(logging.Formatter("{message}", style="{"))
    assert custom.formatter_for_batch() == custom.format  # other styles: the real thing


async def test_write_timeout_is_validated_naming_the_parameter() -> None:
    import pytest

    with pytest.raises(ValueError, match="write_timeout"):
        als.StreamSink(io.StringIO(), write_timeout=0)
    with pytest.raises(TypeError, match="write_timeout"):
        als.StreamSink(io.StringIO(), write_timeout="1")  # type: ignore[arg-type]
    assert als.StreamSink(io.StringIO(), write_timeout=None).write_timeout is None


async def test_a_pipe_nobody_reads_times_out_and_the_records_are_counted() -> None:
    read_fd, write_fd = os.pipe()
    writer = open(write_fd, "w", encoding="utf-8")
    errors: list[logging.LogRecord] = []

    class Counting(als.StreamSink):
        def handleError(self, record: logging.LogRecord) -> None:
            errors.append(record)

    sink = Counting(writer, write_timeout=0.2)
    log = fresh_logger("t.pipe.timeout")
    big = "y" * 65536
    try:
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(4):  # 256 KiB: more than the pipe holds
                log.info("rec %d %s", i, big)
            await dispatcher.flush(timeout=10)
            stats = dispatcher.stats().sinks
        (s,) = stats.values()
        assert s.received == 4
        assert s.errors >= 1 and errors  # handleError heard of it
        assert s.delivered + s.errors == 4
        # the worker thread is free again: the stream is still usable by others
        assert os.read(read_fd, 1 << 20).startswith(b"rec 0 y")
    finally:
        writer.close()
        os.close(read_fd)


@pytest.mark.parametrize(
    "stream", ["stdout", 5, b"x", object()], ids=["str", "int", "bytes", "object"]
)
def test_a_stream_without_write_is_refused_naming_the_parameter(stream: object) -> None:
    with pytest.raises(TypeError, match=r"^stream: .*write\(\)"):
        als.StreamSink(stream)  # type: ignore[arg-type]


async def test_a_stream_with_write_and_no_flush_is_written() -> None:
    class WriteOnly:
        def __init__(self) -> None:
            self.texts: list[str] = []

        def write(self, text: str) -> int:
            self.texts.append(text)
            return len(text)

    stream = WriteOnly()
    log = fresh_logger("t.write_only")
    async with als.install(als.StreamSink(stream), logger=log) as dispatcher:  # type: ignore[arg-type]
        log.warning("one")
        log.warning("two")
        await dispatcher.flush()
        assert dispatcher.stats().sinks["StreamSink#0"].errors == 0
    assert "".join(stream.texts) == "one\ntwo\n"


@pytest.mark.parametrize("name", ["stdout", "stderr"])
def test_the_config_loader_still_maps_a_stream_name(name: str) -> None:
    import sys

    from aiologsinks import config

    built = config.from_dict({"sinks": {"out": {"type": "stream", "stream": name}}})
    assert built.sinks["out"].stream is getattr(sys, name)  # type: ignore[attr-defined]
