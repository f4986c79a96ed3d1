"""Loopback peers for the network scenarios, run as their own process.

``python -m benchmarks._peers tcp|udp|http|collector|syslog|stall`` binds 127.0.0.1
on a free port, prints the port on stdout, then answers each line read on stdin with
the number of records received so far. It exits when stdin closes. Counting happens
in this process so the peer never competes for the measured process's GIL.

Frames and HTTP heads are read by the collector's code (``aiologsinks._collector``),
so the benchmarks and the collector agree on where a record ends. ``collector`` is
an aiohttp server answering every POST after 2 ms; ``syslog`` reads TCP syslog,
octet-counted (RFC 6587) or NUL-terminated (the stdlib's framing);
``stall [EVERY PAUSE]`` is that syslog peer with a 4 KB receive buffer that stops
reading for PAUSE s (0.2) every EVERY s (2; a destination that stalls).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, ClassVar

from aiologsinks._collector._frames import take_frames, take_octet_counted, take_terminated
from aiologsinks._collector._http import parse_head, response

_count = 0
#: the largest frame or request body counted (the collector's default limit is 1 MiB;
#: a benchmark's batch body may be larger)
_MAX_FRAME = 1 << 30

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Peer:
    """A peer process of this module, seen from the benchmark: its port and its count."""

    def __init__(self, *args: str | float, module: str = "benchmarks._peers") -> None:
        """Run ``python -m module *args``; it prints its port, then a count per line
        read from its stdin."""
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def pids(self) -> list[int]:
        """The peer's processes (for their CPU time)."""
        return [self.proc.pid]

    def count(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def settle(self, expected: int, patience: float = 2.0, limit: float = 60.0) -> int:
        """Wait (bounded) until ``expected`` records arrived or the count stops moving."""
        deadline = time.monotonic() + limit
        last, still = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.count()
            if n >= expected:
                return n
            if n != last:
                last, still = n, time.monotonic()
            elif time.monotonic() - still > patience:
                return n
            time.sleep(0.02)
        return last

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


def _records_in(body: bytes) -> int:
    """How many records one HTTP body carries: a JSON array's length, else one."""
    if body[:1] == b"[":
        try:
            return len(json.loads(body))
        except ValueError:
            return 1
    return 1


class _Frames(asyncio.Protocol):
    """TCP: 4-byte big-endian length + pickle (SocketHandler/SocketSink frames)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        global _count
        self._buf += data
        _count += len(take_frames(self._buf, _MAX_FRAME))


class _Datagrams(asyncio.DatagramProtocol):
    """UDP: one record per datagram (syslog)."""

    def datagram_received(self, data: bytes, addr: object) -> None:
        global _count
        _count += 1


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive, parsed as the collector parses it; answers every request
    after 2 ms. A JSON array body counts as that many records, anything else as one.
    """
    global _count
    try:
        while True:
            request = parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4], _MAX_FRAME)
            body = await reader.readexactly(request.length) if request.length else b""
            await asyncio.sleep(0.002)
            _count += _records_in(body)
            writer.write(response(200, "ok", keep_alive=True))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class _Syslog(asyncio.Protocol):
    """TCP syslog: ``<len> <msg>`` frames, or messages ending in NUL or LF.

    The framing is told by the connection's first byte (a digit: octet counting)."""

    #: every connection, so the stall can pause them all
    live: ClassVar[set[_Syslog]] = set()

    def __init__(self) -> None:
        self._buf = bytearray()
        self._octets: bool | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _Syslog.live.add(self)
        if _stalled:
            transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        _Syslog.live.discard(self)

    def data_received(self, data: bytes) -> None:
        global _count
        buf = self._buf
        buf += data
        if self._octets is None and buf:
            self._octets = buf[:1].isdigit()
        if self._octets:
            _count += len(take_octet_counted(buf, _MAX_FRAME))
        else:
            # the stdlib appends a NUL; a message may contain LFs (tracebacks)
            _count += len(take_terminated(buf, b"\0"))


_stalled = False


async def _stall(every: float, pause: float) -> None:
    """Stop reading every connection for ``pause`` s every ``every`` s."""
    global _stalled
    while True:
        await asyncio.sleep(every - pause)
        _stalled = True
        for conn in list(_Syslog.live):
            if conn.transport is not None:
                conn.transport.pause_reading()
        await asyncio.sleep(pause)
        _stalled = False
        for conn in list(_Syslog.live):
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()


async def _collector() -> Any:
    """An aiohttp HTTP collector: every POST answered after 2 ms; a JSON array body
    counts as its length, any other body as one record."""
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        global _count
        body = await request.read()
        await asyncio.sleep(0.002)
        _count += _records_in(body)
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner


async def _serve(kind: str, every: float = 2.0, pause: float = 0.2) -> None:
    loop = asyncio.get_running_loop()
    keep: Any = None
    if kind in ("syslog", "stall"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if kind == "stall":
            # a small window, so that a pause in reading reaches the sender at once
            # instead of disappearing into megabytes of loopback buffers
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(_Syslog, sock=sock)
        port = server.sockets[0].getsockname()[1]
        if kind == "stall":
            keep = loop.create_task(_stall(every, pause))
    elif kind == "collector":
        keep = await _collector()
        port = keep.addresses[0][1]
    elif kind == "tcp":
        server = await loop.create_server(_Frames, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    elif kind == "http":
        server = await asyncio.start_server(_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    elif kind == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # UDP has no flow control: size the receive buffer for a whole batch of
        # datagrams (SO_RCVBUFFORCE passes net.core.rmem_max where we may), so the
        # table measures the senders, not the kernel's drops
        rcvbufforce = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform == "linux" else None)
        try:
            if rcvbufforce is None:
                raise OSError("no SO_RCVBUFFORCE")
            sock.setsockopt(socket.SOL_SOCKET, rcvbufforce, 64 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await loop.create_datagram_endpoint(_Datagrams, sock=sock)
    else:
        raise SystemExit(f"unknown peer kind {kind!r}")
    print(port, flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(_count, flush=True)
    if isinstance(keep, asyncio.Task):
        keep.cancel()
    elif keep is not None:
        await keep.cleanup()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], *(float(a) for a in sys.argv[2:4])))
