"""A small HTTP/1.1 client for the sinks that POST: one origin, kept-alive connections.

HTTPSink and OTLPSink send one request at a time to one server and read a short
answer. For that a general client is a heavy dependency: aiohttp's client adds about
50,000 references to a service's heap (every full collection of the cyclic GC walks
them) and several hundred objects to each request. This one is what those sinks need
and nothing more, on asyncio's streams:

* ``Content-Length`` request bodies; answers framed by ``Content-Length``, by
  ``Transfer-Encoding: chunked`` or by the end of the connection; interim ``1xx``
  answers skipped; :func:`decode_body` decodes a gzip or deflate body for the caller
  (who keeps the status when it does not decode).
* Connections kept alive (HTTP/1.1, unless the server says ``Connection: close``) and
  reused; a request that finds a kept-alive connection closed by the server before it
  answered a byte is sent once more on a fresh connection (what ``http.client``'s
  users and aiohttp do).
* No redirects (an answer is an answer), no cookies, no proxies, no headers of its own
  but ``Host`` and ``Content-Length``.

Errors: everything the transport raises is an ``OSError``: ``ssl.SSLError`` for TLS,
:class:`Disconnected` (a ``ConnectionError``) when the server closed without
answering, :class:`ProtocolError` for an answer that is not HTTP, the builtin
``TimeoutError`` when ``timeout`` ran out. A failed request drops its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import urllib.parse
import zlib
from typing import NamedTuple

from ._transport import bounded

__all__ = [
    "Disconnected",
    "HTTPClient",
    "ProtocolError",
    "Response",
    "check_header",
    "check_target",
    "decode_body",
]

#: the longest status line plus headers we read (aiohttp and http.client: 8 KiB lines,
#: 100 headers)
MAX_HEAD = 65536
#: the most of an answer's body kept (the rest is read and dropped): the sinks read a
#: short status text or an OTLP partial success, never more
MAX_BODY = 1 << 20
#: idle connections kept for reuse
MAX_IDLE = 2
_READ = 65536


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x as this client reads it."""


class Disconnected(ConnectionError):
    """The server closed the connection before its answer was complete."""


class Response(NamedTuple):
    """A server's answer: its status, its headers (names lower-cased; a repeated
    header's values joined by ``", "``) and the first :data:`MAX_BODY` bytes of its
    body, as sent (see :func:`decode_body`)."""

    status: int
    headers: dict[str, str]
    body: bytes


def check_target(target: str) -> str | None:
    """What is wrong with ``target`` as a request target (path and query), or None:
    it must start with ``/`` and be printable ASCII without spaces (``http.client``
    refuses the same)."""
    if not target.startswith("/"):
        return f"expected a path starting with '/', got {target!r}"
    if any(c <= " " or c == "\x7f" for c in target):
        return f"must not contain spaces or control characters, got {target!r}"
    if not target.isascii():
        return f"must be ASCII (percent-encode other characters), got {target!r}"
    return None


#: the headers the client writes itself: the body's framing
_FRAMING = frozenset(("content-length", "transfer-encoding"))


def check_header(name: str, value: str) -> str | None:
    """What is wrong with a request header, or None: a name that is not a token or
    that frames the body (the client sets ``Content-Length``), a value with a line
    break or a NUL (it could start another header) or outside latin-1."""
    if (
        not name
        or not name.isascii()
        or any(c <= " " or c == "\x7f" or c in ':"(),/;<=>?@[\\]{}' for c in name)
    ):
        return "not a header name"
    if name.lower() in _FRAMING:
        return "set by the client from the body"
    if any(c in value for c in "\r\n\0"):
        return "a value with a line break or a NUL"
    if any(ord(c) > 255 for c in value):
        return "a value outside latin-1"
    return None


class _Connection:
    __slots__ = ("answered", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # whether a byte of the current request's answer arrived: only a request
        # that got none may be sent again (the server cannot have acted on it)
        self.answered = False

    def usable(self) -> bool:
        # an idle connection the server closed meanwhile shows it here (EOF read or
        # the transport closing); one closed in flight is caught by the retry. Bytes
        # that arrived unasked (more than an answer's length said, or a stray answer)
        # would be read as the next request's answer: such a connection is dropped.
        return not (
            self.reader.at_eof() or self.writer.transport.is_closing() or _unread(self.reader)
        )

    def abort(self) -> None:
        transport = self.writer.transport
        try:
            transport.abort()
        except RuntimeError:
            # its loop was closed under it (a request's task collected pending, an
            # asyncio.run that ended): the transport cannot close its socket any
            # more (the GC will); the connection itself ends now, so the server is
            # not left holding it
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class HTTPClient:
    """Requests to one server (``scheme://host[:port]``), one at a time per connection.

    ``ssl_context`` is used for ``https`` (default: :func:`ssl.create_default_context`,
    which verifies the server); ``timeout`` bounds each request from connecting to the
    last byte of the answer (None: no bound). Made anywhere; its connections belong to
    the loop that opened them.
    """

    def __init__(
        self,
        scheme: str,
        netloc: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = None,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"expected http or https, got {scheme!r}")
        parts = urllib.parse.urlsplit(f"//{netloc}")
        if "@" in parts.netloc or parts.path or parts.query or parts.fragment:
            # urlsplit would drop them silently (and user info may hold a password,
            # so it is not quoted)
            raise ValueError("expected host[:port] alone: no user info, path or query")
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in {netloc!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {netloc!r}") from exc
        default_port = 443 if scheme == "https" else 80
        self.host = host
        self.port = port if port is not None else default_port
        # the Host header as http.client writes it: the port only when not the default
        shown = f"[{host}]" if ":" in host else host
        self.authority = shown if self.port == default_port else f"{shown}:{self.port}"
        self.ssl: ssl.SSLContext | None = None
        if scheme == "https":
            self.ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False
        # the loop the idle connections belong to: a sink carried to another loop (a
        # second asyncio.run, a forked child's) opens its own
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        # a forked child's copies of the parent's connections (see _acquire)
        self._forked_away: list[_Connection] = []

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> Response:
        """Send one request and read its answer, within ``timeout`` seconds.

        ``target`` is the path and query as they go on the request line (checked by
        :func:`check_target` first; ``ValueError`` if bad); ``headers`` go out as
        given, after ``Host``; ``Content-Length`` is added for a body (unless given,
        with the body's length as its value). Raises
        ``OSError`` as the module says.
        """
        problem = check_target(target)
        if problem is not None:
            raise ValueError(f"request target: {problem}")
        if not (method.isascii() and method.isalpha() and method.isupper()):
            raise ValueError(f"expected an HTTP method such as POST, got {method!r}")
        head = self._head(method, target, headers, body)
        return await bounded(
            self._exchange(method, head, body),
            self.timeout,
            f"{method} {self.authority}",
        )

    async def aclose(self) -> None:
        """Close every connection (idle ones politely; one in use is aborted)."""
        self._closed = True
        idle, self._idle = self._idle, []
        busy, self._busy = self._busy, set()
        if os.getpid() != self._pid:
            # a forked child: the parent's connections stay untouched (see _acquire)
            self._forked_away.extend(idle)
            self._forked_away.extend(busy)
            return
        if asyncio.get_running_loop() is not self._loop:
            # made on a loop that has ended (asyncio.run once per step): no polite
            # close can run on it any more; each is aborted (see _Connection.abort)
            busy.update(idle)
            idle = []
        for conn in busy:
            conn.abort()
        for conn in idle:
            conn.writer.close()
        for conn in idle:
            with contextlib.suppress(OSError):  # a TLS peer may cut the shutdown short
                await conn.writer.wait_closed()

    # -- internals -----------------------------------------------------------------------

    def _head(self, method: str, target: str, headers: dict[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {target} HTTP/1.1"]
        if not any(name.lower() == "host" for name in headers):  # a given Host wins
            lines.append(f"Host: {self.authority}")
        length = None if body is None else str(len(body))
        for name, value in headers.items():
            if length is not None and value == length and name.lower() == "content-length":
                # the body's own length, given where (and as) the caller writes it:
                # HTTPHandler's "Content-length", before its Authorization
                length = None
            else:
                problem = check_header(name, value)
                if problem is not None:
                    raise ValueError(f"header {name!r}: {problem}")
            lines.append(f"{name}: {value}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    async def _exchange(self, method: str, head: bytes, body: bytes | None) -> Response:
        conn, reused = await self._acquire()
        try:
            try:
                return await self._on(conn, method, head, body)
            except (Disconnected, ConnectionResetError, BrokenPipeError):
                if not reused or conn.answered:
                    raise
            # the server had closed this kept-alive connection: once more, on a new one
            self._release(conn, keep=False)
            conn = await self._open()
            return await self._on(conn, method, head, body)
        except BaseException:
            self._release(conn, keep=False)
            raise

    async def _on(
        self, conn: _Connection, method: str, head: bytes, body: bytes | None
    ) -> Response:
        writer = conn.writer
        conn.answered = False
        writer.write(head)
        if body:
            writer.write(body)
        try:
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            # a server may answer before it read the whole body (a 413, a 5xx) and
            # close: the answer whose head arrived first is this request's
            response = _early_answer(conn)
            if response is None:
                raise
            self._release(conn, keep=False)
            return response
        response, keep = await self._read_response(conn, method)
        self._release(conn, keep=keep)
        return response

    async def _acquire(self) -> tuple[_Connection, bool]:
        if self._closed:
            raise ConnectionError("the client is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            stale, self._idle = self._idle, []
            self._loop = loop
            if os.getpid() != self._pid:
                # a forked child: those connections are registered with the parent's
                # loop, whose epoll set the child shares; aborting one here would
                # stop the parent's loop watching its socket. They are kept, untouched,
                # so that no collection closes them through that loop either.
                self._pid = os.getpid()
                self._forked_away.extend(stale)
                self._forked_away.extend(self._busy)
                self._busy = set()
                stale = []
            for conn in stale:
                with contextlib.suppress(Exception):  # its loop may be closed
                    conn.abort()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                self._busy.add(conn)
                return conn, True
            conn.abort()
        return await self._open(), False

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl, limit=MAX_HEAD
        )
        conn = _Connection(reader, writer)
        if self._closed:  # closed while connecting
            conn.abort()
            raise ConnectionError("the client is closed")
        self._busy.add(conn)
        return conn

    def _release(self, conn: _Connection, *, keep: bool) -> None:
        if conn not in self._busy:
            return
        self._busy.discard(conn)
        if keep and not self._closed and len(self._idle) < MAX_IDLE and conn.usable():
            self._idle.append(conn)
        else:
            conn.abort()

    async def _read_response(self, conn: _Connection, method: str) -> tuple[Response, bool]:
        reader = conn.reader
        while True:
            status, version, headers = await _read_head(conn)
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue and other interim answers: the real one follows
            break
        connection = headers.get("connection", "").lower()
        # HTTP/1.1 keeps the connection unless told not to; 1.0 only when asked to
        keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        if method == "HEAD" or status in (101, 204, 304):
            return Response(status, headers, b""), keep and status != 101
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not (length.isascii() and length.isdigit()):
                raise ProtocolError(f"bad Content-Length {length[:40]!r}")
            body = await _read_exactly(reader, int(length))
        else:
            body = await _read_to_end(reader)
            keep = False
        return Response(status, headers, body), keep


def _unread(reader: asyncio.StreamReader) -> bytearray:
    """The received bytes ``reader`` holds unread (none where asyncio does not say:
    StreamReader has no public way to look)."""
    buffered: bytearray = getattr(reader, "_buffer", bytearray())
    return buffered


def _early_answer(conn: _Connection) -> Response | None:
    """The head of an answer that arrived while the request was still being sent, as a
    bodiless response (its body may be cut short by the reset), or None."""
    buffered = _unread(conn.reader)
    end = buffered.find(b"\r\n\r\n")
    if end < 0:
        return None
    conn.answered = True
    try:
        status, _, headers = _parse_head(bytes(buffered[: end + 4]))
    except ProtocolError:
        return None
    return Response(status, headers, b"") if status >= 300 else None


async def _read_head(conn: _Connection) -> tuple[int, str, dict[str, str]]:
    try:
        raw = await conn.reader.readuntil(b"\r\n\r\n")
        conn.answered = True
    except asyncio.IncompleteReadError as exc:
        conn.answered = conn.answered or bool(exc.partial)  # an interim answer counts
        raise Disconnected(
            "the server closed the connection without answering"
            if not exc.partial
            else "the server closed the connection within its answer's headers"
        ) from None
    except asyncio.LimitOverrunError:
        conn.answered = True
        raise ProtocolError(f"an answer's headers longer than {MAX_HEAD} bytes") from None
    return _parse_head(raw)


def _parse_head(raw: bytes) -> tuple[int, str, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest.partition(" ")[0]  # three digits, then a space or the end (as http.client)
    if not version.startswith("HTTP/1.") or not (
        len(code) == 3 and code.isascii() and code.isdigit()
    ):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"a malformed header line: {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(code), version, headers


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    """``n`` bytes of body, of which the first :data:`MAX_BODY` are kept."""
    kept = bytearray()
    while n > 0:
        chunk = await reader.read(min(n, _READ))
        if not chunk:
            raise Disconnected("the server closed the connection within its answer's body")
        n -= len(chunk)
        if len(kept) < MAX_BODY:
            kept += chunk[: MAX_BODY - len(kept)]
    return bytes(kept)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    kept = bytearray()
    while True:
        line = await _read_line(reader)
        size_text = line.split(b";", 1)[0].strip()
        # hex digits only: int() would also take a sign, "0x", "_" and inner spaces
        if not size_text or size_text.translate(None, b"0123456789abcdefABCDEF"):
            raise ProtocolError(f"a bad chunk size {size_text[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            while await _read_line(reader):  # trailers, up to the empty line
                pass
            return bytes(kept)
        chunk = await _read_exactly(reader, size)
        if len(kept) < MAX_BODY:
            kept += chunk[: MAX_BODY - len(kept)]
        if await _read_line(reader):
            raise ProtocolError("a chunk longer than its size")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return (await reader.readuntil(b"\r\n"))[:-2]
    except asyncio.IncompleteReadError:
        raise Disconnected("the server closed the connection within a chunked body") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"a chunk line longer than {MAX_HEAD} bytes") from None


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    kept = bytearray()
    while chunk := await reader.read(_READ):
        if len(kept) < MAX_BODY:
            kept += chunk[: MAX_BODY - len(kept)]
    return bytes(kept)


def decode_body(
    body: bytes, content_encoding: str, *, limit: int = MAX_BODY, whole: bool = False
) -> bytes:
    """``body`` decoded by its ``Content-Encoding`` header's value: gzip or deflate
    (at most ``limit`` bytes of it), any other (or none) left as it is;
    ``ProtocolError`` when it does not decode.

    ``whole`` is for a reader that needs every byte (a request's records): a stream
    cut short, or followed by anything but more gzip members, does not decode either.
    A result of ``limit`` bytes may have been cut there: ask for one byte more than
    is taken to tell.
    """
    encoding = content_encoding.strip().lower()
    if not body or encoding not in ("gzip", "deflate"):
        return body
    # wbits: gzip's header (31), or deflate as zlib data (15) or raw (-15), which
    # servers both call "deflate"
    for wbits in (31,) if encoding == "gzip" else (15, -15):
        try:
            return _inflate(body, wbits, limit, whole)
        except zlib.error:
            continue
    raise ProtocolError(f"an answer whose {encoding} body cannot be decoded")


def _inflate(body: bytes, wbits: int, limit: int, whole: bool) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, limit)
    if not whole:
        return out
    # gzip members may follow one another (RFC 1952 2.2: what `cat a.gz b.gz` makes)
    while wbits == 31 and inflater.eof and inflater.unused_data and len(out) < limit:
        rest = inflater.unused_data
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(rest, limit - len(out))
    if len(out) < limit and (not inflater.eof or inflater.unused_data):
        raise zlib.error("cut short, or followed by what is no compressed stream")
    return out
