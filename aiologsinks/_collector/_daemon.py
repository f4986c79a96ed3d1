"""The collector daemon: received records fed to sinks built from a configuration.

``python -m aiologsinks receive --config collector.toml`` reads the same format as
:func:`aiologsinks.config.install_config` plus one ``[collector]`` table (addresses,
ports, limits); see :data:`SETTINGS` for its keys. A ``[loggers]`` table is refused:
received records go to the sinks directly, never through this process's loggers. It
builds the Dispatcher through ``install_config``, rebuilds every received record as a
``LogRecord`` and hands it to the Dispatcher's shim, so sink levels, filters,
formatters, lanes and ``stats()`` work as in any service.

Operations: SIGHUP makes every file sink reopen its file before its next write
(for ``logrotate``'s ``postrotate``); SIGTERM and SIGINT stop listening, half-close
the connections and read what the peers still send, deliver and close the sinks
within ``drain_timeout`` seconds, and print the per-channel summary; with
``stats_interval`` the counters are printed periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import math
import os
import signal
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import IO, Any

from ..config import Config, ConfigError, from_dict, install_config
from ._channels import ListenError, ReceiverLimits
from ._receiver import Receiver
from ._records import rebuild, syslog_record_fields
from ._unpickle import Limits

__all__ = [
    "MAX_PICKLE_DEPTH",
    "SETTINGS",
    "CollectorError",
    "LineFormatter",
    "Settings",
    "run",
    "serve",
    "settings_from",
]


class CollectorError(Exception):
    """A mistake the collector reports in one line and exits 2 for."""


@dataclass
class Settings:
    """The ``[collector]`` table: where to listen and what a peer may cost."""

    host: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    tcp: int | None = None
    udp: int | None = None
    syslog: int | None = None
    http: int | None = None
    max_frame: int = 1024 * 1024
    max_connections: int = 256
    idle_timeout: float = 300.0
    read_timeout: float = 30.0
    max_buffered: int = 64 * 1024 * 1024
    max_pickle_nodes: int = 200_000
    max_pickle_depth: int = 32
    max_record_size: int = 8 * 1024 * 1024
    #: seconds SIGTERM may take: reading what peers still send, then delivering
    drain_timeout: float = 10.0
    #: seconds between counter lines on stderr (0: none)
    stats_interval: float = 0.0
    #: add ``received_via`` (channel) and ``received_from`` (peer) to every record
    annotate: bool = False

    def limits(self) -> ReceiverLimits:
        """The receiver limits these settings give."""
        return ReceiverLimits(
            max_frame=self.max_frame,
            max_connections=self.max_connections,
            idle_timeout=self.idle_timeout,
            read_timeout=self.read_timeout,
            max_buffered=self.max_buffered,
            unpickle=Limits(
                max_nodes=self.max_pickle_nodes,
                max_depth=self.max_pickle_depth,
                max_size=self.max_record_size,
            ),
        )


#: the keys of the ``[collector]`` table
SETTINGS = tuple(f.name for f in fields(Settings))
#: the deepest ``max_pickle_depth``: formatters and sinks that forward a record
#: (``repr``, ``json``, ``pickle``) recurse once or twice per level of nesting, within
#: Python's recursion limit of 1000
MAX_PICKLE_DEPTH = 200
_PORTS = ("tcp", "udp", "syslog", "http")


def _check(key: str, value: Any) -> Any:
    path = f"collector.{key}"
    if key == "host":
        hosts = [value] if isinstance(value, str) else value
        if not isinstance(hosts, (list, tuple)) or not hosts:
            raise ConfigError(path, f"expected an address or a list of them, got {value!r}")
        for host in hosts:
            if not isinstance(host, str) or not host:
                raise ConfigError(path, f"expected an address, got {host!r}")
        return list(hosts)
    if key == "annotate":
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"expected a number, got {value!r}")
    if key in _PORTS:
        if not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError(path, f"expected a port 0-65535, got {value!r}")
    elif key in ("idle_timeout", "read_timeout", "drain_timeout"):
        # nan and inf would compare their way past every limit they stand for
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(path, f"expected seconds > 0, got {value!r}")
        return float(value)
    elif key == "stats_interval":
        if not math.isfinite(value) or value < 0:
            raise ConfigError(path, f"expected seconds >= 0, got {value!r}")
        return float(value)
    elif not isinstance(value, int) or value < 1:
        raise ConfigError(path, f"expected an int >= 1, got {value!r}")
    elif key == "max_pickle_depth" and value > MAX_PICKLE_DEPTH:
        raise ConfigError(path, f"expected an int 1-{MAX_PICKLE_DEPTH}, got {value!r}")
    return value


def settings_from(
    data: Mapping[str, Any], *, file: str | None = None, **overrides: Any
) -> tuple[Settings, dict[str, Any]]:
    """Split a collector configuration into :class:`Settings` and the sink
    configuration (everything but ``[collector]``, for ``install_config``).

    ``overrides`` (command-line options; None means not given) win over the table.
    Raises :class:`~aiologsinks.config.ConfigError` naming the key, and ``file`` (the
    configuration's path, if any) when the mistake is in the configuration.
    """
    try:
        values, rest = _table_settings(data)
    except ConfigError as exc:
        raise exc.in_file(file) from None
    for key, value in overrides.items():
        if value is not None:
            values[key] = _check(key, value)
    settings = Settings(**values)
    if all(getattr(settings, p) is None for p in _PORTS):
        raise ConfigError(
            "collector", "no channel to listen on: give tcp, udp, syslog or http (--tcp PORT ...)"
        )
    # syslog listens on its port over UDP and TCP, the others on one protocol each: a
    # port given twice for one protocol is the user's own clash, said as such
    taken: dict[tuple[str, int], str] = {}
    for channel, protocols in (("tcp", "t"), ("udp", "u"), ("syslog", "ut"), ("http", "t")):
        port = getattr(settings, channel)
        if not port:
            continue  # not listened on, or any free port
        for protocol in protocols:
            other = taken.setdefault((protocol, port), channel)
            if other != channel:
                kind = "TCP" if protocol == "t" else "UDP"
                raise ConfigError(
                    f"collector.{channel}",
                    f"port {port} is {other}'s already ({channel} and {other} both listen"
                    f" on {kind} there)",
                )
    try:
        settings.limits()
    except ValueError as exc:
        raise ConfigError("collector", str(exc)) from None
    return settings, rest


def _table_settings(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked ``[collector]`` keys of ``data``, and the rest of it."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected a table, got {data!r}")
    rest = dict(data)
    table = rest.pop("collector", {})
    if not isinstance(table, Mapping):
        raise ConfigError("collector", f"expected a table, got {table!r}")
    if "loggers" in rest:
        # received records go to the sinks as they are, not through this process's
        # loggers: the table would only change the collector's own logging
        raise ConfigError(
            "loggers",
            "not used by the collector (received records go to the sinks directly);"
            " use a sink's level or filters to choose records",
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in SETTINGS:
            raise ConfigError(f"collector.{key}", f"unknown key; expected one of {list(SETTINGS)}")
        values[key] = _check(key, value)
    return values, rest


def simple_config(out: str | None) -> dict[str, Any]:
    """The sink configuration of ``receive --out FILE`` (stdout without a file):
    one line per record, in :class:`LineFormatter`'s format."""
    sink: dict[str, Any] = (
        {"type": "StreamSink", "stream": "stdout"}
        if out is None
        else {"type": "FileSink", "filename": out}
    )
    sink["formatter"] = "line"
    return {
        "formatters": {"line": {"()": f"{__name__}:LineFormatter"}},
        "sinks": {"out": sink},
    }


class LineFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 [tcp] WARNING app.db: message key=value``.

    The default line of ``receive --out``: time with milliseconds, the channel
    (when records are annotated), level, logger and message, then every ``extra=``
    field as ``key=value``.
    """

    _STANDARD = frozenset(
        (
            *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
            "taskName",
            "message",
            "asctime",
            "received_via",
            "received_from",
            "syslog_facility",
            "syslog_severity",
        )
    )

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line for ``record`` (exception text on indented lines after it)."""
        line = super().format(record)
        via = record.__dict__.get("received_via")
        if via:
            day, _, rest = line.partition(" ")
            clock, _, rest = rest.partition(" ")
            line = f"{day} {clock} [{via}] {rest}"
        extras = [
            f"{k}={v if type(v) is str else repr(v)}"
            for k, v in record.__dict__.items()
            if k not in self._STANDARD
        ]
        if extras:
            head, sep, tail = line.partition("\n")
            line = head + " " + " ".join(extras) + sep + tail
        return line


async def _check_paths(config: Config) -> None:
    """Refuse, before listening, file sinks whose file cannot be written: each is
    opened for appending as the sink will open it (a link to a missing directory, a
    file system that refuses new files, a file that takes no writes), creating it as
    ``FileHandler`` does; a FIFO is left alone (its open would wait for a reader)."""

    def check() -> None:
        for name, sink in config.sinks.items():
            path = getattr(sink, "baseFilename", None)
            if not isinstance(path, str):
                continue
            if os.path.isdir(path):
                raise CollectorError(f"sinks.{name}: {path}: a directory, not a file")
            try:
                if stat.S_ISFIFO(os.stat(path).st_mode):
                    continue
            except OSError:
                pass  # not there yet: the open below says whether it can be
            if str(getattr(sink, "mode", "a")).startswith("x"):
                continue  # created by the sink itself, and only if it is not there
            try:
                with open(path, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise CollectorError(f"sinks.{name}: {path}: cannot be written ({why})") from None

    await asyncio.to_thread(check)


_SYSLOG = frozenset(("syslog_udp", "syslog_tcp"))


class _Collector(Receiver):
    """A Receiver whose records go to a Dispatcher, with back-pressure."""

    #: records between two looks at the dispatcher's backlog
    CHECK_EVERY = 512

    def __init__(self, dispatcher: Any, settings: Settings) -> None:
        super().__init__(
            host=settings.host,
            tcp=settings.tcp,
            udp=settings.udp,
            syslog=settings.syslog,
            http=settings.http,
            limits=settings.limits(),
        )
        self.dispatcher = dispatcher
        self.handle = dispatcher.handler.handle
        self.annotate = settings.annotate
        self._since_check = 0
        self._waiter: asyncio.Task[None] | None = None

    def deliver(self, channel: str, fields: dict[str, Any], peer: str) -> None:
        if channel in _SYSLOG:
            fields = syslog_record_fields(fields)
        record = rebuild(fields)
        if self.annotate:
            d = record.__dict__
            d["received_via"] = channel
            d["received_from"] = peer
        self.handle(record)
        self._since_check += 1

    def _after_data(self) -> None:
        super()._after_data()
        if self._since_check < self.CHECK_EVERY:
            return
        self._since_check = 0
        # the loop thread never blocks on a full dispatcher queue (records from it
        # go in past the bound): stop reading the connections instead, so peers
        # wait in TCP and memory stays bounded
        if self._closing:
            return  # the drain reads on: what peers send now must not wait unread
        if self.dispatcher.stats().queued > self.dispatcher.queue_size and self._waiter is None:
            self.pause()
            self._waiter = asyncio.get_running_loop().create_task(
                self._resume_when_drained(), name="aiologsinks-collector-backpressure"
            )

    async def _resume_when_drained(self) -> None:
        try:
            low = self.dispatcher.queue_size // 2
            while self.dispatcher.stats().queued > low and not self._closing:
                # a flush returns once what is queued now was handled: the backlog
                # has drained by then (bounded, so shutdown is never held up)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.dispatcher.flush(), 0.5)
        finally:
            self._waiter = None
            self.resume()

    async def aclose(self, grace: float = 0.0) -> None:
        waiter = self._waiter
        if waiter is not None:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        await super().aclose(grace)


_reopen_pending: set[int] = set()


def _make_reopenable(sink: Any) -> bool:
    """Let SIGHUP reopen ``sink``'s file before its next batch (in its own lane, so
    never in the middle of a write)."""
    close_file = getattr(sink, "close_file", None)
    if close_file is None or not inspect.iscoroutinefunction(close_file):
        return False
    original = sink.emit_batch

    async def emit_batch(records: Any) -> None:
        if id(sink) in _reopen_pending:
            _reopen_pending.discard(id(sink))
            try:
                await close_file()  # the write below opens the path again
            except Exception:  # noqa: BLE001 - a failed close must not cost the batch
                sink.handleError(logging.makeLogRecord({"msg": "reopen failed"}))
        await original(records)

    setattr(sink, "emit_batch", emit_batch)  # noqa: B010 - an instance override
    return True


def _summary(receiver: Receiver) -> str:
    parts = []
    for name, c in receiver.counts.items():
        if not (c.received or c.invalid or c.refused or c.timeouts or c.dropped):
            continue
        text = f"{name} {c.received} received/{c.invalid} invalid"
        if c.refused:
            text += f"/{c.refused} refused"
        if c.timeouts:
            text += f"/{c.timeouts} timed out"
        if c.dropped:
            text += f"/{c.dropped} dropped"
        parts.append(text)
    return ", ".join(parts) or "nothing received"


def _sink_summary(stats: Any) -> str:
    parts = []
    for name, s in stats.sinks.items():
        lost = s.dropped + s.errors + s.undelivered
        # delivered, not emitted: a network sink emits into its outage buffer, and a
        # record given up there is counted lost as well
        parts.append(f"{name} {s.delivered} written/{lost} lost")
    # and what never reached a sink: dropped from the full queue, or still in it when
    # the drain gave up (both went to the fallback, and count as lost here too)
    queue_lost = stats.dropped + stats.after_close + stats.undelivered
    if queue_lost:
        parts.append(f"queue {queue_lost} lost")
    return ", ".join(parts)


async def serve(
    settings: Settings, sink_config: Config | Mapping[str, Any], err: IO[str] | None = None
) -> int:
    """Run the collector until SIGTERM/SIGINT; return the exit code (0, or 2 with a
    one-line message on ``err`` when a file or an address cannot be used)."""
    err = err or sys.stderr
    loop = asyncio.get_running_loop()
    config = sink_config if isinstance(sink_config, Config) else from_dict(sink_config)
    # received records reach the shim directly: no logger gets it, or this process's
    # own logging (asyncio's warnings, a library's) would be written with them
    config = dataclasses.replace(config, loggers=[])
    await _check_paths(config)
    stop = asyncio.Event()
    sinks = [*config.sinks.values()]
    reopenable = [s for s in sinks if _make_reopenable(s)]

    def hangup() -> None:
        _reopen_pending.update(id(s) for s in reopenable)
        _say(f"aiologsinks receive: reopening {len(reopenable)} file(s)", file=err, flush=True)

    handled = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    receiver: _Collector | None = None
    stats_task: asyncio.Task[None] | None = None
    try:
        async with install_config(config) as dispatcher:
            receiver = _Collector(dispatcher, settings)
            try:
                await receiver.start()
            except ListenError as exc:
                raise CollectorError(str(exc)) from None
            hosts = receiver.hosts
            listening = ", ".join(
                f"{k} {_address(h, v)}" for k, v in receiver.ports.items() for h in hosts
            )
            _say(f"aiologsinks receive: listening on {listening}", file=err, flush=True)
            if settings.stats_interval > 0:
                stats_task = loop.create_task(
                    _print_stats(receiver, dispatcher, settings.stats_interval, err)
                )
            await stop.wait()
            started = loop.time()
            await receiver.aclose(grace=settings.drain_timeout / 2)
            left = max(0.5, settings.drain_timeout - (loop.time() - started))
            final = await dispatcher.aclose(timeout=left)
    finally:
        if stats_task is not None:
            stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats_task
        if receiver is not None:
            await receiver.aclose()
        for sig in handled:
            loop.remove_signal_handler(sig)
        _reopen_pending.difference_update(id(s) for s in reopenable)
    assert receiver is not None
    _say(
        f"aiologsinks receive: stopped; {_summary(receiver)}; sinks: {_sink_summary(final)}",
        file=err,
        flush=True,
    )
    return 0


def _say(text: str, file: IO[str], flush: bool = True) -> None:
    file.write(text + "\n")
    if flush:
        file.flush()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _print_stats(receiver: Receiver, dispatcher: Any, every: float, err: IO[str]) -> None:
    while True:
        await asyncio.sleep(every)
        stats = dispatcher.stats()
        _say(
            f"aiologsinks receive: stats {_summary(receiver)}; "
            f"connections {receiver.connections}, buffered {receiver.buffered} B, "
            f"queued {stats.queued}; sinks: {_sink_summary(stats)}",
            file=err,
            flush=True,
        )


def run(
    settings: Settings,
    sink_config: Config | Mapping[str, Any],
    explain: Callable[[str], str] = str,
) -> int:
    """Run :func:`serve` in a new event loop; mistakes print one line (through
    ``explain``: the command line names what the user gave), exit code 2."""
    try:
        return asyncio.run(serve(settings, sink_config))
    except (CollectorError, ConfigError) as exc:
        _say(f"aiologsinks receive: error: {explain(str(exc))}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during shutdown
        return 130
