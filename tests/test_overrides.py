"""A subclass ported from a stdlib handler: its own I/O hooks are the ones called.

The pipeline calls ``emit_batch``; a subclass of a batching sink that overrides only
``emit`` or ``handle`` (the stdlib's way of changing or vetoing a record) had its
override never called, in a Dispatcher and as a plain handler alike, and a secret its
``handle`` vetoed reached the file.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als

from .helpers import fresh_logger


class Prefixed(logging.FileHandler):
    """The stdlib original: an emit override that changes the record."""

    def emit(self, record: logging.LogRecord) -> None:
        record.msg = "[overridden] " + str(record.msg)
        super().emit(record)


def _prefixed(base: type[als.FileSink]) -> type[als.FileSink]:
    class Ported(base):  # type: ignore[valid-type,misc]
        calls = 0

        async def emit(self, record: logging.LogRecord) -> None:
            type(self).calls += 1
            record.msg = "[overridden] " + str(record.msg)
            await super().emit(record)

    return Ported


class DropSecrets(als.FileSink):
    """A handle override that vetoes records, as a stdlib handler's may."""

    async def handle(self, record: logging.LogRecord) -> bool:
        if "secret" in record.getMessage():
            return False
        return await super().handle(record)


def _log_three(log: logging.Logger) -> None:
    log.info("one %d", 1)
    log.info("two")
    log.info("three")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("base", [als.FileSink, als.RotatingFileSink, als.WatchedFileSink])
async def test_an_emit_override_is_called_for_each_record_in_a_dispatcher(
    tmp_path: Path, base: type[als.FileSink]
) -> None:
    reference = Prefixed(tmp_path / "stdlib.log")
    stdlib = fresh_logger("t.override.stdlib")
    stdlib.addHandler(reference)
    _log_three(stdlib)
    reference.close()
    sink = _prefixed(base)(tmp_path / "ported.log")
    log = fresh_logger("t.override.ported")
    async with als.install(sink, logger=log) as dispatcher:
        _log_three(log)
        await dispatcher.flush()
        stats = next(iter(dispatcher.stats().sinks.values()))
    assert _lines(tmp_path / "ported.log") == _lines(tmp_path / "stdlib.log")
    assert _lines(tmp_path / "ported.log") == [
        "[overridden] one 1",
        "[overridden] two",
        "[overridden] three",
    ]
    assert type(sink).calls == 3
    assert (stats.emitted, stats.delivered, stats.errors) == (3, 3, 0)


async def test_an_emit_override_called_directly_runs_once_per_record(tmp_path: Path) -> None:
    sink = _prefixed(als.FileSink)(tmp_path / "direct.log")
    async with sink:
        await sink.emit(logging.makeLogRecord({"msg": "by emit"}))
        assert await sink.handle(logging.makeLogRecord({"msg": "by handle"}))
        await sink.emit_batch([logging.makeLogRecord({"msg": "by emit_batch"})])
    assert _lines(tmp_path / "direct.log") == [
        "[overridden] by emit",
        "[overridden] by handle",
        "[overridden] by emit_batch",
    ]
    assert type(sink).calls == 3


def test_an_emit_override_is_called_when_the_sink_is_a_plain_handler(tmp_path: Path) -> None:
    sink = _prefixed(als.FileSink)(tmp_path / "handler.log")
    log = fresh_logger("t.override.handler")
    log.addHandler(sink)
    try:
        _log_three(log)
        sink.flush()
    finally:
        log.removeHandler(sink)
        sink.close()
    assert _lines(tmp_path / "handler.log") == [
        "[overridden] one 1",
        "[overridden] two",
        "[overridden] three",
    ]


async def test_a_handle_override_vetoes_records_in_a_dispatcher(tmp_path: Path) -> None:
    sink = DropSecrets(tmp_path / "veto.log")
    log = fresh_logger("t.override.veto")
    async with als.install(sink, logger=log) as dispatcher:
        log.info("public")
        log.info("secret password=%s", "hunter2")
        log.info("public again")
        await dispatcher.flush()
        stats = next(iter(dispatcher.stats().sinks.values()))
    assert _lines(tmp_path / "veto.log") == ["public", "public again"]
    assert (stats.emitted, stats.filtered, stats.delivered, stats.errors) == (2, 1, 2, 0)


def test_a_handle_override_vetoes_records_as_a_plain_handler(tmp_path: Path) -> None:
    sink = DropSecrets(tmp_path / "veto.log")
    log = fresh_logger("t.override.veto.handler")
    log.addHandler(sink)
    try:
        log.info("public")
        log.info("secret password=%s", "hunter2")
        sink.flush()
    finally:
        log.removeHandler(sink)
        sink.close()
    assert _lines(tmp_path / "veto.log") == ["public"]


async def test_a_handle_override_filters_once_and_the_sinks_filters_still_apply(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    def counting(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return record.getMessage() != "filtered"

    sink = DropSecrets(tmp_path / "filters.log")
    sink.addFilter(counting)
    log = fresh_logger("t.override.filters")
    async with als.install(sink, logger=log) as dispatcher:
        for message in ("kept", "filtered", "secret"):
            log.info(message)
        await dispatcher.flush()
        stats = next(iter(dispatcher.stats().sinks.values()))
    assert seen == ["kept", "filtered", "secret"]  # each record through the filter once
    assert _lines(tmp_path / "filters.log") == ["kept"]
    assert (stats.emitted, stats.filtered) == (1, 2)


@pytest.mark.parametrize("hook", ["emit", "emit_batch", "handle", "flush"])
def test_an_io_hook_override_that_is_not_a_coroutine_is_refused_with_its_name(hook: str) -> None:
    def plain(self: Any, *args: Any) -> None:
        return None

    with pytest.raises(TypeError, match=rf"Ported\.{hook} must be a coroutine function"):
        type("Ported", (als.FileSink,), {hook: plain})


class _FrameReceiver:
    """A real TCP peer reading SocketHandler frames (length + pickle)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                body = await reader.readexactly(struct.unpack(">L", head)[0])
                self.messages.append(pickle.loads(body)["msg"])  # our own frames
                self.arrived.set()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def wait_for(self, count: int) -> None:
        while len(self.messages) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


async def test_socket_sink_send_and_create_socket_overrides_are_called() -> None:
    calls: list[str] = []

    class Counted(als.SocketSink):
        async def createSocket(self) -> None:
            calls.append("createSocket")
            await super().createSocket()

        async def send(self, s: bytes) -> None:
            calls.append("send")
            await super().send(s)

    peer = _FrameReceiver()
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sink = Counted("127.0.0.1", port)
        log = fresh_logger("t.override.socket")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(5):
                log.info("frame %d", i)
            await dispatcher.flush()
            await peer.wait_for(5)
            stats = next(iter(dispatcher.stats().sinks.values()))
    finally:
        server.close()
        await server.wait_closed()
    assert peer.messages == [f"frame {i}" for i in range(5)]
    assert calls.count("send") == 5
    assert calls[0] == "createSocket"
    assert (stats.delivered, stats.errors) == (5, 0)
