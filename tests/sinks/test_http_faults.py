"""HTTPSink and OTLPSink through their HTTP/1.1 client, against servers that misbehave.

Each server is a raw ``asyncio`` server on 127.0.0.1 that reads requests and answers
with scripted bytes (or closes, resets, stalls), so every fault is exactly what the test
says. Every test checks the books: each record is delivered or counted, and a record
the server received is never counted as lost.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gzip
import json
import logging
import socket
import struct
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

import aiologsinks as als
from aiologsinks._backoff import Backoff
from aiologsinks._stats import assert_accounted
from aiologsinks.sinks.http import HTTPSink
from tests.helpers import fresh_logger, started, wait_until

pytestmark = pytest.mark.timeout(30)

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


@dataclass
class Got:
    """One request as the server read it (``body`` None: the server did not read it)."""

    head: bytes
    body: bytes | None
    connection: int


#: what the server does with a request: returns whether to go on reading on this
#: connection (False: it was closed or reset)
Step = Callable[[Got, Reader, Writer], Awaitable[bool]]


@dataclass
class Server:
    port: int
    requests: list[Got] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"


def length_of(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@contextlib.asynccontextmanager
async def scripted(
    step: Step, *, read_body: Callable[[bytes], bool] | None = None
) -> AsyncIterator[Server]:
    """A server that reads each request's head, then its body (unless ``read_body``
    says not to, from the head), records it and runs ``step``."""
    server: Server | None = None
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: Reader, writer: Writer) -> None:
        assert server is not None
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        server.connections += 1
        number = server.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    body = None
                    if read_body is None or read_body(head):
                        body = await reader.readexactly(length_of(head))
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                got = Got(head, body, number)
                server.requests.append(got)
                server.arrived.set()
                if not await step(got, reader, writer):
                    return
        finally:
            writer.close()
            tasks.discard(task)

    raw = await asyncio.start_server(handle, "127.0.0.1", 0)
    server = Server(raw.sockets[0].getsockname()[1])
    try:
        yield server
    finally:
        raw.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await raw.wait_closed()


def answer(status: bytes = b"200 OK", body: bytes = b"", *headers: bytes) -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def reset(writer: Writer) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def send_then_reset(writer: Writer, data: bytes) -> bool:
    """Send ``data``, then reset the connection (a step that ends it: False)."""
    writer.write(data)
    await writer.drain()
    reset(writer)
    return False


def form_msg(got: Got) -> str:
    """The message a form carries, merged with its ``args`` as a receiver does."""
    assert got.body is not None
    form = urllib.parse.parse_qs(got.body.decode(), keep_blank_values=True)
    msg, args = form["msg"][0], form.get("args", ["None"])[0]
    return msg if args in ("None", "()") else msg % ast.literal_eval(args)


def fast() -> Backoff:
    return Backoff(retryStart=0.01, retryFactor=2.0, retryMax=0.05)


class Recording(HTTPSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reported: list[BaseException | None] = []
        self.notices: list[str] = []

    def handleError(self, record: logging.LogRecord) -> None:
        self.reported.append(sys.exc_info()[1])

    def report_outage(self, message: str) -> None:
        self.notices.append(message)


def record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("app", logging.INFO, "f.py", 1, msg, None, None)


# -- HTTPSink -------------------------------------------------------------------------


async def test_a_server_closing_after_each_answer_without_saying_so_loses_nothing() -> None:
    # kept-alive by HTTP/1.1's rules, closed by the server right after each answer: the
    # next request finds the connection gone and goes out once more, on a new one
    async def answer_and_close(got: Got, reader: Reader, writer: Writer) -> bool:
        writer.write(answer())
        await writer.drain()
        return False

    n = 30
    log = fresh_logger("t.http.faults.close_after")
    async with scripted(answer_and_close) as server:
        sink = Recording(server.netloc, "/log", "POST", backoff=fast())
        async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
            for i in range(n):
                log.info("n %d", i)
            await asyncio.wait_for(dispatcher.flush(), 10)
        stats = dispatcher.stats()
    assert_accounted(stats, logged=n)
    assert [form_msg(g) for g in server.requests] == [f"n {i}" for i in range(n)]
    (share,) = stats.sinks.values()
    assert share.delivered == n and share.errors == 0
    assert sink.reported == [] and sink.notices == []


async def test_a_reset_within_an_answer_on_a_reused_connection_is_retried_and_counted_once() -> (
    None
):
    # the second request's answer is cut by a reset after its first bytes: the server
    # may have acted on it, so it is not resent at once, but retry mode sends it again;
    # the sink counts each record delivered once, none lost
    async def step(got: Got, reader: Reader, writer: Writer) -> bool:
        if len(server.requests) == 2:
            return await send_then_reset(writer, b"HTTP/1.1 200 OK\r\nContent-")
        writer.write(answer())
        await writer.drain()
        return True

    log = fresh_logger("t.http.faults.reset_mid_answer")
    async with scripted(step) as server:
        sink = Recording(server.netloc, "/log", "POST", retry=True, backoff=fast())
        async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
            for i in range(3):
                log.info("n %d", i)
            await asyncio.wait_for(dispatcher.flush(), 10)
            # the retry task delivers what waits
            await wait_until(lambda: not sink.outbox.pending, describe=lambda: repr(server))
        stats = dispatcher.stats()
        got = [form_msg(g) for g in server.requests]
    assert_accounted(stats, logged=3)
    (share,) = stats.sinks.values()
    assert share.delivered == 3 and share.errors == 0 and share.undelivered == 0
    # at least once: the cut answer's record arrived twice, nothing else did
    assert got == ["n 0", "n 1", "n 1", "n 2"]
    assert server.requests[1].connection == 1 and server.requests[2].connection == 2


async def test_an_early_413_during_a_large_body_shrinks_the_requests_and_loses_nothing() -> None:
    # the server refuses a body over its limit from the head alone and closes without
    # reading it (the client is still sending: its write fails with a reset); the sink
    # must still see the 413 and send smaller requests, not count an outage
    limit = 100_000

    def small(head: bytes) -> bool:
        return length_of(head) <= limit

    async def step(got: Got, reader: Reader, writer: Writer) -> bool:
        if got.body is None:
            return await send_then_reset(writer, answer(b"413 Payload Too Large"))
        writer.write(answer())
        await writer.drain()
        return True

    n = 3000
    records = [record(f"{i:05d} " + "x" * 1000) for i in range(n)]
    async with scripted(step, read_body=small) as server:
        sink = Recording(server.netloc, "/bulk", json_batch=True, max_batch_bytes=8_000_000)
        async with sink:
            await asyncio.wait_for(sink.emit_batch(records), 20)
        delivered = [
            item["msg"]
            for g in server.requests
            if g.body is not None
            for item in json.loads(g.body)
        ]
    assert sink.notices == [] and sink.reported == [] and sink.error_count == 0
    assert delivered == [r.msg for r in records]
    assert any(g.body is None for g in server.requests)  # it did refuse early


async def test_an_answer_whose_head_trickles_in_past_the_timeout_is_counted() -> None:
    trickling = asyncio.Event()

    async def slow_head(got: Got, reader: Reader, writer: Writer) -> bool:
        trickling.set()
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.02)  # the fault itself: a byte every 20 ms
        return False

    async with scripted(slow_head) as server:
        sink = Recording(server.netloc, "/log", "POST", timeout=0.3)
        async with sink:
            began = time.monotonic()
            await asyncio.wait_for(sink.emit(record("slow")), 5)
            took = time.monotonic() - began
        assert trickling.is_set()
    assert took < 2.0  # bounded by timeout, not reset by each byte
    assert sink.error_count == 1
    assert sink.notices and "no answer within 0.3s" in sink.notices[0]


async def test_http_1_0_answers_without_length_are_read_to_the_end_on_new_connections() -> None:
    async def old_server(got: Got, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\naccepted")
        await writer.drain()
        return False

    async with scripted(old_server) as server:
        sink = Recording(server.netloc, "/log", "POST")
        async with sink:
            for i in range(5):
                await asyncio.wait_for(sink.emit(record(f"m{i}")), 5)
        assert [form_msg(g) for g in server.requests] == [f"m{i}" for i in range(5)]
        assert server.connections == 5
    assert sink.error_count == 0 and sink.reported == [] and sink.notices == []


async def never_answer(got: Got, reader: Reader, writer: Writer) -> bool:
    """Take the request and answer nothing, until the client goes away."""
    await reader.read()
    return False


async def log_in_flushed_batches(
    sink: HTTPSink, name: str, *batches: list[str]
) -> als.DispatcherStats:
    """Log each batch of messages through a Dispatcher for ``sink``, flushing after
    each, then close it (bounded); its final stats."""
    log = fresh_logger(name)
    dispatcher = started(log, sink)
    try:
        for batch in batches:
            for message in batch:
                log.info(message)
            await dispatcher.flush()
    finally:
        log.removeHandler(dispatcher.handler)
        stats = await dispatcher.aclose(timeout=1)
    return stats


async def test_aclose_with_a_timeout_while_a_request_hangs_returns_in_time_and_counts() -> None:
    n = 10
    log = fresh_logger("t.http.faults.hung_close")
    async with scripted(never_answer) as server:
        sink = Recording(server.netloc, "/log", "POST", retry=True, timeout=None)
        dispatcher = started(log, sink)
        try:
            for i in range(n):
                log.info("n %d", i)
            await asyncio.wait_for(server.arrived.wait(), 5)
        finally:
            log.removeHandler(dispatcher.handler)
            began = time.monotonic()
            stats = await asyncio.wait_for(dispatcher.aclose(timeout=0.5), 5)
            took = time.monotonic() - began
        # the hung request, and maybe close's last attempt: the first record each time
        assert {form_msg(g) for g in server.requests} == {"n 0"}
    assert took < 2.0
    assert_accounted(stats, logged=n)
    (share,) = stats.sinks.values()
    assert share.delivered == 0 and share.errors + share.undelivered == n


async def test_without_retry_a_close_that_gives_up_on_a_request_says_so() -> None:
    # the request the close cut short was counted as an error and nothing said so: a
    # script's last records vanished at exit without a word
    log = fresh_logger("t.http.faults.cut_short")
    async with scripted(never_answer) as server:
        sink = Recording(server.netloc, "/log", "POST")  # no retry: sent once, or lost
        dispatcher = started(log, sink)
        try:
            log.info("unanswered")
            await asyncio.wait_for(server.arrived.wait(), 5)
        finally:
            log.removeHandler(dispatcher.handler)
            stats = await asyncio.wait_for(dispatcher.aclose(timeout=0.5), 5)
    assert_accounted(stats, logged=1)
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors) == (0, 1)
    assert [m.split(">: ", 1)[1] for m in sink.notices if "undelivered" in m] == [
        "1 record(s) undelivered, their send cut short (no answer yet)"
    ]


async def test_without_retry_an_outage_costs_one_timeout_per_back_off_step_not_per_record() -> None:
    # a server that takes the connection and never answers: each record waiting out
    # its own timeout made flush() take n timeouts (10 s each by default), while the
    # notice said the records were lost until the server is back
    n = 40
    async with scripted(never_answer) as server:
        backoff = Backoff(retryStart=60.0, retryFactor=2.0, retryMax=60.0)
        sink = Recording(server.netloc, "/log", "POST", timeout=0.2, backoff=backoff)
        stats = await log_in_flushed_batches(
            sink, "t.http.faults.blackhole_once", [f"n {i}" for i in range(n)]
        )
        tried = [form_msg(g) for g in server.requests]
    assert tried == ["n 0"]  # then the back-off: the rest counted, not tried
    assert_accounted(stats, logged=n)
    (share,) = stats.sinks.values()
    assert share.delivered == 0 and share.errors == n
    assert any("records are lost until it is back" in m for m in sink.notices)


async def test_without_retry_a_peer_that_failed_fast_is_tried_again_at_once() -> None:
    # a 503 (or a refused connection) costs nothing to try again: the next records are
    # sent as HTTPHandler sends each, not counted away while a back-off runs
    answers = iter([answer(b"503 Service Unavailable")])

    async def first_unavailable(got: Got, reader: Reader, writer: Writer) -> bool:
        writer.write(next(answers, answer()))
        await writer.drain()
        return True

    n = 10
    async with scripted(first_unavailable) as server:
        sink = Recording(server.netloc, "/log", "POST", timeout=2.0)  # the default back-off
        stats = await log_in_flushed_batches(
            sink, "t.http.faults.transient", ["refused"], [f"n {i}" for i in range(n)]
        )
        tried = [form_msg(g) for g in server.requests]
    assert tried == ["refused", *(f"n {i}" for i in range(n))]
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors) == (n, 1)
    assert_accounted(stats, logged=n + 1)


# -- OTLPSink -------------------------------------------------------------------------


class Otlp(als.OTLPSink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        self.reported: list[str] = []
        self.notices: list[str] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def handleError(self, record: logging.LogRecord) -> None:
        self.reported.append(str(sys.exc_info()[1]))

    def report_outage(self, message: str) -> None:
        self.notices.append(message)


def otlp_records(n: int) -> list[logging.LogRecord]:
    return [record(f"r{i}") for i in range(n)]


async def test_otlp_a_gzip_partial_success_after_a_retry_after_is_counted_once() -> None:
    partial = json.dumps(
        {"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "too long"}}
    ).encode()

    async def step(got: Got, reader: Reader, writer: Writer) -> bool:
        if len(server.requests) == 1:
            writer.write(answer(b"503 Service Unavailable", b"", b"Retry-After: 0"))
        else:
            writer.write(
                answer(
                    b"200 OK",
                    gzip.compress(partial),
                    b"Content-Type: application/json",
                    b"Content-Encoding: gzip",
                )
            )
        await writer.drain()
        return True

    async with scripted(step) as server:
        sink = Otlp(f"http://{server.netloc}/v1/logs", "json", backoff=fast(), linger=0)
        async with sink:
            await sink.emit_batch(otlp_records(5))
            await wait_until(lambda: not sink.outbox.pending, describe=lambda: repr(server))
        assert len(server.requests) == 2
    assert sink.error_count == 2
    assert len(sink.reported) == 1 and "rejected 2 of 5" in sink.reported[0]
    assert "too long" in sink.reported[0]
    assert sink.outbox.statistics().delivered == 5


async def test_otlp_a_2xx_whose_body_does_not_decode_is_accepted_and_not_sent_again() -> None:
    # the collector took the records (2xx); an unreadable body must not make the sink
    # resend them again and again and finally count them as lost
    async def step(got: Got, reader: Reader, writer: Writer) -> bool:
        writer.write(
            answer(
                b"200 OK",
                b"not gzip at all",
                b"Content-Type: application/x-protobuf",
                b"Content-Encoding: gzip",
            )
        )
        await writer.drain()
        return True

    async with scripted(step) as server:
        sink = Otlp(f"http://{server.netloc}/v1/logs", backoff=fast(), close_timeout=0.5)
        async with sink:
            await asyncio.wait_for(sink.emit_batch(otlp_records(3)), 5)
            assert sink.outbox.pending == 0
        assert len(server.requests) == 1
    assert sink.error_count == 0 and sink.notices == [] and sink.reported == []
    assert sink.outbox.statistics().delivered == 3
