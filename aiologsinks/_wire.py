"""Pure encoders shared by the sinks: the bytes that go on the wire, built in one place.

Nothing here does I/O; every function is a plain computation that a sink calls and a
test can check against the stdlib byte for byte.
"""

from __future__ import annotations

import base64
import email.utils
import gzip as _gzip
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

# --- HTTP and mail ---
# HTTPHandler's url-encoded query/body and Basic auth header, the JSON batch body of
# HTTPSink, and SMTPHandler's message with header-injection-safe Subject/From/To.


_CRLF_RUN = re.compile(r"[\r\n]+[ \t]*")


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


def json_array(pieces: Iterable[bytes], *, compress: bool = False) -> bytes:
    """Join :func:`json_items` pieces into one JSON array, gzip-compressed on request.

    ``mtime=0`` keeps the gzip output a pure function of the input.
    """
    body = b"[" + b",".join(p for p in pieces if p) + b"]"
    if compress:
        return _gzip.compress(body, mtime=0)
    return body


def safe_subject(subject: str) -> str:
    """Fold CR/LF (and the whitespace after them) into one space.

    A subject is often built from record data (``getSubject``); a line break there
    must never start a new header, and must not cost the mail either.
    """
    return _CRLF_RUN.sub(" ", subject)


def check_address(name: str, value: str) -> str:
    """Return ``value``, or raise ``ValueError`` naming ``name`` when it has CR/LF.

    An address is never repaired: a mangled recipient is worse than no mail.
    """
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name}: an address must not contain CR or LF")
    return value


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
