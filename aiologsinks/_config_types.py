"""Check configuration values against constructor annotations (used by ``config``).

Only what a configuration can hold is checked exactly (scalars, tuples, lists,
mappings, literals, unions, ``datetime.time`` from a string); an annotation form the
checker does not know, or one that cannot be resolved at run time, is accepted.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["coerce", "hints"]


def hints(cls: type) -> dict[str, Any]:
    """The constructor's resolved annotations; a name that cannot be resolved
    (an import under TYPE_CHECKING) is left unchecked."""
    init = cls.__init__  # type: ignore[misc]
    with contextlib.suppress(Exception):  # fall back to one annotation at a time
        return typing.get_type_hints(init)
    module = sys.modules.get(cls.__module__)
    ns = dict(vars(typing))
    ns.update({"os": os, "datetime": datetime, "logging": logging, "socket": socket})
    ns.update(vars(module) if module else {})
    out: dict[str, Any] = {}
    for name, ann in getattr(init, "__annotations__", {}).items():
        try:
            out[name] = eval(ann, ns) if isinstance(ann, str) else ann  # noqa: S307
        except Exception:  # noqa: BLE001, S112 - unresolvable: not checked
            continue
    return out


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    if typing.get_origin(hint) is typing.Literal:
        # as the constructors say it: "one of block, drop_oldest, drop_newest"
        return "one of " + ", ".join(str(v) for v in typing.get_args(hint))
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def coerce(value: Any, hint: Any, path: str, error: Callable[[str, str], Exception]) -> Any:
    """Return ``value`` checked against ``hint`` (TOML arrays become tuples where a
    tuple is expected); raise ``error(path, message)`` when it does not fit."""
    ok, out = _fit(value, hint)
    if not ok:
        shown = repr(value)
        if path.rpartition(".")[2] in _SECRET_KEYS:
            shown = f"a {type(value).__name__} (not shown: it may hold a secret)"
        raise error(path, f"expected {_type_name(hint)}, got {shown}")
    return out


#: parameters whose values an error message must never repeat
_SECRET_KEYS = frozenset({"credentials", "password"})


def _fit(value: Any, hint: Any) -> tuple[bool, Any]:
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return True, value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        for arm in args:
            ok, out = _fit(value, arm)
            if ok:
                return True, out
        return False, value
    if origin is typing.Literal:
        return value in args, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is datetime.time and isinstance(value, str):
        try:
            return True, datetime.time.fromisoformat(value)
        except ValueError:
            return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        if args == ((),) or not args:
            return len(value) == 0 or not args, tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            arms = [args[0]] * len(value)
        elif len(args) != len(value):
            return False, value
        else:
            arms = list(args)
        items = [_fit(v, a) for v, a in zip(value, arms, strict=True)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if origin in (list, Sequence, typing.Sequence) or hint in (list, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False, value
        arm = args[0] if args else Any
        items = [_fit(v, arm) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping), value
    if hint is typing.IO or origin is typing.IO:
        return callable(getattr(value, "write", None)), value
    if origin is os.PathLike or hint is os.PathLike:
        return isinstance(value, os.PathLike), value
    if origin is not None and isinstance(origin, type):
        if origin.__module__ == "collections.abc" and origin.__name__ == "Callable":
            return callable(value), value
        return isinstance(value, origin), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # an annotation form this checker does not know: accept
