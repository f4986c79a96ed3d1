"""``python -m aiologsinks receive``: a loopback peer for what sinks and stdlib handlers send.

One :class:`Receiver` serves any of four channels on one event loop:

* ``tcp``: length-prefixed pickled record dicts (``SocketHandler`` / ``SocketSink``);
* ``udp``: the same frames, one per datagram (``DatagramHandler`` / ``DatagramSink``);
* ``syslog``: the same port number over UDP (one message per datagram) and TCP
  (RFC 6587 octet counting, or messages ended by NUL or LF as ``SysLogHandler`` sends);
* ``http``: ``HTTPHandler`` requests (GET query or url-encoded POST body) and JSON bodies
  (one record object or a list of them), any path.

Pickles are read by :class:`RecordUnpickler`, which refuses every class and global: only
builtin containers and scalars can come out of it, so a frame crafted to run code is an
invalid frame. Invalid frames are counted per channel and skipped; the receiver keeps
serving. The demo embeds the same class as its network peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import pickle
import signal
import socket
import struct
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "MAX_FRAME",
    "ChannelCounts",
    "Receiver",
    "RecordUnpickler",
    "decode_frame",
    "format_line",
    "parse_syslog",
    "run_receive",
]

#: the largest pickled frame accepted; a bigger length prefix means a broken stream
MAX_FRAME = 16 * 1024 * 1024
#: the receive buffer asked for UDP sockets; the kernel caps it at net.core.rmem_max
UDP_RCVBUF = 8 * 1024 * 1024

_SCALARS = (str, int, float, bool, bytes, type(None))

#: channel names, in display order
CHANNELS = ("tcp", "udp", "syslog_udp", "syslog_tcp", "http")

OnRecord = Callable[[str, dict[str, Any]], None]


class RecordUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds builtin values only.

    Every global lookup (classes, functions such as ``os.system``, copyreg extensions)
    goes through :meth:`find_class`, which always raises, so nothing but dicts, lists,
    tuples and scalars can be constructed.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Refuse every global: raises ``pickle.UnpicklingError`` naming it."""
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a record frame")


def _plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if depth > 8:
        return False
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def decode_frame(payload: bytes) -> dict[str, Any]:
    """Unpickle one record frame body (without its 4-byte length) into a plain dict.

    Raises ``ValueError`` when it is not a pickled dict of builtin values with
    string keys; no class is ever imported or instantiated.
    """
    try:
        obj = RecordUnpickler(io.BytesIO(payload)).load()
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is one invalid frame
        raise ValueError(f"not a record pickle: {exc}") from None
    if not isinstance(obj, dict) or not _plain(obj):
        raise ValueError("not a plain record dict")
    return obj


def parse_syslog(message: bytes) -> dict[str, Any]:
    """Split ``<PRI>rest`` into facility, severity and the message text.

    Raises ``ValueError`` for a message without a valid PRI (0..191).
    """
    text = message.rstrip(b"\x00\r\n").decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    end = text.find(">", 1, 5)
    if not text.startswith("<") or end < 2 or not text[1:end].isdigit():
        raise ValueError("syslog message without <PRI>")
    pri = int(text[1:end])
    if pri > 191:
        raise ValueError(f"syslog PRI out of range: {pri}")
    body = text[end + 1 :]
    if body.startswith("\ufeff"):  # the stdlib puts a BOM before a unicode message
        body = body[1:]
    return {"facility": pri >> 3, "severity": pri & 7, "msg": body}


def format_line(channel: str, fields: Mapping[str, Any]) -> str:
    """One human-readable line for a received record (no trailing newline)."""
    created = fields.get("created")
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(created)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        stamp = "-"
    if "severity" in fields and "name" not in fields:
        return f"{stamp} [{channel}] <{fields['facility']}.{fields['severity']}> {fields['msg']}"
    name = fields.get("name", "-")
    level = fields.get("levelname", "-")
    msg = fields.get("msg", "")
    line = f"{stamp} [{channel}] {level} {name}: {msg}"
    exc_text = fields.get("exc_text")
    if exc_text:
        line += "\n" + str(exc_text)
    return line


@dataclass
class ChannelCounts:
    """What one channel has seen: records decoded, and invalid frames skipped."""

    received: int = 0
    invalid: int = 0


class _Stream(asyncio.Protocol):
    """A TCP connection carrying pickled frames or syslog messages."""

    def __init__(self, receiver: Receiver, syslog: bool) -> None:
        self._receiver = receiver
        self._syslog = syslog
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._receiver._streams.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._receiver._streams.discard(self._transport)
        if self._syslog and self._buf.strip(b"\x00\r\n"):
            self._receiver._syslog_message("syslog_tcp", bytes(self._buf))
        self._buf.clear()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        ok = self._syslog_frames() if self._syslog else self._pickle_frames()
        if not ok and self._transport is not None:
            # the framing itself is broken: nothing later on this stream can be trusted
            self._transport.close()

    def _pickle_frames(self) -> bool:
        buf = self._buf
        while len(buf) >= 4:
            (size,) = struct.unpack(">L", buf[:4])
            if size > MAX_FRAME:
                self._receiver._invalid("tcp")
                buf.clear()
                return False
            if len(buf) < 4 + size:
                break
            payload = bytes(buf[4 : 4 + size])
            del buf[: 4 + size]
            self._receiver._frame("tcp", payload)
        return True

    def _syslog_frames(self) -> bool:
        buf = self._buf
        while buf:
            if buf[:1].isdigit():
                # RFC 6587 octet counting: "LEN SP MSG"
                space = buf.find(b" ", 0, 10)
                if space < 0:
                    if len(buf) >= 10:
                        self._receiver._invalid("syslog_tcp")
                        buf.clear()
                        return False
                    break
                if not buf[:space].isdigit():
                    self._receiver._invalid("syslog_tcp")
                    buf.clear()
                    return False
                size = int(buf[:space])
                if size > MAX_FRAME:
                    self._receiver._invalid("syslog_tcp")
                    buf.clear()
                    return False
                if len(buf) < space + 1 + size:
                    break
                msg = bytes(buf[space + 1 : space + 1 + size])
                del buf[: space + 1 + size]
            else:
                # non-transparent framing: NUL (SysLogHandler's append_nul) or LF
                ends = [i for i in (buf.find(b"\x00"), buf.find(b"\n")) if i >= 0]
                if not ends:
                    if len(buf) > MAX_FRAME:
                        self._receiver._invalid("syslog_tcp")
                        buf.clear()
                        return False
                    break
                end = min(ends)
                msg = bytes(buf[:end])
                del buf[: end + 1]
                if not msg.strip(b"\r"):
                    continue
            self._receiver._syslog_message("syslog_tcp", msg)
        return True


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: Receiver, channel: str) -> None:
        self._receiver = receiver
        self._channel = channel

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._channel == "udp":
            if len(data) < 4 or struct.unpack(">L", data[:4])[0] != len(data) - 4:
                self._receiver._invalid("udp")
                return
            self._receiver._frame("udp", data[4:])
        else:
            self._receiver._syslog_message(self._channel, data)


def _udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Receiver:
    """Serve record channels on ``host`` until :meth:`aclose`.

    Give a port (``0`` for an ephemeral one) for each channel to open: ``tcp``,
    ``udp``, ``syslog`` (UDP and TCP on the same number) and ``http``. After
    :meth:`start`, :attr:`ports` holds the bound ports. Each decoded record is passed
    to ``on_record(channel, fields)`` (on the receiver's loop) and counted in
    :attr:`counts`; invalid frames are counted and skipped.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        tcp: int | None = None,
        udp: int | None = None,
        syslog: int | None = None,
        http: int | None = None,
        on_record: OnRecord | None = None,
    ) -> None:
        self.host = host
        self._wanted = {"tcp": tcp, "udp": udp, "syslog": syslog, "http": http}
        self.on_record = on_record
        self.ports: dict[str, int] = {}
        self.counts: dict[str, ChannelCounts] = {c: ChannelCounts() for c in CHANNELS}
        self._servers: list[asyncio.Server] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._streams: set[asyncio.Transport] = set()
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Event | None = None

    async def start(self) -> None:
        """Bind every requested channel; returns once all of them are listening.

        Raises ``OSError`` when a port cannot be bound (nothing is left open then).
        """
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def _start_syslog(self, loop: asyncio.AbstractEventLoop, host: str, wanted: int) -> None:
        # one port number for both transports, as syslog daemons do: bind UDP (an
        # ephemeral pick when 0), then TCP on the same number; when that TCP port is
        # taken, pick again
        for attempt in range(20):
            sock = _udp_socket(host, wanted)
            port = sock.getsockname()[1]
            try:
                server = await loop.create_server(lambda: _Stream(self, syslog=True), host, port)
            except OSError:
                sock.close()
                if wanted != 0 or attempt == 19:
                    raise
                continue
            self._servers.append(server)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self, "syslog_udp"), sock=sock
            )
            self._transports.append(transport)
            self.ports["syslog"] = port
            return

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        host = self.host
        if self._wanted["tcp"] is not None:
            server = await loop.create_server(
                lambda: _Stream(self, syslog=False), host, self._wanted["tcp"]
            )
            self._servers.append(server)
            self.ports["tcp"] = server.sockets[0].getsockname()[1]
        if self._wanted["udp"] is not None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self, "udp"), sock=_udp_socket(host, self._wanted["udp"])
            )
            self._transports.append(transport)
            self.ports["udp"] = transport.get_extra_info("sockname")[1]
        if self._wanted["syslog"] is not None:
            await self._start_syslog(loop, host, self._wanted["syslog"])
        if self._wanted["http"] is not None:
            app = web.Application(client_max_size=MAX_FRAME)
            app.router.add_route("*", "/{tail:.*}", self._http)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, self._wanted["http"]))
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            site = web.SockSite(self._runner, sock)
            await site.start()
            self.ports["http"] = sock.getsockname()[1]

    async def aclose(self) -> None:
        """Stop serving and close every connection; idempotent."""
        for server in self._servers:
            server.close()
        for stream in list(self._streams):
            stream.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def received(self) -> int:
        """Records decoded on every channel."""
        return sum(c.received for c in self.counts.values())

    @property
    def invalid(self) -> int:
        """Invalid frames skipped on every channel."""
        return sum(c.invalid for c in self.counts.values())

    async def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` is true (checked on every frame); raises
        ``TimeoutError`` after ``timeout`` seconds. Call it on the receiver's loop."""
        assert self._changed is not None, "start() first"
        changed = self._changed

        async def until() -> None:
            while not predicate(self):
                changed.clear()
                await changed.wait()

        await asyncio.wait_for(until(), timeout)

    # -- decoding --------------------------------------------------------------------

    def _record(self, channel: str, fields: dict[str, Any]) -> None:
        self.counts[channel].received += 1
        if self.on_record is not None:
            self.on_record(channel, fields)
        if self._changed is not None:
            self._changed.set()

    def _invalid(self, channel: str) -> None:
        self.counts[channel].invalid += 1
        if self._changed is not None:
            self._changed.set()

    def _frame(self, channel: str, payload: bytes) -> None:
        try:
            fields = decode_frame(payload)
        except ValueError:
            self._invalid(channel)
            return
        self._record(channel, fields)

    def _syslog_message(self, channel: str, data: bytes) -> None:
        try:
            fields = parse_syslog(data)
        except ValueError:
            self._invalid(channel)
            return
        self._record(channel, fields)

    async def _http(self, request: web.Request) -> web.Response:
        try:
            records = await _http_records(request)
        except ValueError as exc:
            self._invalid("http")
            return web.Response(status=400, text=f"{exc}\n")
        for fields in records:
            self._record("http", fields)
        return web.Response(text="ok\n")


async def _http_records(request: web.Request) -> list[dict[str, Any]]:
    if request.method == "GET":
        if not request.query:
            raise ValueError("no record in the query string")
        return [dict(request.query)]
    body = await request.read()
    ctype = request.content_type
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise ValueError("invalid JSON body") from None
        items = data if isinstance(data, list) else [data]
        if not all(isinstance(item, dict) for item in items):
            raise ValueError("expected a JSON object or a list of objects")
        return items
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("invalid url-encoded body") from None
    return [dict(pairs)]


class _Output:
    """Lines written off the loop, in order, by a task that owns the file."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._lines: list[str] = []
        self._ready = asyncio.Event()
        self._stream: Any = None

    def add(self, channel: str, fields: dict[str, Any]) -> None:
        self._lines.append(format_line(channel, fields) + "\n")
        self._ready.set()

    async def run(self, stop: asyncio.Event) -> None:
        if self._path is not None:
            self._stream = await asyncio.to_thread(open, self._path, "a", encoding="utf-8")
        else:
            self._stream = sys.stdout
        try:
            while True:
                if not self._lines:
                    if stop.is_set():
                        return
                    self._ready.clear()
                    waiter = asyncio.ensure_future(self._ready.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    try:
                        await asyncio.wait({waiter, stopper}, return_when="FIRST_COMPLETED")
                    finally:
                        waiter.cancel()
                        stopper.cancel()
                    continue
                chunk, self._lines = "".join(self._lines), []
                await asyncio.to_thread(_write, self._stream, chunk)
        finally:
            if self._path is not None and self._stream is not None:
                await asyncio.to_thread(self._stream.close)


def _write(stream: Any, text: str) -> None:
    stream.write(text)
    stream.flush()


async def _serve(ports: Mapping[str, int | None], host: str, out: str | None) -> int:
    output = _Output(out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    receiver = Receiver(host=host, on_record=output.add, **ports)
    writer = asyncio.ensure_future(output.run(stop))
    try:
        await receiver.start()
        listening = ", ".join(f"{k} {host}:{v}" for k, v in receiver.ports.items())
        print(f"aiologsinks receive: listening on {listening}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await receiver.aclose()
        stop.set()
        await writer
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    summary = ", ".join(
        f"{name} {c.received} received/{c.invalid} invalid"
        for name, c in receiver.counts.items()
        if c.received or c.invalid
    )
    print(f"aiologsinks receive: stopped; {summary or 'nothing received'}", file=sys.stderr)
    return 0


def run_receive(
    *,
    tcp: int | None = None,
    udp: int | None = None,
    syslog: int | None = None,
    http: int | None = None,
    host: str = "127.0.0.1",
    out: str | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM, writing one line per record; return the exit code."""
    ports = {"tcp": tcp, "udp": udp, "syslog": syslog, "http": http}
    if all(p is None for p in ports.values()):
        raise SystemExit("receive: give at least one of --tcp, --udp, --syslog, --http")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(ports, host, out))
    return 0
