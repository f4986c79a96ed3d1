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
``"stderr"``, and a ``target`` names another sink. An import path (a ``"()"``
factory, a sink ``type``, a ``rotator``/``namer``) is ``"pkg.mod:name"`` or, as in
``dictConfig``, ``"pkg.mod.name"``. Every mistake raises
:class:`ConfigError` naming the key path (``sinks.app_file.maxBytes: expected int,
got 'big'``).

Use :func:`install_config` as ``install()`` is used (FastAPI lifespan, aiohttp cleanup
context, around ``asyncio.run``). For the stdlib ``logging.config.dictConfig``, see
:func:`dictconfig_handler`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import logging
import logging.config
import logging.handlers
import os
import socket
import ssl
import sys
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _background
from ._backoff import Backoff
from ._config_types import coerce
from ._config_types import hints as _hints
from ._dispatcher import Dispatcher, DispatcherState
from ._exceptions import AiologsinksError
from ._handler_sink import HandlerSink
from ._shim import QueueHandler
from ._sink import Sink
from ._validate import (
    ArgumentError,
    ArgumentTypeError,
    check_callable,
    check_int,
    check_number,
    check_str,
)
from .sinks.file import FileSink, WatchedFileSink
from .sinks.http import HTTPSink
from .sinks.kafka import KafkaSink
from .sinks.memory import BufferingSink, MemorySink
from .sinks.nteventlog import NTEventLogSink
from .sinks.otlp import OTLPSink
from .sinks.rotating import RotatingFileSink, TimedRotatingFileSink, gzip_namer, gzip_rotator
from .sinks.smtp import SMTPSink
from .sinks.socket import DatagramSink, SocketSink
from .sinks.stream import NullSink, StreamSink
from .sinks.syslog import SysLogSink

__all__ = [
    "Config",
    "ConfigError",
    "DispatcherQueueHandler",
    "LoggerSpec",
    "aclose_dictconfig",
    "dictconfig_handler",
    "dispatcher_listener",
    "from_dict",
    "install_config",
    "load",
    "loads",
    "register_sink_type",
    "sink_types",
    "start_dictconfig",
]

_TOP_KEYS = ("version", "dispatcher", "formatters", "filters", "sinks", "loggers")
_SINK_META = ("type", "level", "formatter", "filters", "lane", "rotator", "namer")
_NOT_DISPATCHER_OPTIONS = ("sinks", "lanes", "fallback")


class ConfigError(AiologsinksError, ValueError):
    """A configuration mistake; :attr:`path` is the dotted key path it concerns."""

    def __init__(self, path: str, message: str, file: str | None = None) -> None:
        text = f"{path}: {message}" if path else message
        super().__init__(f"{file}: {text}" if file else text)
        #: where the mistake is, e.g. ``"sinks.app_file.maxBytes"``
        self.path = path
        #: the configuration file it is in (None for a mapping)
        self.file = file
        #: the message without the file and the key path
        self.reason = message

    def in_file(self, file: str | None) -> ConfigError:
        """This error, naming ``file`` (itself when it names a file already or
        ``file`` is None)."""
        if file is None or self.file is not None:
            return self
        return ConfigError(self.path, self.reason, file)


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


#: every sink type a configuration can name, by class name. Explicit, so that config
#: does not import the package face; a sink defined elsewhere is added with
#: :func:`register_sink_type` (or named as ``"pkg.mod:Class"``).
_SINK_TYPES: dict[str, type[Sink]] = {
    cls.__name__: cls
    for cls in (
        StreamSink,
        NullSink,
        FileSink,
        WatchedFileSink,
        RotatingFileSink,
        TimedRotatingFileSink,
        SocketSink,
        DatagramSink,
        SysLogSink,
        SMTPSink,
        HTTPSink,
        BufferingSink,
        MemorySink,
        NTEventLogSink,
        HandlerSink,
        OTLPSink,
        KafkaSink,
    )
}


def register_sink_type(cls: type[Sink], name: str | None = None) -> None:
    """Make ``cls`` configurable as ``type = "<name>"`` (its class name by default;
    the short form, e.g. ``"kafka"`` for ``KafkaSink``, works too)."""
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise TypeError(f"cls: expected a Sink subclass, got {cls!r}")
    _SINK_TYPES[name or cls.__name__] = cls


def sink_types() -> dict[str, type[Sink]]:
    """Every sink type a configuration can name, by class name (a copy)."""
    return dict(_SINK_TYPES)


def _sink_class(value: object, path: str) -> type[Sink]:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a sink type name, got {value!r}")
    if ":" not in value:
        types_ = sink_types()
        by_short = {_normal(name): cls for name, cls in types_.items()}
        found = types_.get(value) or by_short.get(_normal(value))
        if found is not None:
            return found
        # a registered name first; else a dotted one is dictConfig's "pkg.mod.Class"
        if "." not in value:
            raise ConfigError(
                path,
                f"unknown sink type {value!r}; expected one of {sorted(types_)}"
                " or 'pkg.mod:MySink'",
            )
    cls = _import(value, path)
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise ConfigError(path, f"{value!r} is not a Sink subclass")
    return cls


def _import(spec: str, path: str) -> Any:
    """The object ``spec`` names: ``"pkg.mod:name"``, or dictConfig's ``"pkg.mod.name"``
    (resolved as ``logging.config`` does: the longest importable module, then
    attributes)."""
    try:
        if ":" not in spec:
            return _resolve_dotted(spec)
        module, _, attr = spec.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - anything a module raises at import too
        # ImportError and AttributeError, but also ":x" (ValueError), ".rel:x"
        # (TypeError), a module that raises or does not compile: the key is named
        raise ConfigError(path, f"cannot import {spec!r}: {type(exc).__name__}: {exc}") from None
    return obj


def _resolve_dotted(spec: str) -> Any:
    # logging.config.BaseConfigurator.resolve: import the first name, then take each
    # next one as an attribute, importing it as a submodule when it is not one yet
    names = spec.split(".")
    used = names.pop(0)
    found: Any = importlib.import_module(used)
    for name in names:
        used += "." + name
        try:
            found = getattr(found, name)
        except AttributeError:
            importlib.import_module(used)
            found = getattr(found, name)
    return found


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
        if value < 0:
            raise ConfigError(path, f"expected a level >= 0, got {value!r}")
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


def _checked(path: str, check: Callable[..., Any], value: object, **limits: Any) -> Any:
    """``check(path, value, **limits)`` with its error as a ConfigError for ``path``."""
    try:
        return check(path, value, **limits)
    except ArgumentError as exc:
        raise ConfigError(path, exc.reason) from None


def _call_factory(factory: Callable[..., Any], kwargs: Mapping[str, Any], path: str) -> Any:
    """``factory(**kwargs)``; what it raises becomes a ConfigError for ``path``."""
    try:
        return factory(**kwargs)
    except Exception as exc:
        name = getattr(factory, "__qualname__", repr(factory))
        raise ConfigError(path, f"{name}() raised {type(exc).__name__}: {exc}") from exc


def _formatter(name: str, spec: object) -> logging.Formatter:
    path = f"formatters.{name}"
    spec = dict(_table(spec, path))
    if "()" in spec:
        factory = _import(str(spec.pop("()")), f"{path}.()")
        _kwargs_for(factory, spec, path)
        result = _call_factory(factory, spec, f"{path}.()")
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
        made = _call_factory(factory, spec, f"{path}.()")
        # what logging.Filterer takes: an object with filter(record), or a callable
        if not (callable(getattr(made, "filter", None)) or callable(made)):
            raise ConfigError(
                f"{path}.()", "the factory did not return a filter (a filter(record) or a callable)"
            )
        return made
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
    if key == "backoff" and isinstance(value, Mapping):
        _kwargs_for(Backoff, value, path)
        try:
            return Backoff(**value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(path, str(exc)) from None
    if key == "context" and isinstance(value, (str, Mapping)):
        return _tls_context(value, path)
    return value


_TLS_KEYS = ("cafile", "capath", "certfile", "keyfile")


def _tls_context(spec: str | Mapping[str, Any], path: str) -> ssl.SSLContext:
    """A verifying client TLS context: ``"ca.pem"`` (the CA file) or a table with
    ``cafile``/``capath`` (whom to trust) and ``certfile``/``keyfile`` (a client
    certificate). Certificates and host names are always verified."""
    opts = {"cafile": spec} if isinstance(spec, str) else dict(spec)
    for key, value in opts.items():
        if key not in _TLS_KEYS:
            raise ConfigError(f"{path}.{key}", f"unknown key; expected one of {list(_TLS_KEYS)}")
        if not isinstance(value, str):
            raise ConfigError(f"{path}.{key}", f"expected a file path, got {value!r}")
    if "keyfile" in opts and "certfile" not in opts:
        raise ConfigError(f"{path}.keyfile", "needs certfile")
    cafile, capath = opts.get("cafile"), opts.get("capath")
    # the string form has no key of its own to point at
    where = path if isinstance(spec, str) else None
    # one file at a time, so that an error says which one (ssl's errors do not)
    with _loading(path, opts, ("cafile",) if cafile is not None else ("capath",), where):
        context = ssl.create_default_context(
            cafile=cafile, capath=capath if cafile is None else None
        )
    if cafile is not None and capath is not None:
        with _loading(path, opts, ("capath",), where):
            context.load_verify_locations(capath=capath)
    if "certfile" in opts:
        with _loading(path, opts, ("certfile", "keyfile"), where):
            context.load_cert_chain(opts["certfile"], opts.get("keyfile"))
    return context


@contextlib.contextmanager
def _loading(
    path: str, opts: Mapping[str, str], keys: tuple[str, ...], where: str | None
) -> typing.Iterator[None]:
    """Turn a failure to load the TLS files of ``keys`` into a ConfigError naming them
    (at ``where``, else at the key of the one at fault)."""
    try:
        yield
    except (OSError, ssl.SSLError) as exc:
        given = [key for key in keys if opts.get(key) is not None]
        # a missing or unreadable file is the one to name; else the pair is at fault
        # (a key that does not match its certificate)
        absent = [key for key in given if not os.access(opts[key], os.R_OK)]
        named = absent[:1] or given
        if where is None:
            where = f"{path}.{named[0]}" if len(named) == 1 else path
        files = " and ".join(f"{key} {opts[key]!r}" for key in named) or "the defaults"
        reason = exc.strerror or str(exc)
        raise ConfigError(where, f"cannot load TLS material from {files}: {reason}") from None


#: compression by name for ``rotator``/``namer`` (the stdlib leaves it to the cookbook)
_ROTATORS = {"gzip": gzip_rotator}
_NAMERS = {"gzip": gzip_namer}


def _hook(value: object, by_name: Mapping[str, Any], path: str) -> Any:
    """A rotator/namer: a name from ``by_name`` or a ``"pkg.mod:function"``."""
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a name or 'pkg.mod:function', got {value!r}")
    if value in by_name:
        return by_name[value]
    if ":" not in value and "." not in value:
        raise ConfigError(
            path, f"unknown name {value!r}; expected one of {sorted(by_name)} or 'pkg.mod:function'"
        )
    hook = _import(value, path)
    if not callable(hook):
        raise ConfigError(path, f"{value!r} is not callable")
    return hook


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
        options, loggers = self._dispatcher(), self._loggers()
        if not self.specs:
            raise ConfigError("sinks", "no sink configured; a configuration needs at least one")
        for name in self.specs:
            self.sink(name, f"sinks.{name}")
        return Config(self.sinks, options, self.lanes, loggers, self.targets)

    def sink(self, name: str, ref_path: str) -> Sink:
        """The sink called ``name``, built on first use (``target`` may name one)."""
        if name in self.sinks:
            return self.sinks[name]
        if name not in self.specs:
            raise ConfigError(
                ref_path, f"no sink named {name!r}; expected one of {list(self.specs)}"
            )
        if name in self._building:
            cycle = [*self._building[self._building.index(name) :], name]
            if len(cycle) == 2:
                raise ConfigError(ref_path, f"sink {name!r} refers to itself")
            raise ConfigError(ref_path, f"targets form a cycle: {' -> '.join(cycle)}")
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
                # the keys every sink takes too: a misspelt "levl" finds "level" here
                params += [m for m in _SINK_META if m not in ("rotator", "namer")]
                if hasattr(cls, "rotator"):
                    params += ["rotator", "namer"]
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
        except OSError as exc:
            # a check of the sink's own naming its parameter (check_directory's
            # "filename: '/tmp' is a directory"): that key, without the errno
            text = exc.strerror if isinstance(exc.strerror, str) else ""
            key, named, reason = text.partition(": ")
            if named and key in sig.parameters:
                raise ConfigError(f"{path}.{key}", reason) from None
            raise ConfigError(path, str(exc)) from None
        except (TypeError, ValueError, LookupError) as exc:
            raise ConfigError(path, str(exc)) from None
        sink.name = name
        for key, by_name in (("rotator", _ROTATORS), ("namer", _NAMERS)):
            if key in spec:
                if not hasattr(sink, key):
                    raise ConfigError(f"{path}.{key}", f"{cls.__name__} does not rotate files")
                setattr(sink, key, _hook(spec[key], by_name, f"{path}.{key}"))
        if spec.get("rotator") == "gzip" and "namer" not in spec:
            sink.namer = gzip_namer  # app.log.1 -> app.log.1.gz
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
                _checked(f"{path}.size", check_int, _coerce(value, int, f"{path}.size"), min=1)
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
            out[key] = value = _coerce(value, hint, f"dispatcher.{key}")
            # the Dispatcher's own checks, here so that load() already names the key
            if key in ("queue_size", "lane_size", "batch_size"):
                _checked(f"dispatcher.{key}", check_int, value, min=1)
            elif key == "linger":
                _checked(f"dispatcher.{key}", check_number, value)
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


def loads(text: str, file: str | None = None) -> Config:
    """Parse TOML ``text`` and build it with :func:`from_dict`.

    A syntax error names the line and column (and ``file``, when given, as every other
    error does).
    """
    try:
        data = _toml().loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError: "... (at line 3, column 9)"
        raise ConfigError("", f"invalid TOML: {exc}", file) from None
    if file is None:
        return from_dict(data)
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise exc.in_file(file) from None


def load(path: str | os.PathLike[str]) -> Config:
    """Read a TOML file and build it with :func:`from_dict` (blocking: call it before
    the loop starts, or let :func:`install_config` read the file off the loop).

    Errors name the file: ``ConfigError("app.toml: invalid TOML: ... (at line 3,
    column 9)")``, ``ConfigError("app.toml: sinks.f.maxBytes: expected int ...")``.
    """
    file = os.fspath(path)
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read the configuration: {exc.strerror}", file) from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8
        raise ConfigError("", f"invalid TOML: not UTF-8: {exc}", file) from None
    return loads(text, file=file)


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

#: dispatchers made for dictConfig, and whether each runs on the background loop
_dictconfig_dispatchers: list[tuple[Dispatcher, bool]] = []


def _start_for_dictconfig(dispatcher: Dispatcher, *, background: bool = False) -> None:
    """Start ``dispatcher`` on the running loop, or else (or with ``background``) on
    the background loop.

    dictConfig often runs before any loop (uvicorn's parent process, a script): the
    background loop then delivers, and its exit hook closes the dispatcher at exit.
    dictConfig calls its factories holding logging's module lock, so the start on the
    background loop is not waited for: anything there that takes that lock (a sink's
    ``aopen`` getting a logger, the GC collecting a handler) would wait for this
    thread while it waits for the start. What can make ``start()`` fail is checked
    here, and records logged before the loop gets to it wait in the queue.
    """
    try:
        asyncio.get_running_loop()
        if background:
            raise RuntimeError("the background loop")
    except RuntimeError:
        dispatcher._check_startable()
        started = _background.submit(dispatcher._start_here())
        dispatcher._starting = started
        started.add_done_callback(functools.partial(_report_start_failure, dispatcher))
        # closed at exit by the hook that closes every dispatcher, all at once
        _dictconfig_dispatchers.append((dispatcher, True))
    else:
        dispatcher.start()
        _dictconfig_dispatchers.append((dispatcher, False))
    # started here: a later start() (the cookbook's listener.start()) does nothing
    dispatcher._by_dictconfig = True


#: closes begun by a replaced dictConfig shim, held until they end (a task is held
#: weakly by its loop)
_closing: set[Any] = set()


def _close_for_dictconfig(dispatcher: Dispatcher) -> None:
    """Begin closing a dispatcher dictConfig made, its handler closed: dictConfig
    closes the handlers a new configuration replaces. What it holds is delivered and
    its sinks closed on its loop, without waiting here: dictConfig holds logging's
    lock, which the close may need (a sink's close getting a logger)."""
    loop = dispatcher._loop
    if dispatcher.state is DispatcherState.CLOSED:
        return
    if loop is None:
        if dispatcher._starting is None:
            return
        # its start is still queued on the background loop: the close follows it there
        closing: Any = _background.submit(dispatcher.aclose())
    elif loop.is_closed():
        return
    elif asyncio.events._get_running_loop() is loop:
        closing = loop.create_task(dispatcher.aclose())
    elif loop.is_running():
        closing = asyncio.run_coroutine_threadsafe(dispatcher.aclose(), loop)
    else:
        return  # stopped: the exit closes it (or a close() of its own)
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
    # aclose_dictconfig() still waits for it until then (its loop may end next)
    closing.add_done_callback(lambda _: _forget(dispatcher))


def _forget(dispatcher: Dispatcher) -> None:
    for i, (made, _) in enumerate(_dictconfig_dispatchers):
        if made is dispatcher:
            del _dictconfig_dispatchers[i]
            return


def _report_start_failure(dispatcher: Dispatcher, started: concurrent.futures.Future[None]) -> None:
    # nothing else would tell: dictConfig has returned (the way logging reports a
    # handler's own failure, on stderr)
    stream = sys.stderr
    if stream is not None and not started.cancelled() and started.exception() is not None:
        with contextlib.suppress(Exception):  # stderr itself is gone: nothing to do
            stream.write(
                f"aiologsinks: {dispatcher!r} (made for dictConfig) did not start on the "
                f"background loop: {started.exception()!r}\n"
            )


class _ConfiguredShim(QueueHandler):
    """The shim :func:`dictconfig_handler` returns.

    dictConfig's ``formatter`` key on the handler becomes the formatter of every sink
    that has none of its own (the shim itself never formats); its ``filters`` key
    works as on any handler: the filters run at the logging call.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__(dispatcher)
        self._sinks = dispatcher.sinks

    def close(self) -> None:
        """Close the handler and its Dispatcher (see :func:`dictconfig_handler`)."""
        super().close()
        dispatcher = self.dispatcher
        if isinstance(dispatcher, Dispatcher) and dispatcher._by_dictconfig:
            _close_for_dictconfig(dispatcher)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        if fmt is None:
            return
        for sink in self._sinks:
            if sink.formatter is None:
                sink.setFormatter(fmt)


def dictconfig_handler(config: Mapping[str, Any] | str) -> QueueHandler:
    """A ``"()"`` factory for ``logging.config.dictConfig``: the shim of a new Dispatcher.

    ``config`` is an aiologsinks configuration (a mapping, or a TOML file path) whose
    ``loggers`` section is ignored: dictConfig decides which loggers get the handler::

        logging.config.dictConfig({
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(message)s"}},
            "handlers": {"als": {
                "()": "aiologsinks.config.dictconfig_handler",
                "config": {"sinks": {"file": {"type": "file", "filename": "app.log"}}},
                "formatter": "plain",          # for every sink without its own
            }},
            "root": {"level": "INFO", "handlers": ["als"]},
        })

    When dictConfig runs inside a coroutine, the Dispatcher starts at once on the
    running loop; ``await aclose_dictconfig()`` before the loop ends delivers
    everything and closes the sinks. Otherwise it starts on a private background
    loop, which delivers with or without an application loop and closes it at exit.
    Closing the shim (as dictConfig does to the handlers a new configuration
    replaces) closes its Dispatcher too.
    """
    if not isinstance(config, (str, Mapping)):
        raise ConfigError(
            "config", f"expected a table of the configuration or a TOML file path, got {config!r}"
        )
    data = (
        load(config)
        if isinstance(config, str)
        else from_dict({k: v for k, v in dict(config).items() if k != "loggers"})
    )
    dispatcher = data.dispatcher()
    shim = _ConfiguredShim(dispatcher)
    dispatcher.handler = shim
    _start_for_dictconfig(dispatcher)
    return shim


def dispatcher_listener(
    queue: Any, *handlers: Sink | logging.Handler, respect_handler_level: bool = False
) -> Dispatcher:
    """A dictConfig ``listener`` for :class:`DispatcherQueueHandler`: a Dispatcher for
    ``handlers`` (what ``QueueListener(queue, *handlers, ...)`` would get). A bounded
    ``queue``'s ``maxsize`` becomes the dispatcher's ``queue_size``."""
    if not handlers:
        # dictConfig (3.13) builds the listener without handlers when none are named:
        # records would go nowhere, silently
        raise ConfigError("handlers", "required: the sinks or handlers to deliver to")
    return Dispatcher(*handlers, respect_handler_level=respect_handler_level, **_bound_of(queue))


def _check_names(handlers: Any) -> None:
    """``handlers`` (Python 3.10/3.11) is a list of handler names, at least one."""
    if isinstance(handlers, (str, bytes)) or not isinstance(handlers, Iterable):
        raise ArgumentTypeError("handlers", f"expected a list of handler names, got {handlers!r}")
    for name in handlers:
        check_str("handlers", name, nonempty=True)
    if not handlers:
        raise ConfigError("handlers", "required: the sinks or handlers to deliver to")


def _bound_of(queue: Any) -> dict[str, Any]:
    """The Dispatcher options for a dictConfig ``queue``: its ``maxsize`` when > 0."""
    maxsize = getattr(queue, "maxsize", 0)
    if maxsize is not None and (isinstance(maxsize, bool) or not isinstance(maxsize, int)):
        # queue.Queue takes any maxsize and fails at its first put: said now, not ignored
        raise ArgumentTypeError("queue.maxsize", f"expected an int, got {maxsize!r}")
    return {"queue_size": maxsize} if maxsize and maxsize > 0 else {}


class DispatcherQueueHandler(logging.handlers.QueueHandler):
    """dictConfig's queue handler, with a Dispatcher as its listener.

    Configure it as the stdlib ``QueueHandler`` (Python 3.12 keys; they work on 3.10
    and 3.11 too)::

        "handlers": {
            "file": {"class": "aiologsinks.FileSink", "filename": "app.log"},
            "queued": {
                "class": "aiologsinks.config.DispatcherQueueHandler",
                "handlers": ["file"],              # sinks or any logging handlers
                "respect_handler_level": True,     # as for QueueListener (default False)
                "queue": {"()": "queue.Queue", "maxsize": 10000},   # optional bound
            },
        }

    :attr:`listener` is the :class:`~aiologsinks.Dispatcher` (built from what
    dictConfig gives: the ``handlers``, ``respect_handler_level``, the queue's
    ``maxsize``; a ``listener`` key may name a factory such as
    :func:`dispatcher_listener`). It is started as :func:`dictconfig_handler`'s is —
    on the running loop, or else on the background loop — so there is no
    ``listener.start()`` to call. Records go through the Dispatcher's shim, which does
    not pre-format (each sink formats); the queue object itself is not used.
    """

    def __init__(
        self,
        queue: Any = None,
        handlers: Sequence[str] | None = None,
        respect_handler_level: bool = False,
        listener: Any = None,
    ) -> None:
        if handlers is not None:  # Python 3.10/3.11: dictConfig left the specs as they are
            queue, listener = _resolved(queue, call=True), _resolved(listener, call=False)
            # what 3.12's dictConfig refuses fails the configuration here too, not each
            # logging call once the listener is built from them
            _bound_of(queue)
            _check_names(handlers)
            if not isinstance(respect_handler_level, bool):
                raise ArgumentTypeError(
                    "respect_handler_level",
                    f"expected True or False, got {respect_handler_level!r}",
                )
            check_callable("listener", listener, none=True)
        super().__init__(queue)
        self._dispatcher: Dispatcher | None = None
        # Python 3.10/3.11 pass the keys as they are (names): resolved at first use,
        # once dictConfig has configured the handlers they name. dictConfig's own
        # table of them is kept: logging's registry holds handlers weakly, and one
        # that no logger names would be collected before that use.
        self._configured: Mapping[str, Any] = {}
        if handlers is not None:
            configurator = getattr(handlers, "configurator", None)  # made by dictConfig
            table = getattr(configurator, "config", {}).get("handlers")
            if isinstance(table, Mapping):
                self._configured = table
                missing = [n for n in handlers if n not in table]
                if missing:
                    raise ValueError(f"handlers: no handler named {missing[0]!r} is configured")
        self._pending = (
            (list(handlers), respect_handler_level, listener or dispatcher_listener)
            if handlers is not None
            else None
        )
        # the loop dictConfig ran on (None: none ran): the listener built at the first
        # record starts there, as 3.12's, built by dictConfig, does, and not on the loop
        # that logs first (whose end would close it under the later records)
        self._configured_on_loop = asyncio.events._get_running_loop() is not None

    @property
    def listener(self) -> Dispatcher | None:
        """The Dispatcher behind this handler (``QueueHandler.listener`` in 3.12)."""
        if self._dispatcher is None and self._pending is not None:
            names, rhl, factory = self._pending
            found = []
            for name in names:
                handler = self._configured.get(name)
                if not isinstance(handler, logging.Handler):
                    handler = logging._handlers.get(name)  # type: ignore[attr-defined]
                if handler is None:
                    raise ConfigError(f"handlers.{self.name}.handlers", f"no handler {name!r}")
                found.append(handler)
            self._pending = None
            self._configured = {}
            self.listener = factory(self.queue, *found, respect_handler_level=rhl)
        return self._dispatcher

    @listener.setter
    def listener(self, value: Any) -> None:
        if isinstance(value, logging.handlers.QueueListener):
            # what dictConfig 3.12+ built from the keys: the same, as a Dispatcher
            value = dispatcher_listener(
                value.queue, *value.handlers, respect_handler_level=value.respect_handler_level
            )
        if value is not None and not isinstance(value, Dispatcher):
            raise TypeError(f"listener: expected a Dispatcher, got {value!r}")
        self._dispatcher = value
        if value is not None and value.state is DispatcherState.NEW:
            _start_for_dictconfig(value, background=not self._configured_on_loop)

    def close(self) -> None:
        """Close the handler and the Dispatcher made for it: dictConfig closes the
        handlers a new configuration replaces (what it holds is delivered, its sinks
        closed, without waiting here)."""
        super().close()
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher._by_dictconfig:
            _close_for_dictconfig(dispatcher)

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter ``record``, then hand it to the Dispatcher's shim."""
        rv: Any = self.filter(record)
        if not rv:
            return rv
        self.emit(rv if isinstance(rv, logging.LogRecord) else record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Hand ``record`` to the Dispatcher's shim (``handle`` normally does)."""
        try:
            dispatcher = self.listener
        except Exception:  # noqa: BLE001 - a name that did not resolve, a factory failing
            # a logging call does not raise: this handler's error, reported per record
            # (and tried again with the next one) as for any handler failing to emit
            self.handleError(record)
            return
        if dispatcher is None:
            # configured without "handlers" (dictConfig before 3.12 builds it so):
            # nowhere to deliver, said with each record rather than dropped silently
            try:
                raise ConfigError(
                    f"handlers.{self.name}.handlers", "required: no sink or handler to deliver to"
                )
            except ConfigError:
                self.handleError(record)
            return
        dispatcher.handler.handle(record)


def _resolved(spec: Any, call: bool) -> Any:
    """A ``queue``/``listener`` spec as Python 3.12's dictConfig resolves it:
    ``{"()": factory, ...}`` is built, a ``"pkg.mod.name"`` string imported (and, for
    a queue, called)."""
    configurator = getattr(spec, "configurator", None)  # dictConfig's converting types
    if configurator is None:
        configurator = logging.config.BaseConfigurator({})
    if isinstance(spec, Mapping) and "()" in spec:
        return configurator.configure_custom(dict(spec))
    if isinstance(spec, str):
        target = configurator.resolve(spec)
        return target() if call else target
    return spec


async def start_dictconfig() -> None:
    """Start, on the running loop, every Dispatcher made for dictConfig that is not
    started yet (records logged so far are delivered now). Those made while no loop
    ran are the background loop's, which starts them (and closes them at exit)."""
    for dispatcher, on_background in _dictconfig_dispatchers:
        if not on_background and dispatcher.state is DispatcherState.NEW:
            dispatcher.start()


async def aclose_dictconfig() -> None:
    """Close every Dispatcher made for dictConfig; returns when all their records were
    delivered and their sinks closed (those on the background loop are closed there)."""
    dispatchers = list(_dictconfig_dispatchers)
    _dictconfig_dispatchers.clear()
    for dispatcher, on_background in dispatchers:
        if on_background:
            await asyncio.wrap_future(_background.submit(dispatcher.aclose()))
        else:
            await dispatcher.aclose()
