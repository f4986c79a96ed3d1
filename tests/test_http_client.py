"""The HTTP/1.1 client of the POSTing sinks (``aiologsinks._http``) against real servers.

Most servers here are raw ``asyncio`` servers on 127.0.0.1 that answer each request
with scripted bytes, so every framing, every broken answer and every way of closing a
connection is exactly what the test says; a real aiohttp server covers the ordinary
path and TLS. Each server counts the connections it accepted and records how each one
ended, which is how a test sees reuse, a fresh connection, or a connection dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from aiologsinks._http import (
    MAX_BODY,
    MAX_HEAD,
    MAX_IDLE,
    Disconnected,
    HTTPClient,
    ProtocolError,
    Response,
    decode_body,
)
from tests.conftest import IN_CI
from tests.helpers import has_ipv6_loopback
from tests.peers._waiting import wait_until
from tests.peers.http import http_peer
from tests.peers.smtp import TLSMaterial, make_tls

pytestmark = pytest.mark.timeout(30)

#: what a test waits at most for a server to have seen something
WAIT = 5.0

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
#: what a scripted server does with a request: send these bytes and go on reading the
#: next request, or run this step, which returns how the connection ended (None: go on)
Answer = bytes | Callable[[Reader, Writer], Awaitable[str | None]]


def response(
    body: bytes = b"ok",
    *headers: bytes,
    status: bytes = b"200 OK",
    version: bytes = b"HTTP/1.1",
    length: bool = True,
) -> bytes:
    """An answer's bytes; ``Content-Length`` added unless ``length`` is false."""
    lines = [version + b" " + status, *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*chunks: bytes, headers: tuple[bytes, ...] = ()) -> bytes:
    """A chunked answer of ``chunks`` (the last chunk and the empty trailer added)."""
    head = response(b"", b"Transfer-Encoding: chunked", *headers, length=False)
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


async def hang_up(reader: Reader, writer: Writer) -> str:
    """Close the connection without answering."""
    return "closed by the server"


def then_close(data: bytes) -> Answer:
    """Send ``data``, then close the connection."""

    async def step(reader: Reader, writer: Writer) -> str:
        writer.write(data)
        await writer.drain()
        return "closed by the server"

    return step


async def reset(reader: Reader, writer: Writer) -> str:
    """Reset the connection (RST) without answering."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return "reset by the server"


async def silent(reader: Reader, writer: Writer) -> str:
    """Answer nothing; wait for the client to go."""
    try:
        await reader.read()
    except ConnectionResetError:
        return "reset"
    return "eof"


@dataclass
class Received:
    """One request as it arrived: on which connection, its head and its body."""

    connection: int
    head: bytes
    body: bytes
    writer: Writer = field(repr=False, compare=False)

    @property
    def lines(self) -> list[bytes]:
        """The request line and the header lines."""
        return self.head.split(b"\r\n")[:-2]


@dataclass
class ScriptedServer:
    """A raw HTTP server: each request it reads gets the next of ``answers`` (none
    left: the connection is closed without an answer)."""

    answers: list[Answer]
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    #: how each connection ended, by index: "eof" (the client closed it), "reset",
    #: "closed by the server", ...
    ended: dict[int, str] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[Writer] = field(default_factory=set)
    _server: asyncio.AbstractServer | None = None

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def client(self, **kwargs: object) -> HTTPClient:
        kwargs.setdefault("timeout", WAIT)
        return HTTPClient("http", self.netloc, **kwargs)  # type: ignore[arg-type]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        # cut what is still open: each connection's task then ends on its own (not
        # cancelled, which asyncio's start_server in Python 3.11 reports as an error)
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), WAIT)

    async def wait_requests(self, count: int) -> list[Received]:
        await wait_until(self._changed, lambda: len(self.requests) >= count, WAIT)
        return self.requests

    async def wait_ended(self, *indexes: int) -> list[str]:
        await wait_until(self._changed, lambda: all(i in self.ended for i in indexes), WAIT)
        return [self.ended[i] for i in indexes]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        index = self.connections
        self.connections += 1
        ended = "eof"
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    ended = "eof within a request" if exc.partial else "eof"
                    break
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append(Received(index, head, body, writer))
                await self._notify()
                answer = self.answers.pop(0) if self.answers else hang_up
                if isinstance(answer, bytes):
                    writer.write(answer)
                    await writer.drain()
                    continue
                outcome = await answer(reader, writer)
                if outcome is not None:
                    ended = outcome
                    break
        except ConnectionError:
            ended = "reset"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.ended[index] = ended
            await self._notify()


@contextlib.asynccontextmanager
async def scripted(*answers: Answer, host: str = "127.0.0.1") -> AsyncIterator[ScriptedServer]:
    """Serve ``answers`` on ``host`` (a free port) until the block exits."""
    server = ScriptedServer(list(answers), host)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def served(
    *answers: Answer, **kwargs: object
) -> AsyncIterator[tuple[ScriptedServer, HTTPClient]]:
    """A scripted server and a client for it, both closed at the end."""
    async with scripted(*answers) as server:
        client = server.client(**kwargs)
        try:
            yield server, client
        finally:
            await client.aclose()


@pytest.fixture(scope="module")
def tls() -> TLSMaterial:
    return make_tls()


# -- the ordinary path, against aiohttp -------------------------------------------------------


async def test_requests_reach_a_real_server_as_sent_and_reuse_one_connection() -> None:
    async with http_peer() as peer:
        client = HTTPClient("http", peer.netloc, timeout=WAIT)
        try:
            first = await client.request(
                "POST", "/v1/logs?source=app", {"Content-Type": "text/plain"}, b"one"
            )
            second = await client.request("GET", "/health", {"X-Trace": "abc"})
        finally:
            await client.aclose()
        posted, got = await peer.wait_ok(2)
    assert (first.status, first.body, second.status, second.body) == (200, b"ok", 200, b"ok")
    assert first.headers["content-length"] == "2"  # names lower-cased
    assert (posted.method, posted.path, posted.query, posted.body) == (
        "POST",
        "/v1/logs",
        "source=app",
        b"one",
    )
    assert posted.headers["Host"] == peer.netloc
    assert posted.headers["Content-Type"] == "text/plain"
    assert posted.headers["Content-Length"] == "3"
    assert (got.method, got.path, got.body) == ("GET", "/health", b"")
    assert got.headers["X-Trace"] == "abc"
    assert "Content-Length" not in got.headers
    assert peer.connections == 1


async def test_the_request_goes_out_byte_for_byte() -> None:
    async with served(response(), response()) as (server, client):
        await client.request("PUT", "/a/b?c=d&e", {"X-One": "1", "x-two": "two words"}, b"body")
        await client.request("POST", "/empty", {}, b"")
        put, empty = await server.wait_requests(2)
    assert put.lines == [
        b"PUT /a/b?c=d&e HTTP/1.1",
        b"Host: %s" % server.netloc.encode(),
        b"X-One: 1",
        b"x-two: two words",
        b"Content-Length: 4",
    ]
    assert put.body == b"body"
    # an empty body is still a body: Content-Length 0
    assert empty.lines[2:] == [b"Content-Length: 0"]


# -- framing ----------------------------------------------------------------------------------


async def test_a_content_length_answer_is_read_exactly_and_the_connection_kept() -> None:
    async with served(response(b"hello"), response(b"world")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert (first.body, second.body) == (b"hello", b"world")
    assert [r.connection for r in requests] == [0, 0]


@pytest.mark.parametrize(
    "extra",
    [b"junk", response(b"stray")],
    ids=["bytes past the length", "a second, unasked answer"],
)
async def test_a_connection_with_bytes_past_the_answer_is_not_reused(extra: bytes) -> None:
    # what is left would be read as the next request's answer: a stray 200 would count
    # that request's records as delivered, junk would fail it
    async with served(response(b"first") + extra, response(b"second")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
        assert await server.wait_ended(0) == ["eof"]
    assert (first.body, second.body) == (b"first", b"second")
    assert [r.connection for r in requests] == [0, 1]


async def test_a_chunked_answer_with_extensions_and_trailers_is_read_whole() -> None:
    answer = (
        response(b"", b"Transfer-Encoding: chunked", length=False)
        + b"5;name=value\r\nhello\r\n"
        + b"6 ; ext\r\n world\r\n"
        + b"A\r\n0123456789\r\n"
        + b"0;last=1\r\nX-Trailer: t\r\nY: z\r\n\r\n"
    )
    async with served(answer, response(b"next")) as (server, client):
        first = await client.request("GET", "/", {})
        # the trailers were consumed: the next answer on this connection reads clean
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert first == Response(200, {"transfer-encoding": "chunked"}, b"hello world0123456789")
    assert second.body == b"next"
    assert [r.connection for r in requests] == [0, 0]


async def test_transfer_encoding_chunked_wins_over_content_length() -> None:
    answer = chunked(b"abc", headers=(b"Content-Length: 100",))
    async with served(answer, response(b"next")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert (first.body, second.body) == (b"abc", b"next")
    assert [r.connection for r in requests] == [0, 0]


async def test_a_close_delimited_answer_is_read_to_the_end_and_not_reused() -> None:
    answer = then_close(response(b"until the end", length=False))
    async with served(answer, response(b"second")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert (first.status, first.body) == (200, b"until the end")
    assert second.body == b"second"
    assert [r.connection for r in requests] == [0, 1]


async def test_interim_answers_are_skipped_and_their_headers_not_kept() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        + b"HTTP/1.1 102 Processing\r\nX-Interim: yes\r\n\r\n"
        + b'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel="preload"\r\n\r\n'
        + response(b"done", b"X-Final: 1", status=b"201 Created")
    )
    async with served(answer, response(b"next")) as (server, client):
        first = await client.request("POST", "/", {}, b"x")
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert first == Response(201, {"x-final": "1", "content-length": "4"}, b"done")
    assert second.body == b"next"
    assert [r.connection for r in requests] == [0, 0]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    ],
    ids=["204", "304"],
)
async def test_an_answer_that_has_no_body_reads_none(answer: bytes) -> None:
    async with served(answer, response(b"next")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert first.body == b""
    assert second.body == b"next"
    assert [r.connection for r in requests] == [0, 0]


async def test_the_answer_to_head_has_no_body_whatever_its_content_length() -> None:
    no_body = response(b"", b"Content-Length: 11", length=False)
    async with served(no_body, response(b"next")) as (server, client):
        first = await client.request("HEAD", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert (first.status, first.headers["content-length"], first.body) == (200, "11", b"")
    assert second.body == b"next"
    assert [r.connection for r in requests] == [0, 0]


# -- keep-alive -------------------------------------------------------------------------------


async def test_an_http_1_0_answer_closes_the_connection_unless_asked_to_keep_it() -> None:
    async with served(response(b"old", version=b"HTTP/1.0"), response(b"new")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
        # the client dropped the 1.0 connection itself: the server kept it open
        assert await server.wait_ended(0) == ["eof"]
    assert (first.body, second.body) == (b"old", b"new")
    assert [r.connection for r in requests] == [0, 1]


async def test_an_http_1_0_answer_with_keep_alive_keeps_the_connection() -> None:
    answer = response(b"old", b"Connection: Keep-Alive", version=b"HTTP/1.0")
    async with served(answer, response(b"new")) as (server, client):
        await client.request("GET", "/", {})
        await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert [r.connection for r in requests] == [0, 0]


async def test_an_http_1_0_close_delimited_answer_is_read_to_the_end() -> None:
    answer = then_close(response(b"all of it", version=b"HTTP/1.0", length=False))
    async with served(answer, response(b"new")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert (first.body, second.body) == (b"all of it", b"new")
    assert [r.connection for r in requests] == [0, 1]


@pytest.mark.parametrize("value", [b"close", b"Close", b"keep-alive, close"])
async def test_connection_close_is_honoured(value: bytes) -> None:
    # the server says close but keeps the connection open: the client must not reuse it
    closing = response(b"bye", b"Connection: " + value)
    async with served(closing, response(b"new")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
        assert await server.wait_ended(0) == ["eof"]
    assert (first.body, second.body) == (b"bye", b"new")
    assert [r.connection for r in requests] == [0, 1]


async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    async with served(then_close(response(b"first")), response(b"second")) as (server, client):
        await client.request("GET", "/", {})
        assert await server.wait_ended(0) == ["closed by the server"]
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert second.body == b"second"
    assert [r.connection for r in requests] == [0, 1]


@pytest.mark.parametrize("drop", [hang_up, reset], ids=["closed", "reset"])
async def test_a_kept_alive_connection_dropped_without_an_answer_is_retried_once_on_a_new_one(
    drop: Answer,
) -> None:
    # the race a kept-alive connection has: the server drops it as the request arrives
    async with served(response(b"first"), drop, response(b"again")) as (server, client):
        await client.request("GET", "/", {})
        second = await client.request("POST", "/", {}, b"payload")
        requests = await server.wait_requests(3)
    assert second.body == b"again"
    assert [r.connection for r in requests] == [0, 0, 1]
    assert requests[1].body == requests[2].body == b"payload"


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
    ids=["in-headers", "in-body", "in-chunks", "after-an-interim-answer"],
)
async def test_a_kept_alive_connection_closed_within_an_answer_is_not_retried(
    partial: bytes,
) -> None:
    # the server answered a part: it has the request, sending it again would repeat it
    answers = [response(b"first"), then_close(partial), response(b"again")]
    async with served(*answers) as (server, client):
        await client.request("GET", "/", {})
        with pytest.raises(Disconnected):
            await client.request("POST", "/", {}, b"once")
        third = await client.request("GET", "/", {})
        requests = await server.wait_requests(3)
    assert [r.body for r in requests] == [b"", b"once", b""]
    assert third.body == b"again"


async def test_a_fresh_connection_closed_without_an_answer_is_disconnected_not_retried() -> None:
    async with served(hang_up, response(b"never")) as (server, client):
        with pytest.raises(Disconnected, match="without answering") as caught:
            await client.request("POST", "/", {}, b"x")
        assert isinstance(caught.value, ConnectionError)
        # no second try on a fresh connection: the answer for it is still unused
        assert len(server.answers) == 1
        assert server.connections == 1


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
    ],
    ids=["content-length", "in-chunk", "between-chunks", "in-trailers", "in-headers"],
)
async def test_a_server_closing_within_the_answer_is_disconnected(partial: bytes) -> None:
    async with served(then_close(partial)) as (server, client):
        with pytest.raises(Disconnected):
            await client.request("GET", "/", {})
    assert server.connections == 1


# -- broken answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/2 200 OK",
        b"HTTP/1.1 OK 200",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 200OK",
        b"HTTP/1.1",
        b"http/1.1 200 OK",
        b"ICY 200 OK",
        b"SSH-2.0-OpenSSH_9.6",
        b"\x15\x03\x03\x00\x02\x02\x46",
    ],
    ids=[
        "http2",
        "swapped",
        "two-digits",
        "four-digits",
        "no-space",
        "no-status",
        "lower-case",
        "icy",
        "ssh",
        "tls-alert",
    ],
)
async def test_a_malformed_status_line_is_a_protocol_error(line: bytes) -> None:
    async with served(line + b"\r\nContent-Length: 0\r\n\r\n") as (server, client):
        with pytest.raises(ProtocolError) as caught:
            await client.request("GET", "/", {})
        assert isinstance(caught.value, OSError)
        # the connection was dropped
        assert await server.wait_ended(0) in (["eof"], ["reset"])


@pytest.mark.parametrize(
    "line",
    [b"No colon here", b"Name : value", b": value", b" Folded: x", b"\tTabbed: x"],
    ids=["no-colon", "space-before-colon", "no-name", "folded-space", "folded-tab"],
)
async def test_a_malformed_header_line_is_a_protocol_error(line: bytes) -> None:
    async with served(response(b"ok", b"X-Fine: 1", line)) as (_, client):
        with pytest.raises(ProtocolError):
            await client.request("GET", "/", {})


@pytest.mark.parametrize(
    "value",
    [b"abc", b"-1", b"", b"1 2", b"+5", b"0x5", "\uff15".encode(), b"5, 5", b"2.0"],
    ids=["letters", "negative", "empty", "two", "plus", "hex", "fullwidth", "repeated", "float"],
)
async def test_a_bad_content_length_is_a_protocol_error(value: bytes) -> None:
    answer = response(b"hello", b"Content-Length: " + value, length=False)
    async with served(answer) as (_, client):
        with pytest.raises(ProtocolError, match="Content-Length"):
            await client.request("GET", "/", {})


async def test_a_repeated_equal_content_length_is_still_refused() -> None:
    # joined into "5, 5", which is not a length
    answer = response(b"hello", b"Content-Length: 5", b"Content-Length: 5", length=False)
    async with served(answer) as (_, client):
        with pytest.raises(ProtocolError):
            await client.request("GET", "/", {})


@pytest.mark.parametrize(
    "size",
    [b"zz", b"-5", b"", b"0x5", b"+5", b"5_0", b"5 5", "\u0665".encode()],
    ids=["letters", "negative", "empty", "0x", "plus", "underscore", "two", "arabic-digit"],
)
async def test_a_bad_chunk_size_is_a_protocol_error(size: bytes) -> None:
    answer = response(b"", b"Transfer-Encoding: chunked", length=False)
    answer += size + b"\r\nhello\r\n0\r\n\r\n"
    async with served(answer) as (_, client):
        with pytest.raises(ProtocolError, match="chunk"):
            await client.request("GET", "/", {})


async def test_a_chunk_longer_than_its_size_is_a_protocol_error() -> None:
    answer = response(b"", b"Transfer-Encoding: chunked", length=False)
    answer += b"3\r\nhello\r\n0\r\n\r\n"
    async with served(answer) as (_, client):
        with pytest.raises(ProtocolError, match="longer than its size"):
            await client.request("GET", "/", {})


async def test_headers_longer_than_max_head_are_a_protocol_error() -> None:
    answer = response(b"ok", b"X-Big: " + b"a" * (MAX_HEAD + 10))
    async with served(answer) as (server, client):
        with pytest.raises(ProtocolError, match="longer than"):
            await client.request("GET", "/", {})
        assert await server.wait_ended(0) in (["eof"], ["reset"])


async def test_headers_just_under_max_head_are_read() -> None:
    big = b"a" * (MAX_HEAD - 200)
    async with served(response(b"ok", b"X-Big: " + big)) as (_, client):
        answer = await client.request("GET", "/", {})
    assert answer.headers["x-big"] == big.decode()


async def test_a_chunk_size_line_longer_than_max_head_is_a_protocol_error() -> None:
    answer = response(b"", b"Transfer-Encoding: chunked", length=False)
    answer += b"5;" + b"e" * (MAX_HEAD + 10) + b"\r\nhello\r\n0\r\n\r\n"
    async with served(answer) as (_, client):
        with pytest.raises(ProtocolError):
            await client.request("GET", "/", {})


# -- headers and bodies -----------------------------------------------------------------------


async def test_a_repeated_header_has_its_values_joined_and_names_lower_cased() -> None:
    answer = response(b"", b"Set-Thing: a", b"set-thing:b", b"SET-THING:   c  ", b"X-Other: 1")
    async with served(answer) as (_, client):
        got = await client.request("GET", "/", {})
    assert got.headers == {"set-thing": "a, b, c", "x-other": "1", "content-length": "0"}


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close"])
async def test_a_body_larger_than_max_body_is_read_fully_but_truncated(framing: str) -> None:
    big = bytes(range(256)) * ((MAX_BODY + 300_000) // 256)
    if framing == "content-length":
        answer: Answer = response(big)
    elif framing == "chunked":
        answer = chunked(*(big[i : i + 100_000] for i in range(0, len(big), 100_000)))
    else:
        answer = then_close(response(big, length=False))
    async with served(answer, response(b"next")) as (server, client):
        first = await client.request("GET", "/", {})
        second = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert len(first.body) == MAX_BODY
    assert first.body == big[:MAX_BODY]
    assert second.body == b"next"
    # read to its end, the connection stays usable (unless the answer ended with it)
    expected = [0, 1] if framing == "close" else [0, 0]
    assert [r.connection for r in requests] == expected


PLAIN = b"a compressible answer " * 200


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        (b"gzip", gzip.compress(PLAIN)),
        (b"GZip", gzip.compress(PLAIN)),
        (b"deflate", zlib.compress(PLAIN)),
        (b"deflate", deflate_raw(PLAIN)),
    ],
    ids=["gzip", "gzip-mixed-case", "deflate-zlib", "deflate-raw"],
)
async def test_compressed_answers_are_read_as_sent_and_decoded_by_decode_body(
    encoding: bytes, encoded: bytes
) -> None:
    header = b"Content-Encoding: " + encoding
    answers = [response(encoded, header), chunked(encoded, headers=(header,))]
    async with served(*answers) as (_, client):
        framed = await client.request("GET", "/", {})
        in_chunks = await client.request("GET", "/", {})
    assert framed.body == in_chunks.body == encoded
    assert framed.headers["content-encoding"] == encoding.decode()
    assert decode_body(framed.body, framed.headers["content-encoding"]) == PLAIN


def test_a_decoded_body_is_truncated_to_max_body() -> None:
    bomb = gzip.compress(b"\0" * (4 * MAX_BODY))
    assert decode_body(bomb, "gzip") == b"\0" * MAX_BODY


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_body_that_does_not_decode_is_a_protocol_error(encoding: str) -> None:
    with pytest.raises(ProtocolError, match="cannot be decoded"):
        decode_body(b"not compressed at all", encoding)


@pytest.mark.parametrize("encoding", ["zstd", "identity", ""])
def test_another_content_encoding_is_left_alone(encoding: str) -> None:
    zstd = b"\x28\xb5\x2f\xfd"  # zstd's magic number: not decoded, not refused
    assert decode_body(zstd, encoding) == zstd


# -- time, failures, closing ------------------------------------------------------------------


async def test_a_silent_server_times_out_within_the_timeout_and_the_connection_is_dropped() -> None:
    async with served(silent, response(b"after"), timeout=0.3) as (server, client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError) as caught:
            await client.request("GET", "/", {})
        elapsed = loop.time() - started
        assert caught.type is TimeoutError  # the builtin, an OSError
        assert isinstance(caught.value, OSError)
        assert 0.25 <= elapsed < 3.0
        assert await server.wait_ended(0) in (["eof"], ["reset"])
        # the client is not poisoned: the next request goes out on a new connection
        after = await client.request("GET", "/", {})
        requests = await server.wait_requests(2)
    assert after.body == b"after"
    assert [r.connection for r in requests] == [0, 1]


async def test_a_cancelled_request_drops_its_connection() -> None:
    async with served(silent, response(b"after")) as (server, client):
        task = asyncio.create_task(client.request("GET", "/", {}))
        await server.wait_requests(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await server.wait_ended(0) in (["eof"], ["reset"])
        after = await client.request("GET", "/", {})
    assert after.body == b"after"


async def test_a_refused_connection_is_an_os_error() -> None:
    async with scripted() as server:
        netloc = server.netloc
    client = HTTPClient("http", netloc, timeout=WAIT)
    try:
        with pytest.raises(ConnectionRefusedError):
            await client.request("GET", "/", {})
    finally:
        await client.aclose()


async def test_aclose_closes_idle_connections_and_refuses_later_requests() -> None:
    async with scripted(*([response()] * MAX_IDLE)) as server:
        client = server.client()
        await asyncio.gather(*(client.request("GET", "/", {}) for _ in range(MAX_IDLE)))
        assert server.connections == MAX_IDLE
        await client.aclose()
        assert await server.wait_ended(*range(MAX_IDLE)) == ["eof"] * MAX_IDLE
        with pytest.raises(ConnectionError, match="closed"):
            await client.request("GET", "/", {})
        await client.aclose()  # twice is fine
        assert server.connections == MAX_IDLE


async def test_aclose_aborts_a_request_in_flight() -> None:
    async with scripted(silent) as server:
        client = server.client()
        task = asyncio.create_task(client.request("GET", "/", {}))
        await server.wait_requests(1)
        await client.aclose()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(task, WAIT)
        assert await server.wait_ended(0) in (["eof"], ["reset"])


async def test_more_idle_connections_than_max_idle_are_closed() -> None:
    count = MAX_IDLE + 1
    ready = asyncio.Event()

    async def when_all_arrived(reader: Reader, writer: Writer) -> None:
        if len(server.requests) == count:
            ready.set()
        await asyncio.wait_for(ready.wait(), WAIT)
        writer.write(response())
        await writer.drain()
        return None

    async with scripted(*([when_all_arrived] * count)) as server:
        client = server.client()
        try:
            await asyncio.gather(*(client.request("GET", "/", {}) for _ in range(count)))
            assert server.connections == count
            # one of them is not kept: the client closes it
            await wait_until(server._changed, lambda: len(server.ended) >= 1, WAIT)
            assert list(server.ended.values()) == ["eof"]
        finally:
            await client.aclose()
        assert await server.wait_ended(*range(count)) == ["eof"] * count


async def test_two_concurrent_requests_on_one_client_use_two_connections() -> None:
    both = asyncio.Event()

    async def when_both_arrived(reader: Reader, writer: Writer) -> None:
        if len(server.requests) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), WAIT)
        (mine,) = [r for r in server.requests if r.writer is writer]
        writer.write(response(b"for %s" % mine.lines[0].split()[1]))
        await writer.drain()
        return None

    async with scripted(when_both_arrived, when_both_arrived, response(b"third")) as server:
        client = server.client()
        try:
            one, two = await asyncio.gather(
                client.request("GET", "/one", {}), client.request("GET", "/two", {})
            )
            # both connections were kept: a third request reuses one of them
            third = await client.request("GET", "/three", {})
        finally:
            await client.aclose()
    # each answer went to its own request
    assert (one.body, two.body) == (b"for /one", b"for /two")
    assert third.body == b"third"
    assert server.connections == 2
    assert sorted(r.connection for r in server.requests[:2]) == [0, 1]


def test_a_client_carried_to_a_second_event_loop_works_there() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ScriptedServer([response(b"first loop"), response(b"second loop")])

    def on_server_loop(coro: Awaitable[object]) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(WAIT)  # type: ignore[arg-type]

    try:
        on_server_loop(server.start())
        client = server.client()

        async def second_run() -> Response:
            try:
                return await client.request("GET", "/", {})
            finally:
                await client.aclose()

        # The first run leaves a kept-alive connection, on a loop that is then closed.
        # That connection cannot serve the second loop, nor be closed by the client:
        # asyncio closes a transport through its loop, and that loop is closed. The
        # client lets it go and the GC closes its socket, warning that it was left
        # open. uvloop's close closes it, with the same warning, and the stream's
        # writer, collected later, says its loop was closed. The warnings are expected
        # here rather than loose in a later test, or raised inside uvloop's close,
        # which then leaves the socket open and waits on it for good.
        with pytest.warns(ResourceWarning, match="unclosed|loop is closed"):
            first = asyncio.run(client.request("GET", "/", {}))
            second = asyncio.run(second_run())
            gc.collect()
        assert on_server_loop(server.wait_ended(0, 1)) == ["eof", "eof"]
    finally:
        on_server_loop(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
    assert (first.body, second.body) == (b"first loop", b"second loop")
    assert server.connections == 2


def test_a_client_closed_on_a_second_event_loop_lets_the_first_loops_connection_go() -> None:
    # asyncio.run once per step (a script, a test): the connection kept alive on the
    # first loop cannot be closed politely on the second; aclose() must not raise
    # "Event loop is closed", and a second aclose() has nothing left to do
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ScriptedServer([response(b"first loop")])

    def on_server_loop(coro: Awaitable[object]) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(WAIT)  # type: ignore[arg-type]

    try:
        on_server_loop(server.start())
        client = server.client()
        # (the socket is closed by the GC, warning, as in the test above)
        with pytest.warns(ResourceWarning, match="unclosed|loop is closed"):
            first = asyncio.run(client.request("GET", "/", {}))
            asyncio.run(client.aclose())
            asyncio.run(client.aclose())
            # the connection ends at aclose, not when the GC closes the socket
            assert on_server_loop(server.wait_ended(0)) == ["eof"]
            gc.collect()
    finally:
        on_server_loop(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
    assert first.body == b"first loop"
    with pytest.raises(ConnectionError, match="closed"):
        asyncio.run(client.request("GET", "/", {}))


_FORK = """
import asyncio, os, sys
from aiologsinks._http import HTTPClient

client = HTTPClient("http", sys.argv[1], timeout=5)
loop = asyncio.new_event_loop()
print("parent", loop.run_until_complete(client.request("GET", "/a", {})).body.decode())
sys.stdout.flush()
pid = os.fork()
if pid == 0:
    try:
        print("child", asyncio.run(client.request("GET", "/child", {})).body.decode())
    finally:
        sys.stdout.flush()
        os._exit(0)
os.waitpid(pid, 0)
# the kept-alive connection the child also holds: the parent's loop still watches it
print("parent", loop.run_until_complete(client.request("GET", "/b", {})).body.decode())
loop.run_until_complete(client.aclose())
loop.close()
"""


async def test_a_forked_child_leaves_the_parents_kept_alive_connection_working() -> None:
    if not hasattr(os, "fork"):
        pytest.skip("os.fork")
    answers = [response(b"one"), response(b"two"), response(b"three")]
    async with scripted(*answers) as server:
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _FORK, server.netloc],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[:3] == ["parent one", "child two", "parent three"]
        requests = await server.wait_requests(3)
    # the parent's two requests went over one connection, the child's over its own
    assert [r.connection for r in requests] == [0, 1, 0]


# -- TLS --------------------------------------------------------------------------------------


async def test_https_with_a_context_trusting_the_ca_works_and_reuses_the_connection(
    tls: TLSMaterial,
) -> None:
    async with http_peer(ssl_context=tls.server) as peer:
        client = HTTPClient("https", peer.netloc, ssl_context=tls.client, timeout=WAIT)
        try:
            first = await client.request("POST", "/", {}, b"secret")
            second = await client.request("POST", "/", {}, b"again")
        finally:
            await client.aclose()
        requests = await peer.wait_ok(2)
    assert (first.status, second.status) == (200, 200)
    assert [r.body for r in requests] == [b"secret", b"again"]
    assert peer.connections == 1


async def test_https_with_the_default_context_refuses_a_self_signed_server(
    tls: TLSMaterial,
) -> None:
    async with http_peer(ssl_context=tls.server) as peer:
        client = HTTPClient("https", peer.netloc, timeout=WAIT)
        try:
            with pytest.raises(ssl.SSLError):
                await client.request("POST", "/", {}, b"secret")
        finally:
            await client.aclose()
    assert peer.requests == []


async def test_https_refuses_a_certificate_for_another_name() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)  # not 127.0.0.1
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with http_peer(ssl_context=server_context) as peer:
        client = HTTPClient("https", peer.netloc, ssl_context=client_context, timeout=WAIT)
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await client.request("GET", "/", {})
        finally:
            await client.aclose()
    assert peer.requests == []


# -- what is refused before anything is sent --------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["log", "", "http://127.0.0.1/log", "/a b", "/a\tb", "/a\x00", "/a\x7f", "/a\r\nX-In: 1", "/é"],
    ids=["relative", "empty", "absolute", "space", "tab", "nul", "del", "crlf", "non-ascii"],
)
async def test_a_bad_target_is_refused_before_anything_is_sent(target: str) -> None:
    async with served(response(b"fine")) as (server, client):
        with pytest.raises(ValueError, match="request target"):
            await client.request("GET", target, {})
        # nothing went out: the one connection and request the server sees are these
        assert (await client.request("GET", "/ok", {})).body == b"fine"
        requests = await server.wait_requests(1)
    assert server.connections == 1
    assert [r.lines[0] for r in requests] == [b"GET /ok HTTP/1.1"]


@pytest.mark.parametrize("method", ["post", "PO ST", "GET\r\nX-In: 1", "", "PÖST"])
async def test_a_bad_method_is_refused_before_anything_is_sent(method: str) -> None:
    async with served(response(b"fine")) as (server, client):
        with pytest.raises(ValueError, match="HTTP method"):
            await client.request(method, "/log", {})
        assert (await client.request("GET", "/ok", {})).body == b"fine"
        requests = await server.wait_requests(1)
    assert [r.lines[0] for r in requests] == [b"GET /ok HTTP/1.1"]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "a\r\nX-In: 1"},
        {"X-A": "a\nX-In: 1"},
        {"X-A": "a\rX-In: 1"},
        {"X-A": "a\x00b"},
        {"X-A\r\nX-In": "1"},
        {"X:A": "1"},
        {"X-A": "\u20ac"},
        {"Content-Length": "3"},
        {"transfer-encoding": "chunked"},
        {"X A": "1"},
        {"": "1"},
    ],
    ids=[
        "crlf",
        "lf",
        "cr",
        "nul",
        "crlf-in-name",
        "colon-in-name",
        "not-latin-1",
        "content-length",
        "transfer-encoding",
        "space-in-name",
        "empty-name",
    ],
)
async def test_a_bad_header_is_refused_before_anything_is_sent(headers: dict[str, str]) -> None:
    async with served(response(b"fine")) as (server, client):
        with pytest.raises(ValueError, match="header"):
            await client.request("POST", "/", {"X-Fine": "1", **headers}, b"body")
        assert (await client.request("GET", "/ok", {})).body == b"fine"
        requests = await server.wait_requests(1)
    assert server.connections == 1
    assert [r.lines[0] for r in requests] == [b"GET /ok HTTP/1.1"]


async def test_the_bodys_own_length_given_is_written_where_and_as_given() -> None:
    # HTTPHandler writes "Content-length" before its Authorization; HTTPSink does too
    async with served(response(b"fine")) as (server, client):
        headers = {"Content-type": "text/plain", "Content-length": "4", "Authorization": "x"}
        await client.request("POST", "/", headers, b"body")
        (request,) = await server.wait_requests(1)
    assert request.lines[1:] == [
        f"Host: {client.authority}".encode(),
        b"Content-type: text/plain",
        b"Content-length: 4",
        b"Authorization: x",
    ]


# -- Host -------------------------------------------------------------------------------------


async def test_a_host_header_given_replaces_the_clients_own() -> None:
    async with served(response(b"fine")) as (server, client):
        await client.request("GET", "/ok", {"host": "logs.internal"})
        (request,) = await server.wait_requests(1)
    hosts = [line for line in request.lines[1:] if line.lower().startswith(b"host:")]
    assert hosts == [b"host: logs.internal"]


@pytest.mark.parametrize(
    ("scheme", "netloc", "host"),
    [
        ("http", "example.com", "example.com"),
        ("http", "example.com:80", "example.com"),
        ("https", "example.com:443", "example.com"),
        ("https", "example.com", "example.com"),
        ("http", "example.com:443", "example.com:443"),
        ("https", "example.com:80", "example.com:80"),
        ("http", "example.com:8080", "example.com:8080"),
        ("http", "[::1]:80", "[::1]"),
        ("http", "[::1]:8080", "[::1]:8080"),
        ("https", "[fe80::1]", "[fe80::1]"),
    ],
)
def test_the_host_header_omits_the_default_port_and_brackets_ipv6(
    scheme: str, netloc: str, host: str
) -> None:
    client = HTTPClient(scheme, netloc, ssl_context=ssl.create_default_context())
    assert client.authority == host


@pytest.mark.parametrize(
    ("scheme", "netloc"),
    [
        ("ftp", "example.com"),
        ("http", ""),
        ("http", ":80"),
        ("http", "h:abc"),
        ("http", "h:70000"),
        ("http", "user:pw@h:80"),
        ("http", "h:80/path"),
        ("http", "h:80?q"),
    ],
    ids=["scheme", "empty", "no-host", "port-letters", "port-too-big", "userinfo", "path", "query"],
)
def test_a_bad_origin_is_refused(scheme: str, netloc: str) -> None:
    with pytest.raises(ValueError):
        HTTPClient(scheme, netloc)


async def test_the_host_header_of_an_ipv6_server_is_bracketed_on_the_wire() -> None:
    if not has_ipv6_loopback():
        (pytest.fail if IN_CI else pytest.skip)("needs an IPv6 loopback (::1)")
    async with scripted(response(b"six"), host="::1") as server:
        client = server.client()
        try:
            got = await client.request("GET", "/", {})
        finally:
            await client.aclose()
        (request,) = await server.wait_requests(1)
    assert got.body == b"six"
    assert request.lines[1] == b"Host: [::1]:%d" % server.port
