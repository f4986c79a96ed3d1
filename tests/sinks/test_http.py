"""HTTPSink against a real aiohttp server on 127.0.0.1, side by side with HTTPHandler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import subprocess
import sys
import urllib.parse
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._backoff import Backoff
from aiologsinks.sinks.http import HTTPSink, InsecureCredentialsWarning
from tests.conftest import RecordingSinkMixin
from tests.peers.http import HTTPPeer, Request, http_peer
from tests.peers.smtp import TLSMaterial, make_tls

FAST = {"retryStart": 0.01, "retryFactor": 2.0, "retryMax": 0.05}


class RecordingHTTPSink(RecordingSinkMixin, HTTPSink):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors = []
        self.excs: list[BaseException] = []
        self.notices: list[str] = []

    def report_outage(self, message: str) -> None:
        self.notices.append(message)

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        exc = sys.exc_info()[1]
        assert exc is not None
        self.excs.append(exc)
        super().handleError(record)


class ClosingHTTPHandler(logging.handlers.HTTPHandler):
    """The stdlib handler, unchanged on the wire; it leaves its connection to the GC
    (a ResourceWarning under filterwarnings=error), so the test closes it."""

    def getConnection(self, host: str, secure: bool) -> Any:
        self.connection = super().getConnection(host, secure)
        return self.connection

    def handle_and_close(self, record: logging.LogRecord) -> None:
        try:
            self.handle(record)
        finally:
            self.connection.close()


def make_record(msg: str = "user %s logged in", *args: Any) -> logging.LogRecord:
    if not args and "%s" in msg:
        args = ("bob & alice?",)
    return logging.LogRecord("app.web", logging.INFO, "/srv/app.py", 7, msg, args, None)


def msgs(requests: list[Request]) -> list[str]:
    """The ``msg`` field each form carries (unmerged, as HTTPHandler sends it)."""
    return [urllib.parse.parse_qs(r.body.decode() or r.query)["msg"][0] for r in requests]


def messages(requests: list[Request]) -> list[str]:
    """Each form's message, merged with its ``args`` as a receiver merges them."""
    return [r.message() for r in requests]


@pytest.fixture(scope="module")
def tls() -> TLSMaterial:
    return make_tls()


def wire(request: Request) -> dict[str, Any]:
    """What the stdlib and we must agree on, byte for byte."""
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.body,
        "content-type": request.headers.get("Content-Type"),
        "content-length": request.headers.get("Content-Length"),
        "authorization": request.headers.get("Authorization"),
        "headers": sorted(k.lower() for k in request.headers),
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("url", ["/log", "/log?source=app"])
@pytest.mark.parametrize("credentials", [None, ("bob", "pa:ss wörd")])
async def test_same_request_as_stdlib_httphandler(
    method: str, url: str, credentials: tuple[str, str] | None
) -> None:
    async with http_peer() as peer:
        record = make_record()
        stdlib = ClosingHTTPHandler(peer.netloc, url, method, credentials=credentials)
        await asyncio.to_thread(stdlib.handle_and_close, record)
        if credentials:
            with pytest.warns(InsecureCredentialsWarning, match="clear text"):
                sink = HTTPSink(peer.netloc, url, method, credentials=credentials)
        else:
            sink = HTTPSink(peer.netloc, url, method)
        async with sink:
            await sink.handle(record)
        theirs, ours = await peer.wait_ok(2)
    assert wire(ours) == wire(theirs)
    assert ours.method == method
    assert msgs([ours]) == ["user %s logged in"]
    if method == "POST":
        assert ours.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert ours.query == ("source=app" if "?" in url else "")
    if credentials:
        assert ours.headers["Authorization"].startswith("Basic ")


async def test_https_with_a_custom_context(tls: TLSMaterial) -> None:
    async with http_peer(ssl_context=tls.server) as peer:
        sink = RecordingHTTPSink(
            peer.netloc,
            "/log",
            "POST",
            secure=True,
            credentials=("bob", "s3cret"),
            context=tls.client,
        )
        async with sink:
            await sink.emit(make_record())
        (request,) = await peer.wait_ok(1)
    assert sink.errors == []
    assert msgs([request]) == ["user %s logged in"]


async def test_https_verifies_the_server_by_default(tls: TLSMaterial) -> None:
    async with http_peer(ssl_context=tls.server) as peer:
        sink = RecordingHTTPSink(peer.netloc, "/log", secure=True)
        async with sink:
            await sink.emit(make_record())
    assert len(sink.errors) == 1
    assert peer.requests == []


async def test_connections_are_reused() -> None:
    async with http_peer() as peer:
        async with HTTPSink(peer.netloc, "/log", "POST") as sink:
            await sink.emit_batch([make_record(f"n {i}") for i in range(10)])
            for i in range(10, 20):
                await sink.emit(make_record(f"n {i}"))
        await peer.wait_ok(20)
    assert peer.connections == 1
    assert messages(peer.requests) == [f"n {i}" for i in range(20)]


async def test_set_formatter_has_no_effect() -> None:
    async with http_peer() as peer:
        async with HTTPSink(peer.netloc, "/log") as sink:
            record = make_record()
            await sink.emit(record)
            sink.setFormatter(logging.Formatter("CHANGED %(message)s"))
            await sink.emit(record)
        first, second = await peer.wait_ok(2)
    assert first.query == second.query


async def test_map_log_record_is_the_hook() -> None:
    class Small(HTTPSink):
        def mapLogRecord(self, record: logging.LogRecord) -> dict[str, Any]:
            return {"level": record.levelname, "msg": record.getMessage()}

    async with http_peer() as peer:
        async with Small(peer.netloc, "/log") as sink:
            await sink.emit(make_record())
        (request,) = await peer.wait_ok(1)
    assert request.query == "level=INFO&msg=user+bob+%26+alice%3F+logged+in"


@pytest.mark.parametrize("compress", [False, True])
async def test_json_batch_is_one_post_per_batch(compress: bool) -> None:
    async with http_peer() as peer:
        async with HTTPSink(peer.netloc, "/bulk", json_batch=True, gzip=compress) as sink:
            await sink.emit_batch([make_record(f"n {i}") for i in range(100)])
            await sink.emit_batch([make_record(f"n {i}") for i in range(100, 150)])
        first, second = await peer.wait_ok(2)
    assert first.method == "POST" and first.path == "/bulk"
    assert first.headers["Content-Type"] == "application/json"
    # aiohttp's server inflates a gzip request body before the handler sees it
    assert (first.headers.get("Content-Encoding") == "gzip") is compress
    wire_size = int(first.headers["Content-Length"])
    assert (wire_size < len(first.body) // 4) is compress
    items = json.loads(first.body)
    assert [item["msg"] for item in items] == [f"n {i}" for i in range(100)]
    assert len(json.loads(second.body)) == 50
    assert peer.connections == 1


async def test_error_status_goes_to_handle_error_without_retry() -> None:
    async with http_peer(statuses=[500, 404]) as peer:
        sink = RecordingHTTPSink(peer.netloc, "/log")
        async with sink:
            await sink.emit_batch([make_record("a"), make_record("b"), make_record("c")])
        await peer.wait_requests(3)
    assert [r.msg for r in sink.errors] == ["a", "b"]
    assert messages(peer.ok) == ["c"]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("json_batch", [False, True])
async def test_a_redirect_is_not_followed_and_its_records_are_reported(
    status: int, json_batch: bool
) -> None:
    # as HTTPHandler: one request, no second one to a host nobody configured; the
    # records the 3xx answered were not taken, so each goes to handleError
    async with http_peer() as elsewhere:
        location = f"http://localhost:{elsewhere.port}/moved"
        async with http_peer(statuses=[status] * 3, location=location) as peer:
            sink = RecordingHTTPSink(peer.netloc, "/log", "POST", json_batch=json_batch)
            async with sink:
                await sink.emit_batch([make_record(f"n {i}") for i in range(3)])
            await peer.wait_requests(1 if json_batch else 3)
    # a refused JSON batch is one handleError call, every record counted
    assert [r.msg for r in sink.errors] == (["n 0"] if json_batch else ["n 0", "n 1", "n 2"])
    assert sink.error_count == 3
    assert "not followed" in str(sink.excs[0])
    assert elsewhere.requests == []
    assert {r.status for r in peer.requests} == {status}


@pytest.mark.parametrize("json_batch", [False, True])
async def test_retry_mode_500_then_200_loses_nothing(json_batch: bool) -> None:
    async with http_peer(statuses=[500, 503, 500]) as peer:
        sink = RecordingHTTPSink(
            peer.netloc, "/log", "POST", json_batch=json_batch, retry=True, backoff=Backoff(**FAST)
        )
        async with sink:
            await sink.emit_batch([make_record(f"n {i}") for i in range(10)])
            await sink.emit_batch([make_record(f"n {i}") for i in range(10, 20)])
            expected = 1 if json_batch else 20
            ok = await peer.wait_ok(expected)
    assert sink.errors == []
    if json_batch:
        assert [item["msg"] for item in json.loads(ok[0].body)] == [f"n {i}" for i in range(20)]
    else:
        assert messages(ok) == [f"n {i}" for i in range(20)]
    assert len(peer.requests) == expected + 3


async def test_retry_mode_survives_a_server_down_for_a_while() -> None:
    async with http_peer() as peer:
        await peer.stop()
        sink = RecordingHTTPSink(peer.netloc, "/log", retry=True, backoff=Backoff(**FAST))
        async with sink:
            await sink.emit_batch([make_record(f"n {i}") for i in range(5)])
            assert len(sink.buffer) == 5  # refused: waiting, not lost
            await sink.emit_batch([make_record(f"n {i}") for i in range(5, 8)])
            await peer.start()  # back on the same port
            ok = await peer.wait_ok(8)
            await sink.emit(make_record("n 8"))
            ok = await peer.wait_ok(9)
    assert sink.errors == []
    assert messages(ok) == [f"n {i}" for i in range(9)]


async def test_retry_buffer_overflow_is_counted() -> None:
    async with http_peer() as peer:
        await peer.stop()
        sink = RecordingHTTPSink(
            peer.netloc, "/log", retry=True, buffer_size=3, backoff=Backoff(retryStart=60)
        )
        async with sink:
            await sink.emit_batch([make_record(f"n {i}") for i in range(5)])
            assert sink.error_count == 2
            assert [r.msg for r in sink.buffer] == ["n 2", "n 3", "n 4"]
            stats = sink.outbox.statistics()
            assert (stats.dropped, stats.pending) == (2, 3)
    # an outage is not the records' fault: counted and noticed, no traceback each
    assert sink.errors == []
    assert len(sink.notices) == 2 and "peer unreachable" in sink.notices[0]


async def test_close_reports_what_retry_could_not_deliver() -> None:
    async with http_peer() as peer:
        await peer.stop()
        sink = RecordingHTTPSink(peer.netloc, "/log", retry=True, backoff=Backoff(retryStart=60))
        async with sink:
            await sink.emit_batch([make_record(f"n {i}") for i in range(4)])
    assert sink.error_count == 4 and sink.errors == []
    assert "closed with 4 record(s) undelivered" in sink.notices[-1]


async def test_request_timeout() -> None:
    async with http_peer(delay=0.5) as peer:
        sink = RecordingHTTPSink(peer.netloc, "/log", timeout=0.05)
        async with sink:
            await sink.emit(make_record())
    assert sink.error_count == 1 and sink.errors == []
    assert "TimeoutError" in sink.notices[0]


def test_requests_are_bounded_by_default() -> None:
    assert HTTPSink("localhost", "/log").timeout == 10.0
    assert HTTPSink("localhost", "/log", timeout=None).timeout is None


async def test_credentials_never_in_repr_or_errors() -> None:
    async with http_peer() as peer:
        await peer.stop()
        with pytest.warns(InsecureCredentialsWarning):
            sink = RecordingHTTPSink(peer.netloc, "/log?token=abc", credentials=("bob", "hunter2"))
        async with sink:
            await sink.emit(make_record())
    assert "hunter2" not in repr(sink) and "abc" not in repr(sink)
    texts = list(sink.notices)
    assert texts and not any("hunter2" in t or "Basic" in t or "abc" in t for t in texts)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "PUT"}, ValueError, "method"),
        ({"context": object()}, ValueError, "context"),
        ({"gzip": True}, ValueError, "gzip"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"credentials": ("only",), "secure": True}, ValueError, "credentials"),
        ({"buffer_size": -1}, ValueError, "buffer_size"),
        ({"url": "log"}, ValueError, "url"),
        ({"url": "/log me"}, ValueError, "url"),
        ({"url": "/journal/é"}, ValueError, "url"),
        ({"url": "/log\r\nX-Injected: 1"}, ValueError, "url"),
        ({"host": "localhost:http"}, ValueError, "host"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    args = {"host": "localhost", "url": "/log", **kwargs}
    with pytest.raises(exc, match=match):
        HTTPSink(**args)


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("app:S3CRET-PW@127.0.0.1:8080", "credentials="),
        ("app@127.0.0.1:8080", "credentials="),
        ("http://app:S3CRET-PW@127.0.0.1:8080/ingest", "not a URL"),
        ("http://127.0.0.1:8080", "not a URL"),
        ("127.0.0.1:8080/ingest", "url"),
        ("127.0.0.1:8080?token=S3CRET-PW", "url"),
        ("127.0.0.1:8080#frag", "url"),
        ("127.0.0.1 :8080", "spaces"),
        ("::1", "brackets"),
        ("127.0.0.1:0", "1 to 65535"),
        ("127.0.0.1:99999", "1 to 65535"),
    ],
)
def test_a_host_with_more_than_host_and_port_is_refused_without_its_password(
    host: str, hint: str
) -> None:
    with pytest.raises(ValueError, match=r"^host: ") as caught:
        HTTPSink(host, "/log", method="POST")
    assert hint in str(caught.value)
    assert "S3CRET" not in str(caught.value).replace("token=S3CRET", "")
    assert "app:" not in str(caught.value)


def test_a_host_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^host: "):
        HTTPSink(("127.0.0.1", 80), "/log")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_request_head_is_httphandlers_byte_for_byte(method: str) -> None:
    # the names as written too ("Content-type", "Content-length": http.client's), which
    # a server that canonicalises them (aiohttp) does not show
    heads: asyncio.Queue[bytes] = asyncio.Queue()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError):  # the client closed
                await answer_each(reader, writer)
        finally:
            writer.close()

    async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = next(
                (int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                 if ln.lower().startswith(b"content-length:")), 0)  # fmt: skip
            await reader.readexactly(length)
            await heads.put(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    netloc = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    record = logging.makeLogRecord({"msg": "hello %s", "args": ("you",), "created": 1.5})
    try:
        stdlib = ClosingHTTPHandler(netloc, "/log", method, credentials=("bob", "pw"))
        await asyncio.to_thread(stdlib.handle_and_close, record)
        with pytest.warns(InsecureCredentialsWarning, match="clear text"):
            ours = HTTPSink(netloc, "/log", method, credentials=("bob", "pw"))
        await ours.emit(record)
        await ours.aclose()
        theirs = await asyncio.wait_for(heads.get(), 5)
        mine = await asyncio.wait_for(heads.get(), 5)
    finally:
        server.close()
        await server.wait_closed()
    assert mine == theirs


_NO_AIOHTTP = """
import asyncio, logging, sys
import aiologsinks as als

async def main():
    got = asyncio.get_running_loop().create_future()

    async def answer(reader, writer):
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
        got.set_result(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with als.HTTPSink(f"127.0.0.1:{port}", "/log", json_batch=True) as sink:
        await sink.emit(logging.makeLogRecord({"msg": "hello"}))
    await als.OTLPSink(f"http://127.0.0.1:{port}/v1/logs").aclose()
    assert b"hello" in await asyncio.wait_for(got, 10)
    server.close()
    await server.wait_closed()
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "yarl")))

asyncio.run(main())
"""


def test_sending_does_not_load_aiohttp() -> None:
    # the sinks' HTTP client is the package's own: a service that does not use aiohttp
    # does not carry its client's objects (every full GC collection walks them)
    done = subprocess.run(
        [sys.executable, "-c", _NO_AIOHTTP], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_method_is_case_insensitive_as_in_the_stdlib() -> None:
    assert HTTPSink("localhost", "/log", "post").method == "POST"


async def _install_and_log(peer: HTTPPeer, sink: HTTPSink, count: int) -> None:
    logger = logging.getLogger("test.http.e2e")
    logger.propagate = False
    try:
        async with als.install(sink, logger=logger, level=logging.INFO) as dispatcher:
            for i in range(count):
                logger.info("event %d", i)
            await dispatcher.flush()
    finally:
        logger.propagate = True


async def test_end_to_end_through_install_per_record() -> None:
    async with http_peer() as peer:
        await _install_and_log(peer, HTTPSink(peer.netloc, "/log", "POST"), 50)
        ok = peer.ok
    assert messages(ok) == [f"event {i}" for i in range(50)]
    assert peer.connections == 1


async def test_end_to_end_through_install_json_batch() -> None:
    async with http_peer() as peer:
        await _install_and_log(peer, HTTPSink(peer.netloc, "/bulk", json_batch=True), 500)
        ok = peer.ok
    items = [item for r in ok for item in json.loads(r.body)]
    assert [item["msg"] for item in items] == [f"event {i}" for i in range(500)]
    assert len(ok) < 500
