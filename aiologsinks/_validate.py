"""Constructor argument checks: one place, one error shape.

Every sink constructor and :mod:`aiologsinks.config` check their arguments with these
functions. A bad argument raises an :class:`ArgumentError` that is also the builtin a
caller expects — :class:`ArgumentTypeError` (``TypeError``) for a value of the wrong
type, :class:`ArgumentValueError` (``ValueError``) for a value out of range,
:class:`ArgumentLookupError` (``LookupError``) for an unknown codec — with the
parameter's name in :attr:`ArgumentError.param` and at the head of the message::

    ArgumentValueError("maxBytes: expected an int >= 0, got -1")
    .param == "maxBytes", .reason == "expected an int >= 0, got -1"

so ``config`` reports the key path from the attributes, never by parsing a message.

The rule for which builtin: a value whose *type* is not accepted raises TypeError; a
value of an accepted type that is out of range or unknown raises ValueError.
"""

from __future__ import annotations

import codecs
import errno
import logging
import math
import os
from collections.abc import Collection
from typing import Any, NoReturn, TypeVar

__all__ = [
    "UNIX_PATH_MAX",
    "ArgumentError",
    "ArgumentLookupError",
    "ArgumentPathError",
    "ArgumentTypeError",
    "ArgumentValueError",
    "check_callable",
    "check_choice",
    "check_encoding",
    "check_errors",
    "check_instance",
    "check_int",
    "check_level",
    "check_number",
    "check_path",
    "check_str",
    "check_unix_path",
    "type_error",
    "value_error",
]

T = TypeVar("T")


class ArgumentError(Exception):
    """Mixin of the argument errors: :attr:`param` names the parameter."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        #: the parameter's name (``"toaddrs"``, ``"lanes[<FileSink>].size"``)
        self.param = param
        #: the message without the parameter's name
        self.reason = reason


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of a type the parameter does not accept."""


class ArgumentValueError(ArgumentError, ValueError):
    """An argument of an accepted type with a value the parameter does not accept."""


class ArgumentLookupError(ArgumentError, LookupError):
    """An unknown codec name (encoding or error handler)."""


class ArgumentPathError(ArgumentError, FileNotFoundError):
    """A path whose directory does not exist; :attr:`filename` is that directory."""

    def __init__(self, param: str, reason: str, directory: str) -> None:
        super().__init__(param, reason)
        self.errno = errno.ENOENT
        self.strerror = reason
        self.filename = directory

    def __str__(self) -> str:
        return f"{self.param}: {self.reason}"


def type_error(param: str, expected: str, value: object) -> NoReturn:
    """Raise :class:`ArgumentTypeError`: ``param: expected <expected>, got <value!r>``."""
    raise ArgumentTypeError(param, f"expected {expected}, got {value!r}")


def value_error(param: str, expected: str, value: object) -> NoReturn:
    """Raise :class:`ArgumentValueError`: ``param: expected <expected>, got <value!r>``."""
    raise ArgumentValueError(param, f"expected {expected}, got {value!r}")


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True is never meant as a size or a count
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(
    param: str,
    value: object,
    *,
    min: int | None = None,
    max: int | None = None,
    none: bool = False,
) -> Any:
    """``value`` when it is an int (not a bool) within ``[min, max]`` (or None if
    ``none``); TypeError for another type, ValueError when out of range."""
    if value is None and none:
        return None
    if not _is_int(value):
        type_error(param, "an int" + (" or None" if none else ""), value)
    assert isinstance(value, int)
    if (min is not None and value < min) or (max is not None and value > max):
        if max is None:
            value_error(param, f"an int >= {min}", value)
        if min is None:
            value_error(param, f"an int <= {max}", value)
        value_error(param, f"an int from {min} to {max}", value)
    return value


def check_number(param: str, value: object, *, positive: bool = False, none: bool = False) -> Any:
    """``value`` as a float when it is a finite int or float (> 0 if ``positive``,
    else >= 0), or None if ``none``."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        type_error(param, "a number of seconds" + (" or None" if none else ""), value)
    number = float(value)
    if math.isnan(number) or math.isinf(number) or number < 0 or (positive and number == 0):
        value_error(param, "a positive number" if positive else "a number >= 0", value)
    return number


def check_str(param: str, value: object, *, nonempty: bool = False, none: bool = False) -> Any:
    """``value`` when it is a str (non-empty if ``nonempty``), or None if ``none``."""
    if value is None and none:
        return None
    if not isinstance(value, str):
        type_error(param, "a str" + (" or None" if none else ""), value)
    if nonempty and not value:
        value_error(param, "a non-empty str", value)
    return value


def check_choice(param: str, value: T, choices: Collection[object]) -> T:
    """``value`` when it is one of ``choices`` (ValueError naming them otherwise)."""
    try:
        ok = value in choices
    except TypeError:  # unhashable
        ok = False
    if not ok:
        value_error(param, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_instance(param: str, value: object, types: type | tuple[type, ...], what: str) -> Any:
    """``value`` when ``isinstance(value, types)``; TypeError saying ``what`` otherwise."""
    if not isinstance(value, types):
        type_error(param, what, value)
    return value


def check_callable(param: str, value: object, *, none: bool = False) -> Any:
    """``value`` when it is callable (or None if ``none``)."""
    if value is None and none:
        return None
    if not callable(value):
        type_error(param, "a callable" + (" or None" if none else ""), value)
    return value


def check_path(param: str, value: object) -> str:
    """``os.fspath(value)`` as a str (bytes paths are refused: the sinks log text)."""
    try:
        path = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        type_error(param, "a path (str or os.PathLike)", value)
    if not isinstance(path, str):
        type_error(param, "a str path", value)
    if not path:
        value_error(param, "a non-empty path", value)
    if "\x00" in path:  # open() would refuse it at every attempt
        value_error(param, "a path without NUL characters", value)
    return path


def check_encoding(param: str, value: object) -> Any:
    """``value`` when it is None or the name of a known text encoding.

    An unknown name raises :class:`ArgumentLookupError` (a ``LookupError``, as
    ``open()`` raises for it), at construction instead of at the first write.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        type_error(param, "an encoding name or None", value)
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise ArgumentLookupError(param, f"unknown encoding {value!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        value_error(param, "a text encoding", value)
    return value


def check_errors(param: str, value: object) -> Any:
    """``value`` when it is None or the name of a registered codec error handler."""
    if value is None:
        return None
    if not isinstance(value, str):
        type_error(param, "an error handler name or None", value)
    try:
        codecs.lookup_error(value)
    except LookupError:
        raise ArgumentLookupError(param, f"unknown error handler {value!r}") from None
    return value


def check_level(param: str, value: object) -> int:
    """A level as ``logging`` takes it: an int, or a registered level name."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        type_error(param, "an int or a level name", value)
    if isinstance(value, int):
        if value < 0:
            # logging compares levels as numbers: below NOTSET means nothing more
            raise ArgumentValueError(param, f"expected a level >= 0, got {value!r}")
        return value
    number = logging.getLevelName(value)
    if not isinstance(number, int):
        raise ArgumentValueError(param, f"unknown level name {value!r}")
    return number


#: the longest Unix socket path the kernel takes (``sun_path`` holds 108 bytes, the
#: last one the terminating NUL)
UNIX_PATH_MAX = 107


def check_unix_path(param: str, path: str) -> str:
    """``path`` as a Unix socket path, or :class:`ArgumentValueError` when it is
    longer than a socket address holds (the stdlib's handlers fail on it at once;
    opening it later would only ever fail). An abstract address (a leading NUL) is
    taken as it is."""
    size = len(os.fsencode(path))
    if not path.startswith("\0") and size > UNIX_PATH_MAX:
        raise ArgumentValueError(
            param, f"a Unix socket path holds at most {UNIX_PATH_MAX} bytes, got {size}: {path!r}"
        )
    return path
