"""The collector's channels: pickled frames over TCP and UDP, syslog, HTTP.

One :class:`Receiver` serves any of four channels on one event loop, on one or more
addresses (IPv4 and IPv6):

* ``tcp``: length-prefixed pickled record dicts (``SocketHandler`` / ``SocketSink``);
* ``udp``: the same frames, one per datagram (``DatagramHandler`` / ``DatagramSink``);
* ``syslog``: the same port number over UDP (one message per datagram) and TCP
  (RFC 6587 octet counting, or messages ended by NUL — ``SysLogHandler`` — or LF);
* ``http``: ``HTTPHandler`` requests (GET query or url-encoded POST body) and JSON
  bodies (one record object or a list of them), any path.

Every channel is bounded (see :class:`ReceiverLimits`): a frame's size is checked
before its body is read, pickles go through the budgeted reader of ``_unpickle``,
stream connections have an idle and a read timeout and their number is limited, and
the bytes buffered by all connections together are limited. A malformed frame is
counted invalid and skipped; the connection goes on with the next one, unless the
framing itself is broken (then only that connection is closed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from . import _http
from ._frames import FramingError, octet_count, starts_like, take_frames
from ._frames import frame_length as _unpack_len
from ._http import HTTPError
from ._unpickle import Limits

__all__ = ["CHANNELS", "ChannelCounts", "ListenError", "ReceiverLimits", "admit_waiting"]

#: channel names, in display order
CHANNELS = ("tcp", "udp", "syslog_udp", "syslog_tcp", "http")
#: the receive buffer asked for UDP sockets; the kernel caps it at net.core.rmem_max
UDP_RCVBUF = 8 * 1024 * 1024
#: how long a syslog TCP message ended by LF may wait to learn whether the LF ended it
_LF_SETTLE = 0.2
#: how long a half-closed connection may stay quiet before shutdown closes it (the
#: peer may be busy: it writes no more once it saw the end-of-file)
_QUIET = 0.5
#: an HTTP connection answered before its request ended is read on (and what arrives
#: discarded) until its peer closes, goes quiet this long, or _LINGER_MAX has passed:
#: closed with input unread, the kernel resets the connection, and the reset throws
#: away the answer the peer has not read yet (nginx: 5 s quiet, 30 s in all)
_LINGER_QUIET = 2.0
_LINGER_MAX = 10.0

OnRecord = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class ReceiverLimits:
    """What one peer may cost the receiver."""

    #: largest frame (pickle body, syslog message, HTTP body), checked before reading it
    max_frame: int = 1024 * 1024
    #: stream connections (TCP, syslog TCP, HTTP) served at once; more are refused
    max_connections: int = 256
    #: seconds a connection may send nothing before it is closed
    idle_timeout: float = 300.0
    #: seconds a started frame (or HTTP request) may take to arrive completely
    read_timeout: float = 30.0
    #: bytes all connections together may hold in partial frames
    max_buffered: int = 64 * 1024 * 1024
    #: the pickle reader's budget
    unpickle: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_connections", "max_buffered"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if self.max_buffered < self.max_frame:
            # a frame within max_frame but over max_buffered would cost its connection
            # (refused as holding too much), whatever max_frame promised
            raise ValueError(
                f"max_buffered: expected at least max_frame ({self.max_frame}), "
                f"got {self.max_buffered!r}"
            )
        for name in ("idle_timeout", "read_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)  # nan and inf would disable the timeout
                or value <= 0
            ):
                raise ValueError(f"{name}: expected a number of seconds > 0, got {value!r}")


@dataclass
class ChannelCounts:
    """What one channel has seen."""

    #: records decoded and handed on
    received: int = 0
    #: frames (datagrams, messages, requests) that could not be decoded
    invalid: int = 0
    #: connections accepted (stream channels)
    connections: int = 0
    #: connections refused: over the connection limit or the buffer limit
    refused: int = 0
    #: connections closed because they idled or a frame took too long
    timeouts: int = 0
    #: datagrams dropped unread while the sinks were behind (a datagram cannot wait)
    dropped: int = 0


def admit_waiting(rx: Receiver) -> None:
    """Serve the connections waiting for a slot, oldest first, while slots are free
    (all of them once the receiver shuts down: what their peers wrote is read)."""
    waiting = rx._waiting
    while waiting and (rx._closing or len(rx._conns) < rx.limits.max_connections):
        conn = waiting.popleft()
        transport = conn.transport
        if transport is None or transport.is_closing():
            conn.waiting = False
            continue
        conn._admit()


def _peer(transport: asyncio.BaseTransport) -> str:
    return address_text(transport.get_extra_info("peername"))


def address_text(name: object) -> str:
    """A socket address as ``host:port``, an IPv6 host in brackets (``[::1]:514``)."""
    if isinstance(name, tuple) and len(name) >= 2:
        host = str(name[0])
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return str(name or "-")


class Receiver(Protocol):
    """What a connection needs of the receiver that serves it (the receiver in
    ``_receiver`` implements it; typed here so the two modules import one way only)."""

    limits: ReceiverLimits
    counts: dict[str, ChannelCounts]
    _conns: set[_Conn]
    _waiting: collections.deque[_Conn]
    _buffered: int
    _paused: bool
    _closing: bool
    _activity: float

    def _changed(self) -> None: ...
    def _after_data(self) -> None: ...
    def _invalid(self, channel: str) -> None: ...
    def _frame(self, channel: str, payload: bytes, peer: str) -> None: ...
    def _frames(self, channel: str, payloads: list[bytes], peer: str) -> None: ...
    def _syslog_message(self, channel: str, data: bytes, peer: str) -> None: ...
    def _http_request(self, request: _http.Request, body: bytes, peer: str) -> tuple[int, str]: ...


class _Conn(asyncio.Protocol):
    """One stream connection: pickled frames, syslog messages or HTTP requests."""

    def __init__(self, receiver: Receiver, channel: str) -> None:
        self.rx = receiver
        self.channel = channel
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.last = loop.time()
        #: when the partial frame in buf (or the HTTP request being read) started;
        #: None: nothing is on its way
        self.started: float | None = None
        self.closing = False
        #: when closing began: a connection still there _LINGER_MAX later is aborted
        self.closed_at = 0.0
        self.half_closed = False
        # syslog framing of this connection once known: "nul" or "lf"
        self.framing: str | None = None
        self.settle: asyncio.TimerHandle | None = None
        #: how far the message at the head of buf was searched for the LF ending it
        self.scanned = 0
        #: connection_lost is handling what the connection holds
        self.lost = False
        #: framing undecided, and a line that starts like a message waits for the
        #: decision (see _message_end)
        self.deferred = False
        #: how many bytes at the head of buf are known to hold no NUL: each read
        #: searches only what follows (a peer trickling a long message must not have
        #: it searched from its start at every read)
        self.nul_free = 0
        #: the settle timer found the connection quiet after an LF: that LF ends
        self.quiet = False
        # HTTP: the head of the request whose body is awaited
        self.request: _http.Request | None = None
        #: the peer does not read what it is answered: its requests wait unread
        self.write_paused = False
        #: an invalid frame came after the last valid record: until the next valid
        #: one, bytes on their way are not taken for progress toward a record
        self.junk = False
        #: accepted past ``max_connections``: not read until a slot is free
        self.waiting = False
        #: what was read of it all the same while it waited (at most a read or two)
        self.pending: list[bytes] = []
        #: answered and told the end (FIN), its input is read and discarded until the
        #: peer closes too or this timer drops it
        self.linger: asyncio.TimerHandle | None = None
        self.linger_end = 0.0
        #: HTTP at a graceful shutdown: the request being read gets the last answer
        self.last_request = False

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream server's transport; not isinstance(asyncio.Transport) under uvloop,
        # whose transports only quack like one
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        rx = self.rx
        limit = rx.limits.max_connections
        if len(rx._conns) >= limit and not rx._closing:
            if len(rx._waiting) >= limit:
                rx.counts[self.channel].refused += 1
                self.closing = True
                transport.abort()
                return
            # its turn comes when a served connection ends. Reset now, a peer that had
            # written already lost what it wrote; and a sender that closes each
            # connection before the next filled the slots with connections whose end
            # was not read yet (a burst of them: refused though one was open at a time)
            self.waiting = True
            transport.pause_reading()
            rx._waiting.append(self)
            return
        self._admit()

    def _admit(self) -> None:
        """Serve this connection (a slot is free, or the receiver is shutting down)."""
        waited, self.waiting = self.waiting, False
        transport = self.transport
        assert transport is not None
        rx = self.rx
        rx.counts[self.channel].connections += 1
        self.peer = _peer(transport)
        self.last = self.loop.time()
        rx._conns.add(self)
        rx._activity = self.last
        if rx._closing and not waited:
            # accepted by the kernel before the shutdown began: the peer may have
            # written already, so read it, and tell it to go away
            self.half_close()
        elif rx._paused:
            transport.pause_reading()
        elif waited:
            # what it wrote while waiting is read now (at shutdown too: the drain ends
            # it once quiet); telling it to go away first closed an HTTP one unread
            transport.resume_reading()
        self.read_pending()
        rx._changed()

    def connection_lost(self, exc: Exception | None) -> None:
        rx = self.rx
        if self.linger is not None:
            self.linger.cancel()
        if self.waiting:
            self.waiting = False
            with contextlib.suppress(ValueError):
                rx._waiting.remove(self)
            return
        rx._conns.discard(self)
        admit_waiting(rx)
        rx._activity = self.loop.time()
        if self.settle is not None:
            self.settle.cancel()
        # what it holds is handled here, once: not refused meanwhile (max_buffered)
        self.lost = True
        if self.unfinished() and not self.closing:
            if self.channel == "syslog_tcp" and self.framing in (None, "lf"):
                # the end of the connection ends the last line: LF framing decides
                # the messages an undecided connection still holds (see _message_end),
                # and what is left after the last LF is a message of its own
                self._deliver_lines()
            if self.channel == "syslog_tcp" and self.buf.strip(b"\x00\r\n"):
                rx._syslog_message(self.channel, bytes(self.buf), self.peer)
            elif self.channel != "syslog_tcp":
                rx._invalid(self.channel)  # a frame cut short
        rx._buffered -= len(self.buf)
        self.buf.clear()
        rx._changed()

    def eof_received(self) -> bool | None:
        return None  # close our end too (after what was received is handled)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            if self.linger is not None:
                self.last = self.loop.time()  # still sending: the linger goes on
            return
        if self.waiting or (self.rx._paused and not self.rx._closing):
            # read despite the pause (uvloop, and asyncio before 3.11, start reading
            # after connection_made paused it): kept for its turn, reading paused again
            self.pending.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.buf += data
        self._consume(len(data))

    def read_pending(self) -> None:
        """Take what was read while this connection was to wait (its turn has come)."""
        if self.pending and not self.closing and not (self.rx._paused and not self.rx._closing):
            data = b"".join(self.pending)
            self.pending.clear()
            self.buf += data
            self._consume(len(data))

    def pause_writing(self) -> None:
        # the peer sends requests without reading the answers: read no more of them
        # until it has, or the answers would pile up in the transport without bound
        self.write_paused = True
        if self.transport is not None and self.linger is None:
            self.transport.pause_reading()
        self.rx._changed()

    def resume_writing(self) -> None:
        self.write_paused = False
        transport = self.transport
        if self.closing or transport is None:
            return
        if self.buf:
            self._consume(0)  # the requests read before the pause
        if not self.write_paused and not self.rx._paused and not transport.is_closing():
            transport.resume_reading()
        self.rx._changed()

    def _consume(self, arrived: int) -> None:
        """Take the complete frames of buf, of which ``arrived`` bytes are new."""
        rx = self.rx
        now = self.loop.time()
        counts = rx.counts[self.channel]
        received, invalid = counts.received, counts.invalid
        before = len(self.buf) - arrived
        try:
            if self.channel == "tcp":
                self._pickles()
            elif self.channel == "syslog_tcp":
                self._syslog()
            else:
                self._http()
        except Exception:  # noqa: BLE001 - a peer must never crash the receiver: drop it
            self._broken()
        finally:
            after = len(self.buf)
            rx._buffered += after - before
            if not after and self.request is None:
                self.started = None
            elif self.started is None or (self.channel != "http" and after < before + arrived):
                # HTTP: _http clears it when a request ends; the head taken from buf
                # does not restart the clock of the request whose body is awaited
                self.started = now
            # only records, and bytes on their way to one, keep a connection from
            # idling: one that sends nothing but invalid frames still times out
            if counts.invalid > invalid:
                self.junk = True
            elif counts.received > received:
                self.junk = False
            if counts.received > received or (
                not self.junk and (after or self.request is not None)
            ):
                self.last = now
            rx._after_data()
        over = rx._buffered > rx.limits.max_buffered and not self.closing and not self.lost
        if over and self.deferred:
            # what it holds are whole lines kept only for the framing decision: LF
            # decides now rather than the connection going with them
            self._decide("lf")
            self._consume(0)
        elif over and self.buf:
            # too much held in partial frames: this connection (the one that pushed it
            # over) goes, the others are served
            rx.counts[self.channel].refused += 1
            self.abort()

    # -- framing ----------------------------------------------------------------------

    def unfinished(self) -> bool:
        """Whether a frame or request has started and not ended: bytes of it are in
        buf, or (HTTP) its head was read and its body is awaited."""
        return bool(self.buf) or self.request is not None

    def abort(self) -> None:
        """Drop the connection (its partial frame is counted invalid)."""
        if not self.closing:
            self.closing = True
            self.closed_at = self.loop.time()
            if self.channel == "syslog_tcp" and self.framing == "lf" and self.buf:
                # whole lines it holds (the last one awaiting a pause) are messages:
                # delivered before it goes, and what is left is the partial one. Not
                # while the framing is undecided: the NUL that decides may be on its
                # way, and the LFs inside one message (see _message_end)
                self._deliver_lines()
            if self.unfinished():
                self.rx._invalid(self.channel)
        # closing already (answered, or broken) and still there: its peer does not read
        # or does not close, and it goes now
        if self.transport is not None:
            self.transport.abort()

    def _broken(self) -> None:
        # the framing itself is broken: nothing later on this stream can be trusted
        if self.channel == "http" and not self.closing:
            # a request the collector failed on unforeseen is still a malformed one to
            # its peer (a 4xx, never a silent close); and the lingering close is
            # bounded where close() waits for a peer that does not read its answers to
            # take them, which holds the connection and its slot for good
            self.request = None
            self._answer_error(HTTPError(400, "malformed request", close=True))
            return
        self.rx._invalid(self.channel)
        self.buf.clear()  # the caller accounts for the bytes it held
        self.closing = True
        self.closed_at = self.loop.time()
        if self.transport is not None:
            self.transport.close()

    def _pickles(self) -> None:
        # every whole frame of the buffer at once: one call per read, not per frame
        try:
            while payloads := take_frames(self.buf, self.rx.limits.max_frame):
                self.rx._frames(self.channel, payloads, self.peer)
        except FramingError:  # the frames before the bad length prefix were good
            self._broken()

    def _syslog(self) -> None:
        buf = self.buf
        rx = self.rx
        limit = rx.limits.max_frame
        while buf:
            counted = octet_count(buf) if buf[:1].isdigit() else None
            if counted == -1:
                return  # the count, or the byte after it, is still on its way
            if counted is not None:
                # RFC 6587 octet counting: "LEN SP MSG"
                space = buf.find(b" ")
                if counted > limit:
                    self._broken()
                    return
                stop = space + 1 + counted
                if len(buf) < stop:
                    return
                msg = bytes(buf[space + 1 : stop])
                del buf[:stop]
                self.scanned = self.nul_free = 0
            else:
                end = self._message_end()
                if end < 0:
                    if len(buf) > limit:
                        self._broken()
                    return
                msg = bytes(buf[:end])
                del buf[: end + 1]
                self.nul_free = 0
                if not msg.strip(b"\r"):
                    continue
            rx._syslog_message(self.channel, msg, self.peer)

    def _message_end(self) -> int:
        """Where the non-transparently framed message at the head of buf ends, -1
        when that is not known yet. ``SysLogHandler`` ends messages with NUL (an LF
        inside is part of the message), others with LF: the first terminator that
        is certainly one decides for the connection. An LF ends a message when the
        line after it starts like a message, or when nothing follows it (at once, or
        before the connection ends): the other lines of a multi-line message (a
        traceback) stay in it, as rsyslog's imptcp reads them with ``multiLine``;
        split off, they would be lines without a PRI, which are no syslog messages."""
        buf = self.buf
        if self.framing == "nul":
            return self._find_nul(len(buf))
        if self.deferred:
            nul = self._find_nul(len(buf))
            if nul < 0 and not self.quiet and len(buf) <= self.rx.limits.max_frame:
                return -1
            self._decide("nul" if nul >= 0 else "lf")
            if nul >= 0:
                return nul
        end = self._line_end()
        # LF was a guess (a line that looked like the next message, or a pause after
        # an LF): a NUL before the LF that ends the message proves it wrong, and the
        # rest of the connection is NUL-framed (SysLogHandler never sends a bare NUL
        # inside a message; an LF-framed sender never sends one at all). Before the
        # guess, any NUL decides: the LFs before it are inside a message it ends
        nul = self._find_nul(len(buf) if end < 0 or self.framing is None else end)
        if nul >= 0:
            self.framing = "nul"
            self.scanned = 0
            return nul
        if (
            end >= 0
            and self.framing is None
            and not self.quiet
            and len(buf) <= self.rx.limits.max_frame
        ):
            # Undecided, a line that looks like the next message is no proof: the
            # first message of a SysLogHandler may hold "\n<0>..." (logged user
            # input), its NUL still on its way, and split there it would forge a
            # record of any priority. The connection's framing is decided by a NUL,
            # or as LF after _LF_SETTLE, past max_frame bytes, at its end, or when
            # the lines it holds would cost it (max_buffered, see _consume).
            self.deferred = True
            # its own wait: a timer armed by an earlier LF would cut it short
            if self.settle is not None:
                self.settle.cancel()
            self.settle = self.loop.call_later(_LF_SETTLE, self._settled)
            return -1
        if end > 1 or (end == 1 and buf[0] != 0x0D):  # not an empty line
            self.framing = "lf"
        elif end < 0 and buf.endswith(b"\n") and self.settle is None:
            # an LF at the end of what arrived: the end of a message, unless more of
            # it follows at once
            self.settle = self.loop.call_later(_LF_SETTLE, self._settled)
        return end

    def _line_end(self) -> int:
        """The first LF of buf that ends the message at its head, -1 if none has yet."""
        buf = self.buf
        size = len(buf)
        if buf[:1] == b"\n" or buf[:2] == b"\r\n":
            return buf.find(b"\n")  # an empty line: nothing to continue
        # resumed where the last call stopped: a peer trickling a long multi-line
        # message must not have it searched from its start at every read
        lf = buf.find(b"\n", self.scanned)
        while 0 <= lf < size - 1:
            if starts_like(buf, lf + 1):
                self.scanned = 0
                return lf
            lf = buf.find(b"\n", lf + 1)
        if self.quiet:
            # the connection ends (or paused after an LF): an LF at the very end ends
            # the message, and so does one followed by the first byte of a PRI only
            if lf == size - 1:
                self.scanned = 0
                return lf
            if size >= 2 and buf[size - 2 :] == b"\n<" and buf[:1] == b"<":
                self.scanned = 0
                return size - 2
        # an LF among the last two bytes is followed by too little to tell ("<" of "<1")
        self.scanned = max(size - 2, 0)
        return -1

    def restart_settle(self) -> None:
        """Begin again a wait for what ends a syslog message (see :meth:`_settled`)."""
        if self.settle is not None:
            self.settle.cancel()
            self.settle = self.loop.call_later(_LF_SETTLE, self._settled)

    def _deliver_lines(self) -> None:
        """Take the messages the LFs in buf end, the last one too (as at a pause)."""
        self.quiet = True
        try:
            self._consume(0)
        finally:
            self.quiet = False

    def _find_nul(self, stop: int) -> int:
        """The first NUL in buf before ``stop``, -1 if none (what is searched is
        remembered as free of one)."""
        nul = self.buf.find(b"\x00", self.nul_free, stop)
        if nul < 0:
            self.nul_free = max(self.nul_free, stop)
        return nul

    def _decide(self, framing: str) -> None:
        self.framing = framing
        self.deferred = False
        self.scanned = 0

    def _settled(self) -> None:
        self.settle = None
        if self.closing:
            return
        if self.rx._paused and not self.rx._closing:
            # the receiver is not reading: what tells (a NUL, a continuation line)
            # may be waiting unread in the socket. The wait is the peer's to use,
            # not the receiver's
            self.settle = self.loop.call_later(_LF_SETTLE, self._settled)
            return
        if self.deferred:
            # no NUL came: the LFs ended the messages; what they end goes on now
            # (the last line, if not ended yet, waits as on any LF connection)
            if self._find_nul(len(self.buf)) < 0:
                self._decide("lf")
                self._consume(0)
            return
        if self.framing == "nul" or not self.buf.endswith(b"\n"):
            return
        if self._find_nul(len(self.buf)) < 0:
            # quiet after an LF: that LF ended the message before it
            self._deliver_lines()

    def _http(self) -> None:
        rx = self.rx
        buf = self.buf
        while buf and not self.closing and not self.write_paused:
            request = self.request
            if request is None:
                end = buf.find(b"\r\n\r\n", 0, _http.MAX_HEAD + 4)
                if end < 0:
                    if len(buf) > _http.MAX_HEAD:
                        self._answer_error(HTTPError(431, "request head too large", True))
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                try:
                    request = _http.parse_head(head, rx.limits.max_frame)
                except HTTPError as exc:
                    self._answer_error(exc)
                    return
                self.request = request
                if request.expect_continue and len(buf) < request.length:
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if len(buf) < request.length:
                return
            body = bytes(buf[: request.length])
            del buf[: request.length]
            self.request = None
            self.started = None  # what follows in buf is the next request
            status, text = rx._http_request(request, body, self.peer)
            keep_alive = request.keep_alive and not self.last_request
            self._write(_http.response(status, text, keep_alive, request.method))
            if not keep_alive:
                self._close_after_write()
                return

    def _answer_error(self, exc: HTTPError) -> None:
        self.rx._invalid(self.channel)
        self._write(_http.response(exc.status, str(exc), keep_alive=False))
        self.buf.clear()  # data_received accounts for the bytes it held
        self._close_after_write()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_after_write(self) -> None:
        self.closing = True
        self.closed_at = self.loop.time()
        transport = self.transport
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()  # after the answer is written
            return
        # a lingering close (as web servers do): the answer, then FIN, then the rest of
        # the input read and dropped (data_received ignores it once closing) until the
        # peer closes its end or the bound runs out
        self.buf.clear()  # what followed is never read as requests (_consume accounts)
        with contextlib.suppress(OSError, RuntimeError):
            transport.write_eof()
        now = self.loop.time()
        self.last = now
        self.linger_end = now + _LINGER_MAX
        self.linger = self.loop.call_later(_LINGER_QUIET, self._lingered)
        if not transport.is_closing():
            transport.resume_reading()

    def _lingered(self) -> None:
        now = self.loop.time()
        end = min(self.last + _LINGER_QUIET, self.linger_end)
        if now < end:
            self.linger = self.loop.call_at(end, self._lingered)
        elif self.transport is not None:
            self.transport.abort()

    def half_close(self) -> None:
        """Shutdown: tell the peer no more is wanted (FIN), keep reading what it sent."""
        self.half_closed = True
        self.last = self.loop.time()
        transport = self.transport
        if transport is None or transport.is_closing() or self.linger is not None:
            return
        if self.channel == "http":
            # the next answer says the connection ends, and goes first: an end-of-file
            # now leaves no way to write it. Nothing read is no proof that nothing was
            # sent (a connection taken from the backlog has not been read yet), and a
            # close with input unread resets the connection, the request lost: the
            # drain ends the connection once it is quiet
            self.last_request = True
            return
        if transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: Receiver, channel: str) -> None:
        self.rx = receiver
        self.channel = channel

    def datagram_received(self, data: bytes, addr: Any) -> None:
        rx = self.rx
        if rx._paused:
            # the sinks are behind: the stream peers wait in TCP, a datagram cannot
            # wait, and queueing it would grow memory without bound
            rx.counts[self.channel].dropped += 1
            rx._changed()
            return
        peer = address_text(addr)
        if len(data) > rx.limits.max_frame + 4:
            rx._invalid(self.channel)
        elif self.channel == "udp":
            if len(data) < 4 or _unpack_len(data)[0] != len(data) - 4:
                rx._invalid("udp")
            else:
                rx._frame("udp", data[4:], peer)
        else:
            rx._syslog_message(self.channel, data, peer)
        rx._after_data()


def _bind_udp(host: str, port: int) -> list[socket.socket]:
    """One socket per address ``host`` resolves to (``localhost``: ::1 and 127.0.0.1),
    as ``create_server`` listens on each for TCP; a port 0 picked by the first is
    the port of the others. Nothing is left open when one cannot be bound."""
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, _, _, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM):
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if len(socks) > 1:
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class ListenError(OSError):
    """A channel could not listen; the message names the channel and address."""
