"""Loopback peers for the network scenarios, run as their own process.

``python -m benchmarks._peers tcp|udp|http`` binds 127.0.0.1 on a free port, prints
the port on stdout, then answers each line read on stdin with the number of records
received so far. It exits when stdin closes. Counting happens in this process so the
peer never competes for the measured process's GIL.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

_count = 0


class _Frames(asyncio.Protocol):
    """TCP: 4-byte big-endian length + pickle (SocketHandler/SocketSink frames)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        global _count
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if len(buf) - pos - 4 < size:
                break
            pos += 4 + size
            _count += 1
        del buf[:pos]


class _Datagrams(asyncio.DatagramProtocol):
    """UDP: one record per datagram (syslog)."""

    def datagram_received(self, data: bytes, addr: object) -> None:
        global _count
        _count += 1


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive; answers every request after 2 ms.

    A JSON array body counts as that many records, anything else as one.
    """
    global _count
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            await asyncio.sleep(0.002)
            n = 1
            if body[:1] == b"[":
                try:
                    n = len(json.loads(body))
                except ValueError:
                    n = 1
            _count += n
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    if kind == "tcp":
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


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
