"""Links: the transport seam under the network sinks, every I/O call bounded.

A network sink is an encoder on top of a link. Two kinds, in the shape of httpcore's
network backend (``connect_tcp``/``connect_unix_socket`` returning a stream whose
``write``/``aclose`` take a ``timeout``):

* :class:`StreamLink` — one TCP or Unix stream connection: :meth:`StreamLink.connect_tcp`,
  :meth:`StreamLink.connect_unix`, :meth:`~StreamLink.write` (write and drain),
  :meth:`~StreamLink.abort`, :meth:`~StreamLink.aclose`.
* :class:`DatagramLink` — one UDP or connected Unix datagram socket, with the one
  send loop (:meth:`~DatagramLink.send_all`, through :func:`send_datagrams`, which
  tells a record's error from a link's) that every datagram sink uses.

:class:`LinkSlot` holds the link a sink currently uses, opens it on demand and
remembers a failed open (a DNS failure, a missing socket) for the back-off period, so
a peer that cannot be resolved costs one lookup per back-off, not one per record; its
:meth:`~LinkSlot.send` replaces a link that broke once, at once (a restarted peer).
:class:`LinkOutbox` puts the retrying :class:`~aiologsinks._outbox.Outbox` of encoded
frames in front of a slot: what a connected sink (TCP, Unix) is made of.

Every call that waits is bounded: a timeout raises the builtin ``TimeoutError`` (an
``OSError``) and leaves the link aborted, so a peer that never reads cannot hang a
sink, and closing never waits for one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import socket
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from ._backoff import Backoff
from ._exceptions import RecordTooLargeError, SinkConnectError
from ._fileio import off_loop
from ._outbox import Loss, Outbox
from ._validate import ArgumentValueError

_isal_zlib: Any
try:  # ISA-L's deflate: the same gzip, about five times less CPU (the ``otlp`` extra)
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - the test extra installs it
    _isal_zlib = None

__all__ = [
    "CLOSE_TIMEOUT",
    "CONNECT_TIMEOUT",
    "GZIP_INLINE_MAX",
    "MAX_UDP_PAYLOAD",
    "WRITE_TIMEOUT",
    "DatagramLink",
    "DatagramSender",
    "LinkOutbox",
    "LinkSlot",
    "StreamLink",
    "bounded",
    "check_timeout",
    "each_record",
    "gzip_off_loop",
    "reader_gone",
    "send_datagrams",
]

#: seconds allowed to open a connection (``SocketHandler.makeSocket(timeout=1)``)
CONNECT_TIMEOUT = 1.0
#: seconds a write may wait for the peer to take the data (its back-pressure)
WRITE_TIMEOUT = 10.0
#: seconds a graceful close may take before the link is aborted
CLOSE_TIMEOUT = 1.0
#: the largest UDP payload over IPv4 (65535 - 8 byte UDP - 20 byte IP header)
MAX_UDP_PAYLOAD = 65507
#: datagrams sent between two yields to the loop (one sendto never suspends)
SEND_SLICE = 128
#: seconds between two looks at asyncio's datagram buffer while a drain waits for
#: it to empty: the first, and the longest (see DatagramLink.drain)
_HELD_POLL_FIRST = 0.001
_HELD_POLL_MAX = 0.05

_T = TypeVar("_T")


def check_timeout(name: str, value: object) -> float:
    """A positive number of seconds, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ArgumentValueError(name, f"expected a positive number of seconds, got {value!r}")
    return float(value)


async def bounded(aw: Awaitable[_T], timeout: float | None, what: str) -> _T:
    """Await ``aw`` for at most ``timeout`` seconds (None: no bound).

    Raises the builtin ``TimeoutError`` naming ``what`` (also on Python 3.10, where
    ``asyncio.TimeoutError`` is not one), so callers catch a single ``OSError``.
    """
    if timeout is None:
        return await aw
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what}: no answer within {timeout:g}s") from None


class _SessionSink(Protocol):
    """A sink that delivers through an outbox over an HTTP client session."""

    outbox: Outbox[Any]
    close_timeout: float
    _session: Any  # its HTTPClient (aiologsinks._http); None once closed


async def close_outbox_and_session(sink: _SessionSink) -> None:
    """Close an HTTP sink: the outbox's last delivery within ``close_timeout`` seconds
    (it may still need the client), then the client's connections, also within that
    bound."""
    try:
        await sink.outbox.aclose(sink.close_timeout)
    finally:
        session, sink._session = sink._session, None
        if session is not None:
            with contextlib.suppress(OSError):  # a close that hangs is given up on
                await bounded(session.aclose(), sink.close_timeout, "connections close")


def _deliver_to_the_kernel(transport: asyncio.BaseTransport) -> None:
    """Make a write wait until the kernel took everything (not only until asyncio's
    own buffer is under its 64 KiB mark): data asyncio still holds is not delivered.
    It is discarded when the link is aborted or its close times out, so a write that
    returned with it buffered counted records as sent that never left the process."""
    set_limits = getattr(transport, "set_write_buffer_limits", None)
    if set_limits is not None:
        set_limits(high=0)


class StreamLink:
    """One TCP or Unix stream connection to a peer that only receives.

    ``writer`` is the connection's ``asyncio.StreamWriter`` (``SocketHandler.sock``).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        _deliver_to_the_kernel(writer.transport)

    @classmethod
    async def connect_tcp(
        cls, host: str, port: int, *, timeout: float | None = CONNECT_TIMEOUT, ssl: Any = None
    ) -> StreamLink:
        """Connect to ``host:port`` (resolved off the loop) within ``timeout`` seconds.

        Raises ``OSError`` (``TimeoutError`` when the peer does not answer).
        """
        reader, writer = await bounded(
            asyncio.open_connection(host, port, ssl=ssl), timeout, f"connect to {host}:{port}"
        )
        return cls(reader, writer)

    @classmethod
    async def connect_unix(
        cls, path: str, *, timeout: float | None = CONNECT_TIMEOUT
    ) -> StreamLink:
        """Connect to the Unix stream socket at ``path`` within ``timeout`` seconds."""
        reader, writer = await bounded(
            asyncio.open_unix_connection(path), timeout, f"connect to {path}"
        )
        return cls(reader, writer)

    @property
    def peer_gone(self) -> bool:
        """True when the peer closed or reset its end, or the link was closed.

        The peer never sends: an EOF or a read error means it is gone, and a write
        now would vanish into the kernel buffer of a dead connection.
        """
        reader = self.reader
        return self.writer.is_closing() or reader.at_eof() or reader.exception() is not None

    async def write(self, data: bytes, *, timeout: float | None = WRITE_TIMEOUT) -> None:
        """Write ``data`` and wait until the transport took it (the peer's back-pressure).

        Raises ``ConnectionResetError`` when the peer is gone, the transport's
        ``OSError`` when the write fails, and ``TimeoutError`` when the peer did not
        take the data within ``timeout`` seconds; after a timeout the link is aborted.
        """
        if self.peer_gone:
            raise ConnectionResetError("the peer closed the connection")
        self.writer.write(data)
        try:
            await bounded(self.writer.drain(), timeout, "write")
        except TimeoutError:
            self.abort()
            raise
        if self.writer.transport.is_closing():
            # aborted while waiting (a drain then returns quietly): not delivered
            raise ConnectionResetError("the connection closed before the peer took the data")

    def abort(self) -> None:
        """Close the connection at once, discarding what the transport still buffers."""
        self.writer.transport.abort()

    async def aclose(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Close gracefully (buffered data is sent first) within ``timeout`` seconds,
        then abort; never raises ``OSError``. Cancelled, it aborts and re-raises."""
        self.writer.close()
        try:
            await bounded(self.writer.wait_closed(), timeout, "close")
        except OSError:  # TimeoutError included: a peer that never reads
            self.abort()
        except BaseException:
            self.abort()
            raise


class _DatagramProtocol(asyncio.DatagramProtocol):
    """Keeps the error a send raised and the transport's pause state."""

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
        return self._writable.is_set()


class DatagramLink:
    """One UDP or Unix datagram socket that reports a send's error to the sender.

    asyncio hands errors of ``sendto`` to ``error_received`` instead of raising; the
    link raises them (``EMSGSIZE`` and payloads over ``max_payload`` as
    :class:`~aiologsinks.RecordTooLargeError`) so that the record's own sink sees
    them. ``target`` is where datagrams go (None for a connected socket).
    """

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: _DatagramProtocol,
        target: Any = None,
        max_payload: int | None = None,
    ) -> None:
        self.transport = transport
        self.protocol = protocol
        self.target = target
        self.max_payload = max_payload
        _deliver_to_the_kernel(transport)
        # asyncio's selector transport: the datagrams it holds, the one measure of
        # what is not sent yet that does not depend on its byte count (see drain)
        held = getattr(transport, "_buffer", None)
        self._held: collections.deque[Any] | None = (
            held if isinstance(held, collections.deque) else None
        )

    @classmethod
    async def open_udp(
        cls, host: str, port: int, *, timeout: float | None = CONNECT_TIMEOUT
    ) -> DatagramLink:
        """An unconnected UDP socket for ``host:port`` (resolved once, off the loop)."""
        loop = asyncio.get_running_loop()
        try:
            # a literal address needs no lookup: taken here, without the executor's
            # thread (which Python 3.12.0-3.12.2 cannot start at interpreter exit)
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
            )
        except (OSError, UnicodeError):
            infos = await bounded(
                loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout, f"resolve {host}"
            )
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"getaddrinfo({host!r}) returned no address")
        family, _, _, _, sockaddr = infos[0]
        transport, protocol = await loop.create_datagram_endpoint(_DatagramProtocol, family=family)
        return cls(transport, protocol, sockaddr, MAX_UDP_PAYLOAD)

    @classmethod
    async def open_unix(cls, path: str) -> DatagramLink:
        """A Unix datagram socket connected to ``path``: a missing or non-datagram
        socket fails here (``OSError``), not at the first send.

        Connected, because the kernel then tells the loop when the reader's queue has
        room: an unconnected socket polls writable while every ``sendto`` fails with
        ``EAGAIN``, and the loop spun at full CPU for as long as a reader did not
        read. A reader that goes away (closed, or restarted on the same path) makes
        the sends fail with :func:`reader_gone` errors: the link is then replaced
        (see :meth:`LinkSlot.send`), as ``SysLogHandler`` reconnects.
        """
        loop = asyncio.get_running_loop()
        # The socket is made here and handed over: uvloop's create_datagram_endpoint
        # takes no path for remote_addr and no AF_UNIX without an address, asyncio's
        # and uvloop's both take a socket. Connecting a Unix datagram socket does not
        # wait: it fails at once (no such socket, not a datagram socket) or is done.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(path)
            transport, protocol = await loop.create_datagram_endpoint(_DatagramProtocol, sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(transport, protocol)

    def send_nowait(self, data: bytes) -> bool:
        """Send one datagram, raising what the kernel refused it with; False when the
        transport now buffers (await :meth:`drain` before the next)."""
        if self.max_payload is not None and len(data) > self.max_payload:
            raise RecordTooLargeError(f"{len(data)} bytes exceed the limit of {self.max_payload}")
        protocol = self.protocol
        if protocol.lost or self.transport.is_closing():
            raise ConnectionResetError("datagram transport is closed")
        protocol.error = None
        if self.target is None:
            self.transport.sendto(data)
        else:
            self.transport.sendto(data, self.target)
        self._raise_error(len(data))
        return self.writable

    def _raise_error(self, size: int) -> None:
        """Raise the error the transport reported for the datagram of ``size`` bytes."""
        error, self.protocol.error = self.protocol.error, None
        if error is not None:
            if getattr(error, "errno", None) == errno.EMSGSIZE:
                raise RecordTooLargeError(f"{size} bytes do not fit one datagram") from error
            raise error

    @property
    def writable(self) -> bool:
        """True when the transport holds no datagram: the kernel took every one."""
        held = self._held
        if held is None:  # another loop's transport (uvloop): its own flow control
            return self.protocol.writable
        return not held

    async def drain(self, timeout: float | None = WRITE_TIMEOUT, *, size: int = 0) -> None:
        """Wait until the transport holds no datagram any more (see :attr:`writable`).

        Raises what the kernel refused the datagram it held with (``size``: its
        length, for the message): it was not sent.
        """
        if not self.writable:
            await bounded(self._emptied(), timeout, "datagram send")
            self._raise_error(size)

    async def _emptied(self) -> None:
        protocol = self.protocol
        held = self._held
        if held is None:
            await protocol._writable.wait()
            return
        # resume_writing says when asyncio's buffer is empty where asyncio counts its
        # bytes right. CPython 3.13 before the fix of python/cpython#135444 (3.13.0
        # among them) counts 8 bytes more for each datagram it buffers than it takes
        # off when sending it: the count never gets back to 0, the protocol stays
        # paused after one EAGAIN, and every later batch waited out the write
        # timeout. So the buffer itself is looked at too, again every few
        # milliseconds while resume_writing does not come.
        pause = _HELD_POLL_FIRST
        while held and not protocol.lost:
            if protocol.writable:  # resumed with datagrams held (a mark set elsewhere)
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(protocol._writable.wait(), pause)
            pause = min(pause * 2, _HELD_POLL_MAX)

    async def send(self, data: bytes, *, timeout: float | None = WRITE_TIMEOUT) -> None:
        """Send one datagram; raise what the kernel refused it with."""
        if not self.send_nowait(data):
            await self.drain(timeout, size=len(data))

    async def send_all(
        self,
        payloads: Sequence[bytes],
        on_error: Callable[[int, Exception], bool],
        *,
        timeout: float | None = WRITE_TIMEOUT,
        reached: Callable[[int], None] | None = None,
    ) -> int:
        """Send each payload as one datagram, in order; return how many were handled.

        A payload the kernel refuses is given to ``on_error(index, exc)`` (called
        inside the ``except`` block); it returns True to go on with the next payload
        (the error belongs to that record) or False to stop there (the socket is
        broken: the return value is that index, less the datagrams before it that
        still wait in the transport's buffer, which the caller's abort discards).
        Yields to the loop every ``SEND_SLICE`` datagrams and waits (bounded) while
        the transport buffers; before each such wait it tells ``reached(i)`` that the
        first ``i`` payloads are with the kernel (an outbox's :meth:`Outbox.reached`:
        a send cut short during the wait then counts them delivered).
        """
        for i, data in enumerate(payloads):
            if i and not i % SEND_SLICE:
                # one sendto never suspends: let the loop run between slices
                if reached is not None:
                    reached(i)
                await asyncio.sleep(0)
            taken = False
            try:
                if not self.send_nowait(data):
                    taken = True  # sent or held: a drain that times out leaves it so
                    if reached is not None:
                        reached(i)  # this one waits in asyncio's buffer
                    try:
                        await self.drain(timeout, size=len(data))
                    except asyncio.CancelledError:
                        # cut short (a close giving up): what asyncio holds goes with
                        # the link, so that it is not sent after reached() said it
                        # was not (the last delivery sent it again: a duplicate). One
                        # that left while the drain had not woken yet did reach it
                        if reached is not None and self._all_taken():
                            reached(i + 1)
                        self.abort()
                        raise
            except Exception as exc:  # noqa: BLE001 - per-datagram boundary
                if not on_error(i, exc):
                    # a socket that took nothing for the timeout (a paused daemon's
                    # full queue) leaves datagrams in asyncio's buffer: they never
                    # reached the socket, so they are sent again, not counted as sent
                    # (a datagram the kernel refused once it left the buffer was not)
                    end = i + 1 if taken and isinstance(exc, TimeoutError) else i
                    return end - self._still_buffered(payloads[:end])
        return len(payloads)

    def _all_taken(self) -> bool:
        """True when the kernel took every datagram sent (none held, none dropped by
        a close or an abort, which empty the transport's buffer)."""
        protocol = self.protocol
        return (
            self.writable
            and protocol.error is None
            and not protocol.lost
            and not self.transport.is_closing()
        )

    def _still_buffered(self, sent: Sequence[bytes]) -> int:
        """How many of the last datagrams of ``sent`` wait in the transport's buffer."""
        if self._held is not None:
            return min(len(self._held), len(sent))
        # uvloop's: libuv's queue of whole datagrams, counted in payload bytes
        size_of = getattr(self.transport, "get_write_buffer_size", None)
        size = size_of() if size_of is not None else 0
        count = 0
        while size > 0 and count < len(sent):
            count += 1
            size -= len(sent[-count])
        return count

    def abort(self) -> None:
        """Close the socket at once."""
        self.transport.abort()

    async def aclose(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Close the socket and wait (bounded) until it is closed."""
        self.transport.close()
        try:
            await bounded(self.protocol.closed.wait(), timeout, "close")
        except TimeoutError:  # pragma: no cover - a datagram close does not wait on a peer
            self.abort()


#: what a send on a connected datagram socket fails with when its reader went away:
#: closed (``ECONNREFUSED``, then ``ENOTCONN``), its path gone (``ENOENT``), or the
#: transport closed under the link (``ECONNRESET``). None of it is the record's
_READER_GONE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ENOENT,
        errno.ENOTCONN,
        errno.EPIPE,
        errno.EDESTADDRREQ,
    }
)


def reader_gone(exc: BaseException) -> bool:
    """True when ``exc``, raised by a datagram send, says the reader went away (see
    :data:`_READER_GONE`): the link is replaced, the datagram sent again on the new one."""
    return isinstance(exc, ConnectionError) or getattr(exc, "errno", None) in _READER_GONE


async def send_datagrams(
    link: DatagramLink,
    payloads: Sequence[bytes],
    on_error: Callable[[int, Exception], bool],
    *,
    timeout: float | None = WRITE_TIMEOUT,
    reached: Callable[[int], None] | None = None,
) -> int:
    """The one send of the datagram sinks: each payload as one datagram, in order.

    A payload the kernel refuses for its own sake (too large) goes to
    ``on_error(index, exc)``, which returns True to go on with the next one. A
    reader that went away (:func:`reader_gone`), a socket that took nothing for
    ``timeout`` seconds (a reader that stopped reading), and an error ``on_error``
    returns False for, stop the send there: the link is broken. Returns how many
    payloads were handled (see :meth:`DatagramLink.send_all`); when that is none,
    raises the error that stopped it, so the caller replaces the link or backs off.
    """
    stopped: Exception | None = None

    def classify(i: int, exc: Exception) -> bool:
        nonlocal stopped
        if not (isinstance(exc, TimeoutError) or reader_gone(exc)) and on_error(i, exc):
            return True
        stopped = exc
        return False

    sent = await link.send_all(payloads, classify, timeout=timeout, reached=reached)
    if sent == 0 and stopped is not None:
        raise stopped
    return sent


class _Link(Protocol):
    def abort(self) -> None: ...

    async def aclose(self, timeout: float | None = ...) -> None: ...


L = TypeVar("L", bound=_Link)


class LinkSlot(Generic[L]):
    """The link a sink uses now: opened on demand, a failed open remembered.

    ``opener`` opens a link (raising ``OSError`` when it cannot). With a ``backoff``,
    a failed open is remembered until the back-off allows the next attempt: meanwhile
    :meth:`get` raises :class:`~aiologsinks.SinkConnectError` from the last error at
    once — no DNS lookup, no connect per record. Without one, every :meth:`get` of an
    empty slot tries (the caller gates attempts itself).
    """

    def __init__(
        self, opener: Callable[[], Awaitable[L]], *, backoff: Backoff | None = None, name: str = ""
    ) -> None:
        self._opener = opener
        self.backoff = backoff
        self.name = name
        #: the open link, None while there is none
        self.link: L | None = None
        #: links opened so far
        self.opened = 0
        #: once set (the sink closes), no link is opened any more
        self.closed = False
        self._error: BaseException | None = None

    async def get(self) -> L:
        """The open link, opening one if there is none (see the class docstring).

        Raises ``ConnectionResetError`` once the slot is :attr:`closed`: a link that
        finishes opening after that is aborted, so a close never races a connect.
        """
        if self.link is not None:
            return self.link
        if self.closed:
            raise ConnectionResetError(f"{self.name}: closed")
        backoff = self.backoff
        if backoff is not None and not backoff.ready():
            raise SinkConnectError(
                f"{self.name}: unreachable ({self._error}); next attempt in {backoff.delay():.1f}s"
            ) from self._error
        try:
            link = await self._opener()
        except (OSError, asyncio.TimeoutError) as exc:
            self._error = exc
            if backoff is not None:
                backoff.failed()
            raise
        except Exception as exc:  # any failure to open is the peer's outage, as an OSError
            # a host name idna cannot encode (UnicodeError), an address an event loop
            # rejects (uvloop's TypeError): no link either, and no record sent. Raised
            # as such, it failed each chunk for good and the records counted as sent
            self._error = exc
            if backoff is not None:
                backoff.failed()
            raise SinkConnectError(f"{self.name}: cannot open a link: {exc!r}") from exc
        if self.closed:
            link.abort()
            raise ConnectionResetError(f"{self.name}: closed")
        self._error = None
        if backoff is not None:
            backoff.succeeded()
        self.link = link
        self.opened += 1
        return link

    async def send(self, write: Callable[[L], Awaitable[_T]], *, again: bool = True) -> _T:
        """Run ``write`` on the open link (opening one, see :meth:`get`); its result.

        A link that breaks (``write`` raises ``OSError``) is aborted. One that had
        worked is replaced at once and ``write`` runs once more on the new one (a
        restarted peer: the stream daemon, the Unix datagram reader), as
        ``SysLogHandler`` reconnects; unless ``again`` is False, or it was a
        ``TimeoutError`` (a peer that does not read: no new link helps now). What
        fails then, or on a link opened for this call, raises to the caller (its
        outbox backs off and reports the outage).
        """
        fresh = self.link is None
        link = await self.get()
        try:
            return await self._write_on(link, write)
        except TimeoutError:
            raise
        except OSError:
            if fresh or not again:
                raise
        return await self._write_on(await self.get(), write)

    async def _write_on(self, link: L, write: Callable[[L], Awaitable[_T]]) -> _T:
        try:
            return await write(link)
        except OSError:
            if self.link is link:
                self.abort()
            raise

    async def reset(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Close the current link (bounded); the next :meth:`get` opens a new one."""
        link, self.link = self.link, None
        if link is not None:
            await link.aclose(timeout)

    def abort(self) -> None:
        """Abort the current link at once."""
        link, self.link = self.link, None
        if link is not None:
            link.abort()


class LinkOutbox(Generic[L]):
    """An outbox of encoded frames in front of a link that is (re)opened on demand.

    ``open_link`` opens the link; ``write(link, frames)`` sends frames over it and
    returns how many it consumed (None: all), raising ``OSError`` when the link broke
    (the link is then dropped and the frames are retried on a new one). ``gone(link)``
    tells a link whose peer went away before the next write (it is replaced without
    losing the frames). The :class:`~aiologsinks._outbox.Outbox` (:attr:`outbox`) does
    the buffering, back-off (:attr:`backoff`), notices and counting; a connection is
    only attempted when its back-off allows.
    """

    def __init__(
        self,
        open_link: Callable[[], Awaitable[L]],
        write: Callable[[L, list[bytes]], Awaitable[int | None]],
        *,
        name: str,
        buffer_size: int = 1000,
        gone: Callable[[L], bool] | None = None,
        on_lost: Callable[[list[bytes], Loss], None],
        on_failed: Callable[[list[bytes], BaseException], None],
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.backoff = Backoff()
        self.slot: LinkSlot[L] = LinkSlot(open_link, name=name)
        self._write = write
        self._gone = gone
        options: dict[str, Any] = {} if notify is None else {"notify": notify}
        self.outbox: Outbox[bytes] = Outbox(
            self._send,
            name=name,
            buffer_size=buffer_size,
            backoff=self.backoff,
            on_lost=on_lost,
            on_failed=on_failed,
            **options,
        )

    @property
    def link(self) -> L | None:
        """The open link, None while disconnected."""
        return self.slot.link

    async def connect(self) -> bool:
        """Open the link now unless it is open or the back-off forbids an attempt.

        ``SocketHandler.createSocket``: a failure starts (or extends) the back-off, a
        success resets it. Returns whether a link is open; never raises ``OSError``.
        """
        self._drop_gone()
        if self.slot.link is not None:
            return True
        if not self.backoff.ready():
            return False
        try:
            await self.slot.get()
        except (OSError, asyncio.TimeoutError) as exc:
            self.outbox.record_failure(exc)
            return False
        self.outbox.record_success()
        return True

    async def write_now(self, data: bytes) -> None:
        """Write ``data`` at once, outside the buffer (``SocketHandler.send``).

        Raises :class:`~aiologsinks.SinkConnectError` when there is no link and the
        back-off forbids (or a new attempt fails), the ``OSError`` of a broken link.
        """
        if not await self.connect():
            raise SinkConnectError(f"{self.slot.name}: not connected (next attempt in back-off)")
        await self._send([data])

    async def _send(self, frames: list[bytes]) -> int | None:
        self._drop_gone()

        async def write(link: L) -> int | None:
            n = await self._write(link, frames)
            if n is not None and n < len(frames):
                self.slot.abort()  # a short write: the link broke, the rest goes on a new one
            return n

        return await self.slot.send(write, again=not self.outbox.closed)

    def _drop_gone(self) -> None:
        link = self.slot.link
        if link is not None and self._gone is not None and self._gone(link):
            self.slot.abort()

    async def aclose(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Deliver what waits within ``timeout`` seconds (counting the rest as
        abandoned), then close the link: gracefully (bounded by ``timeout``) when
        everything went, at once when the peer did not take it all."""
        clean = False
        try:
            clean = await self.outbox.aclose(timeout)
        finally:
            self.slot.closed = True
            if clean:
                await self.slot.reset(timeout)
            else:  # a peer that does not read: a graceful close would wait for it
                self.slot.abort()


class DatagramSender:
    """Sends payloads as datagrams over a link opened on demand (UDP, Unix datagram).

    Nothing is buffered: datagrams are fire-and-forget, as in ``DatagramHandler``.
    A payload the kernel refuses goes to the caller's ``on_error`` (it belongs to
    that record). A link whose reader went away is replaced (:meth:`LinkSlot.send`)
    and sending goes on from that payload. A link that cannot be opened (a name that
    does not resolve, a missing socket) is a peer outage: the payloads are counted
    as lost (``on_lost``), reported by the outbox's rate-limited notices, and no new
    attempt (no DNS lookup) is made until the back-off (:attr:`backoff`,
    ``SocketHandler``'s ``retryStart``/``retryFactor``/``retryMax``) allows it. A
    send that fails otherwise (an error no datagram owns) gives its payloads to
    ``on_failed``: they were not sent either.
    """

    def __init__(
        self,
        open_link: Callable[[], Awaitable[DatagramLink]],
        *,
        name: str,
        on_lost: Callable[[list[int], Loss], None],
        on_failed: Callable[[list[int], BaseException], None],
        notify: Callable[[str], None] | None = None,
        timeout: float | None = WRITE_TIMEOUT,
    ) -> None:
        self.backoff = Backoff()
        self.slot: LinkSlot[DatagramLink] = LinkSlot(open_link, name=name)
        self.timeout = timeout
        options: dict[str, Any] = {} if notify is None else {"notify": notify}
        # items are indexes into the payloads being sent: the outbox counts them
        self.outbox: Outbox[int] = Outbox(
            self._send,
            name=name,
            buffer_size=0,
            chunk_size=1 << 30,
            backoff=self.backoff,
            on_lost=on_lost,
            on_failed=on_failed,
            **options,
        )
        self._payloads: Sequence[bytes] = ()
        self._on_error: Callable[[int, Exception], bool] = _go_on

    async def send_all(
        self, payloads: Sequence[bytes], on_error: Callable[[int, Exception], bool]
    ) -> None:
        """Send each payload as one datagram (see :meth:`DatagramLink.send_all`).

        ``on_error(index, exc)`` returns True when the error belongs to that payload
        (the next one is sent), False when the link is broken (it is reopened, and
        sending goes on from that payload).
        """
        self._payloads, self._on_error = payloads, on_error
        try:
            await self.outbox.put(range(len(payloads)))
        finally:
            self._payloads, self._on_error = (), _go_on

    async def _send(self, chunk: list[int]) -> int:
        first = chunk[0]
        payloads = self._payloads[first : first + len(chunk)]

        def on_error(i: int, exc: Exception) -> bool:
            return self._on_error(first + i, exc)

        async def write(link: DatagramLink) -> int:
            sent = await send_datagrams(
                link, payloads, on_error, timeout=self.timeout, reached=self.outbox.reached
            )
            if sent < len(payloads):
                # the link broke; after send_datagrams counted what still waits in the
                # transport's buffer (aborting empties it): those were not sent, the
                # outbox has them again
                self.slot.abort()
            return sent

        return await self.slot.send(write, again=not self.outbox.closed)

    async def send_now(self, data: bytes) -> None:
        """Send ``data`` as one datagram at once, outside the outbox, over the link
        (opened if there is none; one that broke is replaced as :meth:`LinkSlot.send`
        says). Raises what the kernel refused the datagram with."""

        async def write(link: DatagramLink) -> None:
            await link.send(data, timeout=self.timeout)

        await self.slot.send(write, again=not self.outbox.closed)

    async def aclose(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Close the link (bounded)."""
        await self.outbox.aclose(0)
        self.slot.closed = True
        await self.slot.reset(timeout)


def _go_on(i: int, exc: Exception) -> bool:
    return True


def each_record(report: Callable[[int], None]) -> Callable[[int, Exception], bool]:
    """An ``on_error`` for :meth:`DatagramSender.send_all` where a refused datagram's
    error is its record's: ``report(index)`` (inside the ``except`` block), and the
    next one goes. A write timeout and a reader that went away never come here (see
    :func:`send_datagrams`): the datagram did not fail, the link did."""

    def on_error(i: int, exc: Exception) -> bool:
        report(i)
        return True

    return on_error


#: bodies up to this many bytes are compressed in place: gzip takes about as long as
#: the hop to a thread and back would
GZIP_INLINE_MAX = 4096
#: zlib's window bits for a gzip member: 16 + the largest window (15)
_GZIP_WBITS = 31


async def gzip_off_loop(body: bytes, compresslevel: int = 1) -> bytes:
    """``body`` as one gzip member (RFC 1952), compressed without holding the loop.

    The member's modification time is 0 ("none"): an HTTP body has no file time, and
    the same records give the same bytes. zlib writes the header and trailer itself,
    the CRC computed as it reads (``gzip.compress`` with a time stamp takes a second
    pass over the body for it on 3.11 and 3.12, and a file object on 3.10).

    Level 1 by default: the compression runs on the service's own CPU, and log batches
    are repetitive enough that the fastest level keeps most of the gain (an OTLP
    request body of service records: 9.0 bytes a record at level 1, 7.8 at level 6,
    from 248 raw) for less than half the CPU (0.56 against 1.27 µs a record). With
    ``isal`` installed level 1 is ISA-L's, a fifth of zlib's CPU again (see ``_gzip``).

    A request body of a few MB takes tens of milliseconds to compress: a body larger
    than :data:`GZIP_INLINE_MAX` is compressed in the loop's default executor (zlib
    releases the GIL, so the loop runs meanwhile, on another core when there is one).
    When that executor is gone (the loop or the interpreter is shutting down), or the
    body is small, it is compressed here.
    """
    compress = functools.partial(_gzip, body, compresslevel)
    if len(body) <= GZIP_INLINE_MAX:
        return compress()
    return await off_loop(None, compress)


#: the compressor of level 1 bodies: ISA-L's when ``isal`` is installed, else zlib
_fast_zlib: Any = _isal_zlib if _isal_zlib is not None else zlib


def _gzip(body: bytes, level: int) -> bytes:
    # Level 1 is what the sinks ask for: the service's CPU pays for it. ISA-L's level 1
    # writes a body of service records smaller than zlib's level 1 (7.0 against 7.2
    # bytes a record) for a fifth of the CPU (0.07 against 0.38 µs a record); other
    # levels keep zlib's meaning (ISA-L has 0-3, and its 0 is not "stored").
    lib = _fast_zlib if level == 1 else zlib
    # a compressor object: zlib.compress takes no window bits before 3.11
    packer = lib.compressobj(level, lib.DEFLATED, _GZIP_WBITS)
    return bytes(packer.compress(body) + packer.flush())
