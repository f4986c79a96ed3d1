"""Faulty peers: a TCP proxy that misbehaves on demand, and a peer that never reads.

:class:`FaultyProxy` listens on 127.0.0.1 in front of a real peer (the records, syslog,
HTTP or SMTP peers of this package) and does what its :attr:`~FaultyProxy.mode` says
with each *new* connection:

* ``"pass"`` — forward bytes both ways, unchanged;
* ``"slow"`` — forward, waiting :attr:`~FaultyProxy.delay` seconds before each chunk;
* ``"reset"`` — accept, then reset the connection at once (RST, no byte read);
* ``"blackhole"`` — accept, never read a byte, never answer;
* ``"refuse"`` is :meth:`~FaultyProxy.kill`: nothing listens, connections are refused.

:meth:`~FaultyProxy.kill` also resets every open connection (a crashed peer);
:meth:`~FaultyProxy.start` listens again on the same port (a restarted peer).

:func:`blackhole` accepts and never reads. (The syslog TCP receiver is
``tests.peers.records.SyslogTCPReceiver``, beside the record receivers.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Literal

from .records import free_port

Mode = Literal["pass", "slow", "reset", "blackhole"]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0), as a crashed host's kernel does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` that injects faults."""

    def __init__(self, upstream: tuple[str, int], mode: Mode = "pass", delay: float = 0.0) -> None:
        self.upstream = upstream
        self.mode: Mode = mode
        self.delay = delay
        self.port = free_port()
        #: connections accepted so far, whatever the mode
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._released = asyncio.Event()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def describe(self) -> str:
        """The proxy's state, for a failing test's message."""
        listening = self._server is not None and self._server.is_serving()
        return (
            f"port={self.port} mode={self.mode} listening={listening}"
            f" accepted={self.accepted} open={len(self._tasks)}"
        )

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        self._released.clear()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def kill(self) -> None:
        """Stop listening (new connections are refused) and reset every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _reset(writer)
        self._released.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        mode = self.mode
        up_writer: asyncio.StreamWriter | None = None
        try:
            if mode == "reset":
                _reset(writer)
                return
            if mode == "blackhole":
                writer.transport.pause_reading()
                await self._released.wait()
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(
                self._pipe(reader, up_writer, mode), self._pipe(up_reader, writer, "pass")
            )
        except (OSError, asyncio.IncompleteReadError):
            _reset(writer)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await w.wait_closed()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, mode: Mode) -> None:
        while chunk := await src.read(65536):
            if mode == "slow":
                await asyncio.sleep(self.delay)  # the fault itself: a slow peer
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            with contextlib.suppress(OSError):
                dst.write_eof()

    async def __aenter__(self) -> FaultyProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()


@contextlib.asynccontextmanager
async def blackhole() -> AsyncIterator[tuple[str, int]]:
    """A TCP peer on 127.0.0.1 that accepts and never reads a byte, never answers;
    yields its ``(host, port)``."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()
        held.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()
        for writer in held:
            writer.transport.abort()
        await server.wait_closed()
