"""The datagram sinks on asyncio's loop and on uvloop's: a socket that cannot be opened.

Each test runs its coroutine on a loop it makes (``on_loop``), so one test runs on
both loops whatever loop the suite itself uses.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted
from aiologsinks.sinks.socket import DatagramSink, SocketSink
from aiologsinks.sinks.syslog import SysLogSink
from tests.conftest import RecordingSinkMixin, require
from tests.helpers import fresh_logger

T = TypeVar("T")

LOOPS = ["asyncio", "uvloop"]


def on_loop(kind: str, main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` to its end on a new event loop of ``kind``."""
    if kind == "asyncio":
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    else:
        try:
            import uvloop
        except ImportError:
            uvloop = None
        # uvloop is part of the test extra wherever it runs (not on Windows)
        require(uvloop is not None or sys.platform == "win32", "uvloop (the test extra)")
        if uvloop is None:
            pytest.skip("uvloop does not run on Windows")
        factory = uvloop.new_event_loop

    async def run() -> T:
        return await main()

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(run())
    loop = factory()  # pragma: no cover - Python 3.10
    try:
        return loop.run_until_complete(run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class RecordingDatagramSink(RecordingSinkMixin, DatagramSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.errors = []
        self.notices: list[str] = []

    def report_outage(self, message: str) -> None:
        self.notices.append(message)


class RecordingSocketSink(RecordingSinkMixin, SocketSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.errors = []
        self.notices: list[str] = []

    def report_outage(self, message: str) -> None:
        self.notices.append(message)


class RecordingSysLogSink(RecordingSinkMixin, SysLogSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.errors = []
        self.notices: list[str] = []

    def report_outage(self, message: str) -> None:
        self.notices.append(message)


#: a name whose 64-character label idna refuses: a UnicodeError, not an OSError
BAD_HOST = "a" * 64 + ".example"


@pytest.mark.parametrize("kind", ["datagram", "syslog-udp", "syslog-tcp", "socket"])
@pytest.mark.parametrize("loop", LOOPS)
def test_a_host_name_that_cannot_be_encoded_costs_counted_records_not_delivered_ones(
    loop: str, kind: str
) -> None:
    n = 20
    sink: RecordingDatagramSink | RecordingSocketSink | RecordingSysLogSink
    if kind == "datagram":
        sink = RecordingDatagramSink(BAD_HOST, 9999)
    elif kind == "socket":
        sink = RecordingSocketSink(BAD_HOST, 9999)
    else:
        socktype = socket.SOCK_STREAM if kind == "syslog-tcp" else socket.SOCK_DGRAM
        sink = RecordingSysLogSink((BAD_HOST, 514), socktype=socktype)

    async def main() -> als.DispatcherStats:
        log = fresh_logger(f"t.badhost.{loop}.{kind}")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(n):
                log.warning("rec %d", i)
            await dispatcher.flush(timeout=10)
        return dispatcher.stats()

    stats = on_loop(loop, main)
    (share,) = stats.sinks.values()
    # nothing left the process: every record is counted, none as delivered
    assert share.delivered == 0 and share.errors == n, share
    assert_accounted(stats, n)
    # an outage reported by a few notices naming the error, not a traceback a record
    assert sink.errors == []
    assert 1 <= len(sink.notices) <= 3 and "Unicode" in sink.notices[0], sink.notices
