"""SocketSink and DatagramSink: ``SocketHandler``/``DatagramHandler`` over asyncio.

Both send the stdlib's pickle frames (:func:`aiologsinks._wire.pickle_frame`), so an
existing stdlib receiver (``socketserver`` + ``logging.makeLogRecord``) reads them.
Each sink is that encoder on top of a link (:mod:`aiologsinks._transport`):
``SocketSink`` writes through a :class:`~aiologsinks._transport.LinkOutbox` (a stream
link behind the retrying outbox), ``DatagramSink`` through a
:class:`~aiologsinks._transport.DatagramSender`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from .. import _wire
from .._backoff import RetryAttributes
from .._exceptions import SinkConnectError
from .._hooks import own_hook
from .._outbox import OutboxSinkMixin
from .._record import RecordBatch
from .._sink import Sink, defining, emit_one, is_library
from .._supervise import containable
from .._transport import (
    CLOSE_TIMEOUT,
    CONNECT_TIMEOUT,
    MAX_UDP_PAYLOAD,
    SEND_SLICE,
    WRITE_TIMEOUT,
    DatagramLink,
    DatagramSender,
    LinkOutbox,
    StreamLink,
    bounded,
    check_timeout,
    each_record,
)
from .._validate import ArgumentTypeError, ArgumentValueError, check_unix_path

__all__ = ["MAX_UDP_PAYLOAD", "SEND_SLICE", "DatagramSink", "SocketSink"]

#: records encoded between two yields to the loop
_ENCODE_SLICE = 128


def _check_buffer_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArgumentValueError("buffer_size", f"expected an int >= 0, got {value!r}")
    return value


def _check_port(port: object) -> int | None:
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int):
        raise ArgumentTypeError("port", f"expected an int or None, got {port!r}")
    if not 0 < port < 65536:
        raise ArgumentValueError("port", f"expected 1-65535, got {port!r}")
    return port


def _peer_address(host: object, port: object) -> tuple[str, int | None, tuple[str, int] | str]:
    """``(host, port, address)``: ``address`` is ``(host, port)``, or the socket path
    when ``port`` is None (as ``SocketHandler``'s)."""
    checked_host, checked_port = _check_host(host), _check_port(port)
    if checked_port is None:
        return check_unix_path("host", checked_host), None, checked_host
    return checked_host, checked_port, (checked_host, checked_port)


def _check_host(host: object) -> str:
    if isinstance(host, os.PathLike):
        return os.fspath(host)  # type: ignore[no-any-return]
    if not isinstance(host, str) or not host:
        raise ArgumentTypeError("host", f"expected a host name or Unix socket path, got {host!r}")
    return host


class _SendHooks:
    """``send``/``createSocket`` as the stdlib handlers' hooks: a subclass that
    overrides one has its records go through them, one at a time, as
    ``SocketHandler``'s and ``DatagramHandler``'s do (not by the batched path)."""

    _sends_each = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not is_library(cls) and any(
            (klass := defining(cls, name)) is not None and not is_library(klass)
            for name in ("send", "createSocket")
        ):  # its own, or a mixin's
            cls._sends_each = True


class SocketSink(_SendHooks, RetryAttributes, OutboxSinkMixin, Sink):
    """Send pickled records over TCP, or a Unix stream socket when ``port`` is None.

    The async counterpart of ``logging.handlers.SocketHandler``: same frames
    (:meth:`makePickle`), same ``makeSocket``/``createSocket``/``send`` hooks (here
    coroutines), same ``retryStart``/``retryFactor``/``retryMax`` back-off. Unlike
    ``SocketHandler``, records logged while the peer is unreachable wait in a bounded buffer
    (keyword-only ``buffer_size``, default 1000; 0 drops them as ``SocketHandler`` does) and
    are delivered in order after reconnecting, by a retry task the sink owns.
    ``async with SocketSink(...)`` connects eagerly (a failure is not fatal).

    Every wait is bounded (keyword-only, seconds): ``timeout`` one connection attempt
    (1.0, as ``SocketHandler``), ``write_timeout`` a write the peer does not take (10.0: then
    the connection is aborted and its records are sent again on the next one), and
    ``close_timeout`` what :meth:`aclose` spends on a last delivery and on closing
    (1.0). Records still buffered then are counted in ``stats().errors``.

    An outage is reported by a few notices (:meth:`report_outage`: unreachable with
    the error, a summary every 30 s while it lasts, reachable again), never one per
    record; records the buffer drops are counted (``stats().errors``,
    :attr:`dropped`). A record that cannot be pickled goes to :meth:`handleError`.

    A chunk whose write fails after the connection broke is sent again on the next
    connection: delivery is at-least-once for the records of that one chunk (at most
    512) and exactly-once otherwise. A peer that closed its end is noticed before
    writing (its EOF), so a clean close costs no record and duplicates none.
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        buffer_size: int = 1000,
        timeout: float = CONNECT_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        super().__init__()
        self.host, self.port, self.address = _peer_address(host, port)
        #: seconds allowed for one connection attempt (``makeSocket(timeout)``)
        self.timeout = check_timeout("timeout", timeout)
        #: seconds a write may wait for the peer to take the data
        self.write_timeout = check_timeout("write_timeout", write_timeout)
        #: seconds aclose() spends on a last delivery, then on closing
        self.close_timeout = check_timeout("close_timeout", close_timeout)
        #: kept for ``SocketHandler`` compatibility; a broken connection is always closed here
        self.closeOnError = False
        #: the stream link behind the retrying outbox
        self.peer: LinkOutbox[StreamLink] = LinkOutbox(
            self._open_link,
            self._write,
            name=f"<{type(self).__name__} {self.address!r}>",
            buffer_size=_check_buffer_size(buffer_size),
            gone=_peer_gone,
            on_lost=self._count_lost,
            on_failed=self._count_failed,
            notify=self._notice,
        )
        self.backoff = self.peer.backoff

    # -- state ---------------------------------------------------------------------------

    @property
    def sock(self) -> asyncio.StreamWriter | None:
        """The connection's writer, ``None`` while disconnected (``SocketHandler.sock``)."""
        link = self.peer.link
        return None if link is None else link.writer

    @property
    def buffer(self) -> Any:
        """The records (encoded) waiting for the peer."""
        return self.peer.outbox.buffer

    @property
    def dropped(self) -> int:
        """Records dropped because the outage buffer was full."""
        return self.peer.outbox.statistics().dropped

    @property
    def connects(self) -> int:
        """Connections made so far (the first one included)."""
        return self.peer.slot.opened

    # -- SocketHandler's hooks -----------------------------------------------------------

    def makePickle(self, record: logging.LogRecord) -> bytes:
        """The stdlib's frame: 4-byte big-endian length + pickle of the record dict."""
        return _wire.pickle_frame(record, self.format)

    def encode(self, record: logging.LogRecord) -> bytes:
        """Return :meth:`makePickle` of ``record``."""
        return self.makePickle(record)

    async def makeSocket(
        self, timeout: float = CONNECT_TIMEOUT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the TCP (or Unix stream) connection; return ``(reader, writer)``.

        Raises ``OSError`` (``TimeoutError`` after ``timeout`` seconds) when the peer
        cannot be reached. Subclasses override it to connect differently (TLS,
        another address family); the returned writer is owned by the sink.
        """
        if self.port is None:
            opening = asyncio.open_unix_connection(self.host)
        else:
            opening = asyncio.open_connection(self.host, self.port)
        return await bounded(opening, timeout, f"connect to {self.address}")

    async def createSocket(self) -> None:
        """Connect unless connected or the back-off forbids an attempt now.

        As ``SocketHandler``: a failure sets the next allowed attempt ``retryStart`` seconds
        later, each further failure multiplies the wait by ``retryFactor`` up to
        ``retryMax``; a success resets it. Never raises for a connection error.
        """
        await self.peer.connect()

    async def send(self, s: bytes) -> None:
        """Write ``s`` now (outside the buffer) and wait until the transport took it.

        Connects first (:meth:`createSocket`, subject to the back-off) when
        disconnected. Raises :class:`~aiologsinks.SinkConnectError` when there is no
        connection, and the ``OSError`` of a broken connection after closing it.
        """
        if self.sock is None:
            await self.createSocket()
        await self.peer.write_now(s)

    # -- delivery ------------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Send one record (or buffer it while the peer is unreachable)."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Encode ``records``, queue them in the outbox and send what it holds.

        A record that cannot be encoded goes to :meth:`handleError`. Returns when
        the records were written to the connection (the peer applies back-pressure,
        bounded by ``write_timeout``), or at once when the peer is unreachable: they
        stay buffered and the retry task delivers them when the back-off allows.
        """
        if self._sends_each:
            await self._send_each(records)
            return
        frames = await self._frames(RecordBatch.of(records))
        self._take_over(len(records))  # the outbox delivers or counts each from here
        await self.peer.outbox.put(frames)

    async def _send_each(self, records: Sequence[logging.LogRecord]) -> None:
        # SocketHandler.emit: the frame of each record through send(), which a
        # subclass overrides (no buffer then: a record that cannot be sent now is
        # reported and counted, where SocketHandler drops it silently)
        start = self._taken_count
        for i, record in enumerate(records, 1):
            try:
                await self.send(self.encode(record))
            except BaseException as exc:
                if not containable(exc):
                    raise
                self.report_error(record)
            self._settled(start, i)

    async def flush(self) -> None:
        """Send the buffer now if the back-off allows an attempt; never waits for one."""
        await self.peer.outbox.flush()

    async def aopen(self) -> None:
        """Connect eagerly (:meth:`createSocket`); a failure only starts the back-off."""
        await self.createSocket()

    async def _aclose(self) -> None:
        """One last delivery and the close, each within ``close_timeout`` seconds;
        what is still buffered then is counted (``stats().errors``) and reported."""
        await self.peer.aclose(self.close_timeout)

    async def _frames(self, batch: RecordBatch) -> list[bytes]:
        plain = not (
            own_hook(self, "makePickle", SocketSink.makePickle)
            or own_hook(self, "encode", SocketSink.encode)
        )
        dicts = batch.pickle_dicts() if plain else [None] * len(batch)
        frames: list[bytes] = []
        dict_frame, encode = _wire.dict_frame, self.encode
        for i, d in enumerate(dicts, 1):
            try:
                frames.append(dict_frame(d) if d is not None else encode(batch.record(i - 1)))
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self.report_error(batch.record(i - 1))
            if not i % _ENCODE_SLICE:
                # pickling a 1000-record batch takes milliseconds: let the loop breathe
                await asyncio.sleep(0)
        return frames

    async def _open_link(self) -> StreamLink:
        reader, writer = await self.makeSocket(self.timeout)
        return StreamLink(reader, writer)

    async def _write(self, link: StreamLink, frames: list[bytes]) -> None:
        await link.write(b"".join(frames), timeout=self.write_timeout)

    def _notice(self, message: str) -> None:
        self.report_outage(message)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}>"


def _peer_gone(link: StreamLink) -> bool:
    return link.peer_gone


class DatagramSink(_SendHooks, RetryAttributes, OutboxSinkMixin, Sink):
    """Send each record as one pickled datagram: UDP, or Unix datagram if ``port`` is None.

    The async counterpart of ``logging.handlers.DatagramHandler``: the datagram is
    :meth:`makePickle`'s frame (length prefix included, as the stdlib sends it).
    UDP over IPv4 or IPv6 (the host is resolved once, off the loop, within
    ``timeout`` seconds). A record whose frame does not fit one datagram goes to
    :meth:`handleError` with :class:`~aiologsinks.RecordTooLargeError`; other errors
    the kernel refuses a datagram with too, and the next record is sent normally.
    Nothing is buffered: datagrams are fire-and-forget, as in ``DatagramHandler``.

    A Unix datagram socket is connected to its path, by the link
    :class:`~aiologsinks.SysLogSink` connects its own with: a reader that stops
    reading makes the sink wait for room in its queue, without spinning the loop,
    and what asyncio still holds for it after the write timeout (10 s) is dropped
    with the socket, counted as lost (``stats().errors``). A reader that went away
    or was restarted on the same path is reached again on a new socket, from the
    record that found it gone.

    As ``DatagramHandler`` (a ``SocketHandler`` subclass), the sink has
    ``retryStart``/``retryFactor``/``retryMax``/``retryTime`` and ``closeOnError``:
    here the back-off applies to opening the socket. A host name that does not
    resolve, or a Unix socket that is not there, is tried again only when the
    back-off allows; meanwhile records are counted as lost (``stats().errors``) and
    :meth:`report_outage` says so a few times, never once per record.
    """

    def __init__(self, host: str, port: int | None, *, timeout: float = CONNECT_TIMEOUT) -> None:
        super().__init__()
        self.host, self.port, self.address = _peer_address(host, port)
        #: seconds allowed to resolve the host and open the socket
        self.timeout = check_timeout("timeout", timeout)
        #: kept for ``DatagramHandler`` compatibility (there is no connection to close)
        self.closeOnError = False
        self.sender = DatagramSender(
            self._open_link,
            name=f"<{type(self).__name__} {self.address!r}>",
            on_lost=self._count_lost,
            on_failed=self._count_failed,
            notify=self._notice,
        )
        self.backoff = self.sender.backoff

    @property
    def sock(self) -> DatagramLink | None:
        """The datagram link, ``None`` until the first send."""
        return self.sender.slot.link

    def makePickle(self, record: logging.LogRecord) -> bytes:
        """The stdlib's frame: 4-byte big-endian length + pickle of the record dict."""
        return _wire.pickle_frame(record, self.format)

    async def makeSocket(self) -> DatagramLink:
        """Open the datagram socket (resolving the host off the loop)."""
        if self.port is None:
            return await DatagramLink.open_unix(self.host)
        return await DatagramLink.open_udp(self.host, self.port, timeout=self.timeout)

    async def createSocket(self) -> None:
        """Open the socket if needed and the back-off allows; never raises ``OSError``."""
        if self.sock is None and self.backoff.ready():
            try:
                await self.sender.slot.get()
            except (OSError, asyncio.TimeoutError):
                self.backoff.failed()

    async def send(self, s: bytes) -> None:
        """Send ``s`` as one datagram; raise what the kernel refused it with, and
        :class:`~aiologsinks.SinkConnectError` while the socket cannot be opened. A
        Unix socket whose reader went away is replaced once, at once, and ``s``
        sent on the new one."""
        await self.createSocket()
        if self.sock is None:
            raise SinkConnectError(f"{self!r}: no socket (next attempt in back-off)")
        await self.sender.send_now(s)

    async def emit(self, record: logging.LogRecord) -> None:
        """Pickle and send one record as one datagram (errors raise to the caller)."""
        await self.send(self.makePickle(record))

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Send each record as one datagram; a failing record goes to :meth:`handleError`.

        Returns when every datagram was handed to the kernel.
        """
        batch = RecordBatch.of(records)
        if self._sends_each:  # DatagramHandler.emit: each record through send()
            start = self._taken_count
            for i, record in enumerate(batch, 1):
                try:
                    await DatagramSink.emit(self, record)
                except BaseException as exc:
                    if not containable(exc):
                        raise
                    self.report_error(record)
                self._settled(start, i)
            return
        plain = not own_hook(self, "makePickle", DatagramSink.makePickle)
        dicts = batch.pickle_dicts() if plain else [None] * len(batch)
        payloads: list[bytes] = []
        kept: list[int] = []
        for i, d in enumerate(dicts):
            try:
                payloads.append(
                    _wire.dict_frame(d) if d is not None else self.makePickle(batch.record(i))
                )
                kept.append(i)
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self.report_error(batch.record(i))

        def report(i: int) -> None:
            self.report_error(batch.record(kept[i]))  # inside the except block

        # from here the sender delivers each record or counts it: a close that cuts
        # the send short counts what reached the socket as delivered, the rest once
        self._take_over(len(records))
        await self.sender.send_all(payloads, each_record(report))

    async def _open_link(self) -> DatagramLink:
        return await self.makeSocket()

    def _notice(self, message: str) -> None:
        self.report_outage(message)

    async def _aclose(self) -> None:
        await self.sender.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}>"


def _frame_of(item: Any, make_pickle: Any) -> bytes:
    """``makePickle``'s frame of one queued record (kept for the frozen-format tests)."""
    batch = RecordBatch([item])
    d = batch.pickle_dicts()[0]
    return _wire.dict_frame(d) if d is not None else make_pickle(batch.record(0))
