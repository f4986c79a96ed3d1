"""A subclass ported from a stdlib handler: its own I/O hooks are the ones called.

The pipeline calls ``emit_batch``; a subclass of a batching sink that overrides only
``emit`` or ``handle`` (the stdlib's way of changing or vetoing a record) had its
override never called, in a Dispatcher and as a plain handler alike, and a secret its
``handle`` vetoed reached the file.
"""

from __future__ import annotations

import asyncio
import io
import logging
import logging.handlers
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted

from .helpers import CaptureHandler, fresh_logger, started


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
    # emit_batch is the library's batch: the pipeline calls the own emit per record
    assert _lines(tmp_path / "direct.log") == [
        "[overridden] by emit",
        "[overridden] by handle",
        "by emit_batch",
    ]
    assert type(sink).calls == 2


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
    # as on a stdlib handler, the filters run inside handle(): the veto came first
    assert seen == ["kept", "filtered"]
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


class _Veto(als.Sink):
    """A mixin on Sink itself: its handle() vetoes, whatever sink it is mixed with."""

    async def handle(self, record: logging.LogRecord) -> bool:
        if "secret" in record.getMessage():
            return False
        return await super().handle(record)


class _MixedIn(_Veto, als.FileSink):
    pass


class _PlainVeto:
    """A mixin that is no Sink: its handle() is the one a stdlib mixin would have."""

    async def handle(self, record: logging.LogRecord) -> bool:
        if "secret" in record.getMessage():
            return False
        return await super().handle(record)  # type: ignore[misc,no-any-return]


class _PlainMixedIn(_PlainVeto, als.FileSink):
    pass


class _VetoThenPrefix(DropSecrets):
    """The parent vetoes in handle(), the child changes the record in emit()."""

    async def emit(self, record: logging.LogRecord) -> None:
        record.msg = "[child] " + str(record.msg)
        await super().emit(record)


async def _deliver_three(sink: als.Sink, name: str) -> Any:
    log = fresh_logger(name)
    async with als.install(sink, logger=log) as dispatcher:
        log.info("public")
        log.info("secret x")
        log.info("public 2")
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert_accounted(stats, logged=3)
    return next(iter(stats.sinks.values()))


class _Batching(als.FileSink):
    async def emit_batch(self, records: Any) -> None:
        await super().emit_batch(records)


class _VetoOverBatching(_Batching):
    """A child's own handle over a parent's own emit_batch: the handle is called."""

    async def handle(self, record: logging.LogRecord) -> bool:
        if "secret" in record.getMessage():
            return False
        return await super().handle(record)


#: classes whose emit/handle come from each level of the tree, and what they write
_TREES = pytest.mark.parametrize(
    ("cls", "lines"),
    [
        (_MixedIn, ["public", "public 2"]),
        (_PlainMixedIn, ["public", "public 2"]),
        (_VetoThenPrefix, ["[child] public", "[child] public 2"]),
        (_VetoOverBatching, ["public", "public 2"]),
    ],
    ids=["mixin", "plain-mixin", "parent-handle-child-emit", "child-handle-parent-batch"],
)


@_TREES
async def test_overrides_from_every_level_of_the_class_tree_are_called(
    tmp_path: Path, cls: type[als.FileSink], lines: list[str]
) -> None:
    # a mixin's handle on a batching sink recursed without end (every record lost);
    # a parent's handle was skipped when a child had its own emit
    stats = await _deliver_three(cls(tmp_path / "tree.log"), f"t.override.{cls.__name__}")
    assert _lines(tmp_path / "tree.log") == lines
    assert (stats.delivered, stats.filtered, stats.errors) == (2, 1, 0)


@_TREES
def test_overrides_from_every_level_of_the_class_tree_are_called_as_a_handler(
    tmp_path: Path, cls: type[als.FileSink], lines: list[str]
) -> None:
    handler = cls(tmp_path / "tree-handler.log")
    log = fresh_logger(f"t.override.handler.{cls.__name__}")
    log.addHandler(handler)
    try:
        for message in ("public", "secret x", "public 2"):
            log.info(message)
        handler.flush()
    finally:
        log.removeHandler(handler)
        handler.close()
    assert _lines(tmp_path / "tree-handler.log") == lines


async def test_a_childs_own_emit_batch_takes_the_batch_under_a_parents_emit(tmp_path: Path) -> None:
    calls: list[int] = []

    class Parent(als.FileSink):
        async def emit(self, record: logging.LogRecord) -> None:
            record.msg = "[parent] " + str(record.msg)
            await super().emit(record)

    class Child(Parent):
        async def emit_batch(self, records: Any) -> None:
            calls.append(len(records))
            await super().emit_batch(records)

    # its own emit_batch takes the batch (it ran again for each record its parent's
    # emit delivered): the parent's emit is no longer the pipeline's to call
    stats = await _deliver_three(Child(tmp_path / "child.log"), "t.override.child")
    assert calls == [3]
    assert _lines(tmp_path / "child.log") == ["public", "secret x", "public 2"]
    assert stats.delivered == 3


async def test_a_handle_override_that_returns_nothing_delivers(tmp_path: Path) -> None:
    class Forgetful(als.FileSink):
        async def handle(self, record: logging.LogRecord) -> None:  # type: ignore[override]
            await super().handle(record)  # no return: the stdlib ignores the value

    stats = await _deliver_three(Forgetful(tmp_path / "none.log"), "t.override.none")
    assert len(_lines(tmp_path / "none.log")) == 3
    assert (stats.delivered, stats.filtered) == (3, 0)


async def test_a_handle_override_runs_before_the_filters(tmp_path: Path) -> None:
    class Tagging(als.FileSink):
        async def handle(self, record: logging.LogRecord) -> bool:
            record.tag = "set by handle"
            return await super().handle(record)

    sink = Tagging(tmp_path / "tag.log")
    sink.addFilter(lambda r: getattr(r, "tag", None) == "set by handle")
    stats = await _deliver_three(sink, "t.override.tag")
    assert len(_lines(tmp_path / "tag.log")) == 3  # the filter saw the tag, as in stdlib
    assert stats.filtered == 0


async def test_an_override_from_functools_partialmethod_is_called(tmp_path: Path) -> None:
    import functools

    class Partial(als.FileSink):
        async def _emit_with(self, prefix: str, record: logging.LogRecord) -> None:
            record.msg = prefix + str(record.msg)
            await als.FileSink.emit(self, record)

        emit = functools.partialmethod(_emit_with, "[pm] ")

    stats = await _deliver_three(Partial(tmp_path / "pm.log"), "t.override.pm")
    assert _lines(tmp_path / "pm.log")[0] == "[pm] public"
    assert (stats.delivered, stats.errors) == (3, 0)


async def test_aclose_cut_short_in_a_per_record_batch_spills_only_what_was_not_reached(
    tmp_path: Path,
) -> None:
    stuck = asyncio.Event()

    class Slow(DropSecrets):
        async def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "stuck":
                await stuck.wait()  # never set: aclose's timeout ends it
            await super().emit(record)

    fallback = CaptureHandler()
    sink = Slow(tmp_path / "slow.log")
    log = fresh_logger("t.override.slow")
    dispatcher = started(log, sink, fallback=fallback)
    try:
        for message in ("public 1", "secret pw", "public 2", "stuck", "after"):
            log.info(message)
        stats = await dispatcher.aclose(timeout=0.5)
    finally:
        log.removeHandler(dispatcher.handler)
    assert _lines(tmp_path / "slow.log") == ["public 1", "public 2"]
    spilled = [r.getMessage() for r in fallback.records if r.getMessage() in ("stuck", "after")]
    assert spilled == ["stuck", "after"]
    assert not any(
        "secret" in r.getMessage() or "public" in r.getMessage() for r in fallback.records
    )
    only = next(iter(stats.sinks.values()))
    assert (only.delivered, only.filtered, only.undelivered) == (2, 1, 2)


async def test_an_override_does_not_change_how_another_sink_filters(tmp_path: Path) -> None:
    # a MemorySink subclass with its own handle flushes to a DropSecrets target: the
    # target's veto was skipped (the flag that said "filtered already" leaked to it)
    class Counting(als.MemorySink):
        async def handle(self, record: logging.LogRecord) -> bool:
            return await super().handle(record)

    target = DropSecrets(tmp_path / "target.log")
    sink = Counting(capacity=10, target=target)
    stats = await _deliver_three(sink, "t.override.memory")
    await target.aclose()
    assert _lines(tmp_path / "target.log") == ["public", "public 2"]
    assert stats.errors == 0


def test_a_handler_pipeline_started_inside_an_override_keeps_no_context(tmp_path: Path) -> None:
    """A sink's emit override logs to a logger whose handler is a sink with a veto: that
    handler's private pipeline, started from inside the override, kept its context for
    good, and from then on its handle() veto was skipped."""
    audit_sink = DropSecrets(tmp_path / "audit.log")
    audit = fresh_logger("t.override.audit")
    audit.addHandler(audit_sink)

    class Forwarding(als.FileSink):
        async def emit(self, record: logging.LogRecord) -> None:
            audit.info("forwarded: %s", record.getMessage())
            await super().emit(record)

    async def main() -> None:
        sink = Forwarding(tmp_path / "main.log")
        log = fresh_logger("t.override.forwarding")
        async with als.install(sink, logger=log) as dispatcher:
            log.info("hello")
            await dispatcher.flush()

    try:
        asyncio.run(main())
        audit.info("secret token=abc")
        audit.info("public")
        audit_sink.flush()
    finally:
        audit.removeHandler(audit_sink)
        audit_sink.close()
    assert _lines(tmp_path / "audit.log") == ["forwarded: hello", "public"]


async def _udp_peer() -> tuple[asyncio.DatagramTransport, int, asyncio.Queue[bytes]]:
    """A real UDP peer on 127.0.0.1: its transport, port and the datagrams it got."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.put_nowait(data)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Peer, local_addr=("127.0.0.1", 0)
    )
    return transport, transport.get_extra_info("sockname")[1], got


async def test_datagram_sink_send_override_is_called() -> None:
    sent: list[bytes] = []

    class Counted(als.DatagramSink):
        async def send(self, s: bytes) -> None:
            sent.append(s)
            await super().send(s)

    transport, port, got = await _udp_peer()
    try:
        stats = await _deliver_three(Counted("127.0.0.1", port), "t.override.datagram")
        frames = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
    finally:
        transport.close()
    assert len(sent) == 3 and frames == sent
    assert stats.delivered == 3


@pytest.mark.parametrize("hook", ["send", "createSocket"])
def test_a_socket_hook_override_that_is_not_a_coroutine_is_refused(hook: str) -> None:
    def plain(self: Any, *args: Any) -> None:
        return None

    with pytest.raises(TypeError, match=rf"Ported\.{hook} must be a coroutine function"):
        type("Ported", (als.SocketSink,), {hook: plain})


def test_a_staticmethod_coroutine_override_is_accepted() -> None:
    async def emit(record: logging.LogRecord) -> None:
        return None

    cls = type("Static", (als.FileSink,), {"emit": staticmethod(emit)})
    assert issubclass(cls, als.FileSink)


async def test_an_own_emit_batch_keeps_the_sinks_filters(tmp_path: Path) -> None:
    # with handle and emit_batch of its own, the batch is its own: the pipeline
    # filtered nothing (neither its handle nor the lane ran the filters)
    class HandleAndBatch(DropSecrets):
        async def emit_batch(self, records: Any) -> None:
            await super().emit_batch(records)

    sink = HandleAndBatch(tmp_path / "batch.log")
    sink.addFilter(lambda r: "x" not in r.getMessage())
    stats = await _deliver_three(sink, "t.override.batch")
    assert _lines(tmp_path / "batch.log") == ["public", "public 2"]
    assert stats.filtered == 1


async def test_an_override_delivering_outside_emit_is_not_sent_back_to_it(tmp_path: Path) -> None:
    # emit keeps the records, flush writes them with emit_batch: that went back to
    # emit (which kept them again), and the file stayed empty
    class Deferred(als.FileSink):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.kept: list[logging.LogRecord] = []

        async def emit(self, record: logging.LogRecord) -> None:
            self.kept.append(record)

        async def flush(self) -> None:
            kept, self.kept = self.kept, []
            await self.emit_batch(kept)
            await super().flush()

    stats = await _deliver_three(Deferred(tmp_path / "deferred.log"), "t.override.deferred")
    assert _lines(tmp_path / "deferred.log") == ["public", "secret x", "public 2"]
    assert stats.delivered == 3


async def test_overrides_set_after_the_class_or_on_the_instance_are_called(tmp_path: Path) -> None:
    class Late(als.FileSink):
        pass

    async def late_emit(self: Any, record: logging.LogRecord) -> None:
        record.msg = "[late] " + str(record.msg)
        await als.FileSink.emit(self, record)

    Late.emit = late_emit  # type: ignore[method-assign]
    await _deliver_three(Late(tmp_path / "late.log"), "t.override.late")
    assert _lines(tmp_path / "late.log")[0] == "[late] public"

    sink = als.FileSink(tmp_path / "instance.log")

    async def veto(record: logging.LogRecord) -> bool:
        return False if "secret" in record.getMessage() else await als.FileSink.handle(sink, record)

    sink.handle = veto  # type: ignore[method-assign]
    stats = await _deliver_three(sink, "t.override.instance")
    assert _lines(tmp_path / "instance.log") == ["public", "public 2"]
    assert stats.filtered == 1


def test_a_plain_handle_in_a_mixin_is_refused_with_its_name() -> None:
    class StdlibStyle:  # a mixin written for stdlib handlers
        def handle(self, record: logging.LogRecord) -> bool:
            return True

    with pytest.raises(TypeError, match=r"Mixed\.handle must be a coroutine function"):
        type("Mixed", (StdlibStyle, als.FileSink), {})


async def test_a_memory_sink_target_with_its_own_handle_filters_once_after_it(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    def tag(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    target = DropSecrets(tmp_path / "target.log")
    target.addFilter(tag)
    stats = await _deliver_three(als.MemorySink(capacity=10, target=target), "t.override.mem")
    await target.aclose()
    assert seen == ["public", "public 2"]  # after the veto, once each (stdlib order)
    assert _lines(tmp_path / "target.log") == ["public", "public 2"]
    assert stats.errors == 0


async def test_a_send_override_from_a_mixin_is_called() -> None:
    sent: list[bytes] = []

    class SendMixin:
        async def send(self, s: bytes) -> None:
            sent.append(s)
            await super().send(s)  # type: ignore[misc]

    class Mixed(SendMixin, als.SocketSink):
        pass

    peer = _FrameReceiver()
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        await _deliver_three(Mixed("127.0.0.1", port), "t.override.sendmixin")
        await peer.wait_for(3)
    finally:
        server.close()
        await server.wait_closed()
    assert len(sent) == 3
    assert peer.messages == ["public", "secret x", "public 2"]


def test_a_hook_that_is_a_callable_object_is_refused() -> None:
    class Handle:  # no __get__: never bound to the sink, its calls would all fail
        async def __call__(self, record: logging.LogRecord) -> bool:
            return True

    with pytest.raises(TypeError, match=r"Callable\.handle must be a coroutine function"):
        type("Callable", (als.FileSink,), {"handle": Handle()})


@pytest.mark.parametrize(
    ("base", "hook"),
    [
        (als.RotatingFileSink, "shouldRollover"),
        (als.FileSink, "filter"),
        (als.FileSink, "format"),
        (als.FileSink, "close"),
        (als.MemorySink, "shouldFlush"),
        (als.SocketSink, "makePickle"),
        (als.HTTPSink, "mapLogRecord"),
    ],
)
def test_an_async_override_of_a_plain_hook_is_refused_with_its_name(
    base: type[als.Sink], hook: str
) -> None:
    """The reverse slip of a port: the sink calls these without awaiting, so an
    ``async def`` answered with a coroutine (true: a rollover at every record, a
    filter letting secrets through)."""

    async def coroutine(self: Any, *args: Any) -> bool:
        return False

    with pytest.raises(TypeError, match=rf"Ported\.{hook} must be a plain function"):
        type("Ported", (base,), {hook: coroutine})
    mixin = type("Mixin", (), {hook: coroutine})
    with pytest.raises(TypeError, match=rf"Ported\.{hook} must be a plain function"):
        type("Ported", (mixin, base), {})


async def test_plain_hooks_set_on_the_instance_are_called_as_the_stdlib_calls_them(
    tmp_path: Path,
) -> None:
    def always(record: logging.LogRecord) -> bool:
        return True

    reference = logging.handlers.RotatingFileHandler(tmp_path / "std.log", backupCount=5)
    reference.shouldRollover = always  # type: ignore[method-assign]
    std = fresh_logger("t.override.instance.std")
    std.addHandler(reference)
    for message in ("public", "secret x", "public 2"):  # as _deliver_three logs
        std.info(message)
    reference.close()
    sink = als.RotatingFileSink(tmp_path / "ours.log", backupCount=5)
    sink.shouldRollover = always  # type: ignore[method-assign]
    await _deliver_three(sink, "t.override.instance.ours")

    def rotated(name: str) -> list[tuple[str, str]]:
        files = sorted(tmp_path.glob(f"{name}*"))
        return [(p.name.removeprefix(name), p.read_text()) for p in files]

    # a rollover before each record, as the stdlib's (the built-in test: one file)
    assert rotated("ours.log") == rotated("std.log")
    assert len(rotated("ours.log")) == 4

    transport, port, got = await _udp_peer()
    try:
        datagrams = als.DatagramSink("127.0.0.1", port)
        datagrams.makePickle = lambda record: b"custom " + record.getMessage().encode()  # type: ignore[method-assign]
        await _deliver_three(datagrams, "t.override.instance.pickle")
        frames = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
    finally:
        transport.close()
    assert frames == [b"custom public", b"custom secret x", b"custom public 2"]


@pytest.mark.parametrize("kind", ["socket", "datagram"])
async def test_aclose_cut_short_in_a_send_override_spills_only_what_was_not_sent(
    kind: str,
) -> None:
    stuck = asyncio.Event()  # never set: aclose's timeout ends the send
    loop = asyncio.get_running_loop()
    messages: list[str] = []
    if kind == "socket":
        peer = _FrameReceiver()
        server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        messages = peer.messages
        base: type[als.SocketSink] = als.SocketSink
        close = server.close
    else:

        class Peer(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                messages.append(pickle.loads(data[4:])["msg"])  # our own frames

        transport, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        base = als.DatagramSink
        close = transport.close

    class Slow(base):  # type: ignore[valid-type,misc]
        async def send(self, s: bytes) -> None:
            if b"stuck" in s:
                await stuck.wait()
            await super().send(s)

    fallback = CaptureHandler()
    dispatcher = als.Dispatcher(Slow("127.0.0.1", port), fallback=fallback)
    dispatcher.start()
    log = fresh_logger(f"t.override.cut.{kind}")
    log.addHandler(dispatcher.handler)
    try:
        for message in ("one", "two", "stuck", "four"):
            log.info(message)
        stats = await dispatcher.aclose(timeout=0.5)
    finally:
        log.removeHandler(dispatcher.handler)
        close()
    spilled = [r.getMessage() for r in fallback.records if not r.name.startswith("aiologsinks")]
    assert spilled == ["stuck", "four"]
    only = next(iter(stats.sinks.values()))
    assert (only.delivered, only.undelivered) == (2, 2)
    assert_accounted(stats, logged=4)
    if kind == "socket":
        await peer.wait_for(2)
    assert messages == ["one", "two"]


async def test_aclose_cut_short_in_a_memory_sinks_per_record_target_counts_the_rest(
    tmp_path: Path,
) -> None:
    stuck = asyncio.Event()  # never set

    class Target(als.FileSink):
        async def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "stuck":
                await stuck.wait()
            await super().emit(record)

    target = Target(tmp_path / "target.log")
    memory = als.MemorySink(capacity=5, target=target)
    dispatcher = als.Dispatcher(memory, fallback=CaptureHandler())
    dispatcher.start()
    log = fresh_logger("t.override.memory.cut")
    log.addHandler(dispatcher.handler)
    try:
        for message in ("one", "two", "stuck", "four", "five"):
            log.info(message)
        stats = await dispatcher.aclose(timeout=0.5)
    finally:
        log.removeHandler(dispatcher.handler)
        await target.aclose()
    assert _lines(tmp_path / "target.log") == ["one", "two"]
    only = next(iter(stats.sinks.values()))
    # the two the target wrote are not counted lost: the three it never reached are
    assert only.errors == 3


async def test_super_emit_under_an_own_emit_batch_looping_over_emit_writes_once(
    tmp_path: Path,
) -> None:
    """An own emit_batch that loops over self.emit, and an emit that calls
    super().emit: the record goes by the library's batch, not back to the class's
    own emit_batch (a RecursionError for each batch, nothing written)."""

    class Tagged(als.FileSink):
        async def emit_batch(self, records: Any) -> None:
            for record in records:
                await self.emit(record)

        async def emit(self, record: logging.LogRecord) -> None:
            record.msg = "[t] " + str(record.msg)
            await super().emit(record)

    stats = await _deliver_three(Tagged(tmp_path / "tagged.log"), "t.override.loop")
    assert _lines(tmp_path / "tagged.log") == ["[t] public", "[t] secret x", "[t] public 2"]
    assert (stats.delivered, stats.errors) == (3, 0)


class _Redacting(als.StreamSink):
    """A parent's own emit_batch that redacts: what its children write goes through it."""

    batches = 0

    async def emit_batch(self, records: Any) -> None:
        type(self).batches += 1
        for record in records:
            record.msg = str(record.msg).replace("hunter2", "******")
        await super().emit_batch(records)


class _TaggedRedacting(_Redacting):
    async def emit(self, record: logging.LogRecord) -> None:
        record.msg = "[svc] " + str(record.msg)
        await super().emit(record)


async def test_super_emit_reaches_a_parents_own_emit_batch() -> None:
    """super().emit(record) is delivered by the emit_batch super() finds from the
    class that called it: a parent's own, which redacts here (it went straight to the
    library's, and the secret was written)."""
    stream = io.StringIO()
    log = fresh_logger("t.override.redact")
    async with als.install(_TaggedRedacting(stream), logger=log) as dispatcher:
        log.info("password=hunter2")
        await dispatcher.flush()
    assert stream.getvalue() == "[svc] password=******\n"
    # called directly, emit() is the sink's: its own emit_batch too
    _Redacting.batches = 0
    direct = io.StringIO()
    sink = _Redacting(direct)
    await sink.emit(logging.makeLogRecord({"msg": "direct hunter2"}))
    assert direct.getvalue() == "direct ******\n" and _Redacting.batches == 1


def test_an_async_rotation_filename_is_accepted_and_awaited(tmp_path: Path) -> None:
    class Named(als.RotatingFileSink):
        async def rotation_filename(self, default_name: str) -> str:
            return default_name + ".old"

    async def main() -> None:
        sink = Named(tmp_path / "app.log", maxBytes=10, backupCount=3)
        await _deliver_three(sink, "t.override.namer")

    asyncio.run(main())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "app.log",
        "app.log.1.old",
        "app.log.2.old",
    ]


def test_an_attribute_that_is_no_hook_is_not_looked_into() -> None:
    """Only what overrides a plain hook is checked for async def: an attribute that
    raises on any getattr (a lazy settings object) made the class definition fail."""

    class Lazy:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(f"settings not configured (touched {name!r})")

    ported = type("Ported", (als.FileSink,), {"settings": Lazy()})
    assert isinstance(ported.__dict__["settings"], Lazy)


def _undecorated(method: Any) -> Any:
    async def wrapper(self: Any, records: Any) -> None:  # no functools.wraps
        await method(self, records)

    return wrapper


async def test_an_own_emit_batch_hidden_by_a_decorator_does_not_go_round() -> None:
    """The own emit_batch loops over self.emit, which comes back to emit_batch: with
    a decorator hiding the function (no __wrapped__), the record went round until
    RecursionError, nothing written."""

    class Looping(als.StreamSink):
        @_undecorated
        async def emit_batch(self, records: Any) -> None:
            for record in records:
                record.msg = "[l] " + str(record.msg)
                await self.emit(record)

    stream = io.StringIO()
    stats = await _deliver_three(Looping(stream), "t.override.undecorated")
    assert stream.getvalue().splitlines() == ["[l] public", "[l] secret x", "[l] public 2"]
    assert (stats.delivered, stats.errors) == (3, 0)


class _LoopingOverRedacting(_Redacting):
    """Its own emit_batch loops over self.emit: each record goes on by the parent's."""

    async def emit_batch(self, records: Any) -> None:
        for record in records:
            record.msg = "[t] " + str(record.msg)
            await self.emit(record)


async def test_an_own_emit_batch_looping_over_emit_goes_on_by_its_parents() -> None:
    """The record that comes back from the child's loop goes by the emit_batch after
    the child's (the redacting parent's), in every mode; it went by the library's,
    and the secret was written."""
    stream = io.StringIO()
    stats = await _deliver_three(_LoopingOverRedacting(stream), "t.override.loop.parent")
    stream.write("--\n")
    await _LoopingOverRedacting(stream).emit(logging.makeLogRecord({"msg": "pw hunter2"}))
    assert stream.getvalue().splitlines() == [
        "[t] public", "[t] secret x", "[t] public 2", "--", "[t] pw ******",
    ]  # fmt: skip
    assert (stats.delivered, stats.errors) == (3, 0)


async def test_a_task_an_own_emit_batch_started_is_on_its_own_once_it_returned() -> None:
    """A task started inside the own emit_batch and still emitting after it returned:
    its records go through the sink's own emit_batch (redacted), as any caller's."""
    later: list[asyncio.Task[None]] = []
    go_on = asyncio.Event()

    class Starting(_Redacting):
        async def emit_batch(self, records: Any) -> None:
            if not later:

                async def heartbeat() -> None:
                    await go_on.wait()
                    await self.emit(logging.makeLogRecord({"msg": "beat hunter2"}))

                later.append(asyncio.ensure_future(heartbeat()))
            await super().emit_batch(records)

    stream = io.StringIO()
    sink = Starting(stream)
    await sink.emit(logging.makeLogRecord({"msg": "first"}))
    go_on.set()
    await asyncio.wait_for(later[0], 5)
    assert stream.getvalue().splitlines() == ["first", "beat ******"]


async def test_a_task_logging_while_its_own_emit_batch_runs_goes_through_it() -> None:
    """A task the own emit_batch started logs while that call still runs: its fresh
    record is no record coming back, and is redacted as any caller's (it went past
    the redaction, to the library's)."""
    beat = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    class Beating(als.StreamSink):
        async def emit_batch(self, records: Any) -> None:
            for record in records:
                record.msg = str(record.msg).replace("hunter2", "******")
            if not tasks:

                async def heartbeat() -> None:
                    await self.emit(logging.makeLogRecord({"msg": "beat hunter2"}))
                    beat.set()

                tasks.append(asyncio.ensure_future(heartbeat()))
                await asyncio.wait_for(beat.wait(), 5)  # still running meanwhile
            await super().emit_batch(records)

    stream = io.StringIO()
    await Beating(stream).emit(logging.makeLogRecord({"msg": "first"}))
    await asyncio.wait_for(tasks[0], 5)
    assert sorted(stream.getvalue().splitlines()) == ["beat ******", "first"]


async def test_a_parents_loop_over_emit_under_a_childs_own_emit_batch_runs_once() -> None:
    """The child's own emit_batch calls super().emit_batch, the parent's loops over
    self.emit: the records coming back from the parent's loop went to the parent's
    again (each tagged twice)."""

    class Parent(als.StreamSink):
        calls = 0

        async def emit_batch(self, records: Any) -> None:
            type(self).calls += 1
            for record in records:
                record.msg = "[p] " + str(record.msg)
                await self.emit(record)

    class Child(Parent):
        async def emit_batch(self, records: Any) -> None:
            for record in records:
                record.msg = "[c] " + str(record.msg)
            await super().emit_batch(records)

    stream = io.StringIO()
    stats = await _deliver_three(Child(stream), "t.override.parent.loop")
    assert stream.getvalue().splitlines() == [
        "[p] [c] public",
        "[p] [c] secret x",
        "[p] [c] public 2",
    ]
    assert Child.calls == 1 and (stats.delivered, stats.errors) == (3, 0)
