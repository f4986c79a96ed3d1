"""``python -m aiologsinks receive``: the collector (see ``aiologsinks._collector``).

``receive --config collector.toml`` feeds every received record into sinks built
from the configuration format of :func:`aiologsinks.config.install_config`, plus a
``[collector]`` table for addresses, ports and limits. ``receive --out FILE`` (or
no option: standard output) is the simple case: one line per record.

This module keeps the names the demo and older callers import: :class:`Receiver`
(the channels, usable on their own with an ``on_record`` callback),
:func:`decode_frame` and :func:`parse_syslog`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .._collector._channels import CHANNELS, ChannelCounts, ReceiverLimits
from .._collector._daemon import CollectorError, Settings, run, settings_from, simple_config
from .._collector._receiver import Receiver
from .._collector._records import parse_syslog
from .._collector._unpickle import FrameError, Limits, load_record
from ..config import ConfigError, from_dict

__all__ = [
    "CHANNELS",
    "MAX_FRAME",
    "ChannelCounts",
    "Receiver",
    "ReceiverLimits",
    "decode_frame",
    "load_collector_config",
    "parse_syslog",
    "run_receive",
]

#: the default largest frame accepted (``[collector] max_frame``)
MAX_FRAME = ReceiverLimits().max_frame


def decode_frame(payload: bytes, limits: Limits | None = None) -> dict[str, Any]:
    """Decode one record frame body (without its 4-byte length) into a plain dict.

    Raises ``ValueError`` when it is not a pickled dict of builtin values, or
    exceeds ``limits``; no class is ever imported or instantiated.
    """
    try:
        return load_record(payload, limits or Limits())
    except FrameError as exc:
        raise ValueError(str(exc)) from None


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        return importlib.import_module("tomllib")
    return importlib.import_module("tomli")  # pragma: no cover - Python 3.10


def load_collector_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """The collector configuration in ``source``: a TOML file's path, or a mapping.

    Raises :class:`CollectorError` when the file cannot be read and
    :class:`~aiologsinks.config.ConfigError` when it is not valid TOML.
    """
    if isinstance(source, Mapping):
        return dict(source)
    try:
        with open(source, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise CollectorError(f"cannot read {os.fspath(source)}: {exc.strerror}") from None
    try:
        data: dict[str, Any] = _toml().loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"invalid TOML: {exc}", os.fspath(source)) from None
    return data


def run_receive(
    *,
    tcp: int | None = None,
    udp: int | None = None,
    syslog: int | None = None,
    http: int | None = None,
    host: str | Sequence[str] | None = None,
    out: str | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    **options: Any,
) -> int:
    """Serve until SIGINT/SIGTERM; return the exit code (2 for a one-line error).

    With ``config``, records go to the sinks it configures; otherwise one line per
    record goes to ``out`` (standard output when None). Ports, ``host`` and the
    ``[collector]`` keys in ``options`` override the configuration.
    """
    # a mistake in a configuration file names the file (as config.load's do)
    file = None if config is None or isinstance(config, Mapping) else os.fspath(config)
    explain = _as_out if out is not None and config is None else str
    try:
        if config is not None and out is not None:
            raise CollectorError("give --config or --out, not both")
        if config is not None:
            data = load_collector_config(config)
        else:
            data = {**simple_config(out), "collector": {"annotate": True}}
        settings: Settings
        settings, sinks = settings_from(
            data, file=file, tcp=tcp, udp=udp, syslog=syslog, http=http, host=host, **options
        )
        try:
            built = from_dict(sinks)
        except ConfigError as exc:
            raise exc.in_file(file) from None
    except (CollectorError, ConfigError) as exc:
        sys.stderr.write(f"aiologsinks receive: error: {explain(str(exc))}\n")
        return 2
    return run(settings, built, explain)


def _as_out(message: str) -> str:
    """An error about the sink ``--out`` makes, naming the option the user gave (not
    the configuration key it becomes, nor the constructor's ``mkdir``)."""
    for key in ("sinks.out.filename: ", "sinks.out: "):
        if message.startswith(key):
            message = "argument --out: " + message[len(key) :]
            break
    return message.replace(" (pass mkdir=True to create it)", "")
