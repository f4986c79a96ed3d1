"""The caller's context on every sink: contextvar filters and formatters, bound fields."""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import pickle
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import aiologsinks as als
from aiologsinks._context import capturing

from .helpers import fresh_logger
from .peers.smtp import smtp_peer

REQUESTS = 20
STEPS = 3
FMT = "%(request_id)s %(message)s"
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """The usual filter: copies the request's id onto the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestIdFormatter(logging.Formatter):
    """A formatter that reads the contextvar itself."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{request_id.get()} {record.getMessage()}"


class UDPCollector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: object) -> None:
        # "<PRI>text\0" as SysLogHandler sends it
        self.lines.append(re.sub(r"^<\d+>", "", data.decode()).rstrip("\0"))
        self.changed.set()


@asynccontextmanager
async def udp_collector() -> AsyncIterator[tuple[UDPCollector, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        UDPCollector, local_addr=("127.0.0.1", 0)
    )
    try:
        yield proto, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def serve(log: logging.Logger, bind: Callable[[int], object] | None = None) -> None:
    """20 concurrent requests, each logging a few lines under its own id."""

    async def request(i: int) -> None:
        if bind is None:
            request_id.set(f"req-{i}")
            await steps(i)
        else:
            with bind(i):  # type: ignore[attr-defined]
                await steps(i)

    async def steps(i: int) -> None:
        for k in range(STEPS):
            log.info("request %d step %d", i, k)
            await asyncio.sleep(0)

    await asyncio.gather(*(request(i) for i in range(REQUESTS)))


def check(lines: list[str]) -> None:
    """Every request's lines, each with its own request's id."""
    assert len(lines) == REQUESTS * STEPS, lines
    for line in lines:
        m = re.fullmatch(r"(\S+) request (\d+) step \d", line)
        assert m is not None, line
        assert m.group(1) == f"req-{m.group(2)}", line


def file_lines(*paths: Path) -> list[str]:
    out: list[str] = []
    for path in paths:
        out.extend(path.read_text().splitlines())
    return out


def sink_kinds(tmp_path: Path) -> dict[str, tuple[als.Sink, Callable[[], list[str]]]]:
    stream = io.StringIO()
    memory_target = als.FileSink(tmp_path / "memory.log")
    return {
        "file": (als.FileSink(tmp_path / "file.log"), lambda: file_lines(tmp_path / "file.log")),
        "watched": (
            als.WatchedFileSink(tmp_path / "watched.log"),
            lambda: file_lines(tmp_path / "watched.log"),
        ),
        "rotating": (
            als.RotatingFileSink(tmp_path / "rot.log", maxBytes=10**6),
            lambda: file_lines(tmp_path / "rot.log"),
        ),
        "timed": (
            als.TimedRotatingFileSink(tmp_path / "timed.log"),
            lambda: file_lines(tmp_path / "timed.log"),
        ),
        "stream": (als.StreamSink(stream), lambda: stream.getvalue().splitlines()),
        "memory": (
            als.MemorySink(7, target=memory_target),
            lambda: file_lines(tmp_path / "memory.log"),
        ),
    }


@pytest.mark.parametrize("how", ["filter", "formatter", "bound"])
async def test_each_line_carries_its_own_request_id_on_every_formatting_sink(
    tmp_path: Path, how: str
) -> None:
    kinds = sink_kinds(tmp_path)
    async with udp_collector() as (udp, port), smtp_peer() as peer:
        syslog = als.SysLogSink(("127.0.0.1", port))
        smtp = als.SMTPSink(("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "s")
        sinks = [s for s, _ in kinds.values()] + [syslog, smtp]
        memory_target = kinds["memory"][0].target  # type: ignore[attr-defined]
        for sink in [*sinks, memory_target]:
            if how == "formatter":
                sink.setFormatter(RequestIdFormatter())
            else:
                sink.setFormatter(logging.Formatter(FMT))
                if how == "filter":
                    sink.addFilter(RequestIdFilter())
        log = fresh_logger(f"t.context.{how}")
        async with als.install(*sinks, logger=log):
            await serve(
                log, (lambda i: als.context(request_id=f"req-{i}")) if how == "bound" else None
            )
        await memory_target.aclose()
        results = {name: read() for name, (_, read) in kinds.items()}
        while len(udp.lines) < REQUESTS * STEPS:
            udp.changed.clear()
            await asyncio.wait_for(udp.changed.wait(), 10)
        results["syslog"] = udp.lines
        mails = await peer.wait_for(REQUESTS * STEPS)
        results["smtp"] = [m.body.rstrip("\n") for m in mails]
    for name, lines in results.items():
        try:
            check(lines)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


async def test_a_sink_used_as_a_handler_formats_in_the_callers_context(tmp_path: Path) -> None:
    sink = als.FileSink(tmp_path / "h.log")
    sink.setFormatter(RequestIdFormatter())
    log = fresh_logger("t.context.handler")
    log.addHandler(sink)
    try:
        await serve(log)
    finally:
        log.removeHandler(sink)
        await asyncio.to_thread(sink.close)
    check(file_lines(tmp_path / "h.log"))


@pytest.mark.parametrize("how", ["filter", "formatter"])
async def test_a_plain_handler_in_a_dispatcher_runs_in_the_callers_context(
    tmp_path: Path, how: str
) -> None:
    # a logging.FileHandler given to install(): its filter or formatter reads the
    # request's contextvar as it would attached to the logger itself
    handler = logging.FileHandler(tmp_path / "plain.log")
    if how == "formatter":
        handler.setFormatter(RequestIdFormatter())
    else:
        handler.setFormatter(logging.Formatter(FMT))
        handler.addFilter(RequestIdFilter())
    log = fresh_logger(f"t.context.plain_{how}")
    async with als.install(handler, logger=log):
        await serve(log)
    check(file_lines(tmp_path / "plain.log"))


def test_bound_fields_nest_and_are_restored() -> None:
    records: list[logging.LogRecord] = []

    class Keep(als.Sink):
        async def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    async def main() -> None:
        log = fresh_logger("t.context.nest")
        async with als.install(Keep(), logger=log):
            with als.context(request_id="r1", user="ann"):
                async with als.context(user="bob", step=2):
                    log.info("inner")
                log.info("outer", extra={"request_id": "explicit"})
            log.info("none")

    asyncio.run(main())
    inner, outer, none = records
    assert (inner.request_id, inner.user, inner.step) == ("r1", "bob", 2)  # type: ignore[attr-defined]
    assert (outer.request_id, outer.user) == ("explicit", "ann")  # type: ignore[attr-defined]
    assert not hasattr(outer, "step") and not hasattr(none, "user")


def test_a_record_attribute_cannot_be_bound() -> None:
    with pytest.raises(ValueError, match=r"^msg: "):
        als.context(msg="x")


def test_an_unpicklable_extra_value_travels_as_its_repr() -> None:
    class Opaque:
        def __reduce__(self) -> str:
            raise TypeError("no pickling")

        def __repr__(self) -> str:
            return "<Opaque>"

    record = logging.LogRecord("n", logging.INFO, "p", 1, "m %s", ("a",), None)
    record.thing = Opaque()
    record.fine = {"k": [1, 2]}
    prepared = als.QueueHandler(als.Dispatcher()).prepare(record)
    assert prepared.thing == "<Opaque>"  # type: ignore[attr-defined]
    assert prepared.fine == {"k": [1, 2]}  # type: ignore[attr-defined]
    pickle.dumps(prepared.__dict__)  # SocketSink's frame can be built


async def test_capturing_is_on_while_an_open_sink_has_a_filter() -> None:
    assert not capturing()
    sink = als.NullSink()
    sink.setFormatter(logging.Formatter())  # a plain formatter reads no contextvars
    assert not capturing()
    sink.addFilter(RequestIdFilter())
    assert capturing()
    await sink.aclose()
    assert not capturing()
    als.NullSink().setFormatter(RequestIdFormatter())
    assert not capturing()  # that sink is gone


@pytest.mark.skipif(sys.version_info < (3, 12), reason="a filter returns a record on 3.12+")
async def test_a_record_a_filter_replaces_is_formatted_in_the_callers_context(
    tmp_path: Path,
) -> None:
    def replace(record: logging.LogRecord) -> logging.LogRecord:
        return logging.makeLogRecord(record.__dict__)

    sink = als.FileSink(tmp_path / "replaced.log")
    sink.addFilter(replace)
    sink.setFormatter(RequestIdFormatter())
    log = fresh_logger("t.context.replaced")
    async with als.install(sink, logger=log):
        await serve(log)
    check(file_lines(tmp_path / "replaced.log"))


class RequestIdSink(als.FileSink):
    """A sink with a format() of its own that reads the contextvar."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{request_id.get()} {record.getMessage()}"


async def test_a_sinks_own_format_runs_in_the_callers_context(tmp_path: Path) -> None:
    sink = RequestIdSink(tmp_path / "own.log")
    log = fresh_logger("t.context.own_format")
    async with als.install(sink, logger=log):
        await serve(log)
    check(file_lines(tmp_path / "own.log"))


class RaisingFormatter(logging.Formatter):
    """A formatter whose own RuntimeError happens to say "already entered"."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def format(self, record: logging.LogRecord) -> str:
        self.calls += 1
        if self.calls % 2:
            raise RuntimeError("connection pool already entered")
        return super().format(record)


async def test_a_formatters_runtime_error_is_reported_not_retried(tmp_path: Path) -> None:
    """A RuntimeError from the formatter itself is that record's error: the formatter
    is not called a second time outside the caller's context as if the context could
    not be entered."""
    formatter = RaisingFormatter()
    sink = als.FileSink(tmp_path / "raising.log")
    sink.setFormatter(formatter)
    errors: list[logging.LogRecord] = []
    sink.handleError = errors.append  # type: ignore[method-assign]
    log = fresh_logger("t.context.raising_formatter")
    async with als.install(sink, logger=log) as dispatcher:
        assert capturing()  # the formatter is not a plain one: records carry a context
        for i in range(4):
            log.warning("record %d", i)
        await dispatcher.flush(timeout=10)
    assert formatter.calls == 4
    assert [r.getMessage() for r in errors] == ["record 0", "record 2"]
    assert file_lines(tmp_path / "raising.log") == ["record 1", "record 3"]


def _formatter_by_attribute(sink: als.FileSink) -> None:
    sink.formatter = RequestIdFormatter()


def _filter_appended(sink: als.FileSink) -> None:
    sink.setFormatter(logging.Formatter(FMT))
    sink.filters.append(RequestIdFilter())


def _filters_assigned(sink: als.FileSink) -> None:
    sink.setFormatter(logging.Formatter(FMT))
    sink.filters = [RequestIdFilter()]


@pytest.mark.parametrize(
    "configure",
    [_formatter_by_attribute, _filter_appended, _filters_assigned],
    ids=["formatter=", "filters.append", "filters="],
)
async def test_a_formatter_or_filter_set_by_attribute_sees_the_callers_context(
    tmp_path: Path, configure: Callable[[als.FileSink], None]
) -> None:
    """Code written for logging.handlers sets a handler's formatter and filters by
    attribute as often as through setFormatter()/addFilter(); on a sink they must run
    in the caller's context all the same."""
    sink = als.FileSink(tmp_path / "attr.log")
    configure(sink)
    assert capturing()
    log = fresh_logger("t.context.by_attribute")
    async with als.install(sink, logger=log):
        await serve(log)
    check(file_lines(tmp_path / "attr.log"))


async def test_a_wrapped_handler_given_a_filter_after_wrapping_sees_the_callers_context(
    tmp_path: Path,
) -> None:
    handler = logging.FileHandler(tmp_path / "wrapped.log")
    handler.setFormatter(logging.Formatter(FMT))
    dispatcher = als.Dispatcher(handler)  # wrapped here, with no filter yet
    handler.addFilter(RequestIdFilter())
    log = fresh_logger("t.context.wrapped_later")
    log.addHandler(dispatcher.handler)
    try:
        async with dispatcher:
            await serve(log)
    finally:
        log.removeHandler(dispatcher.handler)
        handler.close()
    check(file_lines(tmp_path / "wrapped.log"))


class HoldingFilter(logging.Filter):
    """Holds the record on the wrapped handler's worker thread, inside the record's
    context, until told to let it go."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = threading.Event()
        self.release = threading.Event()

    def filter(self, record: logging.LogRecord) -> bool:
        self.inside.set()
        self.release.wait(10)
        return True


class ReadingSink(als.Sink):
    """Formats each record while the held handler is inside that record's context."""

    def __init__(self, holding: HoldingFilter) -> None:
        super().__init__()
        self.holding = holding
        self.lines: list[str] = []

    async def emit(self, record: logging.LogRecord) -> None:
        assert await asyncio.to_thread(self.holding.inside.wait, 10)
        try:
            self.lines.append(self.format(record))
        finally:
            self.holding.release.set()


async def test_a_formatter_sees_the_callers_context_while_a_wrapped_handler_holds_it() -> None:
    """A context can be entered on one thread at a time: while a wrapped handler handled
    the record on its worker thread, another sink's formatter ran outside any context
    and read the ContextVar's default."""
    holding = HoldingFilter()
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(holding)
    reading = ReadingSink(holding)
    reading.setFormatter(RequestIdFormatter())
    log = fresh_logger("t.context.held")
    async with als.install(handler, reading, logger=log):
        request_id.set("req-7")
        log.info("held")
    assert reading.lines == ["req-7 held"]


async def test_a_filter_given_to_a_wrapped_handler_after_the_start_sees_the_context_later(
    tmp_path: Path,
) -> None:
    # the dispatcher runs when the filter comes: from its next batch on, records
    # carry the caller's context for it
    handler = logging.FileHandler(tmp_path / "late.log")
    handler.setFormatter(logging.Formatter(FMT))
    log = fresh_logger("t.context.wrapped_after_start")
    try:
        async with als.install(handler, logger=log) as dispatcher:
            await dispatcher.flush(timeout=10)  # running, its lane started
            handler.addFilter(RequestIdFilter())
            log.info("the batch that sees it")  # logged without the context
            await dispatcher.flush(timeout=10)
            await serve(log)
    finally:
        handler.close()
    lines = file_lines(tmp_path / "late.log")
    assert lines[0] == "- the batch that sees it"
    check(lines[1:])
