"""SocketSink and DatagramSink: ``SocketHandler``/``DatagramHandler`` over asyncio.

Both send the stdlib's pickle frames (:func:`aiologsinks._wire.pickle_frame`), so an
existing stdlib receiver (``socketserver`` + ``logging.makeLogRecord``) reads them.

:class:`StreamLinkSink` is the machinery shared with the TCP/Unix-stream syslog sink:
a stream connection opened with the seed's exponential back-off, an outage buffer that
holds encoded records while the peer is unreachable, and one owned retry task that
delivers that buffer when the back-off delay is due even if no further record arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from .. import _wire
from .._backoff import Backoff, OutageBuffer
from .._exceptions import RecordTooLargeError, SinkConnectError
from .._record import Item, as_record, frozen_dict, travelled
from .._sink import Sink

__all__ = ["DatagramSink", "SocketSink", "StreamLinkSink"]

#: most records joined into one write; bounds what a broken write re-sends
_CHUNK = 512
#: records encoded between two yields to the loop
_ENCODE_SLICE = 128
#: datagrams sent between two yields to the loop
SEND_SLICE = 128
#: the largest UDP payload over IPv4 (65535 - 8 byte UDP - 20 byte IP header)
MAX_UDP_PAYLOAD = 65507


def _check_buffer_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"buffer_size: expected an int >= 0, got {value!r}")
    return value


def _check_port(port: object) -> int | None:
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port: expected an int or None, got {port!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port: expected 1-65535, got {port!r}")
    return port


def _check_host(host: object) -> str:
    if isinstance(host, os.PathLike):
        return os.fspath(host)  # type: ignore[no-any-return]
    if not isinstance(host, str) or not host:
        raise TypeError(f"host: expected a host name or Unix socket path, got {host!r}")
    return host


class StreamLinkSink(Sink):
    """Base of sinks that write encoded records to one stream connection.

    Subclasses implement :meth:`makeSocket` (open the connection) and :meth:`encode`
    (one record to bytes). This class provides the seed's ``createSocket`` back-off
    (``retryStart``, ``retryFactor``, ``retryMax``), ``send`` with ``drain`` for
    partial writes and back-pressure, and the outage buffer: while the peer is
    unreachable, encoded records wait in a FIFO of at most ``buffer_size`` records
    (the oldest dropped first, each drop counted in :attr:`dropped` and reported to
    :meth:`handleError`); they are sent in order, before newer records, once a
    connection succeeds. A retry task owned by the sink reconnects when the back-off
    delay is due, so a buffer is delivered even if nothing else is logged; it is
    cancelled and awaited by :meth:`aclose`.

    A chunk whose write fails after the connection broke is put back at the front of
    the buffer and re-sent on the next connection: delivery is at-least-once for the
    records of that one chunk (at most 512) and exactly-once otherwise. A peer that
    closed its end is noticed before writing (its EOF), so a clean close costs no
    record and duplicates none.
    """

    def __init__(self, *, buffer_size: int = 1000, timeout: float = 1.0) -> None:
        super().__init__()
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        #: seconds allowed for one connection attempt (``makeSocket(timeout=1)``)
        self.timeout = float(timeout)
        self.backoff = Backoff()
        self.buffer: OutageBuffer[tuple[Item, bytes]] = OutageBuffer(
            _check_buffer_size(buffer_size)
        )
        #: the connection's writer, ``None`` while disconnected (the seed's ``sock``)
        self.sock: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        #: connections made so far (the first one included)
        self.connects = 0
        # the lane worker and the retry task both deliver; one writer at a time
        self._lock = asyncio.Lock()
        self._retry_task: asyncio.Task[None] | None = None
        # True from a connect until the first write on it succeeded
        self._fresh = False

    # -- the seed's attributes, kept in the shared Backoff ------------------------------

    @property
    def retryStart(self) -> float:
        """Seconds to wait after the first failed connection attempt (1.0)."""
        return self.backoff.retryStart

    @retryStart.setter
    def retryStart(self, value: float) -> None:
        self.backoff.retryStart = float(value)

    @property
    def retryFactor(self) -> float:
        """Multiplier of the wait after each further failure (2.0)."""
        return self.backoff.retryFactor

    @retryFactor.setter
    def retryFactor(self, value: float) -> None:
        self.backoff.retryFactor = float(value)

    @property
    def retryMax(self) -> float:
        """Upper bound of the wait between attempts, in seconds (30.0)."""
        return self.backoff.retryMax

    @retryMax.setter
    def retryMax(self, value: float) -> None:
        self.backoff.retryMax = float(value)

    @property
    def retryTime(self) -> float | None:
        """When the next attempt is allowed (``None``: at once), as in the seed."""
        return self.backoff.retryTime

    @property
    def dropped(self) -> int:
        """Records dropped because the outage buffer was full."""
        return self.buffer.dropped

    # -- hooks -------------------------------------------------------------------------

    async def makeSocket(
        self, timeout: float = 1.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the connection; return its ``(reader, writer)`` pair.

        Raises ``OSError`` (or ``TimeoutError`` after ``timeout`` seconds) when the
        peer cannot be reached. Subclasses override it to connect differently (TLS,
        another address family); the returned writer is owned by the sink.
        """
        raise NotImplementedError

    def encode(self, record: logging.LogRecord) -> bytes:
        """Return the bytes that carry ``record`` on the stream."""
        raise NotImplementedError

    async def createSocket(self) -> None:
        """Connect unless the back-off forbids an attempt now.

        As the seed: a failure sets the next allowed attempt ``retryStart`` seconds
        later, each further failure multiplies the wait by ``retryFactor`` up to
        ``retryMax``; a success resets it. Returns with :attr:`sock` set on success
        and ``None`` otherwise; never raises for a connection error.
        """
        if self.sock is not None or not self.backoff.ready():
            return
        try:
            await self._connect()
        except (OSError, asyncio.TimeoutError):
            self.backoff.failed()
            return
        self.connects += 1
        self._fresh = True
        self.backoff.succeeded()

    async def _connect(self) -> None:
        self._reader, self.sock = await self.makeSocket(self.timeout)

    def _item_encoder(self) -> Callable[[Item], bytes]:
        """What encodes one queued record: :meth:`encode` of the (thawed) record."""
        encode = self.encode
        return lambda item: encode(as_record(item))

    def _write_failed(self) -> None:
        # A connection that fails its very first write (accepted, then reset) must
        # not make the retry task reconnect in a tight loop: count it as a failure.
        if self._fresh:
            self.backoff.failed()
        self._fresh = False

    async def send(self, s: bytes) -> None:
        """Write ``s`` to the connection and wait until the transport accepted it.

        Connects first (subject to the back-off) when disconnected. ``drain``
        handles partial writes and applies the peer's back-pressure without blocking
        the loop. Raises :class:`SinkConnectError` when there is no connection, and
        the ``OSError`` of a broken connection after closing it.
        """
        if self.sock is not None and self._peer_gone():
            await self._close_connection()
        if self.sock is None:
            await self.createSocket()
        writer = self.sock
        if writer is None:
            raise SinkConnectError(f"{self!r}: not connected (next attempt in back-off)")
        try:
            writer.write(s)
            await writer.drain()
        except OSError:
            self._write_failed()
            await self._close_connection()
            raise
        self._fresh = False

    # -- delivery ----------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Send one record (or buffer it while the peer is unreachable)."""
        await self.emit_batch((record,))

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Encode ``records``, append them to the buffer and send what the buffer holds.

        A record that cannot be encoded goes to :meth:`handleError`. Returns when the
        buffer was written to the connection (the peer applies back-pressure through
        ``drain``), or at once when the peer is unreachable: the records stay buffered
        and the retry task delivers them when the back-off allows.
        """
        packets: list[tuple[Item, bytes]] = []
        encode = self._item_encoder()
        for i, item in enumerate(_items(records), 1):
            try:
                packets.append((item, encode(item)))
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(item)
            if i % _ENCODE_SLICE == 0:
                # pickling a 1000-record batch takes milliseconds: let the loop breathe
                await asyncio.sleep(0)
        if self.buffer.maxlen == 0:
            await self._send_unbuffered(packets)
            return
        # The bound is for an outage: while the peer takes records, a batch larger than
        # the buffer goes out piece by piece instead of losing its oldest records.
        step = max(1, min(_CHUNK, self.buffer.maxlen))
        start = 0
        while start < len(packets) and not (self.buffer and self.backoff.in_outage):
            self._drop(self.buffer.extend(packets[start : start + step]))
            start += step
            await self._deliver()
        if start < len(packets):
            self._drop(self.buffer.extend(packets[start:]))  # unreachable: keep the newest
            await self._deliver()

    async def flush(self) -> None:
        """Send the buffer now if the back-off allows an attempt; never waits for one."""
        await self._deliver()

    async def _write_chunk(self, chunk: list[tuple[Item, bytes]]) -> int:
        """Write ``chunk``; return how many of its records were delivered.

        Raising ``OSError`` means none was: the whole chunk goes back to the buffer.
        The stream version makes one write of the joined frames.
        """
        await self.send(b"".join(p for _, p in chunk))
        return len(chunk)

    async def _deliver(self) -> None:
        async with self._lock:
            while self.buffer:
                chunk = self.buffer.take(_CHUNK)
                try:
                    sent = await self._write_chunk(chunk)
                except OSError:
                    self._drop(self.buffer.appendleft_all(chunk))
                    self._arm_retry()
                    return
                if sent < len(chunk):
                    self._drop(self.buffer.appendleft_all(chunk[sent:]))

    async def _send_unbuffered(self, packets: list[tuple[Item, bytes]]) -> None:
        # buffer_size=0: the seed's behaviour, send now or drop (counted, reported)
        async with self._lock:
            for start in range(0, len(packets), _CHUNK):
                chunk = packets[start : start + _CHUNK]
                try:
                    sent = await self._write_chunk(chunk)
                except OSError:
                    sent = 0
                self._drop(chunk[sent:])

    def _drop(self, dropped: list[tuple[Item, bytes]]) -> None:
        for record, _ in dropped:
            try:
                raise SinkConnectError(
                    f"{self!r}: outage buffer full ({self.buffer.maxlen}), record dropped"
                )
            except SinkConnectError:
                self._fail(record)

    def _arm_retry(self) -> None:
        if self.closed or (self._retry_task is not None and not self._retry_task.done()):
            return
        self._retry_task = asyncio.get_running_loop().create_task(
            self._retry(), name=f"aiologsinks-retry-{self!r}"
        )

    async def _retry(self) -> None:
        # Owned by the sink (aclose cancels and awaits it): sleeps until the back-off
        # allows the next attempt and delivers, until the buffer is empty.
        while self.buffer and not self.closed:
            await asyncio.sleep(max(self.backoff.delay(), 0.001))
            await self._deliver()

    def _peer_gone(self) -> bool:
        # The peer never sends: EOF or a read error means it closed or reset its end,
        # and writing now would lose the records in the kernel buffer.
        writer, reader = self.sock, self._reader
        if writer is None or writer.is_closing():
            return True
        return reader is not None and (reader.at_eof() or reader.exception() is not None)

    async def _close_connection(self) -> None:
        writer, self.sock, self._reader = self.sock, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _aclose(self) -> None:
        """Stop retrying, try one last delivery, close the connection.

        Records still buffered after that (the peer is unreachable) go to
        :meth:`handleError` as undelivered.
        """
        task, self._retry_task = self._retry_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._deliver()
        finally:
            left = self.buffer.take()
            for record, _ in left:
                try:
                    raise SinkConnectError(f"{self!r}: closed while the peer was unreachable")
                except SinkConnectError:
                    self._fail(record)
            await self._close_connection()


class SocketSink(StreamLinkSink):
    """Send pickled records over TCP, or a Unix stream socket when ``port`` is None.

    The async counterpart of ``logging.handlers.SocketHandler``: same frames
    (:meth:`makePickle`), same ``makeSocket``/``createSocket``/``send`` hooks (here
    coroutines), same ``retryStart``/``retryFactor``/``retryMax`` back-off. Unlike
    the seed, records logged while the peer is unreachable wait in a bounded buffer
    (keyword-only ``buffer_size``, default 1000; 0 drops them as the seed does) and
    are delivered in order after reconnecting. ``timeout`` bounds one connection
    attempt. ``async with SocketSink(...)`` connects eagerly (a failure is not fatal).
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        buffer_size: int = 1000,
        timeout: float = 1.0,
    ) -> None:
        super().__init__(buffer_size=buffer_size, timeout=timeout)
        self.host = _check_host(host)
        self.port = _check_port(port)
        #: ``(host, port)``, or the socket path when ``port`` is None (as the seed)
        self.address: tuple[str, int] | str = (
            (self.host, self.port) if self.port is not None else self.host
        )
        #: kept for seed compatibility; a broken connection is always closed here
        self.closeOnError = False

    def makePickle(self, record: logging.LogRecord) -> bytes:
        """The stdlib's frame: 4-byte big-endian length + pickle of the record dict."""
        return _wire.pickle_frame(record, self.format)

    def encode(self, record: logging.LogRecord) -> bytes:
        """Return :meth:`makePickle` of ``record``."""
        return self.makePickle(record)

    def _item_encoder(self) -> Callable[[Item], bytes]:
        cls = type(self)
        if cls.makePickle is SocketSink.makePickle and cls.encode is SocketSink.encode:
            return self._frame
        return super()._item_encoder()

    def _frame(self, item: Item) -> bytes:
        return _frame_of(item, self.makePickle)

    async def makeSocket(
        self, timeout: float = 1.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the TCP (or Unix stream) connection; return ``(reader, writer)``."""
        if self.port is None:
            opening = asyncio.open_unix_connection(self.host)
        else:
            opening = asyncio.open_connection(self.host, self.port)
        return await asyncio.wait_for(opening, timeout)

    async def aopen(self) -> None:
        """Connect eagerly; a failure only starts the back-off."""
        async with self._lock:
            await self.createSocket()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}>"


class _DatagramProtocol(asyncio.DatagramProtocol):
    """Keeps the error a send raised and the transport's pause state for ``send``."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.lost = False
        self.closed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def error_received(self, exc: Exception) -> None:
        self.error = exc

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._writable.set()
        self.closed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    @property
    def writable(self) -> bool:
        """False while the transport is paused (its buffer is over the high mark)."""
        return self._writable.is_set()

    async def drain(self) -> None:
        await self._writable.wait()


class DatagramChannel:
    """A datagram transport that reports a send's error to the sender.

    asyncio hands errors of ``sendto`` to ``error_received`` instead of raising;
    :meth:`send` raises them (``EMSGSIZE`` as :class:`RecordTooLargeError`) so that
    the record's own ``handleError`` sees them. When the kernel queue is full, the
    transport buffers and :meth:`send` waits for it to drain.
    """

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _DatagramProtocol) -> None:
        self.transport = transport
        self.protocol = protocol

    @classmethod
    async def open(
        cls, family: int, remote_addr: Any = None, *, connect: bool = False
    ) -> DatagramChannel:
        """Open an unconnected (or, with ``connect``, connected) datagram socket."""
        loop = asyncio.get_running_loop()
        if connect:
            transport, protocol = await loop.create_datagram_endpoint(
                _DatagramProtocol, remote_addr=remote_addr, family=family
            )
        else:
            transport, protocol = await loop.create_datagram_endpoint(
                _DatagramProtocol, family=family
            )
        return cls(transport, protocol)

    async def send(self, data: bytes, addr: Any = None) -> None:
        """Send one datagram; raise what the kernel refused it with."""
        if not self.send_nowait(data, addr):
            await self.protocol.drain()

    def send_nowait(self, data: bytes, addr: Any = None) -> bool:
        """Send one datagram (raising as :meth:`send`); False when the transport now
        buffers, and the caller must ``await protocol.drain()`` before the next."""
        protocol = self.protocol
        if protocol.lost or self.transport.is_closing():
            raise ConnectionResetError("datagram transport is closed")
        protocol.error = None
        if addr is None:
            self.transport.sendto(data)
        else:
            self.transport.sendto(data, addr)
        error, protocol.error = protocol.error, None
        if error is not None:
            if getattr(error, "errno", None) == errno.EMSGSIZE:
                raise RecordTooLargeError(f"{len(data)} bytes do not fit one datagram") from error
            raise error
        return protocol.writable

    async def aclose(self) -> None:
        """Close the transport and wait until its socket is closed."""
        self.transport.close()
        await self.protocol.closed.wait()


class DatagramSink(Sink):
    """Send each record as one pickled datagram: UDP, or Unix datagram if ``port`` is None.

    The async counterpart of ``logging.handlers.DatagramHandler``: the datagram is
    :meth:`makePickle`'s frame (length prefix included, as the stdlib sends it).
    UDP over IPv4 or IPv6 (the host is resolved once, off the loop). A record whose
    frame does not fit one datagram goes to :meth:`handleError` with
    :class:`~aiologsinks.RecordTooLargeError`; other send errors too (a missing Unix
    socket), and the next record is sent normally. Nothing is buffered: datagrams
    are fire-and-forget, as in the seed.
    """

    def __init__(self, host: str, port: int | None) -> None:
        super().__init__()
        self.host = _check_host(host)
        self.port = _check_port(port)
        #: ``(host, port)``, or the socket path when ``port`` is None (as the seed)
        self.address: tuple[str, int] | str = (
            (self.host, self.port) if self.port is not None else self.host
        )
        #: the datagram channel, ``None`` until the first send
        self.sock: DatagramChannel | None = None
        self._target: Any = None

    def makePickle(self, record: logging.LogRecord) -> bytes:
        """The stdlib's frame: 4-byte big-endian length + pickle of the record dict."""
        return _wire.pickle_frame(record, self.format)

    async def makeSocket(self) -> DatagramChannel:
        """Open the datagram socket (resolving the host off the loop)."""
        if self.port is None:
            self._target = self.host
            return await DatagramChannel.open(socket.AF_UNIX)
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM
        )
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"getaddrinfo({self.host!r}) returned no address")
        family, _, _, _, sockaddr = infos[0]
        self._target = sockaddr
        return await DatagramChannel.open(family)

    async def createSocket(self) -> None:
        """Open the socket if needed (there is no connection, hence no back-off)."""
        if self.sock is None:
            self.sock = await self.makeSocket()

    async def send(self, s: bytes) -> None:
        """Send ``s`` as one datagram; raise what the kernel refused it with."""
        await self.createSocket()
        assert self.sock is not None
        if self.port is not None and len(s) > MAX_UDP_PAYLOAD:
            raise RecordTooLargeError(
                f"{self!r}: {len(s)} bytes exceed the UDP limit of {MAX_UDP_PAYLOAD}"
            )
        await self.sock.send(s, self._target)

    async def emit(self, record: logging.LogRecord) -> None:
        """Pickle and send one record as one datagram (errors raise to the caller)."""
        await self.send(self.makePickle(record))

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Send each record as one datagram; a failing record goes to :meth:`handleError`.

        Returns when every datagram was handed to the kernel.
        """
        plain = type(self).makePickle is DatagramSink.makePickle and type(self).emit is _dgram_emit
        for i, item in enumerate(_items(records), 1):
            try:
                if plain:
                    await self.send(_frame_of(item, self.makePickle))
                else:
                    await self.emit(as_record(item))
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(item)
            if not i % SEND_SLICE:
                # one sendto per record never suspends: let the loop run between slices
                await asyncio.sleep(0)

    async def _aclose(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            await sock.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}>"


_dgram_emit = DatagramSink.emit


def _items(records: Sequence[logging.LogRecord]) -> Sequence[Item]:
    """A dispatcher's batch as it travelled (frozen records stay frozen), or ``records``."""
    items = travelled(records)
    return records if items is None else items


def _frame_of(item: Item, make_pickle: Callable[[logging.LogRecord], bytes]) -> bytes:
    """``makePickle``'s frame; a frozen record's is built without a LogRecord."""
    if type(item) is tuple:
        d = frozen_dict(item)
        if not d["args"]:  # merged (a failed merge goes the stdlib's way, and raises)
            d["args"] = None
            return _wire.dict_frame(d)
    return make_pickle(as_record(item))
