"""Configuration from dicts and TOML: every sink type loads; every mistake names its key path."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import queue
import socket
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks import config
from aiologsinks.config import ConfigError

#: minimal parameters for each sink type of the contract, as TOML
SINK_TOML = {
    "FileSink": 'filename = "{d}/file.log"',
    "WatchedFileSink": 'filename = "{d}/watched.log"',
    "RotatingFileSink": 'filename = "{d}/rot.log"\nmaxBytes = 1_000_000\nbackupCount = 3',
    "TimedRotatingFileSink": 'filename = "{d}/timed.log"\nwhen = "midnight"\natTime = 04:30:00',
    "StreamSink": 'stream = "stderr"',
    "NullSink": "",
    "SocketSink": 'host = "127.0.0.1"\nport = 9020',
    "DatagramSink": 'host = "127.0.0.1"\nport = 9021',
    "SysLogSink": 'address = ["127.0.0.1", 5514]\nfacility = "local0"\nsocktype = "tcp"',
    "SMTPSink": (
        'mailhost = ["127.0.0.1", 2525]\nfromaddr = "app@example.com"\n'
        'toaddrs = ["ops@example.com"]\nsubject = "alert"\ndigest_max = 100'
    ),
    "HTTPSink": 'host = "127.0.0.1:8080"\nurl = "/log"\nmethod = "POST"',
    "BufferingSink": "capacity = 10",
    "MemorySink": 'capacity = 10\nflushLevel = "ERROR"\ntarget = "FileSink"',
    "OTLPSink": 'endpoint = "http://127.0.0.1:4318/v1/logs"\nencoding = "json"',
    "KafkaSink": 'topic = "logs"\nbootstrap_servers = "127.0.0.1:9092"\nacks = "all"',
}
#: sinks that cannot be built from TOML here, and why
NOT_IN_TOML = {
    "HandlerSink": "wraps a logging.Handler object (dict config only)",
    "NTEventLogSink": "Windows only",
}


def every_sink_toml(directory: Path) -> tuple[str, list[str]]:
    available = config.sink_types()
    names = [n for n in SINK_TOML if n in available]
    parts = [
        '[dispatcher]\noverflow = "drop_oldest"\nbatch_size = 500\n',
        '[formatters.plain]\nformat = "%(levelname)s %(name)s %(message)s"\n',
        '[filters.app]\nname = "app"\n',
    ]
    for name in names:
        body = SINK_TOML[name].replace("{d}", str(directory))
        parts.append(
            f'[sinks.{name}]\ntype = "{name}"\nlevel = "DEBUG"\nformatter = "plain"\n'
            f'filters = ["app"]\n{body}\n'
        )
    parts.append('[loggers.app]\nlevel = "INFO"\npropagate = false\n')
    return "\n".join(parts), names


def _reset(logger: logging.Logger) -> None:
    """Undo what a dictConfig did to ``logger``, for the next test."""
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_registry_lists_every_exported_concrete_sink() -> None:
    exported = {
        n
        for n in als.__all__
        if isinstance(getattr(als, n), type)
        and issubclass(getattr(als, n), als.Sink)
        and n not in ("Sink",)
        and not n.startswith("Base")
    }
    assert set(config.sink_types()) == exported
    assert exported <= set(SINK_TOML) | set(NOT_IN_TOML), "add the new sink to SINK_TOML"


def test_toml_with_every_sink_type_loads(tmp_path: Path) -> None:
    text, names = every_sink_toml(tmp_path)
    cfg = config.loads(text)
    assert list(cfg.sinks) == names
    for name, sink in cfg.sinks.items():
        assert type(sink).__name__ == name and sink.name == name
        assert sink.level == logging.DEBUG
        assert [type(f) for f in sink.filters] == [logging.Filter]
    assert cfg.dispatcher_options == {"overflow": "drop_oldest", "batch_size": 500}
    assert cfg.loggers == [config.LoggerSpec("app", logging.INFO, False)]
    if "SysLogSink" in cfg.sinks:
        syslog: Any = cfg.sinks["SysLogSink"]
        assert syslog.socktype == socket.SOCK_STREAM and syslog.address == ("127.0.0.1", 5514)
    if "MemorySink" in cfg.sinks:
        memory: Any = cfg.sinks["MemorySink"]
        assert memory.target is cfg.sinks["FileSink"] and "FileSink" in cfg.targets
        assert cfg.sinks["FileSink"] not in cfg.dispatcher().sinks
    smtp: Any = cfg.sinks["SMTPSink"]
    assert (smtp.mailhost, smtp.mailport) == ("127.0.0.1", 2525)
    for sink in cfg.sinks.values():
        sink.close()


def test_short_type_names_and_import_paths(tmp_path: Path) -> None:
    cfg = config.from_dict(
        {
            "sinks": {
                "a": {"type": "rotating_file", "filename": str(tmp_path / "a.log")},
                "b": {"type": "timedrotatingfile", "filename": str(tmp_path / "b.log")},
                "c": {"type": "aiologsinks:NullSink"},
                "d": {"type": "HandlerSink", "handler": logging.NullHandler()},
            }
        }
    )
    assert [type(s).__name__ for s in cfg.sinks.values()] == [
        "RotatingFileSink",
        "TimedRotatingFileSink",
        "NullSink",
        "HandlerSink",
    ]


async def test_dotted_import_paths_work_as_in_dictconfig(tmp_path: Path) -> None:
    # dictConfig's "()" = "logging.Formatter" form, beside our "pkg.mod:name"
    cfg = config.from_dict(
        {
            "formatters": {"f": {"()": "logging.Formatter", "fmt": "[%(levelname)s] %(message)s"}},
            "filters": {"app": {"()": "logging.Filter", "name": "app"}},
            "sinks": {
                "a": {
                    "type": "aiologsinks.FileSink",
                    "filename": str(tmp_path / "a.log"),
                    "formatter": "f",
                    "filters": ["app"],
                },
                "b": {
                    "type": "aiologsinks.sinks.rotating.RotatingFileSink",
                    "filename": str(tmp_path / "b.log"),
                    "namer": "tests.test_config._upper_namer",
                },
            },
            "loggers": {"app": {"level": "INFO", "propagate": False}},
        }
    )
    assert [type(s).__name__ for s in cfg.sinks.values()] == ["FileSink", "RotatingFileSink"]
    assert cfg.sinks["b"].namer is _upper_namer  # type: ignore[attr-defined]
    async with config.install_config(cfg) as dispatcher:
        logging.getLogger("app").info("kept")
        logging.getLogger("app").debug("below the level")
        await dispatcher.flush()
    assert (tmp_path / "a.log").read_text() == "[INFO] kept\n"


MISTAKES = [
    # a dotted path that does not import, or is not a sink
    ('[sinks.x]\ntype = "aiologsinks.Nope"', "sinks.x.type", "cannot import 'aiologsinks.Nope'"),
    ('[sinks.x]\ntype = "logging.Formatter"', "sinks.x.type", "is not a Sink subclass"),
    ('[formatters.f]\n"()" = "logging.Nope"', "formatters.f.()", "cannot import 'logging.Nope'"),
    # (toml, key path, words in the message)
    ('[sinks.x]\ntype = "PigeonSink"', "sinks.x.type", "unknown sink type 'PigeonSink'"),
    ("[sinks.x]\nfilename = 'a'", "sinks.x.type", "missing"),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nmax_bytes = 1',
        "sinks.x.max_bytes",
        "unknown parameter of FileSink",
    ),
    ('[sinks.x]\ntype = "file"', "sinks.x.filename", "missing required parameter"),
    (
        '[sinks.x]\ntype = "rotating_file"\nfilename = "a"\nmaxBytes = "1MB"',
        "sinks.x.maxBytes",
        "expected int, got '1MB'",
    ),
    ('[sinks.x]\ntype = "file"\nfilename = "a"\ndelay = "yes"', "sinks.x.delay", "expected bool"),
    (
        '[sinks.x]\ntype = "rotating_file"\nfilename = "a"\nmaxBytes = -1',
        "sinks.x.maxBytes",
        ">= 0",
    ),
    (
        '[sinks.x]\ntype = "smtp"\nmailhost = ["h", "25"]\n'
        'fromaddr = "a"\ntoaddrs = ["b"]\nsubject = "s"',
        "sinks.x.mailhost",
        "expected str | tuple[str, int]",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nlevel = "LOUD"',
        "sinks.x.level",
        "unknown level name 'LOUD'",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nlevel = true',
        "sinks.x.level",
        "expected a level name",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nformatter = "fancy"',
        "sinks.x.formatter",
        "unknown name 'fancy'",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nfilters = ["nope"]',
        "sinks.x.filters[0]",
        "unknown name 'nope'",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nfilters = "app"',
        "sinks.x.filters",
        "expected a list",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nlane = {size = "big"}',
        "sinks.x.lane.size",
        "expected int",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nlane = {overflow = "spill"}',
        "sinks.x.lane.overflow",
        "expected one of ",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nlane = {depth = 1}',
        "sinks.x.lane.depth",
        "unknown key",
    ),
    (
        '[sinks.x]\ntype = "file"\nfilename = "a"\nlane = {size = 0}',
        "sinks.x.lane.size",
        "expected an int >= 1, got 0",
    ),
    ("[dispatcher]\nqueue_size = 1.5", "dispatcher.queue_size", "expected int, got 1.5"),
    # the Dispatcher's own checks, already at load
    ("[dispatcher]\nqueue_size = 0", "dispatcher.queue_size", "expected an int >= 1, got 0"),
    ("[dispatcher]\nlane_size = -3", "dispatcher.lane_size", "expected an int >= 1, got -3"),
    ("[dispatcher]\nbatch_size = 0", "dispatcher.batch_size", "expected an int >= 1, got 0"),
    ("[dispatcher]\nlinger = -1", "dispatcher.linger", "expected a number >= 0"),
    # a factory that raises on its arguments
    ('[formatters.f]\n"()" = "json:loads"\ns = 3', "formatters.f.()", "loads() raised TypeError"),
    ('[filters.f]\n"()" = "json:loads"\ns = 3', "filters.f.()", "loads() raised TypeError"),
    ('[dispatcher]\noverflow = "spill"', "dispatcher.overflow", "expected one of "),
    ("[dispatcher]\nworkers = 4", "dispatcher.workers", "unknown option"),
    ('[formatters.f]\nfmt = "%(message)s"', "formatters.f.fmt", "unknown key"),
    ('[formatters.f]\nformat = "%(message)s"\nstyle = "<"', "formatters.f.style", "expected '%'"),
    ('[formatters.f]\nformat = "{message}"\nstyle = "%"', "formatters.f.format", "Invalid format"),
    ("[filters.f]\nname = 3", "filters.f.name", "expected str"),
    ('[filters.f]\n"()" = "no.such.module:Filter"', "filters.f.()", "cannot import"),
    # what importlib raises besides ImportError: an empty or a relative module name
    ('[sinks.x]\ntype = ":X"', "sinks.x.type", "cannot import ':X': ValueError"),
    ('[sinks.x]\ntype = ".rel:X"', "sinks.x.type", "cannot import '.rel:X': TypeError"),
    ('[formatters.f]\n"()" = ":F"', "formatters.f.()", "cannot import ':F'"),
    ('[filters.f]\n"()" = "builtins:object"', "filters.f.()", "did not return a filter"),
    ('[sinks.x]\ntype = "file"\nfilename = "a\\u0000b"', "sinks.x.filename", "without NUL"),
    ('[loggers.app]\nlevel = "VERBOSE"', "loggers.app.level", "unknown level name 'VERBOSE'"),
    ('[loggers.app]\npropagate = "no"', "loggers.app.propagate", "expected bool"),
    ('[loggers.app]\nhandlers = ["x"]', "loggers.app.handlers", "unknown key"),
    ("[handlers.x]\nclass = 'x'", "handlers", "unknown section"),
    ("version = 2", "version", "expected 1"),
    ("sinks = 3", "sinks", "expected a table"),
]


@pytest.mark.parametrize(("text", "path", "words"), MISTAKES, ids=[m[1] for m in MISTAKES])
def test_each_mistake_names_its_key_path(text: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_target_reference_errors() -> None:
    with pytest.raises(ConfigError, match=r"^sinks.m.target: no sink named 'ghost'"):
        config.from_dict({"sinks": {"m": {"type": "memory", "capacity": 1, "target": "ghost"}}})
    with pytest.raises(ConfigError, match=r"^sinks.m.target: sink 'm' refers to itself"):
        config.from_dict({"sinks": {"m": {"type": "memory", "capacity": 1, "target": "m"}}})
    with pytest.raises(ConfigError, match=r"^sinks.n.target: targets form a cycle: m -> n -> m$"):
        config.from_dict(
            {
                "sinks": {
                    "m": {"type": "memory", "capacity": 1, "target": "n"},
                    "n": {"type": "memory", "capacity": 1, "target": "m"},
                }
            }
        )


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.loads("[sinks\n")


async def test_install_config_delivers_and_restores_loggers(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    log = tmp_path / "app.log"
    path.write_text(
        "[formatters.plain]\nformat = '%(levelname)s %(name)s %(message)s'\n"
        f"[sinks.file]\ntype = 'file'\nfilename = '{log}'\nformatter = 'plain'\n"
        "[loggers.'cfg.app']\nlevel = 'INFO'\npropagate = false\n"
    )
    logger = logging.getLogger("cfg.app")
    async with config.install_config(path) as dispatcher:
        assert logger.level == logging.INFO and not logger.propagate
        logger.debug("hidden")
        logger.info("one %d", 1)
        logger.warning("two")
        await dispatcher.flush()
        assert "file" in dispatcher.stats().sinks
    assert logger.level == logging.NOTSET and logger.propagate and not logger.handlers
    assert log.read_text().splitlines() == ["INFO cfg.app one 1", "WARNING cfg.app two"]


async def test_memory_target_is_fed_by_the_memory_sink_only(tmp_path: Path) -> None:
    log = tmp_path / "mem.log"
    cfg = {
        "sinks": {
            "mem": {"type": "memory", "capacity": 100, "flushLevel": "ERROR", "target": "file"},
            "file": {"type": "file", "filename": str(log)},
        },
        "loggers": {"cfg.mem": {"propagate": False, "level": "DEBUG"}},
    }
    logger = logging.getLogger("cfg.mem")
    async with config.install_config(cfg):
        logger.info("a")
        logger.error("b")
    assert log.read_text().splitlines() == ["a", "b"]


async def test_dictconfig_factory_starts_on_the_running_loop(tmp_path: Path) -> None:
    log = tmp_path / "dict.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "als": {
                    "()": "aiologsinks.config.dictconfig_handler",
                    "config": {
                        "formatters": {"f": {"format": "%(levelname)s %(message)s"}},
                        "sinks": {"file": {"type": "file", "filename": str(log), "formatter": "f"}},
                    },
                }
            },
            "loggers": {"dc": {"level": "INFO", "handlers": ["als"], "propagate": False}},
        }
    )
    logger = logging.getLogger("dc")
    try:
        (handler,) = logger.handlers
        assert isinstance(handler, als.QueueHandler)
        logger.info("from dictConfig")
        await config.start_dictconfig()  # already started: a no-op
        await config.aclose_dictconfig()
    finally:
        _reset(logger)
    assert log.read_text() == "INFO from dictConfig\n"


def test_dictconfig_factory_outside_a_loop_waits_for_start(tmp_path: Path) -> None:
    import asyncio

    log = tmp_path / "late.log"
    handler = config.dictconfig_handler({"sinks": {"f": {"type": "file", "filename": str(log)}}})
    logger = logging.getLogger("dc.late")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("queued before the loop")

        async def main() -> None:
            await config.start_dictconfig()
            logger.warning("after start")
            await config.aclose_dictconfig()

        asyncio.run(main())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert log.read_text().splitlines() == ["queued before the loop", "after start"]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (indented source) in a fresh interpreter, bounded."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


#: dictConfig at import time, no loop anywhere, with a sink whose aopen() takes
#: logging's module lock (a new logger, a new handler), on the background loop, while
#: dictConfig holds that lock in the main thread and calls the factory
LOCK_TAKING_SINK_SCRIPT = """
import logging, logging.config, sys
import aiologsinks as als

class LockTakingSink(als.FileSink):
    async def aopen(self):
        logging.getLogger("lock.taking.sink.%d" % id(self))
        logging.Handler()
        await super().aopen()

als.config.register_sink_type(LockTakingSink)
try:
    logging.config.dictConfig({
        "version": 1,
        "handlers": {"als": {
            "()": "aiologsinks.config.dictconfig_handler",
            "config": {"sinks": {"f": {"type": "LockTakingSink", "filename": sys.argv[1]}}},
        }},
        "root": {"level": "INFO", "handlers": ["als"]},
    })
except Exception as exc:
    print("dictConfig failed:", repr(exc), repr(exc.__cause__))
    raise SystemExit(1)
print("configured")
logging.getLogger("app").info("delivered at exit")
"""


def test_dictconfig_outside_a_loop_does_not_wait_for_the_start_holding_loggings_lock(
    tmp_path: Path,
) -> None:
    # waiting for the start there deadlocked with the sink's aopen() until a 10 s bound
    # made dictConfig fail: "Unable to configure handler 'als'", nothing set up
    target = tmp_path / "lock.log"
    result = run_script(LOCK_TAKING_SINK_SCRIPT, str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "configured\n"
    assert result.stderr == ""
    assert target.read_text() == "delivered at exit\n"


#: dictConfig at import time starting the background loop's thread, whose first steps
#: take logging's module lock (as a collection there running a handler's weakref
#: callback, logging._removeHandlerRef, does), while dictConfig holds that lock
THREAD_TAKING_LOCK_SCRIPT = """
import asyncio, logging, logging.config, sys, threading

class LockTakingPolicy(asyncio.DefaultEventLoopPolicy):
    def set_event_loop(self, loop):
        logging.getLogger("policy.%d" % threading.get_ident())
        super().set_event_loop(loop)

asyncio.set_event_loop_policy(LockTakingPolicy())
logging.config.dictConfig({
    "version": 1,
    "handlers": {
        "als": {"()": "aiologsinks.config.dictconfig_handler",
                "config": {"sinks": {"f": {"type": "FileSink", "filename": sys.argv[1]}}}},
    },
    "root": {"level": "INFO", "handlers": ["als"]},
})
print("configured")
logging.getLogger("app").info("delivered at exit")
"""


def test_dictconfig_does_not_wait_for_the_background_thread_holding_loggings_lock(
    tmp_path: Path,
) -> None:
    # the background loop's start waited for the new thread's loop to run: that
    # thread waited for logging's lock, dictConfig's thread for the loop, for ever
    target = tmp_path / "thread.log"
    result = run_script(THREAD_TAKING_LOCK_SCRIPT, str(target))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == "configured\n"
    assert target.read_text() == "delivered at exit\n"


def test_dictconfig_outside_a_loop_still_refuses_a_sink_running_elsewhere_at_once(
    tmp_path: Path,
) -> None:
    # the start is not waited for, so what would make it fail is checked first: the
    # error is dictConfig's, not a line on stderr later
    sink = als.FileSink(str(tmp_path / "busy.log"))
    second = als.Dispatcher(sink)  # made while the sink is free
    with als.Dispatcher(sink):  # then started elsewhere: on the background loop
        handler = config.DispatcherQueueHandler(queue.Queue())
        with pytest.raises(als.DispatcherStateError, match="another dispatcher"):
            handler.listener = second
    assert second.state is als.DispatcherState.NEW


# -- completeness: everything a constructor accepts, fail-fast, files -----------------------


@pytest.mark.parametrize("data", [{}, {"sinks": {}}, {"dispatcher": {"overflow": "block"}}])
def test_an_empty_config_is_an_error(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^sinks: no sink configured") as info:
        config.from_dict(data)
    assert info.value.path == "sinks"


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[sinks.f]\ntype = "file"\nfilename = \n')
    with pytest.raises(ConfigError, match=r"line 3") as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: invalid TOML")
    assert info.value.file == str(path)


def test_a_mistake_in_a_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text(
        f'[sinks.f]\ntype = "rotating_file"\nfilename = "{tmp_path}/a.log"\nmaxBytes = -1\n'
    )
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"{path}: sinks.f.maxBytes: expected an int >= 0, got -1"
    assert (info.value.path, info.value.file) == ("sinks.f.maxBytes", str(path))
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        config.load(tmp_path / "missing.toml")


def test_a_missing_log_directory_fails_at_load(tmp_path: Path) -> None:
    text = f'[sinks.f]\ntype = "file"\nfilename = "{tmp_path}/nope/a.log"\n'
    with pytest.raises(ConfigError, match=r"^sinks\.f\.filename: directory .* does not exist"):
        config.loads(text)
    built = config.loads(text + "mkdir = true\n")
    assert (tmp_path / "nope").is_dir()
    assert isinstance(built.sinks["f"], als.FileSink)


def test_a_file_that_is_not_utf_8_fails_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[sinks.f]\ntype = "file"\nfilename = "caf\u00e9.log"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: invalid TOML: not UTF-8"):
        config.load(path)


def test_an_unknown_encoding_fails_at_load(tmp_path: Path) -> None:
    text = f'[sinks.f]\ntype = "file"\nfilename = "{tmp_path}/a.log"\nencoding = "klingon"\n'
    with pytest.raises(ConfigError, match=r"^sinks\.f\.encoding: unknown encoding 'klingon'"):
        config.loads(text)


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('type = "null"\nlevel = -5', r"^sinks\.s\.level: expected a level >= 0, got -5"),
        ('type = "buffering"\ncapacity = -1', r"^sinks\.s\.capacity: .*>= 0.*-1"),
        (
            'type = "otlp"\nendpoint = "http://127.0.0.1:4318/v1/logs"\nheaders = {a = 1}',
            r"^sinks\.s\.headers: expected a mapping of str to str, got 'a': 1",
        ),
    ],
    ids=["negative level", "negative capacity", "a header that is not text"],
)
def test_values_no_sink_can_use_fail_at_load(table: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        config.loads("[sinks.s]\n" + table + "\n")


async def test_compression_by_name_rotates_into_gzip_files(tmp_path: Path) -> None:
    import gzip

    text = (
        f'[sinks.f]\ntype = "rotating_file"\nfilename = "{tmp_path}/app.log"\n'
        'maxBytes = 100\nbackupCount = 3\nrotator = "gzip"\n'
    )
    built = config.loads(text)
    sink = built.sinks["f"]
    assert sink.rotator is als.gzip_rotator and sink.namer is als.gzip_namer
    log = logging.getLogger("t.config.gzip")
    log.propagate = False
    async with als.install(sink, logger=log):
        for i in range(20):
            log.warning("line %02d with some padding to rotate", i)
    archives = sorted(tmp_path.glob("app.log.*.gz"))
    assert archives, list(tmp_path.iterdir())
    assert gzip.decompress(archives[0].read_bytes()).startswith(b"line")


def _upper_namer(name: str) -> str:
    return name.upper()


def test_rotator_and_namer_by_import_path_and_their_mistakes(tmp_path: Path) -> None:
    base = f'[sinks.f]\ntype = "rotating_file"\nfilename = "{tmp_path}/a.log"\n'
    built = config.loads(base + 'namer = "tests.test_config:_upper_namer"\n')
    assert built.sinks["f"].namer is _upper_namer
    with pytest.raises(ConfigError, match=r"^sinks\.f\.rotator: unknown name 'zip'"):
        config.loads(base + 'rotator = "zip"\n')
    plain = f'[sinks.f]\ntype = "file"\nfilename = "{tmp_path}/a.log"\nrotator = "gzip"\n'
    with pytest.raises(ConfigError, match=r"^sinks\.f\.rotator: FileSink does not rotate"):
        config.loads(plain)


def test_http_backoff_from_a_table() -> None:
    base = '[sinks.h]\ntype = "http"\nhost = "127.0.0.1:8080"\nurl = "/"\nretry = true\n'
    built = config.loads(base + "backoff = { retryStart = 0.5, retryFactor = 3, retryMax = 9 }\n")
    backoff = built.sinks["h"].backoff
    assert isinstance(backoff, als.Backoff)
    assert (backoff.retryStart, backoff.retryFactor, backoff.retryMax) == (0.5, 3.0, 9.0)
    with pytest.raises(ConfigError, match=r"^sinks\.h\.backoff\.retry_start: unknown parameter"):
        config.loads(base + "backoff = { retry_start = 1 }\n")


def test_tls_context_from_a_ca_file(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    smtp = (
        '[sinks.m]\ntype = "smtp"\nmailhost = ["127.0.0.1", 2525]\nfromaddr = "a@example.com"\n'
        'toaddrs = ["b@example.com"]\nsubject = "s"\nuse_tls = true\n'
    )
    built = config.loads(smtp + f'context = "{ca_file}"\n')
    context = built.sinks["m"].context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1
    http = '[sinks.h]\ntype = "http"\nhost = "localhost:8443"\nurl = "/"\nsecure = true\n'
    built = config.loads(http + f'context = {{ cafile = "{ca_file}" }}\n')
    assert isinstance(built.sinks["h"].context, ssl.SSLContext)
    with pytest.raises(
        ConfigError, match=r"^sinks\.m\.context: cannot load TLS material from cafile '.*/missing"
    ):
        config.loads(smtp + f'context = "{tmp_path}/missing.pem"\n')
    with pytest.raises(ConfigError, match=r"^sinks\.m\.context\.cafiles: unknown key"):
        config.loads(smtp + f'context = {{ cafiles = "{ca_file}" }}\n')


def test_a_tls_file_that_cannot_be_loaded_is_named_with_its_key(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("client.example")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    other_key = tmp_path / "other.key"
    ca.issue_cert("other.example").private_key_pem.write_to_path(str(other_key))
    http = '[sinks.h]\ntype = "http"\nhost = "localhost:8443"\nurl = "/"\nsecure = true\n'

    def error(context: str) -> str:
        with pytest.raises(ConfigError) as caught:
            config.loads(http + f"context = {{ {context} }}\n", file="app.toml")
        return str(caught.value)

    ok = f'cafile = "{ca_file}", certfile = "{cert_file}", keyfile = "{key_file}"'
    assert config.loads(http + f"context = {{ {ok} }}\n").sinks["h"].context is not None
    assert error(f'cafile = "{ca_file}", certfile = "nope.pem"') == (
        "app.toml: sinks.h.context.certfile: cannot load TLS material from"
        " certfile 'nope.pem': No such file or directory"
    )
    assert error(f'cafile = "{tmp_path}/gone.pem"').startswith(
        f"app.toml: sinks.h.context.cafile: cannot load TLS material from cafile"
        f" '{tmp_path}/gone.pem': "
    )
    assert error(f'certfile = "{cert_file}", keyfile = "{tmp_path}/gone.key"').startswith(
        f"app.toml: sinks.h.context.keyfile: cannot load TLS material from keyfile"
        f" '{tmp_path}/gone.key': "
    )
    # both files are there, but the key is not the certificate's: the pair is named
    mismatch = error(f'certfile = "{cert_file}", keyfile = "{other_key}"')
    assert mismatch.startswith(
        f"app.toml: sinks.h.context: cannot load TLS material from certfile '{cert_file}'"
        f" and keyfile '{other_key}': "
    )
    # a file that is not a certificate
    assert error(f'cafile = "{key_file}"').startswith(
        f"app.toml: sinks.h.context.cafile: cannot load TLS material from cafile '{key_file}': "
    )


def test_config_has_an_explicit_registry_and_does_not_import_the_package_face() -> None:
    import ast

    source = Path(config.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("aiologsinks") for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            for alias in node.names:  # `from . import x` must name a module, not a face name
                assert alias.name.startswith("_"), alias.name

    class MySink(als.NullSink):
        """A sink defined by an application."""

    config.register_sink_type(MySink)
    try:
        assert type(config.from_dict({"sinks": {"x": {"type": "my"}}}).sinks["x"]) is MySink
    finally:
        config._SINK_TYPES.pop("MySink")


async def test_dictconfig_formatter_and_filters_keys_reach_the_sinks(tmp_path: Path) -> None:
    log_file = tmp_path / "dict.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(levelname)s|%(message)s"}},
            "filters": {"only_app": {"name": "dcf.app"}},
            "handlers": {
                "als": {
                    "()": "aiologsinks.config.dictconfig_handler",
                    "config": {"sinks": {"file": {"type": "file", "filename": str(log_file)}}},
                    "formatter": "plain",
                    "filters": ["only_app"],
                }
            },
            "loggers": {"dcf": {"level": "INFO", "handlers": ["als"], "propagate": False}},
        }
    )
    logger = logging.getLogger("dcf")
    try:
        logging.getLogger("dcf.app").info("kept")
        logging.getLogger("dcf.other").info("filtered out")
        await config.aclose_dictconfig()
    finally:
        _reset(logger)
    assert log_file.read_text() == "INFO|kept\n"


def _queued_config(log_file: Path, names: list[str]) -> dict[str, object]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "file": {"class": "aiologsinks.FileSink", "filename": str(log_file)},
            "queued": {"class": "aiologsinks.config.DispatcherQueueHandler", "handlers": names},
        },
        "loggers": {"dcq": {"level": "INFO", "handlers": ["queued"], "propagate": False}},
    }


def test_a_queued_handler_no_logger_names_survives_a_collection(tmp_path: Path) -> None:
    # "file" is named by the queue handler only; logging's registry holds it weakly, so
    # a collection between dictConfig and the first record must not take it
    import asyncio
    import gc

    log_file = tmp_path / "q.log"
    logging.config.dictConfig(_queued_config(log_file, ["file"]))
    logger = logging.getLogger("dcq")
    try:
        gc.collect()
        logger.warning("after a collection")
        (handler,) = logger.handlers
        assert isinstance(handler.listener, als.Dispatcher)
        asyncio.run(config.aclose_dictconfig())
    finally:
        _reset(logger)
    assert log_file.read_text() == "after a collection\n"


def test_a_queued_handler_naming_no_configured_handler_fails_in_dictconfig(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="queued") as info:
        logging.config.dictConfig(_queued_config(tmp_path / "q.log", ["flie"]))
    # Python 3.12+ finds it in dictConfig itself; before, the handler's own check
    assert "flie" in repr(info.value.__cause__) or "flie" in str(info.value)


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"handlers": []}, "handlers: required"),
        ({"handlers": ["file"], "respect_handler_level": "no"}, "respect_handler_level"),
        # a string: 3.12+ takes its letters for names, ours says what it expected
        ({"handlers": "file"}, "handler 'f'|expected a list of handler names"),
    ],
)
def test_a_queued_handlers_bad_keys_fail_in_dictconfig_on_every_python(
    tmp_path: Path, keys: dict[str, object], named: str
) -> None:
    """What 3.12's dictConfig refuses failed on 3.10/3.11 only at each logging call
    (every record to handleError), the listener being built at the first one."""
    configuration: Any = _queued_config(tmp_path / "q.log", ["file"])
    configuration["handlers"]["queued"].update(keys)
    with pytest.raises(ValueError, match="queued") as info:
        logging.config.dictConfig(configuration)
    assert any(part in str(info.value.__cause__) for part in named.split("|"))
    _reset(logging.getLogger("dcq"))


def test_a_queued_handler_configured_before_any_loop_outlives_the_first_loop(
    tmp_path: Path,
) -> None:
    """Configured with no loop running, the first record logged inside asyncio.run():
    on 3.10/3.11 the listener, built then, started on that loop, and its end closed it
    under the records logged after it (they went to the fallback)."""
    import asyncio

    log_file = tmp_path / "q.log"
    logging.config.dictConfig(_queued_config(log_file, ["file"]))
    logger = logging.getLogger("dcq")

    async def app() -> None:
        for i in range(100):
            logger.info("in the loop %d", i)

    try:
        asyncio.run(app())
        for i in range(10):
            logger.info("after it %d", i)
        asyncio.run(config.aclose_dictconfig())
    finally:
        _reset(logger)
    lines = log_file.read_text().splitlines()
    assert lines == [f"in the loop {i}" for i in range(100)] + [f"after it {i}" for i in range(10)]


def test_a_queued_handler_whose_names_do_not_resolve_reports_each_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # made by hand with a name nothing registered: a logging call does not raise; each
    # record is this handler's error, as for any handler that cannot emit
    handler = config.DispatcherQueueHandler(handlers=["nowhere"])
    _log_twice(handler, "by-hand")
    err = capsys.readouterr().err
    assert err.count("handlers.by-hand.handlers: no handler 'nowhere'") == 2


def _log_twice(handler: logging.Handler, name: str) -> None:
    handler.set_name(name)
    logger = logging.getLogger(f"t.config.{name}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("one")
        logger.warning("two")
    finally:
        logger.removeHandler(handler)


def test_a_queued_handler_without_handlers_reports_each_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # dictConfig before 3.12 builds it so from {"class": ...DispatcherQueueHandler}
    # alone: there is nowhere to deliver, and the records were dropped silently
    _log_twice(config.DispatcherQueueHandler(), "q")
    err = capsys.readouterr().err
    assert err.count("handlers.q.handlers: required: no sink or handler to deliver to") == 2


def test_a_queued_handler_configured_without_handlers_never_drops_silently(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 3.12's dictConfig refuses it; 3.13's built a Dispatcher with no sinks (records
    # gone, counted nowhere); 3.10/3.11 build it unresolved: each record is reported
    spec = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"q": {"class": "aiologsinks.config.DispatcherQueueHandler"}},
        "loggers": {"t.config.nosinks": {"handlers": ["q"], "propagate": False}},
    }
    try:
        logging.config.dictConfig(spec)
    except ValueError as exc:
        assert "Unable to configure handler 'q'" in str(exc)
        return
    logger = logging.getLogger("t.config.nosinks")
    try:
        logger.warning("one")
    finally:
        for handler in logger.handlers:
            logger.removeHandler(handler)
            handler.close()
    assert "required: no sink or handler to deliver to" in capsys.readouterr().err


def test_a_queue_maxsize_that_is_not_an_int_fails_the_configuration(tmp_path: Path) -> None:
    # it was ignored (the default bound used); queue.Queue itself fails at its first put
    with pytest.raises(ValueError, match="Unable to configure handler 'queued'") as raised:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "file": {"class": "aiologsinks.FileSink", "filename": str(tmp_path / "q.log")},
                    "queued": {
                        "class": "aiologsinks.config.DispatcherQueueHandler",
                        "handlers": ["file"],
                        "queue": {"()": "queue.Queue", "maxsize": "x"},
                    },
                },
                "loggers": {"t.config.maxsize": {"handlers": ["queued"]}},
            }
        )
    assert "queue.maxsize: expected an int, got 'x'" in repr(raised.value.__cause__)


def test_dictconfig_queue_handler_keys_build_a_dispatcher(tmp_path: Path) -> None:
    import asyncio

    log_file = tmp_path / "q.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(name)s %(message)s"}},
            "handlers": {
                "file": {
                    "class": "aiologsinks.FileSink",
                    "filename": str(log_file),
                    "formatter": "plain",
                    "level": "WARNING",
                },
                "queued": {
                    "class": "aiologsinks.config.DispatcherQueueHandler",
                    "handlers": ["file"],
                    "respect_handler_level": True,
                    "queue": {"()": "queue.Queue", "maxsize": 123},
                },
            },
            "loggers": {"dcq": {"level": "INFO", "handlers": ["queued"], "propagate": False}},
        }
    )
    logger = logging.getLogger("dcq")
    try:
        (handler,) = logger.handlers
        assert isinstance(handler, config.DispatcherQueueHandler)
        dispatcher = handler.listener
        assert isinstance(dispatcher, als.Dispatcher)
        assert dispatcher.queue_size == 123 and dispatcher.respect_handler_level
        assert dispatcher.sinks[0] is logging._handlers["file"]  # type: ignore[attr-defined]
        logger.info("below the file's level")
        logger.warning("delivered")
        asyncio.run(config.aclose_dictconfig())
    finally:
        _reset(logger)
    assert log_file.read_text() == "dcq delivered\n"


@pytest.mark.parametrize("recipe", ["queued", "factory"])
def test_dictconfig_again_closes_the_dispatchers_it_replaces(tmp_path: Path, recipe: str) -> None:
    """dictConfig run three times, no loop: each replaced handler's Dispatcher is
    closed, its records delivered and its file released. Each stayed open for good
    (two fds and a worker thread per reconfiguration), the file too."""
    import concurrent.futures
    import contextlib
    import os

    log_file = tmp_path / "again.log"
    sink = {"type": "file", "filename": str(log_file)}
    handlers: dict[str, Any] = (
        {
            "file": {"class": "aiologsinks.FileSink", "filename": str(log_file)},
            "h": {"class": "aiologsinks.config.DispatcherQueueHandler", "handlers": ["file"]},
        }
        if recipe == "queued"
        else {
            "h": {"()": "aiologsinks.config.dictconfig_handler", "config": {"sinks": {"f": sink}}}
        }
    )
    logger = logging.getLogger(f"dc.again.{recipe}")
    replaced = []
    try:
        for n in range(3):
            logging.config.dictConfig(
                {
                    "version": 1,
                    "disable_existing_loggers": False,
                    "handlers": handlers,
                    "loggers": {logger.name: {"level": "INFO", "handlers": ["h"]}},
                }
            )
            (handler,) = logger.handlers
            replaced.append(getattr(handler, "listener", None) or handler.dispatcher)
            logger.info("configuration %d", n)
        # the closes begun by the last reconfiguration
        concurrent.futures.wait(list(config._closing), timeout=10)
        assert [d.state for d in replaced[:2]] == [als.DispatcherState.CLOSED] * 2
        assert all(d.sinks[0].closed for d in replaced[:2])
        fds = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own, closed by now
                fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        assert fds.count(str(log_file)) <= 2  # the running one's (and its writer's)
    finally:
        _reset(logger)
        asyncio.run(config.aclose_dictconfig())
    # each configuration's in the file (two sinks on one file: no order between them)
    assert sorted(log_file.read_text().splitlines()) == [f"configuration {n}" for n in range(3)]


class _SlowListSink(als.Sink):
    """Takes ``delay`` seconds per batch: a slow destination."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.lines: list[str] = []

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        await asyncio.sleep(self.delay)
        self.lines.extend(r.getMessage() for r in records)


async def test_aclose_dictconfig_waits_for_the_closes_a_reconfiguration_began() -> None:
    """dictConfig in a coroutine, then again: the replaced pipeline closes on this
    loop, and its sink is slow. aclose_dictconfig() returns once it is closed too;
    it did not wait for it, and the loop's end cut it short (its 20 records went to
    stderr)."""
    logger = logging.getLogger("dc.reconfigured.inloop")
    sinks = {"slow": _SlowListSink(0.5), "fast": _SlowListSink(0)}

    def configure(which: str) -> None:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "s": {"()": lambda: sinks[which]},
                    "h": {"class": "aiologsinks.config.DispatcherQueueHandler", "handlers": ["s"]},
                },
                "loggers": {logger.name: {"level": "INFO", "handlers": ["h"]}},
            }
        )

    try:
        configure("slow")
        (first,) = logger.handlers
        for i in range(20):
            logger.info("first %d", i)
        configure("fast")
        logger.info("second")
        await config.aclose_dictconfig()
    finally:
        _reset(logger)
    assert first.listener.state is als.DispatcherState.CLOSED  # type: ignore[attr-defined]
    assert sinks["slow"].lines == [f"first {i}" for i in range(20)]
    assert sinks["fast"].lines == ["second"]


@pytest.mark.parametrize("given", [5, [1]])
def test_dictconfig_handler_names_a_config_that_is_neither_a_table_nor_a_path(
    given: object,
) -> None:
    with pytest.raises(ConfigError, match=r"^config: expected a table of the configuration"):
        config.dictconfig_handler(given)  # type: ignore[arg-type]


@pytest.mark.allow_blocking  # holds the background loop on purpose
def test_a_queued_handlers_listener_flushes_while_its_start_is_pending(tmp_path: Path) -> None:
    """dictConfig before any loop submits the dispatcher's start to the background loop
    without waiting (it holds logging's lock); ``await listener.flush()`` in the first
    coroutine must wait for that start, not raise "not started"."""
    import asyncio
    import threading

    from aiologsinks import _background

    log_file = tmp_path / "q.log"
    gate = threading.Event()
    # hold the background loop so that the start is still pending when flush() runs
    _background.get_loop().call_soon_threadsafe(gate.wait, 30)
    try:
        logging.config.dictConfig(_queued_config(log_file, ["file"]))
        logger = logging.getLogger("dcq")
        logger.warning("before the loop")  # the listener exists on every Python now
        (handler,) = logger.handlers
        dispatcher = handler.listener
        assert dispatcher.state is als.DispatcherState.NEW

        async def main() -> None:
            for i in range(10):
                logger.warning("in the loop %d", i)
            flushing = asyncio.ensure_future(dispatcher.flush(timeout=30))
            await asyncio.sleep(0)  # flush() runs up to its first wait
            assert not flushing.done()
            gate.set()
            await flushing
            assert log_file.read_text().splitlines() == ["before the loop"] + [
                f"in the loop {i}" for i in range(10)
            ]
            await config.aclose_dictconfig()

        asyncio.run(main())
    finally:
        gate.set()
        _reset(logging.getLogger("dcq"))


#: the logging cookbook's recipe for a dictConfig queue handler (Python 3.12+ docs):
#: start its listener, register the listener's stop() with atexit
COOKBOOK_SCRIPT = """
import atexit, logging, logging.config, sys

logging.config.dictConfig({
    "version": 1,
    "handlers": {
        "file": {"class": "aiologsinks.FileSink", "filename": sys.argv[1]},
        "queue_handler": {"class": "aiologsinks.config.DispatcherQueueHandler",
                          "handlers": ["file"]},
    },
    "root": {"level": "INFO", "handlers": ["queue_handler"]},
})
queue_handler = logging.getLogger().handlers[0]  # getHandlerByName() on 3.12+
queue_handler.listener.start()
atexit.register(queue_handler.listener.stop)
for i in range(50):
    logging.getLogger("app").info("record %d", i)
print("logged")
"""


def test_the_logging_cookbooks_queue_listener_recipe_works(tmp_path: Path) -> None:
    target = tmp_path / "cookbook.log"
    result = run_script(COOKBOOK_SCRIPT, str(target))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == "logged\n"
    assert target.read_text().splitlines() == [f"record {i}" for i in range(50)]


async def test_the_cookbooks_listener_start_does_nothing_after_a_dictconfig_in_a_coroutine(
    tmp_path: Path,
) -> None:
    """dictConfig in a FastAPI lifespan or an aiohttp startup hook starts the
    dispatcher on the running loop; the recipe's ``listener.start()`` then raised
    "dispatcher is running, expected new", and the application did not start."""
    log_file = tmp_path / "q.log"
    try:
        logging.config.dictConfig(_queued_config(log_file, ["file"]))
        logger = logging.getLogger("dcq")
        (handler,) = logger.handlers
        handler.listener.start()  # the cookbook's call
        assert handler.listener.state is als.DispatcherState.RUNNING
        logger.warning("started")
        await config.aclose_dictconfig()
    finally:
        _reset(logging.getLogger("dcq"))
    assert log_file.read_text().splitlines() == ["started"]


def test_a_dispatchers_stop_is_close_and_start_outside_a_loop_still_refuses() -> None:
    dispatcher = als.Dispatcher(als.NullSink())
    with pytest.raises(als.DispatcherStateError, match="running event loop"):
        dispatcher.start()  # not made by dictConfig: nothing started it
    dispatcher.stop()
    assert dispatcher.state is als.DispatcherState.CLOSED


@pytest.mark.allow_blocking  # holds the background loop on purpose
def test_the_cookbooks_start_inside_a_loop_leaves_a_pending_start_on_the_background_loop(
    tmp_path: Path,
) -> None:
    """``listener.start()`` in a coroutine, while the start dictConfig submitted is
    still pending, did move the dispatcher onto that loop: orphaned when the loop
    ended, every later record went to stderr."""
    import asyncio
    import threading

    from aiologsinks import _background

    log_file = tmp_path / "q.log"
    gate = threading.Event()
    _background.get_loop().call_soon_threadsafe(gate.wait, 30)  # the start stays pending
    try:
        logging.config.dictConfig(_queued_config(log_file, ["file"]))
        logger = logging.getLogger("dcq")
        logger.warning("before the loop")
        (handler,) = logger.handlers
        dispatcher = handler.listener

        async def main() -> None:
            dispatcher.start()  # the cookbook's call: does nothing here either
            assert dispatcher.state is als.DispatcherState.NEW
            gate.set()
            logger.warning("in the loop")
            await dispatcher.flush(timeout=30)

        asyncio.run(main())
        assert dispatcher.state is als.DispatcherState.RUNNING  # not orphaned by the loop
        logger.warning("after the loop")
        asyncio.run(config.aclose_dictconfig())
    finally:
        gate.set()
        _reset(logging.getLogger("dcq"))
    assert log_file.read_text().splitlines() == ["before the loop", "in the loop", "after the loop"]


#: dictConfig, then fork while the start it submitted to the background loop is
#: pending; the child awaits flush() in a loop of its own
FORK_PENDING_SCRIPT = """
import asyncio, logging, logging.config, os, sys, threading
from aiologsinks import _background

gate = threading.Event()
_background.get_loop().call_soon_threadsafe(gate.wait, 30)
logging.config.dictConfig({
    "version": 1,
    "handlers": {
        "file": {"class": "aiologsinks.FileSink", "filename": sys.argv[1]},
        "q": {"class": "aiologsinks.config.DispatcherQueueHandler", "handlers": ["file"]},
    },
    "root": {"level": "INFO", "handlers": ["q"]},
})
root = logging.getLogger()
root.info("parent")
dispatcher = root.handlers[0].listener
pid = os.fork()
if pid == 0:
    async def child():
        logging.getLogger("child").info("child")
        try:
            await asyncio.wait_for(dispatcher.flush(), 10)
            print("child: flushed")
        except TimeoutError:
            print("child: flush hung")
        except Exception as exc:
            print("child:", type(exc).__name__)
    asyncio.run(child())
    sys.stdout.flush()
    os._exit(0)
gate.set()
os.waitpid(pid, 0)
"""


def test_a_child_forked_while_the_start_is_pending_does_not_wait_for_it(tmp_path: Path) -> None:
    result = run_script(FORK_PENDING_SCRIPT, str(tmp_path / "f.log"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "child: DispatcherStateError\n"  # not started here: said at once
    assert (tmp_path / "f.log").read_text().splitlines()[0] == "parent"
