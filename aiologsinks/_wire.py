"""Pure encoders shared by the sinks: the bytes that go on the wire, built in one place.

Nothing here does I/O; every function is a plain computation that a sink calls and a
test can check against the stdlib byte for byte.
"""

from __future__ import annotations

import base64
import datetime
import email.generator
import email.policy
import email.utils
import io
import json
import logging
import os
import pickle
import re
import socket
import struct
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

from ._validate import ArgumentValueError

# --- pickle frames ---
# SocketHandler/DatagramHandler's makePickle: a 4-byte big-endian length, then the
# protocol-1 pickle of the record's __dict__ with msg merged and args/exc_info zapped.


def pickle_dict(record: logging.LogRecord) -> dict[str, Any]:
    """The dict ``makePickle`` pickles: ``msg`` merged, ``args``/``exc_info`` zapped.

    ``message`` is dropped as redundant with ``msg`` (CPython issue #25685).
    """
    d = dict(record.__dict__)
    d["msg"] = record.getMessage()
    d["args"] = None
    d["exc_info"] = None
    d.pop("message", None)
    return d


def pickle_frame(
    record: logging.LogRecord, format: Callable[[logging.LogRecord], str] | None = None
) -> bytes:
    """The stdlib's ``makePickle`` bytes for ``record``.

    When the record still carries ``exc_info``, ``format(record)`` is called first, as
    the stdlib does, only for its side effect of filling ``exc_text`` (so the bytes
    match). Records prepared by the shim already have ``exc_text`` and no
    ``exc_info``. Raises whatever pickling raises (an unpicklable extra attribute).
    """
    if record.exc_info and format is not None:
        format(record)
    return dict_frame(pickle_dict(record))


def dict_frame(d: dict[str, Any]) -> bytes:
    """The frame of a ``makePickle`` dict: 4-byte big-endian length + pickle."""
    s = pickle.dumps(d, 1)
    return struct.pack(">L", len(s)) + s


# --- syslog ---
# The SysLogHandler constants and maps, PRI encoding, RFC 6587 framing of TCP
# messages, and an RFC 5424 formatter.

SYSLOG_UDP_PORT = 514
SYSLOG_TCP_PORT = 514

LOG_EMERG = 0  # system is unusable
LOG_ALERT = 1  # action must be taken immediately
LOG_CRIT = 2  # critical conditions
LOG_ERR = 3  # error conditions
LOG_WARNING = 4  # warning conditions
LOG_NOTICE = 5  # normal but significant condition
LOG_INFO = 6  # informational
LOG_DEBUG = 7  # debug-level messages

LOG_KERN = 0  # kernel messages
LOG_USER = 1  # random user-level messages
LOG_MAIL = 2  # mail system
LOG_DAEMON = 3  # system daemons
LOG_AUTH = 4  # security/authorization messages
LOG_SYSLOG = 5  # messages generated internally by syslogd
LOG_LPR = 6  # line printer subsystem
LOG_NEWS = 7  # network news subsystem
LOG_UUCP = 8  # UUCP subsystem
LOG_CRON = 9  # clock daemon
LOG_AUTHPRIV = 10  # security/authorization messages (private)
LOG_FTP = 11  # FTP daemon
LOG_NTP = 12  # NTP subsystem
LOG_SECURITY = 13  # log audit
LOG_CONSOLE = 14  # log alert
LOG_SOLCRON = 15  # scheduling daemon (Solaris)
LOG_LOCAL0 = 16  # reserved for local use
LOG_LOCAL1 = 17
LOG_LOCAL2 = 18
LOG_LOCAL3 = 19
LOG_LOCAL4 = 20
LOG_LOCAL5 = 21
LOG_LOCAL6 = 22
LOG_LOCAL7 = 23

#: severity names accepted by ``encodePriority`` (as ``SysLogHandler.priority_names``)
priority_names: dict[str, int] = {
    "alert": LOG_ALERT,
    "crit": LOG_CRIT,
    "critical": LOG_CRIT,
    "debug": LOG_DEBUG,
    "emerg": LOG_EMERG,
    "err": LOG_ERR,
    "error": LOG_ERR,  # deprecated
    "info": LOG_INFO,
    "notice": LOG_NOTICE,
    "panic": LOG_EMERG,  # deprecated
    "warn": LOG_WARNING,  # deprecated
    "warning": LOG_WARNING,
}

#: facility names accepted by ``encodePriority`` (as ``SysLogHandler.facility_names``)
facility_names: dict[str, int] = {
    "auth": LOG_AUTH,
    "authpriv": LOG_AUTHPRIV,
    "console": LOG_CONSOLE,
    "cron": LOG_CRON,
    "daemon": LOG_DAEMON,
    "ftp": LOG_FTP,
    "kern": LOG_KERN,
    "lpr": LOG_LPR,
    "mail": LOG_MAIL,
    "news": LOG_NEWS,
    "ntp": LOG_NTP,
    "security": LOG_SECURITY,
    "solaris-cron": LOG_SOLCRON,
    "syslog": LOG_SYSLOG,
    "user": LOG_USER,
    "uucp": LOG_UUCP,
    "local0": LOG_LOCAL0,
    "local1": LOG_LOCAL1,
    "local2": LOG_LOCAL2,
    "local3": LOG_LOCAL3,
    "local4": LOG_LOCAL4,
    "local5": LOG_LOCAL5,
    "local6": LOG_LOCAL6,
    "local7": LOG_LOCAL7,
}

#: logging level name -> key of ``priority_names`` (as ``SysLogHandler.priority_map``)
priority_map: dict[str, str] = {
    "DEBUG": "debug",
    "INFO": "info",
    "WARNING": "warning",
    "ERROR": "error",
    "CRITICAL": "critical",
}


def encode_priority(
    facility: int | str,
    priority: int | str,
    facilities: Mapping[str, int] = facility_names,
    priorities: Mapping[str, int] = priority_names,
) -> int:
    """``(facility << 3) | priority``; names are looked up in ``facilities`` and
    ``priorities`` (the maps above unless a sink has its own).

    Raises ``KeyError`` for an unknown name, as ``SysLogHandler.encodePriority``.
    """
    if isinstance(facility, str):
        facility = facilities[facility]
    if isinstance(priority, str):
        priority = priorities[priority]
    return (facility << 3) | priority


def syslog_message(pri: int, msg: str, ident: str = "", append_nul: bool = True) -> bytes:
    """The bytes ``SysLogHandler.emit`` sends: ``<PRI>`` + ident + msg (+ NUL), UTF-8."""
    data = (syslog_head(pri, ident) + msg).encode()
    return nul_terminated(data) if append_nul else data


def syslog_head(pri: int, ident: str = "") -> str:
    """What precedes the formatted record in a syslog message: ``<PRI>`` + ident.

    As ``SysLogHandler``: ``%d`` of the priority, no ident when it is empty or None,
    and a ``TypeError`` for one that is not a str (bytes, an int), which the sink gives
    to ``handleError`` with the record."""
    head = "<%d>" % pri  # noqa: UP031 - the stdlib's own format (a float priority truncated)
    return head + ident if ident else head


def nul_terminated(msg: bytes) -> bytes:
    """The stdlib's datagram framing (``append_nul``): the message, then NUL."""
    return msg + b"\000"


def unframed(msg: bytes) -> bytes:
    """A datagram without ``append_nul``: the message as it is."""
    return msg


def octet_frame(msg: bytes) -> bytes:
    """RFC 6587 octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d " % len(msg) + msg


def lf_frame(msg: bytes) -> bytes:
    """RFC 6587 non-transparent framing: the message, then LF (trailing LF/NUL replaced)."""
    return msg.rstrip(b"\n\x00") + b"\n"


def truncate_utf8(data: bytes, limit: int, keep_nul: bool = False) -> bytes:
    """``data`` cut to at most ``limit`` bytes without splitting a UTF-8 sequence.

    With ``keep_nul``, a trailing NUL terminator survives the cut.
    """
    if len(data) <= limit:
        return data
    nul = keep_nul and data.endswith(b"\x00")
    cut = data[: limit - 1 if nul else limit]
    # drop a partial multi-byte sequence at the end (continuation bytes are 10xxxxxx)
    text = cut.decode("utf-8", errors="ignore").encode("utf-8")
    if not cut.startswith(text):  # pragma: no cover - only invalid input differs
        text = cut
    return text + (b"\x00" if nul else b"")


_NILVALUE = "-"


def _header_field(value: object, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, at most ``limit``."""
    if value is None:
        return _NILVALUE
    text = "".join(c if 33 <= ord(c) <= 126 else "_" for c in str(value))[:limit]
    return text or _NILVALUE


def _text(value: object) -> str:
    # a field's text; a broken __str__ must not cost the record its header
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - any failure: the type's name stands in
        return f"<unrepresentable {type(value).__name__}>"


def _sd_name(value: object) -> str:
    # SD-NAME: printable US-ASCII except '=', SP, ']', '"', at most 32 characters
    text = "".join(c if 33 <= ord(c) <= 126 and c not in '= ]"' else "_" for c in _text(value))
    return text[:32] or "_"


def _sd_value(value: object) -> str:
    # PARAM-VALUE escapes '"', '\' and ']' with a backslash (RFC 5424 section 6.3.3)
    return re.sub(r'(["\\\]])', r"\\\1", _text(value))


def structured_data(sd: Mapping[str, Mapping[str, object]] | None) -> str:
    """Render ``{sd_id: {name: value}}`` as RFC 5424 STRUCTURED-DATA (``-`` if empty).

    An element whose parameters are not a mapping has none when they are None, else
    one parameter ``value`` with their text: an ``extra=`` of another shape never
    fails the record.
    """
    if not sd:
        return _NILVALUE
    parts = []
    for sd_id, params in sd.items():
        if params is None:
            pairs: Iterable[tuple[object, object]] = ()
        elif isinstance(params, Mapping):
            pairs = params.items()
        else:
            pairs = (("value", params),)
        body = "".join(f' {_sd_name(k)}="{_sd_value(v)}"' for k, v in pairs)
        parts.append(f"[{_sd_name(sd_id)}{body}]")
    return "".join(parts)


class RFC5424Formatter(logging.Formatter):
    """Format records as RFC 5424 messages, minus the ``<PRI>`` the sink prepends.

    The output is ``1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG``:
    TIMESTAMP is ``record.created`` in UTC with microseconds; HOSTNAME, APP-NAME and
    MSGID come from the constructor (defaults: this host, the program name, ``-``);
    PROCID is ``record.process``. A record attribute ``msgid`` overrides MSGID and a
    record attribute ``structured_data`` (``{sd_id: {name: value}}``, e.g. passed
    with ``extra=``) adds STRUCTURED-DATA. MSG is what ``fmt``/``datefmt`` (default
    ``%(message)s``) format, exception text included. Header fields are cleaned to
    printable ASCII and cut to the RFC's lengths; the formatter never raises for them.

    Use it with :class:`~aiologsinks.SysLogSink` (``rfc5424=True`` or
    ``setFormatter``); leave ``ident`` empty, APP-NAME replaces it.
    """

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        *,
        hostname: str | None = None,
        app_name: str | None = None,
        msgid: str | None = None,
        structured_data: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        super().__init__(fmt, datefmt)
        self.hostname = hostname if hostname is not None else socket.gethostname()
        if app_name is None:
            app_name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None
        self.app_name = app_name
        self.msgid = msgid
        self.structured_data = dict(structured_data or {})

    def header(self, record: logging.LogRecord) -> str:
        """The header and STRUCTURED-DATA of ``record``, ending with a space."""
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sd: dict[str, Mapping[str, object]] = dict(self.structured_data)
        extra = getattr(record, "structured_data", None)
        if isinstance(extra, Mapping):
            sd.update(extra)
        fields = (
            "1",
            stamp,
            _header_field(self.hostname, 255),
            _header_field(self.app_name, 48),
            _header_field(record.process, 128),
            _header_field(getattr(record, "msgid", None) or self.msgid, 32),
            structured_data(sd),
        )
        return " ".join(fields) + " "

    def format(self, record: logging.LogRecord) -> str:
        """The full RFC 5424 message (without ``<PRI>``)."""
        return self.header(record) + super().format(record)


# --- HTTP and mail ---
# HTTPHandler's url-encoded query/body and Basic auth header, the JSON batch body of
# HTTPSink, and SMTPHandler's message with header-injection-safe Subject/From/To.


# every character str.splitlines() breaks on: the email package refuses a header
# value that contains any of them, which would cost the mail
_CRLF_RUN = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+[ \t]*")


def http_form(mapping: Mapping[str, Any]) -> str:
    """Url-encode ``mapping`` exactly as ``HTTPHandler.emit`` does (query or body)."""
    return urllib.parse.urlencode(mapping)


def http_get_url(url: str, data: str) -> str:
    """Append the encoded ``data`` to ``url`` with ``?`` or ``&`` (``HTTPHandler``)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{data}"


def basic_auth(credentials: tuple[str, str]) -> str:
    """The ``Authorization`` value ``HTTPHandler`` sends for ``(userid, password)``."""
    raw = ("{}:{}".format(*credentials)).encode("utf-8")
    return "Basic " + base64.b64encode(raw).strip().decode("ascii")


def json_items(items: Iterable[Mapping[str, Any]]) -> bytes:
    """``items`` as comma-separated JSON objects (non-JSON values as ``str``).

    A piece of an array: a sink encodes a large batch piece by piece, yielding to
    the loop in between, and joins the pieces with :func:`json_array`.
    """
    return json.dumps(list(items), default=str, separators=(",", ":")).encode("utf-8")[1:-1]


def json_array(pieces: Iterable[bytes]) -> bytes:
    """Join :func:`json_items` pieces into one JSON array."""
    # one join, one copy of the body: the brackets as pieces of it rather than added
    # to it (each + would copy the whole body again)
    parts = [b"["]
    for piece in pieces:
        if piece:
            parts += (piece, b",")
    if len(parts) > 1:
        parts.pop()
    parts.append(b"]")
    return b"".join(parts)


def safe_subject(subject: str) -> str:
    """Fold CR/LF and other line breaks (and the whitespace after them) into one space.

    A subject is often built from record data (``getSubject``); a line break there
    must never start a new header, and must not cost the mail either.
    """
    return _CRLF_RUN.sub(" ", subject)


def check_address(name: str, value: str) -> str:
    """Return ``value``, or raise ``ValueError`` naming ``name`` when it holds a line
    break (CR, LF, or any other that ``str.splitlines`` and so the email package split
    a header at: such an address would fail every mail).

    An address is never repaired: a mangled recipient is worse than no mail.
    """
    if _CRLF_RUN.search(value):
        raise ArgumentValueError(name, "an address must not contain CR, LF or another line break")
    return value


def flatten_mail(msg: EmailMessage) -> tuple[bytes, list[str]]:
    """``msg`` as ``smtplib.SMTP.send_message`` puts it on the wire, and the MAIL
    options it adds: the generator without a policy of its own, so a body line that
    starts with "From " is sent as ">From " (``mangle_from_``, as mbox readers need;
    aiosmtplib's own flattening leaves it), and SMTPUTF8 for non-ASCII addresses."""
    addresses = "".join(str(msg.get(h, "")) for h in ("From", "To"))
    with io.BytesIO() as out:
        if addresses.isascii():
            options: list[str] = []
            generator = email.generator.BytesGenerator(out)
        else:
            options = ["SMTPUTF8", "BODY=8BITMIME"]
            # smtplib's msg.policy.clone(utf8=True): the message's policy is the default
            generator = email.generator.BytesGenerator(out, policy=email.policy.SMTPUTF8)
        generator.flatten(msg, linesep="\r\n")
        return out.getvalue(), options


def mail_message(fromaddr: str, toaddrs: Sequence[str], subject: str, body: str) -> EmailMessage:
    """The message ``SMTPHandler.emit`` builds: From, To (comma-joined), Subject, Date.

    The subject is passed through :func:`safe_subject`; an address with CR/LF raises
    ``ValueError`` (the sink routes it to ``handleError``).
    """
    msg = EmailMessage()
    msg["From"] = check_address("fromaddr", fromaddr)
    msg["To"] = ",".join(check_address("toaddrs", a) for a in toaddrs)
    msg["Subject"] = safe_subject(subject)
    msg["Date"] = email.utils.localtime()
    msg.set_content(body)
    return msg
