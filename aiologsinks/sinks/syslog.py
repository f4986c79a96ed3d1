"""SysLogSink: ``logging.handlers.SysLogHandler`` over asyncio transports."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any, Literal

from .. import _wire
from .._exceptions import RecordTooLargeError, SinkConnectError
from .._fastformat import format_batch
from .._record import Item, level_name_of
from .._wire import RFC5424Formatter
from .socket import MAX_UDP_PAYLOAD, SEND_SLICE, DatagramChannel, StreamLinkSink

__all__ = ["RFC5424Formatter", "SysLogSink"]

Framing = Literal["octet", "lf"]


class SysLogSink(StreamLinkSink):
    """Send records to a syslog daemon over UDP, TCP or a Unix socket.

    The async counterpart of ``logging.handlers.SysLogHandler``, with the same
    parameters, ``LOG_*`` constants, ``priority_names``/``facility_names``/
    ``priority_map`` maps, ``encodePriority``/``mapPriority`` hooks and ``ident``/
    ``append_nul`` attributes. ``address`` is ``(host, port)`` — UDP with
    ``socktype=socket.SOCK_DGRAM`` (the default), TCP with ``socket.SOCK_STREAM`` —
    or a Unix socket path (``str`` or path-like): a datagram socket is tried first,
    then a stream socket, as the stdlib does when no socktype is forced
    (``socktype=socket.SOCK_STREAM`` forces a stream). A Unix socket is reconnected
    after a send error (a restarted daemon).

    Bytes on the wire: over UDP and Unix sockets, ``<PRI>`` + ``ident`` + the
    formatted message (+ NUL when ``append_nul``), UTF-8 — byte-identical to
    ``SysLogHandler``. Over TCP, the same ``<PRI>`` + ``ident`` + message, framed
    as RFC 6587 says: octet counting ``<len> <msg>`` (keyword-only
    ``framing="octet"``, the default) or a trailing LF (``framing="lf"``); the
    frame delimits the message, so no NUL is appended on TCP.

    Keyword-only options:

    * ``rfc5424=True`` sets an :class:`RFC5424Formatter` (``1 TIMESTAMP HOSTNAME
      APP-NAME PROCID MSGID SD MSG``); or pass your own with ``setFormatter``.
    * ``max_size`` (default 65507, the largest IPv4 UDP payload): a datagram
      (UDP or Unix) longer than this is **truncated** to ``max_size`` bytes, at a
      UTF-8 character boundary and keeping the NUL terminator; the record is still
      delivered, as syslog daemons themselves truncate. A datagram the kernel still
      refuses goes to :meth:`handleError`; the next record is sent normally.
    * ``buffer_size``, ``timeout``: the outage buffer and connect timeout of the
      TCP and Unix connections (see :class:`~aiologsinks.SocketSink`); UDP has no
      connection and sends, or fails, each record at once.
    """

    LOG_EMERG = _wire.LOG_EMERG
    LOG_ALERT = _wire.LOG_ALERT
    LOG_CRIT = _wire.LOG_CRIT
    LOG_ERR = _wire.LOG_ERR
    LOG_WARNING = _wire.LOG_WARNING
    LOG_NOTICE = _wire.LOG_NOTICE
    LOG_INFO = _wire.LOG_INFO
    LOG_DEBUG = _wire.LOG_DEBUG

    LOG_KERN = _wire.LOG_KERN
    LOG_USER = _wire.LOG_USER
    LOG_MAIL = _wire.LOG_MAIL
    LOG_DAEMON = _wire.LOG_DAEMON
    LOG_AUTH = _wire.LOG_AUTH
    LOG_SYSLOG = _wire.LOG_SYSLOG
    LOG_LPR = _wire.LOG_LPR
    LOG_NEWS = _wire.LOG_NEWS
    LOG_UUCP = _wire.LOG_UUCP
    LOG_CRON = _wire.LOG_CRON
    LOG_AUTHPRIV = _wire.LOG_AUTHPRIV
    LOG_FTP = _wire.LOG_FTP
    LOG_NTP = _wire.LOG_NTP
    LOG_SECURITY = _wire.LOG_SECURITY
    LOG_CONSOLE = _wire.LOG_CONSOLE
    LOG_SOLCRON = _wire.LOG_SOLCRON
    LOG_LOCAL0 = _wire.LOG_LOCAL0
    LOG_LOCAL1 = _wire.LOG_LOCAL1
    LOG_LOCAL2 = _wire.LOG_LOCAL2
    LOG_LOCAL3 = _wire.LOG_LOCAL3
    LOG_LOCAL4 = _wire.LOG_LOCAL4
    LOG_LOCAL5 = _wire.LOG_LOCAL5
    LOG_LOCAL6 = _wire.LOG_LOCAL6
    LOG_LOCAL7 = _wire.LOG_LOCAL7

    priority_names = dict(_wire.priority_names)
    facility_names = dict(_wire.facility_names)
    priority_map = dict(_wire.priority_map)

    #: prepended to every message (as ``SysLogHandler.ident``)
    ident = ""
    #: append a NUL to UDP/Unix messages, for old daemons (as the stdlib)
    append_nul = True

    def __init__(
        self,
        address: tuple[str, int] | str | os.PathLike[str] = ("localhost", _wire.SYSLOG_UDP_PORT),
        facility: int | str = _wire.LOG_USER,
        socktype: int | None = socket.SOCK_DGRAM,
        *,
        framing: Framing = "octet",
        rfc5424: bool = False,
        max_size: int = MAX_UDP_PAYLOAD,
        buffer_size: int = 1000,
        timeout: float = 1.0,
    ) -> None:
        super().__init__(buffer_size=buffer_size, timeout=timeout)
        if isinstance(address, os.PathLike):
            address = os.fspath(address)
        if isinstance(address, str):
            if not address:
                raise ValueError("address: expected a Unix socket path or (host, port)")
            self.unixsocket = True
        elif (
            isinstance(address, tuple)
            and len(address) == 2
            and isinstance(address[0], str)
            and isinstance(address[1], int)
            and not isinstance(address[1], bool)
        ):
            if not 0 < address[1] < 65536:
                raise ValueError(f"address: port must be 1-65535, got {address[1]!r}")
            self.unixsocket = False
        else:
            raise TypeError(
                f"address: expected a Unix socket path or (host, port), got {address!r}"
            )
        self.address: tuple[str, int] | str = address
        if isinstance(facility, str):
            if facility not in self.facility_names:
                raise ValueError(f"facility: unknown facility name {facility!r}")
        elif isinstance(facility, bool) or not isinstance(facility, int) or facility < 0:
            raise TypeError(f"facility: expected a LOG_* int or a facility name, got {facility!r}")
        self.facility = facility
        if socktype not in (None, socket.SOCK_DGRAM, socket.SOCK_STREAM):
            raise ValueError(
                "socktype: expected socket.SOCK_DGRAM, socket.SOCK_STREAM or None,"
                f" got {socktype!r}"
            )
        # Unix: a stream only when forced; otherwise datagram first, then stream
        self._force_stream = socktype == socket.SOCK_STREAM
        #: the socket type in use (for a Unix path: known once connected), as the seed
        self.socktype: int = socket.SOCK_STREAM if self._force_stream else socket.SOCK_DGRAM
        if framing not in ("octet", "lf"):
            raise ValueError(f"framing: expected 'octet' or 'lf', got {framing!r}")
        self.framing: Framing = framing
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 16:
            raise ValueError(f"max_size: expected an int >= 16, got {max_size!r}")
        self.max_size = max_size
        if rfc5424:
            self.setFormatter(RFC5424Formatter())
        self._channel: DatagramChannel | None = None
        self._udp_target: Any = None

    # -- the seed's hooks ----------------------------------------------------------------

    def encodePriority(self, facility: int | str, priority: int | str) -> int:
        """``(facility << 3) | priority``; names go through ``facility_names``/
        ``priority_names``."""
        if isinstance(facility, str):
            facility = self.facility_names[facility]
        if isinstance(priority, str):
            priority = self.priority_names[priority]
        return (facility << 3) | priority

    def mapPriority(self, levelName: str) -> str:
        """Map a logging level name to a ``priority_names`` key (``"warning"`` if unknown)."""
        return self.priority_map.get(levelName, "warning")

    @property
    def socket(self) -> DatagramChannel | asyncio.StreamWriter | None:
        """The open datagram channel or stream writer; ``None`` while disconnected."""
        return self._channel if self._channel is not None else self.sock

    @property
    def _tcp(self) -> bool:
        return not self.unixsocket and self.socktype == socket.SOCK_STREAM

    def encode(self, record: logging.LogRecord) -> bytes:
        """The bytes for ``record``: ``SysLogHandler``'s, RFC 6587-framed over TCP."""
        return self._encode_message(self.format(record), record.levelname)

    def _encode_message(self, msg: str, levelname: str) -> bytes:
        pri = self.encodePriority(self.facility, self.mapPriority(levelname))
        if self._tcp:
            data = _wire.syslog_message(pri, msg, self.ident, append_nul=False)
            return _wire.octet_frame(data) if self.framing == "octet" else _wire.lf_frame(data)
        return _wire.syslog_message(pri, msg, self.ident, self.append_nul)

    async def makeSocket(
        self, timeout: float = 1.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the TCP (or Unix stream) connection; return ``(reader, writer)``."""
        if isinstance(self.address, str):
            opening = asyncio.open_unix_connection(self.address)
        else:
            opening = asyncio.open_connection(*self.address)
        return await asyncio.wait_for(opening, timeout)

    async def _connect(self) -> None:
        if not self.unixsocket:
            await super()._connect()
            return
        if not self._force_stream:
            try:
                self._channel = await asyncio.wait_for(
                    DatagramChannel.open(socket.AF_UNIX, self.address, connect=True), self.timeout
                )
                self.socktype = socket.SOCK_DGRAM
                return
            except OSError:
                pass  # not a datagram socket (or not there): try a stream, as the seed
        await super()._connect()
        self.socktype = socket.SOCK_STREAM

    async def aopen(self) -> None:
        """Connect (TCP/Unix) or open the UDP socket eagerly; a failure is not fatal."""
        if self.unixsocket or self._tcp:
            async with self._lock:
                await self.createSocket()

    # -- delivery ------------------------------------------------------------------------

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Send ``records``: over UDP one datagram each, otherwise through the buffer.

        Returns when every record was handed to the transport or to
        :meth:`handleError`; over TCP/Unix, records wait in the outage buffer while
        the daemon is unreachable (see :class:`~aiologsinks.SocketSink`).
        """
        if self.unixsocket or self._tcp:
            await super().emit_batch(records)
            return
        for i, (item, data) in enumerate(self._datagrams(records), 1):
            try:
                # no coroutine per datagram: awaits only to open the socket or to drain
                channel = self._channel or await self._open_udp()
                data = _wire.truncate_utf8(data, self.max_size, keep_nul=self.append_nul)
                if not channel.send_nowait(data, self._udp_target):
                    await channel.protocol.drain()
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(item)
            if not i % SEND_SLICE:
                # one sendto per record never suspends: let the loop run between slices
                await asyncio.sleep(0)

    def _datagrams(self, records: Sequence[logging.LogRecord]) -> list[tuple[Item, bytes]]:
        """Each record's bytes (see :meth:`encode`); a record that fails goes to
        ``handleError``. A dispatcher's batch is formatted without building records."""
        out: list[tuple[Item, bytes]] = []
        fast = format_batch(self, records, "") if type(self).encode is _encode else None
        if fast is None:
            for record in records:
                try:
                    out.append((record, self.encode(record)))
                except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                    self._fail(record)
            return out
        texts, kept = fast
        for text, item in zip(texts, kept.items, strict=True):
            try:
                out.append((item, self._encode_message(text, level_name_of(item))))
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self._fail(item)
        return out

    async def _open_udp(self) -> DatagramChannel:
        if self._channel is None:
            assert not isinstance(self.address, str)
            host, port = self.address
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            if not infos:  # pragma: no cover - getaddrinfo raises instead
                raise SinkConnectError(f"{self!r}: no address for {host!r}")
            family, _, _, _, self._udp_target = infos[0]
            self._channel = await DatagramChannel.open(family)
        return self._channel

    async def _write_chunk(self, chunk: list[tuple[Item, bytes]]) -> int:
        if self.sock is None and self._channel is None:
            await self.createSocket()
        channel = self._channel
        if channel is None:
            return await super()._write_chunk(chunk)
        for i, (record, data) in enumerate(chunk):
            if i and not i % SEND_SLICE:
                # one sendto per record never suspends: let the loop run between slices
                await asyncio.sleep(0)
            data = _wire.truncate_utf8(data, self.max_size, keep_nul=self.append_nul)
            try:
                await channel.send(data)
            except RecordTooLargeError:
                self._fail(record)
            except OSError:
                # as the seed: the daemon may have restarted; drop this socket, and
                # the delivery loop reconnects and re-sends from this record
                self._write_failed()
                await self._close_channel()
                if i == 0:
                    raise
                return i
        self._fresh = False
        return len(chunk)

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.aclose()

    async def _aclose(self) -> None:
        try:
            await super()._aclose()
        finally:
            await self._close_channel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}>"


_encode = SysLogSink.encode
