"""Small test sinks and waiting helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import strategies as st

import aiologsinks as als

#: the values a record's arguments and ``extra=`` fields hold, odd ones included
#: (integers beyond int64, NaN and infinities, bytes, text JSON and UTF-8 must escape)
VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.booleans(),
    st.none(),
)


async def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds.

    ``describe`` is called on failure: what it returns (the state of the peers and
    sinks involved) goes into the assertion message, so a rare failure explains itself.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            state = "" if describe is None else f"; state: {describe()}"
            raise AssertionError(f"condition not met within {timeout}s{state}")
        await asyncio.sleep(0.005)


class ListSink(als.Sink):
    """Keeps formatted records; counts batches; records handleError calls."""

    def __init__(self, level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.batches = 0
        self.errors: list[logging.LogRecord] = []
        self.flushes = 0

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        self.batches += 1
        for record in records:
            try:
                line = self.format(record)
            except Exception:
                self.report_error(record)
                continue
            self.records.append(record)
            self.lines.append(line)

    async def flush(self) -> None:
        self.flushes += 1

    def handleError(self, record: logging.LogRecord) -> None:
        self.errors.append(record)


class RaisingSink(als.Sink):
    """Raises on every record."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[logging.LogRecord] = []

    async def emit(self, record: logging.LogRecord) -> None:
        raise OSError("peer is on fire")

    def handleError(self, record: logging.LogRecord) -> None:
        self.errors.append(record)


class GatedSink(ListSink):
    """Delivers only once ``gate`` is set: a stalled destination."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().emit_batch(records)


class CaptureHandler(logging.Handler):
    """A plain handler that keeps the records it was given (used as a fallback)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ::1 (some containers have no IPv6 at all)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def fresh_logger(name: str) -> logging.Logger:
    """A logger with no handlers that does not propagate to the root."""
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


class ClosingHTTPHandler(logging.handlers.HTTPHandler):
    """HTTPHandler leaves each request's connection open; close them all on close()."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections: list[Any] = []

    def getConnection(self, host: str, secure: bool) -> Any:
        conn = super().getConnection(host, secure)
        self.connections.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        super().close()


def drive(handler: logging.Handler, recs: list[logging.LogRecord]) -> None:
    """Run a blocking stdlib handler (called in a worker thread)."""
    try:
        for r in recs:
            handler.handle(r)
    finally:
        handler.close()


def need_compiled(present: bool) -> None:
    """Skip a test of the compiled accelerator where it is off by choice
    (``AIOLOGSINKS_PURE_PYTHON``) or, outside CI, not built; in CI a missing build
    fails the test (the CI machine has a compiler)."""
    if present:
        return
    if os.environ.get("AIOLOGSINKS_PURE_PYTHON") or os.environ.get("CI", "").lower() != "true":
        pytest.skip("the compiled accelerator is not in use")
    pytest.fail("the compiled accelerator was not built")


def started(
    log: logging.Logger, *sinks: als.Sink | logging.Handler, **options: Any
) -> als.Dispatcher:
    """A started Dispatcher for ``sinks`` whose handler is on ``log`` (closing it
    and taking the handler off are the test's)."""
    dispatcher = als.Dispatcher(*sinks, **options)
    dispatcher.start()
    log.addHandler(dispatcher.handler)
    return dispatcher


@contextlib.contextmanager
def attached(
    log: logging.Logger, *sinks: als.Sink | logging.Handler, **options: Any
) -> Iterator[als.Dispatcher]:
    """A started Dispatcher for ``sinks`` whose handler is on ``log`` for the block
    (closing it is the test's)."""
    dispatcher = started(log, *sinks, **options)
    try:
        yield dispatcher
    finally:
        log.removeHandler(dispatcher.handler)
