"""``python -m aiologsinks demo``: N records through every sink to real loopback peers.

Each sink gets its own phase: ``install(sink)`` on a private logger, N records logged
with the standard ``logging`` module, ``await dispatcher.flush()``, then a count of
what the *peer* holds — lines in the files (rotated ones included), records decoded
by the embedded :class:`~aiologsinks._cli.receive.Receiver` (TCP, UDP, syslog, HTTP),
record lines in the mails an aiosmtpd server accepted. A phase of its own per sink
makes its elapsed time and the loop's worst stall (a 5 ms ticker's worst lateness)
that sink's numbers.

The peers run on their own event loop in a thread, so their work is not counted as
the sinks' stall. UDP has no flow control: for the datagram and syslog/UDP phases the
producer waits every ``_UDP_WINDOW`` records until the peer has them (pacing, not
retrying: a datagram lost anyway is reported as lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiologsinks as als

from .receive import Receiver

__all__ = ["run_demo"]

_MARK = b"demo record "
_UDP_WINDOW = 200
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@dataclass
class Row:
    """One sink's result."""

    sink: str
    sent: int
    received: int
    lost: int
    errors: int
    elapsed_ms: float
    worst_stall_ms: float


class _Peers:
    """The receivers and the SMTP server, on their own loop in a thread."""

    def __init__(self) -> None:
        self.receiver = Receiver(tcp=0, udp=0, syslog=0, http=0)
        self.smtp_port: int | None = None
        self.smtp_note = ""
        self.mail_records = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aiologsinks-demo-peers")

    async def start(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait, 30)
        if self._error is not None:
            raise RuntimeError(f"demo peers failed to start: {self._error}")
        if not self._ready.is_set():
            raise RuntimeError("demo peers did not start in 30 s")

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 - reported to the main thread by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.receiver, contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._smtp())
            self._ready.set()
            await self._stop.wait()

    @contextlib.asynccontextmanager
    async def _smtp(self) -> Any:
        try:
            from aiosmtpd.smtp import SMTP
        except ImportError:
            self.smtp_note = "aiosmtpd is not installed"
            yield
            return
        peers = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                content: bytes = envelope.original_content or envelope.content
                peers.mail_records += content.count(_MARK)
                return "250 OK"

        loop = asyncio.get_running_loop()
        handler = Handler()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="localhost", loop=loop), "127.0.0.1", 0
        )
        self.smtp_port = server.sockets[0].getsockname()[1]
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()


@dataclass
class _Phase:
    name: str
    make: Callable[[], als.Sink]
    #: counts what the peer holds now (called before and after the phase)
    count: Callable[[], Any]
    udp: bool = False


def _count_files(directory: Path, prefix: str) -> int:
    total = 0
    for entry in directory.iterdir():
        if entry.name.startswith(prefix):
            total += entry.read_bytes().count(_MARK)
    return total


def _phases(tmp: Path, peers: _Peers) -> tuple[list[_Phase], list[dict[str, str]]]:
    rx = peers.receiver
    host = "127.0.0.1"
    fmt = logging.Formatter(_FORMAT)

    def files(prefix: str) -> Callable[[], Any]:
        return lambda: asyncio.to_thread(_count_files, tmp, prefix)

    def channel(name: str) -> Callable[[], int]:
        return lambda: rx.counts[name].received

    def with_fmt(sink: als.Sink) -> als.Sink:
        sink.setFormatter(fmt)
        return sink

    cls: dict[str, Any] = {name: getattr(als, name, None) for name in als.__all__}
    candidates: list[tuple[str, str, Callable[[], _Phase]]] = [
        ("file", "FileSink", lambda: _Phase(
            "file", lambda: with_fmt(cls["FileSink"](tmp / "file.log")), files("file.log"))),
        ("rotating", "RotatingFileSink", lambda: _Phase(
            "rotating",
            lambda: with_fmt(cls["RotatingFileSink"](
                tmp / "rotating.log", maxBytes=256 * 1024, backupCount=100)),
            files("rotating.log"))),
        ("timed rotating", "TimedRotatingFileSink", lambda: _Phase(
            "timed rotating",
            lambda: with_fmt(cls["TimedRotatingFileSink"](
                tmp / "timed.log", when="S", interval=1, backupCount=0)),
            files("timed.log"))),
        ("watched", "WatchedFileSink", lambda: _Phase(
            "watched", lambda: with_fmt(cls["WatchedFileSink"](tmp / "watched.log")),
            files("watched.log"))),
        ("socket", "SocketSink", lambda: _Phase(
            "socket", lambda: cls["SocketSink"](host, rx.ports["tcp"]), channel("tcp"))),
        ("datagram", "DatagramSink", lambda: _Phase(
            "datagram", lambda: cls["DatagramSink"](host, rx.ports["udp"]), channel("udp"),
            udp=True)),
        ("syslog udp", "SysLogSink", lambda: _Phase(
            "syslog udp",
            lambda: cls["SysLogSink"]((host, rx.ports["syslog"]), socktype=socket.SOCK_DGRAM),
            channel("syslog_udp"), udp=True)),
        ("syslog tcp", "SysLogSink", lambda: _Phase(
            "syslog tcp",
            lambda: cls["SysLogSink"]((host, rx.ports["syslog"]), socktype=socket.SOCK_STREAM),
            channel("syslog_tcp"))),
        ("http", "HTTPSink", lambda: _Phase(
            "http",
            lambda: cls["HTTPSink"](f"{host}:{rx.ports['http']}", "/log", "POST",
                                    json_batch=True),
            channel("http"))),
        ("smtp digest", "SMTPSink", lambda: _Phase(
            "smtp digest",
            lambda: with_fmt(cls["SMTPSink"](
                (host, peers.smtp_port), "demo@localhost", ["ops@localhost"],
                "aiologsinks demo", digest_max=1000, digest_interval=60.0)),
            lambda: peers.mail_records)),
        ("memory", "MemorySink", lambda: _Phase(
            "memory",
            lambda: cls["MemorySink"](
                1000, target=with_fmt(cls["FileSink"](tmp / "memory.log"))),
            files("memory.log"))),
    ]  # fmt: skip
    phases: list[_Phase] = []
    skipped: list[dict[str, str]] = []
    for name, class_name, build in candidates:
        if cls.get(class_name) is None:
            skipped.append({"sink": name, "reason": f"{class_name} is not available"})
        elif class_name == "SMTPSink" and peers.smtp_port is None:
            skipped.append({"sink": name, "reason": peers.smtp_note})
        else:
            phases.append(build())
    return phases, skipped


async def _value(count: Callable[[], Any]) -> int:
    value = count()
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        value = await value
    return int(value)


class _Ticker:
    """The loop's worst stall: how late a 5 ms sleep wakes up, at worst."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - start - 0.005)

    def __enter__(self) -> _Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()


class _Progress:
    """Progress on stderr: a counter while a phase runs (on a terminal), a line after it."""

    def __init__(self, show: bool, records: int) -> None:
        self.show = show
        self.tty = show and sys.stderr.isatty()
        self.records = records

    def update(self, name: str, done: int) -> None:
        if self.tty:
            print(f"\r  {name:<15} {done:>8}/{self.records}", end="", file=sys.stderr, flush=True)

    def done(self, row: Row) -> None:
        if self.show:
            line = (
                f"  {row.sink:<15} {row.received:>8}/{row.sent} received, {row.elapsed_ms:.0f} ms"
            )
            print(("\r" if self.tty else "") + line, file=sys.stderr, flush=True)


async def _wait_until(predicate: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.005)


async def _run_phase(phase: _Phase, records: int, tmp: Path, progress: _Progress) -> Row:
    logger = logging.getLogger(f"aiologsinks.demo.{phase.name.replace(' ', '_')}")
    logger.propagate = False
    before = await _value(phase.count)
    sink = phase.make()
    sink.name = phase.name

    async def arrived(n: int) -> bool:
        return await _value(phase.count) - before >= n

    started = time.perf_counter()
    with _Ticker() as ticker:
        async with als.install(sink, logger=logger, level=logging.INFO) as dispatcher:
            for i in range(records):
                logger.info("demo record %d of %d", i + 1, records)
                if i % _UDP_WINDOW == _UDP_WINDOW - 1:
                    progress.update(phase.name, i + 1)
                    if phase.udp:
                        # pace the producer to the peer: UDP has no flow control
                        await _wait_until(functools.partial(arrived, i + 1), 2.0)
                    else:
                        await asyncio.sleep(0)
                if phase.name == "watched" and i == records // 2:
                    # rotate the file under the sink, as logrotate's "create" does
                    # (after a flush, so that there is a file with records to move)
                    await dispatcher.flush()
                    await asyncio.to_thread(os.replace, tmp / "watched.log", tmp / "watched.log.1")
            await dispatcher.flush()
            # a stream transport has handed the bytes to the kernel: wait for the peer
            await _wait_until(lambda: arrived(records), 10.0)
            elapsed = time.perf_counter() - started
            stats = dispatcher.stats().sinks[phase.name]
    received = await _value(phase.count) - before
    return Row(
        sink=phase.name,
        sent=records,
        received=received,
        lost=records - received,
        errors=stats.errors,
        elapsed_ms=round(elapsed * 1000, 1),
        worst_stall_ms=round(ticker.worst * 1000, 2),
    )


async def _demo(records: int, tmp: Path, progress: _Progress) -> dict[str, Any]:
    peers = _Peers()
    await peers.start()
    try:
        phases, skipped = _phases(tmp, peers)
        rows = []
        for phase in phases:
            rows.append(await _run_phase(phase, records, tmp, progress))
            progress.done(rows[-1])
        invalid = peers.receiver.invalid
    finally:
        await peers.stop()
    return {
        "records": records,
        "sinks": [asdict(r) for r in rows],
        "skipped": skipped,
        "invalid_frames": invalid,
        "lost": sum(r.lost for r in rows),
    }


def _table(result: dict[str, Any]) -> str:
    head = (
        f"{'sink':<16}{'sent':>8}{'received':>10}{'lost':>6}{'errors':>8}{'ms':>10}{'stall ms':>10}"
    )
    lines = [head, "-" * len(head)]
    for row in result["sinks"]:
        lines.append(
            f"{row['sink']:<16}{row['sent']:>8}{row['received']:>10}{row['lost']:>6}"
            f"{row['errors']:>8}{row['elapsed_ms']:>10.1f}{row['worst_stall_ms']:>10.2f}"
        )
    for skip in result["skipped"]:
        lines.append(f"{skip['sink']:<16}  skipped: {skip['reason']}")
    lost = result["lost"]
    lines.append("")
    lines.append(
        f"nothing lost: {len(result['sinks'])} sinks x {result['records']} records"
        if lost == 0
        else f"LOST {lost} record(s)"
    )
    return "\n".join(lines)


async def _cancelled_by_ctrl_c(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run ``main``; Ctrl-C cancels it (its pipelines then close and deliver) and
    raises KeyboardInterrupt after. Python 3.11's ``asyncio.run()`` does so itself; on
    3.10 the KeyboardInterrupt landed in whatever task ran, a lane's among them,
    whose records then went to stderr."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    pressed = []

    def on_ctrl_c() -> None:
        pressed.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        if pressed:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def run_demo(records: int = 10_000, as_json: bool = False) -> int:
    """Run the demo; print a table (or JSON); return 0 when nothing was lost, else 1."""
    if records < 1:
        raise SystemExit("--records: expected an int >= 1")
    progress = _Progress(not as_json, records)
    with tempfile.TemporaryDirectory(prefix="aiologsinks-demo-") as tmp:
        result = asyncio.run(_cancelled_by_ctrl_c(_demo(records, Path(tmp), progress)))
    print(json.dumps(result, indent=2) if as_json else _table(result))
    return 0 if result["lost"] == 0 else 1
