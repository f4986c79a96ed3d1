"""Configuration from a dict or a TOML file: sinks, formatters, filters, levels, loggers.

The shape (TOML shown; a dict with the same nesting works the same)::

    [dispatcher]                  # Dispatcher options (queue_size, overflow, batch_size, ...)
    overflow = "drop_oldest"

    [formatters.plain]            # logging.Formatter(format, datefmt, style, validate)
    format = "%(asctime)s %(levelname)s %(name)s %(message)s"

    [filters.app_only]            # logging.Filter(name), or "()" = "pkg.mod:factory" + kwargs
    name = "app"

    [sinks.app_file]              # the table key becomes the sink's name in stats()
    type = "RotatingFileSink"     # class name, or short form: "rotating_file"; or "pkg.mod:Cls"
    level = "INFO"
    formatter = "plain"
    filters = ["app_only"]
    lane = { size = 1000, overflow = "drop_newest" }
    filename = "app.log"          # every other key is a constructor parameter
    maxBytes = 1_048_576

    [loggers.root]                # loggers that get the shim; none listed: the root logger
    level = "INFO"
    [loggers."app.db"]
    level = "DEBUG"
    propagate = false

Sink types are the sink classes exported by :mod:`aiologsinks`, so a new sink is
configurable as soon as it is exported. Parameters are checked against the
constructor's signature and annotations; TOML arrays become tuples where a tuple is
expected (``mailhost = ["127.0.0.1", 25]``), ``socktype`` takes ``"udp"``/``"tcp"``,
``flushLevel`` and ``level`` take level names, ``stream`` takes ``"stdout"`` /
``"stderr"``, and a ``target`` names another sink. Every mistake raises
:class:`ConfigError` naming the key path (``sinks.app_file.maxBytes: expected int,
got 'big'``).

Use :func:`install_config` as ``install()`` is used (FastAPI lifespan, aiohttp cleanup
context, around ``asyncio.run``). For the stdlib ``logging.config.dictConfig``, see
:func:`dictconfig_handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import socket
import sys
import typing
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config_types import coerce
from ._config_types import hints as _hints
from ._dispatcher import Dispatcher, DispatcherState
from ._exceptions import AiologsinksError
from ._shim import QueueHandler
from ._sink import Sink
from ._validate import ArgumentError

__all__ = [
    "Config",
    "ConfigError",
    "LoggerSpec",
    "aclose_dictconfig",
    "dictconfig_handler",
    "from_dict",
    "install_config",
    "load",
    "loads",
    "sink_types",
    "start_dictconfig",
]

_TOP_KEYS = ("version", "dispatcher", "formatters", "filters", "sinks", "loggers")
_SINK_META = ("type", "level", "formatter", "filters", "lane")
_NOT_DISPATCHER_OPTIONS = ("sinks", "lanes", "fallback")


class ConfigError(AiologsinksError, ValueError):
    """A configuration mistake; :attr:`path` is the dotted key path it concerns."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        #: where the mistake is, e.g. ``"sinks.app_file.maxBytes"``
        self.path = path


@dataclass(frozen=True)
class LoggerSpec:
    """A logger that gets the shim, with the level and propagation to set on it."""

    name: str
    level: int | None = None
    propagate: bool | None = None


@dataclass
class Config:
    """A validated configuration: built sinks plus what the Dispatcher needs."""

    #: the sinks, keyed by their configured names (also their ``name``)
    sinks: dict[str, Sink]
    #: keyword options for :class:`~aiologsinks.Dispatcher`
    dispatcher_options: dict[str, Any] = field(default_factory=dict)
    #: per-sink lane overrides, keyed by sink name
    lanes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the loggers that get the shim (the root logger when the config names none)
    loggers: list[LoggerSpec] = field(default_factory=list)
    #: sinks another sink names as its ``target``: fed by that sink, not by the
    #: Dispatcher, and closed after it by :func:`install_config`
    targets: dict[str, Sink] = field(default_factory=dict)

    def dispatcher(self) -> Dispatcher:
        """A new (not started) Dispatcher for the sinks that are nobody's target."""
        fed = {name: sink for name, sink in self.sinks.items() if name not in self.targets}
        lanes: dict[Sink | logging.Handler, Mapping[str, Any]] = {
            fed[name]: opts for name, opts in self.lanes.items() if name in fed
        }
        return Dispatcher(*fed.values(), lanes=lanes or None, **self.dispatcher_options)


# -- the sink registry -------------------------------------------------------------------


def _normal(name: str) -> str:
    name = name.lower().replace("_", "").replace("-", "")
    return name[: -len("sink")] if name.endswith("sink") and name != "sink" else name


def sink_types() -> dict[str, type[Sink]]:
    """Every concrete sink class exported by :mod:`aiologsinks`, by class name.

    Built on each call from ``aiologsinks.__all__``, so newly exported sinks appear
    without a change here. Base classes whose name starts with ``Base`` and ``Sink``
    itself are left out.
    """
    import aiologsinks

    found: dict[str, type[Sink]] = {}
    for name in aiologsinks.__all__:
        obj = getattr(aiologsinks, name, None)
        if (
            isinstance(obj, type)
            and issubclass(obj, Sink)
            and obj is not Sink
            and not name.startswith("Base")
            and not inspect.isabstract(obj)
        ):
            found[name] = obj
    return found


def _sink_class(value: object, path: str) -> type[Sink]:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a sink type name, got {value!r}")
    if ":" in value:
        cls = _import(value, path)
        if not (isinstance(cls, type) and issubclass(cls, Sink)):
            raise ConfigError(path, f"{value!r} is not a Sink subclass")
        return cls
    types_ = sink_types()
    by_short = {_normal(name): cls for name, cls in types_.items()}
    cls = types_.get(value) or by_short.get(_normal(value))
    if cls is None:
        raise ConfigError(path, f"unknown sink type {value!r}; expected one of {sorted(types_)}")
    return cls


def _import(spec: str, path: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(path, f"cannot import {spec!r}: {exc}") from None
    return obj


# -- building ----------------------------------------------------------------------------


def _coerce(value: Any, hint: Any, path: str) -> Any:
    return coerce(value, hint, path, ConfigError)


def _table(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a table, got {value!r}")
    return value


def _level(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(path, f"expected a level name or int, got {value!r}")
    if isinstance(value, int):
        return value
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):
        raise ConfigError(
            path,
            f"unknown level name {value!r}; expected CRITICAL, ERROR, WARNING, INFO, DEBUG, "
            "NOTSET, a level registered with logging.addLevelName, or an int",
        )
    return level


def _kwargs_for(factory: Callable[..., Any], params: Mapping[str, Any], path: str) -> None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    for key in params:
        if key not in sig.parameters:
            raise ConfigError(
                f"{path}.{key}",
                f"unknown parameter; expected one of {sorted(sig.parameters)}",
            )


def _formatter(name: str, spec: object) -> logging.Formatter:
    path = f"formatters.{name}"
    spec = dict(_table(spec, path))
    if "()" in spec:
        factory = _import(str(spec.pop("()")), f"{path}.()")
        _kwargs_for(factory, spec, path)
        result = factory(**spec)
        if not isinstance(result, logging.Formatter):
            raise ConfigError(f"{path}.()", "the factory did not return a logging.Formatter")
        return result
    allowed = {"format": str, "datefmt": str, "style": str, "validate": bool}
    for key, value in spec.items():
        if key not in allowed:
            raise ConfigError(f"{path}.{key}", f"unknown key; expected one of {sorted(allowed)}")
        if not isinstance(value, allowed[key]):
            raise ConfigError(f"{path}.{key}", f"expected {allowed[key].__name__}, got {value!r}")
    style = spec.get("style", "%")
    if style not in ("%", "{", "$"):
        raise ConfigError(f"{path}.style", f"expected '%', '{{' or '$', got {style!r}")
    try:
        return logging.Formatter(
            spec.get("format"), spec.get("datefmt"), style, spec.get("validate", True)
        )
    except ValueError as exc:
        raise ConfigError(f"{path}.format", str(exc)) from None


def _filter(name: str, spec: object) -> Any:
    path = f"filters.{name}"
    spec = dict(_table(spec, path))
    if "()" in spec:
        factory = _import(str(spec.pop("()")), f"{path}.()")
        _kwargs_for(factory, spec, path)
        return factory(**spec)
    for key in spec:
        if key != "name":
            raise ConfigError(f"{path}.{key}", "unknown key; expected 'name' or '()'")
    value = spec.get("name", "")
    if not isinstance(value, str):
        raise ConfigError(f"{path}.name", f"expected str, got {value!r}")
    return logging.Filter(value)


_SOCKTYPES = {
    "udp": socket.SOCK_DGRAM,
    "dgram": socket.SOCK_DGRAM,
    "sock_dgram": socket.SOCK_DGRAM,
    "tcp": socket.SOCK_STREAM,
    "stream": socket.SOCK_STREAM,
    "sock_stream": socket.SOCK_STREAM,
}


def _convert(cls: type[Sink], key: str, value: Any, path: str, built: Builder) -> Any:
    """The parameter-specific conversions TOML needs (names for constants, references)."""
    if key == "socktype" and isinstance(value, str):
        try:
            return _SOCKTYPES[value.lower()]
        except KeyError:
            raise ConfigError(path, f"expected 'udp' or 'tcp', got {value!r}") from None
    if key == "facility" and isinstance(value, str):
        names: Mapping[str, int] = getattr(cls, "facility_names", {})
        if names and value.lower() not in names:
            raise ConfigError(path, f"unknown facility {value!r}; expected one of {sorted(names)}")
        return names.get(value.lower(), value)
    if key in ("flushLevel", "level"):
        return _level(value, path)
    if key == "stream" and isinstance(value, str):
        streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        value = value.removeprefix("ext://sys.")
        if value not in streams:
            raise ConfigError(path, f"expected 'stdout' or 'stderr', got {value!r}")
        return streams[value]
    if key == "target" and isinstance(value, str):
        target = built.sink(value, path)
        built.targets[value] = target
        return target
    return value


class Builder:
    """Builds a :class:`Config` from a mapping, one section at a time."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = _table(data, "")
        for key in self.data:
            if key not in _TOP_KEYS:
                raise ConfigError(key, f"unknown section; expected one of {list(_TOP_KEYS)}")
        version = self.data.get("version", 1)
        if version != 1:
            raise ConfigError("version", f"expected 1, got {version!r}")
        self.specs = _table(self.data.get("sinks", {}), "sinks")
        self.sinks: dict[str, Sink] = {}
        self.lanes: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, Sink] = {}
        self._building: list[str] = []
        fmts = _table(self.data.get("formatters", {}), "formatters")
        self.formatters = {name: _formatter(name, spec) for name, spec in fmts.items()}
        filts = _table(self.data.get("filters", {}), "filters")
        self.filters = {name: _filter(name, spec) for name, spec in filts.items()}

    def build(self) -> Config:
        for name in self.specs:
            self.sink(name, f"sinks.{name}")
        return Config(self.sinks, self._dispatcher(), self.lanes, self._loggers(), self.targets)

    def sink(self, name: str, ref_path: str) -> Sink:
        """The sink called ``name``, built on first use (``target`` may name one)."""
        if name in self.sinks:
            return self.sinks[name]
        if name not in self.specs:
            raise ConfigError(
                ref_path, f"no sink named {name!r}; expected one of {list(self.specs)}"
            )
        if name in self._building:
            raise ConfigError(ref_path, f"sink {name!r} refers to itself")
        self._building.append(name)
        try:
            sink = self._make(name, _table(self.specs[name], f"sinks.{name}"))
        finally:
            self._building.pop()
        self.sinks[name] = sink
        return sink

    def _make(self, name: str, spec: Mapping[str, Any]) -> Sink:
        path = f"sinks.{name}"
        if "type" not in spec:
            raise ConfigError(f"{path}.type", "missing; expected a sink type name")
        cls = _sink_class(spec["type"], f"{path}.type")
        sig = inspect.signature(cls)
        hints = _hints(cls)
        open_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        kwargs: dict[str, Any] = {}
        for key, value in spec.items():
            if key in _SINK_META:
                continue
            kpath = f"{path}.{key}"
            param = sig.parameters.get(key)
            unknown = param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
            if unknown and not open_kwargs:
                params = [p for p, v in sig.parameters.items() if v.kind is not v.VAR_POSITIONAL]
                raise ConfigError(
                    kpath, f"unknown parameter of {cls.__name__}; expected one of {params}"
                )
            value = _convert(cls, key, value, kpath, self)
            kwargs[key] = _coerce(value, hints[key], kpath) if key in hints else value
        for pname, param in sig.parameters.items():
            required = param.default is param.empty and param.kind in (
                param.POSITIONAL_OR_KEYWORD,
                param.KEYWORD_ONLY,
            )
            if required and pname not in kwargs:
                raise ConfigError(
                    f"{path}.{pname}", f"missing required parameter of {cls.__name__}"
                )
        try:
            sink = cls(**kwargs)
        except ImportError as exc:  # a platform sink (NTEventLogSink off Windows)
            raise ConfigError(f"{path}.type", str(exc)) from None
        except ArgumentError as exc:
            # the sink's check names its parameter: put it in the key path
            where = f"{path}.{exc.param}" if exc.param in sig.parameters else path
            raise ConfigError(where, exc.reason if where != path else str(exc)) from None
        except (TypeError, ValueError, LookupError, OSError) as exc:
            raise ConfigError(path, str(exc)) from None
        sink.name = name
        if "level" in spec:
            sink.setLevel(_level(spec["level"], f"{path}.level"))
        if "formatter" in spec:
            sink.setFormatter(self._ref(self.formatters, spec["formatter"], f"{path}.formatter"))
        filters = spec.get("filters", [])
        if isinstance(filters, str) or not isinstance(filters, Sequence):
            raise ConfigError(
                f"{path}.filters", f"expected a list of filter names, got {filters!r}"
            )
        for i, ref in enumerate(filters):
            sink.addFilter(self._ref(self.filters, ref, f"{path}.filters[{i}]"))
        if "lane" in spec:
            self.lanes[name] = self._lane(spec["lane"], f"{path}.lane")
        return sink

    @staticmethod
    def _ref(table: Mapping[str, Any], ref: object, path: str) -> Any:
        if not isinstance(ref, str) or ref not in table:
            raise ConfigError(path, f"unknown name {ref!r}; expected one of {sorted(table)}")
        return table[ref]

    @staticmethod
    def _lane(spec: object, path: str) -> dict[str, Any]:
        out = dict(_table(spec, path))
        for key, value in out.items():
            if key == "size":
                _coerce(value, int, f"{path}.size")
            elif key == "overflow":
                _coerce(
                    value, typing.Literal["block", "drop_oldest", "drop_newest"], f"{path}.overflow"
                )
            else:
                raise ConfigError(f"{path}.{key}", "unknown key; expected 'size' or 'overflow'")
        return out

    def _dispatcher(self) -> dict[str, Any]:
        spec = _table(self.data.get("dispatcher", {}), "dispatcher")
        sig = inspect.signature(Dispatcher)
        hints = _hints(Dispatcher)
        allowed = [
            p
            for p, v in sig.parameters.items()
            if v.kind is v.KEYWORD_ONLY and p not in _NOT_DISPATCHER_OPTIONS
        ]
        out: dict[str, Any] = {}
        for key, value in spec.items():
            if key not in allowed:
                raise ConfigError(f"dispatcher.{key}", f"unknown option; expected one of {allowed}")
            hint = hints.get(key, Any)
            out[key] = _coerce(value, hint, f"dispatcher.{key}")
        return out

    def _loggers(self) -> list[LoggerSpec]:
        spec = _table(self.data.get("loggers", {}), "loggers")
        out = []
        for name, opts in spec.items():
            path = f"loggers.{name}"
            opts = _table(opts, path)
            for key in opts:
                if key not in ("level", "propagate"):
                    raise ConfigError(
                        f"{path}.{key}", "unknown key; expected 'level' or 'propagate'"
                    )
            level = _level(opts["level"], f"{path}.level") if "level" in opts else None
            propagate = opts.get("propagate")
            if propagate is not None:
                _coerce(propagate, bool, f"{path}.propagate")
            out.append(LoggerSpec("" if name == "root" else name, level, propagate))
        return out or [LoggerSpec("")]


# -- entry points --------------------------------------------------------------------------


def from_dict(data: Mapping[str, Any]) -> Config:
    """Validate ``data`` and build its sinks; raises :class:`ConfigError`."""
    return Builder(data).build()


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # pragma: no cover - Python 3.10 only
        return importlib.import_module("tomli")
    except ImportError:  # pragma: no cover
        raise ConfigError(
            "", "reading TOML on Python 3.10 needs the 'tomli' package (pip install tomli)"
        ) from None


def loads(text: str) -> Config:
    """Parse TOML ``text`` and build it with :func:`from_dict`."""
    try:
        data = _toml().loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise ConfigError("", f"invalid TOML: {exc}") from None
    return from_dict(data)


def load(path: str | os.PathLike[str]) -> Config:
    """Read a TOML file and build it with :func:`from_dict` (blocking: call it before
    the loop starts, or let :func:`install_config` read the file off the loop)."""
    with open(path, encoding="utf-8") as f:
        return loads(f.read())


@contextlib.asynccontextmanager
async def install_config(
    config: Config | Mapping[str, Any] | str | os.PathLike[str],
) -> AsyncIterator[Dispatcher]:
    """Like :func:`aiologsinks.install`, for a configuration.

    ``config`` is a :class:`Config`, a mapping, or the path of a TOML file (read on a
    worker thread). Starts the Dispatcher, attaches its shim to every configured
    logger (setting their level and ``propagate``), and yields the Dispatcher. On exit
    detaches the shim, restores those loggers and awaits ``aclose()``: everything
    logged before is delivered and every sink closed.
    """
    if isinstance(config, (str, os.PathLike)):
        config = await asyncio.to_thread(load, config)
    elif not isinstance(config, Config):
        config = from_dict(config)
    dispatcher = config.dispatcher()
    dispatcher.start()
    saved = []
    for spec in config.loggers:
        logger = logging.getLogger(spec.name)
        saved.append((logger, logger.level, logger.propagate))
        if spec.level is not None:
            logger.setLevel(spec.level)
        if spec.propagate is not None:
            logger.propagate = spec.propagate
        logger.addHandler(dispatcher.handler)
    try:
        yield dispatcher
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(dispatcher.handler)
            logger.setLevel(level)
            logger.propagate = propagate
        try:
            await dispatcher.aclose()
        finally:
            for target in config.targets.values():
                await target.aclose()


# -- logging.config.dictConfig --------------------------------------------------------------

_dictconfig_dispatchers: list[Dispatcher] = []


def dictconfig_handler(config: Mapping[str, Any] | str) -> QueueHandler:
    """A ``"()"`` factory for ``logging.config.dictConfig``: the shim of a new Dispatcher.

    ``config`` is an aiologsinks configuration (a mapping, or a TOML file path) whose
    ``loggers`` section is ignored: dictConfig decides which loggers get the handler::

        logging.config.dictConfig({
            "version": 1,
            "handlers": {"als": {
                "()": "aiologsinks.config.dictconfig_handler",
                "config": {"sinks": {"file": {"type": "file", "filename": "app.log"}}},
            }},
            "root": {"level": "INFO", "handlers": ["als"]},
        })

    When dictConfig runs inside a coroutine, the Dispatcher starts at once on the
    running loop. Otherwise records are queued until ``await start_dictconfig()`` is
    called on the loop. Before the loop ends, ``await aclose_dictconfig()`` delivers
    everything and closes the sinks.
    """
    data = (
        load(config)
        if isinstance(config, str)
        else from_dict({k: v for k, v in dict(config).items() if k != "loggers"})
    )
    dispatcher = data.dispatcher()
    _dictconfig_dispatchers.append(dispatcher)
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        dispatcher.start()
    return dispatcher.handler


async def start_dictconfig() -> None:
    """Start, on the running loop, every Dispatcher :func:`dictconfig_handler` made
    that is not started yet (records logged so far are delivered now)."""
    for dispatcher in _dictconfig_dispatchers:
        if dispatcher.state is DispatcherState.NEW:
            dispatcher.start()


async def aclose_dictconfig() -> None:
    """Await ``aclose()`` of every Dispatcher :func:`dictconfig_handler` made; returns
    when all their records were delivered and their sinks closed."""
    dispatchers = list(_dictconfig_dispatchers)
    _dictconfig_dispatchers.clear()
    for dispatcher in dispatchers:
        await dispatcher.aclose()
