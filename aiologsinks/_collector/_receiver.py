"""Receiver: the channels of ``_channels`` bound, served, counted and shut down."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from . import _channels, _http
from ._channels import (
    _QUIET,
    CHANNELS,
    ChannelCounts,
    ListenError,
    OnRecord,
    ReceiverLimits,
    _bind_udp,
    _Conn,
    _Datagrams,
    admit_waiting,
)
from ._records import parse_syslog
from ._unpickle import load_record

__all__ = ["Receiver"]


class Receiver:
    """Serve record channels on ``host`` (one address or several) until :meth:`aclose`.

    Give a port (``0`` for an ephemeral one) for each channel to open: ``tcp``,
    ``udp``, ``syslog`` (UDP and TCP on the same number) and ``http``. After
    :meth:`start`, :attr:`ports` holds the bound ports (the same on every address).
    Each decoded record dict goes to :meth:`deliver` — by default to
    ``on_record(channel, fields)`` — and is counted in :attr:`counts`; invalid
    frames are counted and skipped. ``limits`` bounds what peers may cost.
    """

    def __init__(
        self,
        *,
        host: str | Sequence[str] = "127.0.0.1",
        tcp: int | None = None,
        udp: int | None = None,
        syslog: int | None = None,
        http: int | None = None,
        on_record: OnRecord | None = None,
        limits: ReceiverLimits | None = None,
    ) -> None:
        self.hosts = [host] if isinstance(host, str) else list(host)
        if not self.hosts:
            raise ValueError("host: expected at least one address")
        self.host = self.hosts[0]
        self._wanted = {"tcp": tcp, "udp": udp, "syslog": syslog, "http": http}
        self.on_record = on_record
        self.limits = limits or ReceiverLimits()
        self.ports: dict[str, int] = {}
        self.counts: dict[str, ChannelCounts] = {c: ChannelCounts() for c in CHANNELS}
        self._servers: list[asyncio.Server] = []
        #: the channel each server serves
        self._server_channels: dict[asyncio.Server, str] = {}
        #: connections taken from a closing server's backlog, being set up
        self._adopting: set[asyncio.Task[Any]] = set()
        self._transports: list[asyncio.BaseTransport] = []
        self._conns: set[_Conn] = set()
        #: connections accepted past ``max_connections``, unread until a slot is free
        self._waiting: collections.deque[_Conn] = collections.deque()
        self._buffered = 0
        self._paused = False
        #: how many times reading was paused (back-pressure)
        self.pauses = 0
        self._closing = False
        #: loop time of the last connection accepted or lost
        self._activity = 0.0
        self._event: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every requested channel on every address; returns once all listen.

        Raises :class:`ListenError` (an ``OSError``) naming the channel and address
        when one cannot be bound; nothing is left open then.
        """
        self._event = asyncio.Event()
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep(), name="aiologsinks-receiver-timeouts"
        )

    async def _listen(self, channel: str, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(lambda: _Conn(self, channel), host, port)
        except (OSError, socket.gaierror) as exc:
            raise ListenError(_where(channel, host, port, exc)) from exc
        self._servers.append(server)
        self._server_channels[server] = channel
        return int(server.sockets[0].getsockname()[1])

    async def _listen_udp(self, channel: str, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        try:
            socks = _bind_udp(host, port)
        except (OSError, socket.gaierror) as exc:
            raise ListenError(_where(channel, host, port, exc)) from exc
        for sock in socks:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self, channel), sock=sock
            )
            self._transports.append(transport)
        return int(socks[0].getsockname()[1])

    async def _start(self) -> None:
        for name, channel in (("tcp", "tcp"), ("http", "http")):
            port = self._wanted[name]
            if port is None:
                continue
            for host in self.hosts:
                port = await self._listen(channel, host, port)
            self.ports[name] = port
        port = self._wanted["udp"]
        if port is not None:
            for host in self.hosts:
                port = await self._listen_udp("udp", host, port)
            self.ports["udp"] = port
        if self._wanted["syslog"] is not None:
            await self._start_syslog(self._wanted["syslog"])

    async def _start_syslog(self, wanted: int) -> None:
        # one port number for both transports, as syslog daemons do: bind UDP (an
        # ephemeral pick when 0), then TCP on the same number; when that TCP port is
        # taken, pick again
        for attempt in range(20):
            marks = len(self._servers), len(self._transports)
            try:
                port = wanted
                for host in self.hosts:
                    port = await self._listen_udp("syslog_udp", host, port)
                for host in self.hosts:
                    await self._listen("syslog_tcp", host, port)
            except ListenError:
                if wanted != 0 or attempt == 19:
                    raise
                for server in self._servers[marks[0] :]:
                    server.close()
                for transport in self._transports[marks[1] :]:
                    transport.close()
                del self._servers[marks[0] :], self._transports[marks[1] :]
                continue
            self.ports["syslog"] = port
            return

    async def aclose(self, grace: float = 0.0) -> None:
        """Stop listening, then close every connection; idempotent.

        With ``grace`` > 0, the listeners close first (connections waiting in their
        backlog are taken, not reset), then stream connections are half-closed (the
        peer sees end-of-file: ``SocketSink`` then stops writing to this connection and
        keeps its records for the next one) and read until the peer closes them or stays
        quiet for a moment, at most ``grace`` seconds in all: what peers sent before
        they learnt of the shutdown is still received.
        """
        self._closing = True
        if grace > 0:
            self.resume()
            await self._drain(grace)
        for server in self._servers:
            server.close()
        for task in list(self._adopting):
            task.cancel()
        if self._adopting:
            await asyncio.gather(*self._adopting, return_exceptions=True)
        for conn in [*self._conns, *self._waiting]:
            conn.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _drain(self, grace: float) -> None:
        # The sockets stop listening first, while peers are still connected and not
        # connecting: closing a listener resets a connection whose handshake the
        # kernel completes at that instant, and a peer told to go away (the FIN
        # below) reconnects at once, so closing later would race those reconnects.
        # What the kernel accepted before is taken from the backlog and read like
        # the rest.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self._stop_listening()
        closed = loop.time()
        for conn in list(self._conns):
            conn.half_close()
        admit_waiting(self)  # read what their peers wrote too, and tell them to go
        event = self._event
        while event is not None:
            now = loop.time()
            if now >= deadline:
                return
            # a request whose head was read is not quiet: its body is awaited
            quiet = [c for c in self._conns if not c.unfinished() and now - c.last >= _QUIET]
            if quiet:
                # one more turn of the loop reads what already arrived for them
                await asyncio.sleep(0)
                for conn in quiet:
                    if not conn.unfinished() and loop.time() - conn.last >= _QUIET:
                        conn.abort()
            if (
                not self._conns
                and not self._adopting
                # connections the server accepted just before closing get their
                # connection_made a loop turn or two later: give them a moment
                and loop.time() - max(closed, self._activity) >= _QUIET / 5
            ):
                return
            event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(_QUIET / 4, deadline - now))

    async def _stop_listening(self) -> None:
        """Close the listening sockets without resetting a connection a peer made.

        Closing a listening socket resets the connections the kernel accepted on its
        behalf, and a server closed while asyncio is still setting up a connection it
        accepted drops that one too; their peers believe they are connected and may
        have written records. So: stop asyncio accepting, take the backlog here, let
        the connections being set up finish, then close.
        """
        loop = asyncio.get_running_loop()
        for server in self._servers:
            for listener in server.sockets:
                loop.remove_reader(listener.fileno())
        for _ in range(3):  # connections asyncio accepted attach to their server
            await asyncio.sleep(0)
        # then, with no await until the close, take what waits in the backlog
        for server in self._servers:
            channel = self._server_channels.get(server, "tcp")
            for listener in server.sockets:
                try:
                    dup = socket.socket(fileno=os.dup(listener.fileno()))
                except OSError:
                    continue
                with dup:
                    dup.setblocking(False)
                    while True:
                        try:
                            sock, _ = dup.accept()
                        except OSError:  # BlockingIOError: the backlog is empty
                            break
                        sock.setblocking(False)
                        self._adopt(loop, sock, channel)
            server.close()

    def _adopt(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, channel: str) -> None:
        async def serve() -> None:
            try:
                await loop.connect_accepted_socket(lambda: _Conn(self, channel), sock)
            except BaseException:  # OSError, or aclose() cancelled us: the socket is ours
                sock.close()
                raise

        task = loop.create_task(serve())
        self._adopting.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[Any]) -> None:
        self._adopting.discard(task)
        self._changed()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- flow control ----------------------------------------------------------------

    def pause(self) -> None:
        """Stop reading stream connections (their peers then wait, bounded by TCP);
        datagrams that arrive meanwhile are dropped and counted (``dropped``)."""
        if self._paused:
            return
        self._paused = True
        self.pauses += 1
        for conn in self._conns:
            # a lingering connection's input is discarded, not taken: reading it on
            # lets its peer finish sending and read the answer
            if (
                conn.transport is not None
                and not conn.transport.is_closing()
                and conn.linger is None
            ):
                conn.transport.pause_reading()

    def resume(self) -> None:
        """Read stream connections again (undoes :meth:`pause`)."""
        if not self._paused:
            return
        self._paused = False
        now = asyncio.get_running_loop().time()
        for conn in self._conns:
            conn.last = now
            if conn.started is not None:
                conn.started = now
            # a wait for what tells a syslog message's end begins again: the bytes
            # waiting in the socket are read on the loop's next pass, and a timer
            # due in this one would decide without them
            conn.restart_settle()
            transport = conn.transport
            if transport is not None and not transport.is_closing() and not conn.write_paused:
                transport.resume_reading()
        for conn in list(self._conns):
            conn.read_pending()

    @property
    def paused(self) -> bool:
        """True while :meth:`pause` is in effect."""
        return self._paused

    async def _sweep(self) -> None:
        # the idle and read timeouts of every connection, checked a few times per
        # shortest timeout rather than with one timer per connection
        limits = self.limits
        tick = min(1.0, max(0.02, min(limits.idle_timeout, limits.read_timeout) / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            if self._closing:
                continue
            now = loop.time()
            for conn in list(self._conns):
                if conn.closing:
                    # a close waits for the answers to be written, a peer that reads
                    # none would hold the connection and its slot for good (paused or
                    # not: this reads nothing)
                    if now - conn.closed_at > _channels._LINGER_MAX and conn.transport is not None:
                        conn.transport.abort()
                    continue
                if self._paused:
                    continue
                started = conn.started
                if now - conn.last > limits.idle_timeout or (
                    started is not None and now - started > limits.read_timeout
                ):
                    self.counts[conn.channel].timeouts += 1
                    conn.abort()

    # -- counters ----------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Records decoded on every channel."""
        return sum(c.received for c in self.counts.values())

    @property
    def invalid(self) -> int:
        """Invalid frames skipped on every channel."""
        return sum(c.invalid for c in self.counts.values())

    @property
    def connections(self) -> int:
        """Stream connections open now."""
        return len(self._conns)

    @property
    def buffered(self) -> int:
        """Bytes held in partial frames now, all connections together."""
        return self._buffered

    async def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` is true (checked whenever something arrives
        or a connection opens or closes); raises ``TimeoutError`` after ``timeout`` seconds.
        Call it on the receiver's loop."""
        event = self._event
        assert event is not None, "start() first"

        async def until() -> None:
            while not predicate(self):
                event.clear()
                await event.wait()

        await asyncio.wait_for(until(), timeout)

    def _changed(self) -> None:
        if self._event is not None:
            self._event.set()

    # -- decoding (called by the protocols) --------------------------------------------

    def deliver(self, channel: str, fields: dict[str, Any], peer: str) -> None:
        """Hand on one decoded record dict; raising counts it invalid instead."""
        if self.on_record is not None:
            self.on_record(channel, fields)

    def _after_data(self) -> None:
        """Called after each read of a connection or datagram."""
        self._changed()

    def _deliver(self, channel: str, fields: dict[str, Any], peer: str) -> None:
        try:
            self.deliver(channel, fields, peer)
        except Exception:  # noqa: BLE001 - one record's failure: counted, the stream goes on
            self.counts[channel].invalid += 1
            return
        self.counts[channel].received += 1

    def _invalid(self, channel: str) -> None:
        self.counts[channel].invalid += 1
        self._changed()

    def _frame(self, channel: str, payload: bytes, peer: str) -> None:
        self._frames(channel, [payload], peer)

    def _frames(self, channel: str, payloads: list[bytes], peer: str) -> None:
        """Decode and deliver the pickled frames one read brought, in order; a frame
        that cannot be read, or whose delivery raises, is counted invalid."""
        limits = self.limits.unpickle
        deliver = self.deliver
        received = 0
        try:
            for payload in payloads:
                # a frame that cannot be read (a FrameError, or an error the reader
                # did not foresee) or handed on is counted, and the stream goes on
                try:
                    deliver(channel, load_record(payload, limits), peer)
                except Exception:  # noqa: BLE001, S110 - one frame's failure: counted below
                    pass
                else:
                    received += 1
        finally:
            # every frame taken is counted, even when the loop is broken off
            counts = self.counts[channel]
            counts.received += received
            counts.invalid += len(payloads) - received

    def _syslog_message(self, channel: str, data: bytes, peer: str) -> None:
        try:
            fields = parse_syslog(data)
        except ValueError:
            self.counts[channel].invalid += 1
            return
        self._deliver(channel, fields, peer)

    def _http_request(self, request: _http.Request, body: bytes, peer: str) -> tuple[int, str]:
        try:
            records = _http.records_of(request, body)
        except _http.HTTPError as exc:
            self.counts["http"].invalid += 1
            return exc.status, str(exc)
        before = self.counts["http"].invalid
        for fields in records:
            self._deliver("http", fields, peer)
        failed = self.counts["http"].invalid - before
        if failed:
            return 400, f"{failed} of {len(records)} record(s) could not be read"
        return 200, "ok"


def _where(channel: str, host: str, port: int, exc: BaseException) -> str:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    errno = getattr(exc, "errno", None)
    if isinstance(exc, socket.gaierror):
        reason = f"unknown address ({exc.strerror})"
    elif errno:
        reason = os.strerror(errno).lower()
    else:
        reason = str(exc)
    return f"cannot listen for {channel} on {address}: {reason}"
