"""StreamSink and NullSink."""

from __future__ import annotations

import io
import logging
import os
import threading

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
