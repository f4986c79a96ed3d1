"""The collector as operators run it: a config file, rotation, signals, errors."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.handlers
import math
import os
import pickle
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from aiologsinks._collector._channels import ReceiverLimits
from aiologsinks._collector._daemon import (
    MAX_PICKLE_DEPTH,
    _sink_summary,
    serve,
    settings_from,
    simple_config,
)
from aiologsinks._stats import DispatcherStats, SinkStats
from tests.conftest import require
from tests.helpers import ClosingHTTPHandler, drive, has_ipv6_loopback
from tests.peers.collector import ROOT, Collector
from tests.peers.logrotate import Logrotate

FORMAT = (
    "%(asctime)s.%(msecs)03d %(process)d %(thread)d %(name)s %(levelname)s %(message)s"
    " rid=%(request_id)s"
)


def records(n: int, name: str = "worker", start: int = 0) -> list[logging.LogRecord]:
    out = []
    for i in range(start, start + n):
        r = logging.LogRecord(
            name, logging.WARNING, "/srv/app.py", i, "request %d done", (i,), None
        )
        r.request_id = f"r-{i}"
        r.created -= 3600 + i  # a time that is not the collector's
        r.msecs = float(i % 1000)
        out.append(r)
    return out


def send_tcp(port: int, recs: list[logging.LogRecord], host: str = "127.0.0.1") -> None:
    handler = logging.handlers.SocketHandler(host, port)
    try:
        for r in recs:
            handler.handle(r)
    finally:
        handler.close()


def rotated_lines(directory: Path, base: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(directory.glob(base + "*")):
        lines.extend(path.read_text().splitlines())
    return lines


def rotating_config(tmp_path: Path, **collector: Any) -> dict[str, Any]:
    return {
        "collector": {"tcp": 0, **collector},
        "formatters": {"full": {"format": FORMAT}},
        "sinks": {
            "file": {
                "type": "RotatingFileSink",
                "filename": str(tmp_path / "app.log"),
                "maxBytes": 4000,
                "backupCount": 1000,
                "formatter": "full",
            }
        },
    }


async def test_records_are_formatted_as_at_the_source_in_rotated_files(tmp_path: Path) -> None:
    recs = records(300)
    async with Collector(rotating_config(tmp_path), tmp_path) as collector:
        await asyncio.to_thread(send_tcp, collector.ports["tcp"], recs)
        assert await collector.stop() == 0
    assert "tcp 300 received/0 invalid" in collector.summary
    assert "file 300 written/0 lost" in collector.summary
    got = await asyncio.to_thread(rotated_lines, tmp_path, "app.log")
    expected = [logging.Formatter(FORMAT).format(r) for r in recs]
    assert sorted(got) == sorted(expected)  # created, msecs, process, thread, extra fields
    assert len(list(tmp_path.glob("app.log.*"))) > 5  # it did roll over


async def test_sighup_from_real_logrotate_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    config = rotating_config(tmp_path, stats_interval=0.05)
    config["sinks"]["file"] = {"type": "FileSink", "filename": str(log), "formatter": "full"}
    async with Collector(config, tmp_path) as collector:
        rotate = Logrotate(log)
        rotate.config.write_text(
            f"{log} {{\n    missingok\n    create 0644\n    rotate 100\n    notifempty\n"
            f"    postrotate\n        kill -HUP {collector.pid}\n    endscript\n}}\n"
        )
        port = collector.ports["tcp"]
        await asyncio.to_thread(send_tcp, port, records(200))
        for round_ in range(1, 4):
            # rotate once the records are in the file (logrotate skips an empty one)
            await collector.wait_line(f"file {200 * round_} written")
            await rotate.rotate()
            await collector.wait_line("reopening", count=round_)
            await asyncio.to_thread(send_tcp, port, records(200, start=200 * round_))
        assert await collector.stop() == 0
    got = await asyncio.to_thread(rotated_lines, tmp_path, "app.log")
    ids = sorted(int(line.rsplit("rid=r-", 1)[1]) for line in got)
    assert ids == list(range(800))  # every record once, none lost, none doubled
    current = (await asyncio.to_thread(log.read_text)).splitlines()
    assert current and all("rid=r-" in ln for ln in current)
    assert max(int(ln.rsplit("rid=r-", 1)[1]) for ln in current) == 799
    assert len(list(tmp_path.glob("app.log.*"))) == 3


def frame(obj: Any, protocol: int = 1) -> bytes:
    data = pickle.dumps(obj, protocol)
    return struct.pack(">L", len(data)) + data


async def test_every_channel_writes_one_safe_line_per_record(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiologsinks", "receive", "--tcp", "0", "--syslog", "0",
        "--http", "0", "--out", str(out), stderr=asyncio.subprocess.PIPE,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        ports = {
            p.split(" ")[0]: int(p.rsplit(":", 1)[1]) for p in line.split("on ", 1)[1].split(", ")
        }
        # stdlib HTTPHandler: msg and args unmerged, every value str() (GET and POST)
        for method in ("GET", "POST"):
            handler = ClosingHTTPHandler(f"127.0.0.1:{ports['http']}", "/log", method)
            rec = logging.LogRecord(
                "web", logging.ERROR, __file__, 1, f"{method} %d items", (3,), None
            )
            await asyncio.to_thread(drive, handler, [rec])
        # stdlib SysLogHandler over TCP: NUL-terminated messages with LF inside
        syslog = await asyncio.to_thread(
            logging.handlers.SysLogHandler, ("127.0.0.1", ports["syslog"]),
            logging.handlers.SysLogHandler.LOG_LOCAL3, socket.SOCK_STREAM,
        )  # fmt: skip
        multi = logging.LogRecord(
            "s", logging.WARNING, __file__, 1, "first\nsecond\nthird", None, None
        )
        await asyncio.to_thread(drive, syslog, [multi, multi])
        # forged lines, terminal escapes, a bad frame in the middle of a connection
        _, writer = await asyncio.open_connection("127.0.0.1", ports["tcp"])
        writer.write(
            frame(
                {
                    "name": "evil",
                    "msg": "ok\n2026-01-01 00:00:00,000 [tcp] CRITICAL root: forged\x1b[2J",
                }
            )
        )
        writer.write(
            frame({"severity": 3}) + frame(["not", "a", "dict"]) + b"\x00\x00\x00\x02\x80\x05"
        )
        writer.write(frame({"name": "after", "msg": "still read", "levelname": "INFO"}))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        tail = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "http 2 received/0 invalid" in tail
    assert "syslog_tcp 2 received/0 invalid" in tail
    assert "tcp 3 received/2 invalid" in tail  # {"severity": 3} is a record with defaults
    lines = (await asyncio.to_thread(out.read_text)).splitlines()
    assert len(lines) == 7, lines
    assert any(ln.endswith("[http] ERROR web: GET 3 items") for ln in lines), lines
    assert any(ln.endswith("[http] ERROR web: POST 3 items") for ln in lines), lines
    assert not any(ln.endswith("None") for ln in lines)
    assert sum(ln.endswith("WARNING syslog.local3: first\\nsecond\\nthird") for ln in lines) == 2
    evil = next(ln for ln in lines if " evil: " in ln)
    assert evil.endswith("evil: ok\\n2026-01-01 00:00:00,000 [tcp] CRITICAL root: forged\\x1b[2J")
    assert not any("\x1b" in ln or ln.startswith("2026-01-01") for ln in lines)
    assert lines[-1].endswith("[tcp] INFO after: still read")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--tcp", "0", "--out", "/nonexistent/dir/x.log"],
            "argument --out: directory '/nonexistent/dir' of '/nonexistent/dir/x.log' does not"
            " exist\n",
        ),
        # a link to a missing directory, a file system refusing new files, a file that
        # takes no writes: they ran, every record lost, and exited 0
        (["--tcp", "0", "--out", "DANGLING"], "argument --out: directory 'MISSING' of 'DANGLING'"),
        (["--tcp", "0", "--out", "/proc/version"], "argument --out: /proc/version: cannot be"),
        (["--tcp", "0", "--out", "/proc"], "argument --out: '/proc' is a directory\n"),
        (["--config", "/nonexistent/collector.toml"], "cannot read /nonexistent/collector.toml"),
        (["--out", "x.log"], "no channel to listen on"),
        (["--tcp", "0", "--host", "no-such-host.invalid"], "unknown address"),
        (["--tcp", "PORT"], "address already in use"),
        (
            ["--tcp", "0", "--drain-timeout", "inf"],
            "--drain-timeout: expected seconds > 0, got inf",
        ),
        (["--tcp", "0", "--idle-timeout", "nan"], "--idle-timeout: expected seconds > 0, got nan"),
        (["--tcp", "abc"], "--tcp: expected a port 0-65535, got 'abc'"),
        # syslog listens on UDP and TCP: a clash of the user's own ports, said as such
        (
            ["--udp", "PORT", "--syslog", "PORT"],
            "collector.syslog: port PORT is udp's already (syslog and udp both listen on UDP",
        ),
        # the command's own line, not the top-level usage
        (["--tpc", "1"], "aiologsinks receive: error: unrecognized arguments: --tpc 1"),
        (["--tcp", "0", "--max-frame", "1k"], "--max-frame: expected an int >= 1, got '1k'"),
        (["--tcp", "0", "--stats-interval", "-1"], "--stats-interval: expected seconds >= 0"),
        # a configured sink type that importlib refuses with a ValueError, not ImportError
        (["--config", "BADTYPE"], "sinks.x.type: cannot import ':X'"),
    ],
)
async def test_unusable_paths_and_addresses_exit_2_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    bad_type = tmp_path / "bad-type.toml"
    bad_type.write_text('[collector]\ntcp = 0\n[sinks.x]\ntype = ":X"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        dangling = tmp_path / "dangling.log"
        dangling.symlink_to(tmp_path / "missing" / "real.log")
        given = {"PORT": port, "BADTYPE": str(bad_type), "DANGLING": str(dangling)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiologsinks", "receive",
            *[given.get(a, a) for a in args],
            stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    message = message.replace("DANGLING", given["DANGLING"]).replace("PORT", port)
    message = message.replace("MISSING", str(tmp_path / "missing"))
    assert proc.returncode == 2, text
    assert text.count("\n") == 1 and message in text and "Traceback" not in text, text


async def receive_with_config(collector: Collector) -> tuple[int | None, str]:
    """Run ``python -m aiologsinks receive --config`` on ``collector``'s file until it
    exits (bounded): its return code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiologsinks", "receive", "--config", str(collector.path),
        stderr=asyncio.subprocess.PIPE, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, err.decode()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_frame", "big", "expected a number, got 'big'"),
        # nan and inf would silently remove the limit they set
        ("idle_timeout", math.nan, "expected seconds > 0, got nan"),
        ("read_timeout", math.nan, "expected seconds > 0, got nan"),
        ("drain_timeout", math.inf, "expected seconds > 0, got inf"),
        ("stats_interval", math.nan, "expected seconds >= 0, got nan"),
        ("max_pickle_depth", 100_000, "expected an int 1-200, got 100000"),
    ],
)
async def test_bad_config_key_is_named(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    config = rotating_config(tmp_path, **{key: value})
    collector = Collector(config, tmp_path)
    returncode, err = await receive_with_config(collector)
    assert returncode == 2
    assert err.strip() == (
        f"aiologsinks receive: error: {collector.path}: collector.{key}: {message}"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"sinks": {"file": {"type": "RotatingFileSink", "filename": "x.log", "max_bytes": 9}}},
            "sinks.file.max_bytes: unknown parameter of RotatingFileSink",
        ),
        ({"formatters": {"full": {"fmt": "%(message)s"}}}, "formatters.full.fmt"),
        ({"dispatcher": {"queue_size": 0}}, "dispatcher.queue_size"),
        # received records never pass through the collector's loggers
        ({"loggers": {"root": {"level": "ERROR"}}}, "loggers: not used by the collector"),
    ],
    ids=["sink", "formatter", "dispatcher", "loggers"],
)
async def test_a_mistake_in_the_sink_configuration_names_the_file(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    config = rotating_config(tmp_path)
    config.update(extra)
    collector = Collector(config, tmp_path)
    returncode, text = await receive_with_config(collector)
    assert returncode == 2, text
    assert text.startswith(f"aiologsinks receive: error: {collector.path}: {message}"), text
    assert text.count("\n") == 1, text


def test_limits_refuse_infinite_timeouts_and_a_buffer_smaller_than_a_frame() -> None:
    for name in ("idle_timeout", "read_timeout"):
        for value in (math.nan, math.inf):
            with pytest.raises(ValueError, match=name):
                ReceiverLimits(**{name: value})
    with pytest.raises(ValueError, match=r"^max_buffered: expected at least max_frame \(4096\)"):
        ReceiverLimits(max_frame=4096, max_buffered=4095)
    settings, _ = settings_from({"collector": {"tcp": 0, "max_pickle_depth": MAX_PICKLE_DEPTH}})
    assert settings.limits().unpickle.max_depth == MAX_PICKLE_DEPTH


async def test_listens_on_ipv4_and_ipv6_and_prints_stats(tmp_path: Path) -> None:
    require(has_ipv6_loopback(), "an IPv6 loopback (::1)")
    config = rotating_config(tmp_path, host=["127.0.0.1", "::1"], stats_interval=0.05)
    async with Collector(config, tmp_path) as collector:
        port = collector.ports["tcp"]
        await asyncio.to_thread(send_tcp, port, records(5, "v4"), "127.0.0.1")
        await asyncio.to_thread(send_tcp, port, records(5, "v6", 5), "::1")
        await collector.wait_line("tcp 10 received/0 invalid")
        stats = await collector.wait_line("stats ")
        assert "connections" in stats and "sinks: file" in stats
        assert await collector.stop(signal.SIGINT) == 0
    assert "tcp 10 received/0 invalid" in collector.summary
    got = await asyncio.to_thread(rotated_lines, tmp_path, "app.log")
    assert sorted(int(ln.rsplit("r-", 1)[1]) for ln in got) == list(range(10))


def test_the_stop_summary_counts_what_never_left_the_queue() -> None:
    # records still queued when the drain gave up went to the fallback: the summary
    # an operator reads must count them with the rest of what was lost
    sink = SinkStats("out", received=20, emitted=10, filtered=0, dropped=4, errors=1,
                     depth=0, undelivered=5, delivered=10)  # fmt: skip
    stats = DispatcherStats(queued=0, dropped=2, after_close=3, sinks={"out": sink},
                            undelivered=7)  # fmt: skip
    assert _sink_summary(stats) == "out 10 written/10 lost, queue 12 lost"
    assert stats.lost == 22


def test_the_summary_counts_as_written_only_what_a_network_target_took() -> None:
    # a network sink emits into its outage buffer: 500 records emitted to a target that
    # never came up were reported "500 written/500 lost"
    sink = SinkStats("down", received=500, emitted=500, filtered=0, dropped=0, errors=500,
                     depth=0, undelivered=0, delivered=0)  # fmt: skip
    stats = DispatcherStats(queued=0, dropped=0, after_close=0, sinks={"down": sink},
                            undelivered=0)  # fmt: skip
    assert _sink_summary(stats) == "down 0 written/500 lost"


class _Said(io.StringIO):
    """The daemon's stderr, telling when a line arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)


async def test_the_collectors_own_logging_stays_out_of_what_it_writes(tmp_path: Path) -> None:
    """The configuration's shim went on the root logger (none named): the collector
    process's own records (asyncio's warnings, a library's) were written with the
    received ones."""
    out = tmp_path / "out.log"
    settings, sink_config = settings_from(
        {"collector": {"tcp": 0, "stats_interval": 0.05}, **simple_config(str(out))}
    )
    err = _Said()

    async def said(text: str) -> str:
        while text not in err.getvalue():
            err.changed.clear()
            await asyncio.wait_for(err.changed.wait(), 10)
        return err.getvalue()

    serving = asyncio.ensure_future(serve(settings, sink_config, err))
    listening = await said("listening on")
    port = int(listening.split("tcp 127.0.0.1:", 1)[1].split()[0].rstrip(","))
    logging.getLogger("t.collector.own").warning("the collector's own")
    await asyncio.to_thread(send_tcp, port, records(1, "sent"))
    await said("tcp 1 received")
    os.kill(os.getpid(), signal.SIGTERM)  # the daemon's stop (its signal handler)
    assert await asyncio.wait_for(serving, 10) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and "request 0 done" in lines[0], lines
