"""Receivers of pickled log records, as the logging cookbook writes them.

* :class:`StdlibReceiver` — the cookbook's ``socketserver`` receiver, unchanged in
  spirit: a thread per server, ``struct.unpack('>L')`` + ``pickle.loads`` +
  ``logging.makeLogRecord``. TCP, UDP, Unix stream and Unix datagram. It proves that
  an existing stdlib receiver reads our frames.
* :class:`AsyncReceiver` — an asyncio server in the test's loop that frames as the
  collector does (``aiologsinks._collector._frames``, the package's one framing) and
  decodes as the cookbook does (``pickle.loads``: the collector's safe reader refuses
  some pickles the stdlib sends, e.g. an ``extra`` that contains itself), with knobs
  the stdlib one lacks: read slowly, close the connection after N records, stop and
  start listening on the same address. :class:`SyslogTCPReceiver` is that server
  reading octet-counted syslog messages instead.

Waiting is on events with a timeout, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import socketserver
import struct
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiologsinks._collector._frames import take_frames, take_octet_counted

#: what the asyncio receiver reads at a time (asyncio's own stream buffer size)
_READ = 64 * 1024
#: a test sends what it likes: frames are bounded only against nonsense
_MAX_FRAME = 1 << 30


def decode(chunk: bytes) -> logging.LogRecord:
    """Rebuild a record from one frame's pickle (without its length prefix), as the
    logging cookbook's receiver does (``pickle.loads``: the stdlib reference)."""
    return logging.makeLogRecord(pickle.loads(chunk))


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- the cookbook's receiver -----------------------------------------------------------


class _StreamHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            chunk = self.rfile.read(4)
            if len(chunk) < 4:
                break
            slen = struct.unpack(">L", chunk)[0]
            chunk = self.rfile.read(slen)
            if len(chunk) < slen:
                break
            self.server.receiver.add(decode(chunk))  # type: ignore[attr-defined]


class _DatagramHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request[0]
        self.server.receiver.add(decode(data[4:]))  # type: ignore[attr-defined]


class _UnixStreamServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCP6Server(_TCPServer):
    address_family = socket.AF_INET6


class _UDP6Server(socketserver.UDPServer):
    address_family = socket.AF_INET6


class StdlibReceiver:
    """A thread running a cookbook ``socketserver`` receiver; use as a context manager.

    ``kind`` is ``"tcp"``, ``"udp"``, ``"unix"`` (stream) or ``"unixdgram"``; ``path``
    is the socket path of the Unix kinds. ``address`` is what a sink connects to:
    ``(host, port)``, or ``(path, None)``.
    """

    def __init__(self, kind: str, path: str | None = None, host: str = "127.0.0.1") -> None:
        self.kind = kind
        self.records: list[logging.LogRecord] = []
        self._cond = threading.Condition()
        v6 = ":" in host
        server: socketserver.BaseServer
        if kind == "tcp":
            server = (_TCP6Server if v6 else _TCPServer)((host, 0), _StreamHandler)
        elif kind == "udp":
            server = (_UDP6Server if v6 else socketserver.UDPServer)((host, 0), _DatagramHandler)
        elif kind == "unix":
            server = _UnixStreamServer(path, _StreamHandler)
        elif kind == "unixdgram":
            server = socketserver.UnixDatagramServer(path, _DatagramHandler)
        else:
            raise ValueError(kind)
        server.receiver = self  # type: ignore[attr-defined]
        self.server = server
        if kind in ("tcp", "udp"):
            self.address: tuple[str, int | None] = (host, server.server_address[1])  # type: ignore[index]
        else:
            assert path is not None
            self.address = (path, None)
        self._thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)

    def add(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[logging.LogRecord]:
        """Wait (off the loop) until ``n`` records arrived; return them."""

        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(lambda: len(self.records) >= n, timeout)

        if not await asyncio.to_thread(wait):
            raise TimeoutError(f"{len(self.records)} of {n} records arrived")
        return list(self.records)

    def __enter__(self) -> StdlibReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
        if self.kind.startswith("unix"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address[0])


# -- an asyncio receiver with knobs ----------------------------------------------------


class AsyncReceiver:
    """An asyncio TCP/Unix-stream server decoding pickled frames in the test's loop.

    * ``pause_every``/``pause``: after every ``pause_every`` records, stop reading for
      ``pause`` seconds (a slow reader: the sender's kernel buffers fill up).
    * ``close_after``: close each connection after that many records (mid-stream).
    * ``recv_buffer``: SO_RCVBUF of accepted sockets (small: back-pressure sooner).
    * :meth:`stop`/:meth:`start` stop listening and listen again on the same address.
    """

    def __init__(
        self,
        *,
        path: str | None = None,
        port: int | None = None,
        pause_every: int = 0,
        pause: float = 0.0,
        close_after: int = 0,
        recv_buffer: int = 0,
    ) -> None:
        self.path = path
        self.port = port if port is not None or path is not None else free_port()
        self.pause_every = pause_every
        self.pause = pause
        self.close_after = close_after
        self.recv_buffer = recv_buffer
        self.records: list[logging.LogRecord] = []
        self.connections = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int | None]:
        """What a sink connects to: ``(host, port)`` or ``(path, None)``."""
        if self.path is not None:
            return (self.path, None)
        assert self.port is not None
        return ("127.0.0.1", self.port)

    async def start(self) -> None:
        """Listen (again) on the receiver's address."""
        if self.path is not None:
            self._server = await asyncio.start_unix_server(self._serve, self.path)
        else:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Close the connections before waiting for the server: since Python 3.12.1
        # wait_closed() also waits for every connection the server accepted, and a
        # sink keeps its connection open until it sees our end close.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        self._changed.set()
        sock = writer.get_extra_info("socket")
        if self.recv_buffer and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
        buf = bytearray()
        count = 0
        try:
            while not (self.close_after and count >= self.close_after):
                data = await reader.read(_READ)
                if not data:
                    break
                buf += data
                for frame in self._split(buf):
                    self._keep(frame)
                    count += 1
                    self._changed.set()
                    if self.close_after and count >= self.close_after:
                        break  # mid-stream: what else arrived is dropped with the connection
                    if self.pause_every and count % self.pause_every == 0:
                        await asyncio.sleep(self.pause)
        except ConnectionError:
            pass  # reset by the sender: the connection ends as if closed
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._handlers.discard(task)

    def _split(self, buf: bytearray) -> list[bytes]:
        """Remove the complete frames from the head of ``buf``; return them."""
        return take_frames(buf, _MAX_FRAME)

    def _keep(self, frame: bytes) -> None:
        self.records.append(decode(frame))

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[logging.LogRecord]:
        """Wait until ``n`` records arrived; return them."""
        await self._wait(lambda: len(self.records) >= n, timeout)
        return list(self.records)

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` connections were accepted in total."""
        await self._wait(lambda: self.connections >= n, timeout)

    async def __aenter__(self) -> AsyncReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class SyslogTCPReceiver(AsyncReceiver):
    """The same server reading RFC 6587 octet-counted syslog; keeps each message."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.messages: list[bytes] = []

    def _split(self, buf: bytearray) -> list[bytes]:
        return take_octet_counted(buf, _MAX_FRAME)

    def _keep(self, frame: bytes) -> None:
        self.messages.append(frame)

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[bytes]:  # type: ignore[override]
        """Wait until ``n`` messages arrived; return them."""
        await self._wait(lambda: len(self.messages) >= n, timeout)
        return list(self.messages)


@contextlib.asynccontextmanager
async def _timeout(seconds: float) -> AsyncIterator[None]:  # Python 3.10
    task = asyncio.current_task()
    assert task is not None
    handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
    try:
        yield
    except asyncio.CancelledError:
        raise TimeoutError from None
    finally:
        handle.cancel()
