"""Received fields -> real ``LogRecord`` objects that cannot forge output lines.

A received record is rebuilt with its original attributes (``created``, ``msecs``,
``process``, ``thread``, ``extra=`` fields...), so a formatter formats it as it would
have at the source. Everything in it came from the network, so on the way:

* the standard attributes get the types formatters expect (a ``created`` that is
  not a finite time becomes the receive time; a missing level becomes INFO);
* ``msg % args`` is merged (stdlib ``HTTPHandler`` sends both unmerged) only when the
  result stays within a size budget: ``"%999999999d"`` or a thousand ``%(big)s``
  are not expanded (the message is kept as sent, with its arguments appended);
* text is made safe to write: line breaks and other control characters in the
  message and every text field are written as escapes (``\\n``, ``\\x1b``,
  ``\\u2028``), so no record can start a line of its own or send terminal escape
  sequences; ``exc_text`` and ``stack_info``, which formatters put on lines of their
  own, keep their line breaks but every line is indented by four spaces;
* names that would shadow ``LogRecord`` methods (``getMessage``...) get a ``_``
  appended, and the names of ``extra=`` fields are escaped as text is.
"""

from __future__ import annotations

import ast
import itertools
import logging
import math
import operator
import re
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_MESSAGE",
    "clean",
    "clean_block",
    "merge_args",
    "parse_syslog",
    "rebuild",
    "syslog_record_fields",
    "text_fields",
]

#: the longest message a merge may produce
MAX_MESSAGE = 1024 * 1024

_LogRecord = logging.LogRecord
_new = object.__new__
_STANDARD = tuple(_LogRecord("", logging.NOTSET, "", 0, "", None, None).__dict__)
#: attributes of a LogRecord other Python versions set (not extras)
_KNOWN = frozenset((*_STANDARD, "taskName", "message", "asctime"))
#: names an instance attribute must not take (they would shadow LogRecord's own)
_RESERVED = frozenset(n for n in dir(_LogRecord) if n not in _KNOWN)

# C0 controls but TAB, DEL, C1 controls, lone surrogates, the Unicode line and
# paragraph separators and the bidirectional controls (which reorder what a terminal
# shows): written as escapes
_UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """``text`` with line breaks and control characters written as escapes."""
    if text.isprintable() or not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape, text)


def clean_block(text: str) -> str:
    """Multi-line ``text`` (a traceback) with every line indented by four spaces and
    the control characters of each line escaped."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join("    " + clean(line) for line in lines)


# -- msg % args within a budget ---------------------------------------------------------

#: the longest mapping key a spec is read with: past it (or with no ")" at all) the
#: message is not merged (the key's scan is bounded: unbounded, every unclosed "%("
#: scanned to the end of the message, and one request took the loop for seconds)
_MAX_KEY = 256

_SPEC = re.compile(
    rf"%(?:\((?P<key>[^)]{{0,{_MAX_KEY}}})\))?"
    + r"[#0+ -]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?[hlL]?(?P<conv>.?)",
    re.S,
)


def _rendered_size(value: Any) -> int:
    t = type(value)
    if t is str:
        return len(value)
    if t is int or t is float or t is bool or value is None:
        return 400
    if t is bytes:
        return 4 * len(value) + 3
    return len(repr(value))  # bounded: the value came from a bounded frame


def merge_args(msg: str, args: Any) -> str:
    """``msg % args`` when its result stays under :data:`MAX_MESSAGE` characters;
    otherwise, or when the merge fails, ``msg`` followed by ``args`` (shortened)."""
    if not args:
        return msg
    if type(args) is list:
        args = tuple(args)
    mapping = isinstance(args, Mapping)
    if not mapping and type(args) is not tuple:
        args = (args,)
    total = len(msg)
    index = 0
    for spec in _SPEC.finditer(msg):
        conv = spec["conv"]
        if conv == "%":
            continue
        if conv == "(":  # a key longer than _MAX_KEY, or never closed
            return _unmerged(msg, args)
        width, prec = spec["width"] or "", spec["prec"] or ""
        if width == "*" or prec == "*" or len(width) > 6 or len(prec) > 6:
            return _unmerged(msg, args)
        total += int(width or 0) + int(prec or 0)
        if mapping:
            value = args.get(spec["key"])
        elif index < len(args):
            value = args[index]
            index += 1
        else:
            return _unmerged(msg, args)
        total += _rendered_size(value)
        if total > MAX_MESSAGE:
            return _unmerged(msg, args)
    try:
        return str(msg % args)
    except Exception:  # noqa: BLE001 - any bad format from the network: kept as sent
        return _unmerged(msg, args)


def _unmerged(msg: str, args: Any) -> str:
    return _followed_by(msg, repr(args))


def _followed_by(msg: str, text: str) -> str:
    if len(text) > 4096:
        text = text[:4096] + "..."
    return f"{msg} {text}"


def _literal_args(text: str) -> Any:
    """``args`` as ``HTTPHandler`` sends it (``str(tuple)``) back as a value; None for
    no args, :data:`_NOT_LITERAL` when the text does not read back (a ``datetime``, a
    ``Decimal``, any object: their reprs are code, not literals)."""
    if text in ("", "None", "()"):
        return None
    if len(text) > 65536:
        return _NOT_LITERAL
    try:
        try:
            return ast.literal_eval(text)
        except ValueError:
            # str() of a float that is not finite is a name (nan, inf), not a literal
            tree = _FloatNames().visit(ast.parse(text, mode="eval"))
            return ast.literal_eval(tree)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_LITERAL


class _FloatNames(ast.NodeTransformer):
    """``nan`` and ``inf`` (as ``str(float)`` writes them) made the floats they name;
    any other name stays, and the text is no literal."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("nan", "inf"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


#: what :func:`_literal_args` returns for args whose text is not a Python literal
_NOT_LITERAL: Any = object()


# -- the standard attributes ------------------------------------------------------------


def _float(value: Any) -> float | None:
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        return float(value) if abs(value) < 1e15 else None
    if type(value) is str and len(value) < 40:
        try:
            result = float(value)
        except ValueError:
            return None
        return result if math.isfinite(result) else None
    return None


def _int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if type(value) is str and 0 < len(value) < 24:
        try:
            return int(value)
        except ValueError:
            return None
    if type(value) is float and math.isfinite(value):
        return int(value)
    return None


def _text(value: Any) -> str | None:
    if value is None or value == "None":
        return None
    return clean(value if type(value) is str else str(value))


def _level(fields: dict[str, Any]) -> tuple[int, str]:
    levelno = _int(fields.get("levelno"))
    name = fields.get("levelname")
    if levelno is None and type(name) is str:
        found = logging.getLevelName(name.upper())
        levelno = found if type(found) is int else None
    if levelno is None:
        levelno = logging.INFO
    if type(name) is not str or not name:
        name = logging.getLevelName(levelno)
    return levelno, clean(name)


def rebuild(fields: dict[str, Any], now: float | None = None) -> logging.LogRecord:
    """A ``LogRecord`` with the attributes of a received record dict.

    ``fields`` is used (and changed) in place. The record has every standard
    attribute with the type formatters expect, ``msg`` merged with ``args`` (see
    :func:`merge_args`) and ``args`` None, ``exc_info`` None, and every text made
    safe to write (see the module docstring).
    """
    if not _as_sent(fields):
        _convert(fields, time.time() if now is None else now)
        _extras(fields)
    elif len(fields) > _SENT_KEYS + ("taskName" in fields):  # (all the others are there)
        _extras(fields)
    record: logging.LogRecord = _new(_LogRecord)
    record.__dict__ = fields
    return record


#: the standard fields :func:`_as_sent` looks at, and the types each may have there
_SENT = operator.itemgetter(
    "msg", "args", "name", "levelno", "levelname", "created", "msecs", "relativeCreated",
    "lineno", "pathname", "filename", "module", "process", "thread", "exc_text",
    "stack_info", "funcName", "threadName", "processName",
)  # fmt: skip
_NONE = type(None)
_SENT_TYPES = frozenset(
    (str, _NONE, str, int, str, float, float, float, int, str, str, str, *rest)
    for rest in itertools.product(
        (int, _NONE), (int, _NONE), (str, _NONE), (str, _NONE), (str, _NONE), (str, _NONE),
        (str, _NONE),
    )
)  # fmt: skip
_TASK_NAME_STANDARD = "taskName" in _STANDARD
#: the keys a dict has after :func:`_as_sent`, ``taskName`` aside: any more are extras
_SENT_KEYS = 20  # the 19 fields of _SENT and exc_info


def _as_sent(d: dict[str, Any]) -> bool:
    """Make ``d`` safe in place and return True when it is a record as
    ``makePickle`` sends it: every standard field there with its usual type and a
    plausible value, no argument to merge, no text to escape. Then only ``args``,
    ``exc_info`` (and a missing ``taskName``) are set and tracebacks indented — what
    :func:`_convert` would do to such a dict. False, with ``d`` unchanged, otherwise."""
    try:
        values = _SENT(d)
    except KeyError:
        return False
    if tuple(map(type, values)) not in _SENT_TYPES:
        return False
    (msg, _, name, _, levelname, created, msecs, relative, _, pathname, filename, module,
     _, _, exc_text, stack_info, func, thread_name, process_name) = values  # fmt: skip
    task = d.get("taskName")
    if not (
        name
        and levelname
        and 0 <= created < 1e11
        and 0 <= msecs < 1000
        and relative - relative == 0.0  # finite
        and relative
        and (task is None or (type(task) is str and task.isprintable()))
        and msg.isprintable()
        and name.isprintable()
        and levelname.isprintable()
        and pathname.isprintable()
        and filename.isprintable()
        and module.isprintable()
        and (func is None or func.isprintable())
        and (thread_name is None or thread_name.isprintable())
        and (process_name is None or process_name.isprintable())
    ):
        return False
    d["exc_info"] = None
    if exc_text is not None:
        d["exc_text"] = clean_block(exc_text) if exc_text and exc_text != "None" else None
    if stack_info is not None:
        d["stack_info"] = clean_block(stack_info) if stack_info and stack_info != "None" else None
    if _TASK_NAME_STANDARD and "taskName" not in d:
        d["taskName"] = None
    return True


def _convert(d: dict[str, Any], now: float) -> None:
    """Give every standard field of ``d`` the type formatters expect and make its
    text safe (see :func:`rebuild`)."""
    # none at all: makeLogRecord's empty message; None: getMessage() at the source,
    # str(msg) ("None", as a form sends it)
    msg = d.get("msg", "")
    if type(msg) is not str:
        msg = str(msg)
    args = d.get("args")
    if type(args) is str:
        text, args = args, _literal_args(args)
        if args is _NOT_LITERAL:
            # the values cannot be rebuilt: the message keeps them as they were sent
            msg, args = _followed_by(msg, text), None
    if args:
        msg = merge_args(msg, args)
    d["msg"] = clean(msg)
    d["args"] = None
    name = d.get("name")
    d["name"] = clean(name) if type(name) is str and name else _text(name) or "root"
    d["levelno"], d["levelname"] = _level(d)
    created = _float(d.get("created"))
    if created is None or not 0 <= created < 1e11:
        created = now
    d["created"] = created
    msecs = _float(d.get("msecs"))
    if msecs is None or not 0 <= msecs < 1000:
        msecs = (created - int(created)) * 1000
    d["msecs"] = msecs
    d["relativeCreated"] = _float(d.get("relativeCreated")) or 0.0
    lineno = _int(d.get("lineno"))
    d["lineno"] = 0 if lineno is None else lineno
    for key in ("pathname", "filename", "module"):
        value = d.get(key)
        d[key] = clean(value) if type(value) is str else (_text(value) or "")
    for key in ("process", "thread"):
        d[key] = _int(d.get(key))
    d["exc_info"] = None
    for key in ("exc_text", "stack_info"):
        value = d.get(key)
        if type(value) is str and value and value != "None":
            d[key] = clean_block(value)
        else:
            d[key] = None
    for key in ("funcName", "threadName", "processName", "taskName"):
        if key in d or key in _STANDARD:
            value = d.get(key)
            d[key] = clean(value) if type(value) is str else _text(value)


_HANDLED = frozenset(
    (
        "msg",
        "args",
        "name",
        "levelno",
        "levelname",
        "created",
        "msecs",
        "relativeCreated",
        "lineno",
        "pathname",
        "filename",
        "module",
        "process",
        "thread",
        "exc_info",
        "exc_text",
        "stack_info",
        "funcName",
        "threadName",
        "processName",
        "taskName",
    )
)


def _extras(d: dict[str, Any]) -> None:
    if len(d) <= len(_HANDLED) and d.keys() <= _HANDLED:
        return
    renamed = []
    for key, value in d.items():
        if key in _HANDLED:
            continue
        if key in _RESERVED or not key.isprintable():
            renamed.append(key)
        elif type(value) is str:
            d[key] = clean(value)
    for key in renamed:
        value = d.pop(key)
        # a formatter writes the name as well as the value (``key=value``)
        name = key + "_" if key in _RESERVED else clean(key)
        d[name] = clean(value) if type(value) is str else value


def text_fields(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Fields of a form-encoded record (``HTTPHandler``: every value is ``str()``)."""
    fields: dict[str, Any] = {}
    for key, value in pairs:
        fields[key] = None if value == "None" else value
    return fields


# -- syslog -----------------------------------------------------------------------------

_SEVERITY_LEVELS = (
    logging.CRITICAL,  # emerg
    logging.CRITICAL,  # alert
    logging.CRITICAL,  # crit
    logging.ERROR,
    logging.WARNING,
    logging.INFO,  # notice
    logging.INFO,
    logging.DEBUG,
)
_FACILITIES = (
    *("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron"),
    *("authpriv", "ftp", "ntp", "security", "console", "solaris-cron"),
    *(f"local{i}" for i in range(8)),
)


def parse_syslog(message: bytes) -> dict[str, Any]:
    """Split ``<PRI>rest`` into facility, severity and the message text.

    Raises ``ValueError`` for a message without a valid PRI (0..191).
    """
    text = message.rstrip(b"\x00\r\n").decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    end = text.find(">", 1, 5)
    digits = text[1:end]
    if not text.startswith("<") or end < 2 or not (digits.isascii() and digits.isdigit()):
        raise ValueError("syslog message without <PRI>")
    pri = int(digits)
    if pri > 191:
        raise ValueError(f"syslog PRI out of range: {pri}")
    body = text[end + 1 :]
    if body.startswith("\ufeff"):  # the stdlib puts a BOM before a unicode message
        body = body[1:]
    return {"facility": pri >> 3, "severity": pri & 7, "msg": body}


def syslog_record_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Record fields for a parsed syslog message (see :func:`parse_syslog`)."""
    facility, severity = int(fields["facility"]), int(fields["severity"])
    level = _SEVERITY_LEVELS[severity]
    return {
        "name": f"syslog.{_FACILITIES[facility]}",
        "msg": fields["msg"],
        "levelno": level,
        "levelname": logging.getLevelName(level),
        "syslog_facility": facility,
        "syslog_severity": severity,
    }
