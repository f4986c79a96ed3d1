"""SysLogSink: ``logging.handlers.SysLogHandler`` over asyncio transports.

The sink is the syslog encoder on top of a link (:mod:`aiologsinks._transport`): over
UDP a :class:`~aiologsinks._transport.DatagramSender` (no buffer, no connection), over
TCP and Unix sockets a :class:`~aiologsinks._transport.LinkOutbox` (the retrying
outbox in front of a stream or connected datagram link).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Literal

from .. import _wire
from .._backoff import RetryAttributes
from .._exceptions import RecordTooLargeError
from .._fastformat import format_batch
from .._hooks import own_hook
from .._outbox import OutboxSinkMixin
from .._record import ACCELERATED, LEVELNAME, RecordBatch
from .._sink import Sink, emit_one
from .._transport import (
    CLOSE_TIMEOUT,
    CONNECT_TIMEOUT,
    MAX_UDP_PAYLOAD,
    WRITE_TIMEOUT,
    DatagramLink,
    DatagramSender,
    LinkOutbox,
    StreamLink,
    check_timeout,
    each_record,
    send_datagrams,
)
from .._validate import ArgumentTypeError, ArgumentValueError, check_unix_path
from .._wire import RFC5424Formatter

__all__ = ["RFC5424Formatter", "SysLogSink"]

Framing = Literal["octet", "lf"]
#: a Unix syslog socket is a datagram or a stream socket (known once connected)
_UnixLink = DatagramLink | StreamLink


#: the compiled framing of formatted messages (see _speedups.c), or None
_syslog_run: Callable[..., tuple[int, list[bytes]]] | None = None
if ACCELERATED:
    from .._speedups import syslog_run as _syslog_run
#: the framings syslog_run knows, by the function that frames in Python
_FRAMINGS: dict[Callable[[bytes], bytes], int] = {
    _wire.octet_frame: 0,
    _wire.lf_frame: 1,
    _wire.nul_terminated: 2,
    _wire.unframed: 3,
}


class SysLogSink(RetryAttributes, OutboxSinkMixin, Sink):
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
    * ``buffer_size``: the outage buffer of the TCP and Unix connections (see
      :class:`~aiologsinks.SocketSink`); UDP has no connection and sends, or fails,
      each record at once. An outage is reported by a few notices
      (:meth:`report_outage`), never one per record.

    ``timeout`` is ``SysLogHandler``'s (Python 3.14) fourth parameter: seconds for
    socket operations, here connecting and each write. None (the default) keeps
    the sink's finite defaults: 1 s to connect (or resolve a UDP host), 10 s for a
    write (keyword-only ``write_timeout`` sets it apart). ``close_timeout`` (1 s)
    bounds what :meth:`aclose` spends on a last delivery and on closing. A UDP host
    name that does not resolve is looked up again only when the back-off
    (``retryStart``/``retryFactor``/``retryMax``) allows.
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
        timeout: float | None = None,
        *,
        framing: Framing = "octet",
        rfc5424: bool = False,
        max_size: int = MAX_UDP_PAYLOAD,
        buffer_size: int = 1000,
        write_timeout: float | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        super().__init__()
        if isinstance(address, os.PathLike):
            address = os.fspath(address)
        elif isinstance(address, list) and len(address) == 2:
            # [host, port]: dictConfig makes a tuple of it for SysLogHandler's
            # subclasses only, and JSON or YAML can write no tuple
            address = (address[0], address[1])
        if isinstance(address, str):
            if not address:
                raise ArgumentValueError("address", "expected a Unix socket path or (host, port)")
            check_unix_path("address", address)
            self.unixsocket = True
        elif (
            isinstance(address, tuple)
            and len(address) == 2
            and isinstance(address[0], str)
            and isinstance(address[1], int)
            and not isinstance(address[1], bool)
        ):
            if not 0 < address[1] < 65536:
                raise ArgumentValueError("address", f"port must be 1-65535, got {address[1]!r}")
            self.unixsocket = False
        else:
            raise ArgumentTypeError(
                "address", f"expected a Unix socket path or (host, port), got {address!r}"
            )
        self.address: tuple[str, int] | str = address
        if isinstance(facility, str):
            if facility not in self.facility_names:
                raise ArgumentValueError("facility", f"unknown facility name {facility!r}")
        elif isinstance(facility, bool) or not isinstance(facility, int) or facility < 0:
            raise ArgumentTypeError(
                "facility", f"expected a LOG_* int or a facility name, got {facility!r}"
            )
        self.facility = facility
        if socktype is not None and (isinstance(socktype, bool) or not isinstance(socktype, int)):
            raise ArgumentTypeError(
                "socktype",
                f"expected socket.SOCK_DGRAM, socket.SOCK_STREAM or None, got {socktype!r}",
            )
        if socktype not in (None, socket.SOCK_DGRAM, socket.SOCK_STREAM):
            raise ArgumentValueError(
                "socktype",
                f"expected socket.SOCK_DGRAM, socket.SOCK_STREAM or None, got {socktype!r}",
            )
        # Unix: a stream only when forced; otherwise datagram first, then stream
        self._force_stream = socktype == socket.SOCK_STREAM
        #: the socket type in use (for a Unix path: known once connected), as in ``SysLogHandler``
        self.socktype: int = socket.SOCK_STREAM if self._force_stream else socket.SOCK_DGRAM
        if framing not in ("octet", "lf"):
            raise ArgumentValueError("framing", f"expected 'octet' or 'lf', got {framing!r}")
        self.framing: Framing = framing
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 16:
            raise ArgumentValueError("max_size", f"expected an int >= 16, got {max_size!r}")
        self.max_size = max_size
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 0:
            raise ArgumentValueError("buffer_size", f"expected an int >= 0, got {buffer_size!r}")
        #: seconds for socket operations, as ``SysLogHandler``'s (None: the defaults)
        self.timeout = None if timeout is None else check_timeout("timeout", timeout)
        #: seconds allowed for one connection attempt
        self.connect_timeout = self.timeout if self.timeout is not None else CONNECT_TIMEOUT
        #: seconds a write may wait for the daemon to take the data
        if write_timeout is not None:
            self.write_timeout = check_timeout("write_timeout", write_timeout)
        else:
            self.write_timeout = self.timeout if self.timeout is not None else WRITE_TIMEOUT
        #: seconds aclose() spends on a last delivery, then on closing
        self.close_timeout = check_timeout("close_timeout", close_timeout)
        if rfc5424:
            self.setFormatter(RFC5424Formatter())
        name = f"<{type(self).__name__} {self.address!r}>"
        # UDP sends each record at once (no connection, no buffer); TCP and Unix
        # sockets are connections: a retrying outbox in front of the link
        self.sender: DatagramSender | None = None
        self.peer: LinkOutbox[_UnixLink] | None = None
        if self.unixsocket or self._tcp:
            self.peer = LinkOutbox(
                self._open_link,
                self._write,
                name=name,
                buffer_size=buffer_size,
                gone=_gone,
                on_lost=self._count_lost,
                on_failed=self._count_failed,
                notify=self._notice,
            )
            self.backoff = self.peer.backoff
        else:
            self.sender = DatagramSender(
                self._open_udp,
                name=name,
                on_lost=self._count_lost,
                on_failed=self._count_failed,
                notify=self._notice,
                timeout=self.write_timeout,
            )
            self.backoff = self.sender.backoff

    # -- SysLogHandler's hooks -----------------------------------------------------------

    def encodePriority(self, facility: int | str, priority: int | str) -> int:
        """``(facility << 3) | priority``; names go through ``facility_names``/
        ``priority_names``."""
        return _wire.encode_priority(facility, priority, self.facility_names, self.priority_names)

    def mapPriority(self, levelName: str) -> str:
        """Map a logging level name to a ``priority_names`` key (``"warning"`` if unknown)."""
        return self.priority_map.get(levelName, "warning")

    @property
    def socket(self) -> DatagramLink | StreamLink | None:
        """The open link (datagram or stream); ``None`` while there is none."""
        if self.peer is not None:
            return self.peer.link
        assert self.sender is not None
        return self.sender.slot.link

    @property
    def buffer(self) -> object:
        """The messages (encoded) waiting for a TCP/Unix daemon; empty over UDP."""
        return self.peer.outbox.buffer if self.peer is not None else ()

    @property
    def connects(self) -> int:
        """Connections (TCP/Unix) or sockets (UDP) opened so far."""
        slot = self.peer.slot if self.peer is not None else self.sender.slot  # type: ignore[union-attr]
        return slot.opened

    @property
    def _tcp(self) -> bool:
        return not self.unixsocket and self.socktype == socket.SOCK_STREAM

    def encode(self, record: logging.LogRecord) -> bytes:
        """The bytes for ``record``: ``SysLogHandler``'s, RFC 6587-framed over TCP."""
        return self._encode_message(self.format(record), record.levelname)

    def _encode_message(self, msg: str, levelname: str) -> bytes:
        return self._framer()((self._head(levelname) + msg).encode())

    def _head(self, levelname: str) -> str:
        """``<PRI>ident`` for a record of ``levelname``, through the priority hooks."""
        pri = self.encodePriority(self.facility, self.mapPriority(levelname))
        return _wire.syslog_head(pri, self.ident)

    def _framer(self) -> Callable[[bytes], bytes]:
        """What :meth:`_encode_message` does to ``<PRI>ident msg`` once encoded."""
        if self._tcp:
            return _wire.octet_frame if self.framing == "octet" else _wire.lf_frame
        return _wire.nul_terminated if self.append_nul else _wire.unframed

    async def makeSocket(
        self, timeout: float = CONNECT_TIMEOUT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the TCP (or Unix stream) connection; return ``(reader, writer)``."""
        if isinstance(self.address, str):
            link = await StreamLink.connect_unix(self.address, timeout=timeout)
        else:
            host, port = self.address
            link = await StreamLink.connect_tcp(host, port, timeout=timeout)
        return link.reader, link.writer

    async def createSocket(self) -> None:
        """Connect (TCP/Unix) unless connected or the back-off forbids; never raises."""
        if self.peer is not None:
            await self.peer.connect()

    async def aopen(self) -> None:
        """Connect (TCP/Unix) eagerly; a failure only starts the back-off."""
        await self.createSocket()

    # -- delivery ------------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Send one record (see :meth:`emit_batch`)."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Send ``records``: over UDP one datagram each, otherwise through the outbox.

        Returns when every record was handed to the transport or to
        :meth:`handleError`; over TCP/Unix, records wait in the outage buffer while
        the daemon is unreachable (see :class:`~aiologsinks.SocketSink`).
        """
        batch, data = self._messages(RecordBatch.of(records))
        if self.peer is not None:
            self._take_over(len(records))  # the outbox delivers or counts each from here
            await self.peer.outbox.put(data)
            return
        assert self.sender is not None
        payloads = [self._fit(d) for d in data]
        self._take_over(len(records))  # the sender delivers or counts each from here

        def report(i: int) -> None:
            self.report_error(batch.record(i))  # inside the except block

        # every datagram is on its own: the next one goes
        await self.sender.send_all(payloads, each_record(report))

    async def flush(self) -> None:
        """Send what waits for a TCP/Unix daemon if the back-off allows; never waits."""
        if self.peer is not None:
            await self.peer.outbox.flush()

    def _messages(self, batch: RecordBatch) -> tuple[RecordBatch, list[bytes]]:
        """Each record's bytes (see :meth:`encode`) and the batch they stand for; a
        record that fails goes to ``handleError``. A dispatcher's batch is formatted
        without building records."""
        plain = not own_hook(self, "encode", SysLogSink.encode)
        fast = format_batch(self, batch, "") if plain else None
        out: list[bytes] = []
        failed: list[int] = []
        if fast is not None:
            texts, batch = fast
            frame = self._framer()
            # "<PRI>ident" once per level name and batch: the priority hooks are asked
            # as often as a batch has distinct levels, not once per record
            heads: dict[str, str] = {}
            items = batch.items
            # the common records framed in C; the loop below takes each one it stops at
            run = _syslog_run if type(items) is list else None
            framing = _FRAMINGS.get(frame)
            i, n = 0, len(texts)
            while i < n:
                if run is not None and framing is not None:
                    i, done = run(texts, items, i, heads, LEVELNAME, framing)
                    out += done
                    if i == n:
                        break
                level = batch.level_name(i)
                try:
                    head = heads.get(level)
                    if head is None:
                        head = heads[level] = self._head(level)
                    out.append(frame((head + texts[i]).encode()))
                except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                    failed.append(i)
                    self.report_error(batch.record(i))
                i += 1
        else:
            encode = self.encode
            for i in range(len(batch)):
                try:
                    out.append(encode(batch.record(i)))
                except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                    failed.append(i)
                    self.report_error(batch.record(i))
        if failed:  # the batch of what is sent, for reporting a datagram's error
            gone = set(failed)
            batch = RecordBatch([batch.record(i) for i in range(len(batch)) if i not in gone])
        return batch, out

    def _fit(self, data: bytes) -> bytes:
        # syslog daemons truncate long datagrams themselves: cut at a character
        return _wire.truncate_utf8(data, self.max_size, keep_nul=self.append_nul)

    async def _open_udp(self) -> DatagramLink:
        assert not isinstance(self.address, str)
        host, port = self.address
        return await DatagramLink.open_udp(host, port, timeout=self.connect_timeout)

    async def _open_link(self) -> _UnixLink:
        if isinstance(self.address, str) and not self._force_stream:
            link = await _unix_datagram_or_none(self.address)
            if link is not None:
                self.socktype = socket.SOCK_DGRAM
                return link
        reader, writer = await self.makeSocket(self.connect_timeout)
        if self.unixsocket:
            self.socktype = socket.SOCK_STREAM
        return StreamLink(reader, writer)

    async def _write(self, link: _UnixLink, data: list[bytes]) -> int | None:
        if isinstance(link, StreamLink):
            await link.write(b"".join(data), timeout=self.write_timeout)
            return None

        def on_error(i: int, exc: Exception) -> bool:
            if isinstance(exc, RecordTooLargeError):
                self._too_large(exc)
                return True
            return False  # the socket broke: a new one goes on from this message

        assert self.peer is not None  # the peer's outbox sends ``data``: its chunk
        return await send_datagrams(
            link,
            [self._fit(d) for d in data],
            on_error,
            timeout=self.write_timeout,
            reached=self.peer.outbox.reached,
        )

    def _too_large(self, exc: RecordTooLargeError) -> None:
        # the message is already bytes: report it with a notice record, counted once
        notice = logging.makeLogRecord(
            {
                "name": "aiologsinks",
                "levelno": logging.ERROR,
                "levelname": "ERROR",
                "msg": f"aiologsinks: {self!r} could not send a message: {exc}",
            }
        )
        self.report_error(notice)

    def _notice(self, message: str) -> None:
        self.report_outage(message)

    async def _aclose(self) -> None:
        """One last delivery and the close, each within ``close_timeout`` seconds."""
        if self.peer is not None:
            await self.peer.aclose(self.close_timeout)
        elif self.sender is not None:
            await self.sender.aclose(self.close_timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}>"


async def _unix_datagram_or_none(path: str) -> DatagramLink | None:
    """A datagram link connected to ``path``, None when it cannot be opened: not a
    datagram socket, not there, or any other error (then a stream is tried, as
    ``SysLogHandler`` does; an error other than ``OSError`` used to skip that)."""
    try:
        return await DatagramLink.open_unix(path)
    except Exception:  # noqa: BLE001 - whatever it was, a stream is tried next
        return None


def _gone(link: _UnixLink) -> bool:
    return isinstance(link, StreamLink) and link.peer_gone
