"""The HTTP channel's parsing: one request at a time, every size checked first.

A minimal HTTP/1.1 server side, enough for ``HTTPHandler`` (GET with a query, or a
url-encoded POST) and ``HTTPSink`` (form or JSON bodies, kept-alive connections):
the head is limited to :data:`MAX_HEAD` bytes, ``Content-Length`` is required for a
body and checked against the frame limit before a byte of the body is read,
chunked bodies are refused (411). A body in ``Content-Encoding: gzip`` (as
``HTTPSink(gzip=True)`` sends it) is decoded within the same limit on its decoded
size (413 past it); ``deflate`` and ``identity`` are taken too, any other coding is
a 415. Every malformed request gets a 4xx answer; a record that cannot be decoded is
a 400, never a 500.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .._http import ProtocolError, decode_body
from ._records import text_fields

__all__ = ["MAX_HEAD", "HTTPError", "Request", "parse_head", "records_of", "response"]

#: the largest request line plus headers accepted
MAX_HEAD = 16 * 1024
_MAX_FIELDS = 1000
_MAX_JSON_NODES = 200_000
_MAX_JSON_DEPTH = 32

_REASONS = {
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class HTTPError(ValueError):
    """A request answered with ``status``; ``close`` when the stream cannot go on."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


@dataclass
class Request:
    """A parsed request head."""

    method: str
    target: str
    length: int
    content_type: str
    keep_alive: bool
    expect_continue: bool
    #: the Content-Encoding header, as sent ("" without one)
    content_encoding: str
    #: the largest body, as sent and decoded
    max_body: int


def parse_head(head: bytes, max_body: int) -> Request:
    """Parse the bytes before the blank line; raises :class:`HTTPError`."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise HTTPError(400, "undecodable request head", close=True) from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HTTPError(400, "malformed request line", close=True)
    method, target, version = parts
    headers: dict[str, str] = {}
    # comma-separated, case-insensitive tokens, every Connection header's together
    # (RFC 9110 7.6.1): "keep-alive, close" closes
    connection: set[str] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPError(400, "malformed header line", close=True)
        key, value = name.lower(), value.strip()
        if key == "content-length" and headers.get(key, value) != value:
            # which one frames the body? (RFC 9112 6.3: an error, never a guess)
            raise HTTPError(400, "conflicting Content-Length headers", close=True)
        if key == "content-encoding" and key in headers:
            value = f"{headers[key]}, {value}"  # the codings in the order applied
        headers[key] = value
        if key == "connection":
            connection.update(token.strip().lower() for token in value.split(","))
    if "transfer-encoding" in headers:
        raise HTTPError(411, "chunked bodies are not accepted: send Content-Length", close=True)
    raw_length = headers.get("content-length", "0")
    # ASCII digits only: str.isdigit() also takes "²" and the like, which int() refuses
    if not (raw_length.isascii() and raw_length.isdigit()) or len(raw_length) > 12:
        raise HTTPError(400, "malformed Content-Length", close=True)
    length = int(raw_length)
    if length > max_body:
        raise HTTPError(413, f"body larger than {max_body} bytes", close=True)
    keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    return Request(
        method=method.upper(),
        target=target,
        length=length,
        content_type=headers.get("content-type", "").split(";", 1)[0].strip().lower(),
        keep_alive=keep_alive,
        expect_continue=headers.get("expect", "").lower() == "100-continue",
        content_encoding=headers.get("content-encoding", ""),
        max_body=max_body,
    )


def _check_json(value: Any) -> None:
    """Refuse JSON nested deeper than the record depth limit, iteratively."""
    todo = [(value, 0)]
    nodes = 0
    while todo:
        item, depth = todo.pop()
        nodes += 1
        if nodes > _MAX_JSON_NODES:
            raise HTTPError(400, "JSON body has too many values")
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item  # type: ignore[assignment]
        else:
            continue
        if depth >= _MAX_JSON_DEPTH:
            raise HTTPError(400, f"JSON nested deeper than {_MAX_JSON_DEPTH}")
        todo.extend((child, depth + 1) for child in children)


_ALIASES = (("message", "msg"), ("logger", "name"), ("level", "levelname"))


def _json_records(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPError(400, "invalid JSON body") from None
    _check_json(data)
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise HTTPError(400, "expected a JSON object or a non-empty list of objects")
    for item in items:
        for alias, key in _ALIASES:
            if key not in item and alias in item:
                item[key] = item.pop(alias)
    return items


def _form(text: str) -> dict[str, Any]:
    try:
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError:
        raise HTTPError(400, "invalid url-encoded record") from None
    return text_fields(pairs)


_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def _decoded(request: Request, body: bytes) -> bytes:
    """The body without its content coding; raises :class:`HTTPError` (400/413/415)."""
    codings = [c.strip().lower() for c in request.content_encoding.split(",")]
    applied = [c for c in codings if c and c != "identity"]
    if not applied:
        return body
    coding = _CODINGS.get(applied[0]) if len(applied) == 1 else None
    if coding is None:
        raise HTTPError(
            415,
            f"Content-Encoding {request.content_encoding!r} not accepted: gzip, deflate or none",
        )
    limit = request.max_body
    try:
        data = decode_body(body, coding, limit=limit + 1, whole=True)
    except ProtocolError:
        raise HTTPError(400, f"body is not valid {coding}") from None
    if len(data) > limit:
        # the body was checked as sent: a small one may stand for far more (a bomb)
        raise HTTPError(413, f"body larger than {limit} bytes once decoded")
    return data


def records_of(request: Request, body: bytes) -> list[dict[str, Any]]:
    """The record dicts a request carries; raises :class:`HTTPError` (400/405/413/415)."""
    if request.method == "GET":
        try:
            query = urllib.parse.urlsplit(request.target).query
        except ValueError:  # "Invalid IPv6 URL", a bracketed host that is no address
            raise HTTPError(400, "malformed request target") from None
        if not query:
            raise HTTPError(400, "no record in the query string")
        return [_form(query)]
    if request.method not in ("POST", "PUT"):
        raise HTTPError(405, f"method {request.method} not allowed")
    body = _decoded(request, body)
    if request.content_type == "application/json":
        return _json_records(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "url-encoded body is not UTF-8") from None
    if not text:
        raise HTTPError(400, "empty body")
    return [_form(text)]


def response(status: int, text: str, keep_alive: bool, method: str = "POST") -> bytes:
    """A complete HTTP/1.1 response with a short plain-text body (none to a HEAD
    request: its client reads no body, and would take this one for the next answer)."""
    body = (text + "\n").encode("utf-8", "replace")
    allow = "Allow: GET, POST, PUT\r\n" if status == 405 else ""  # RFC 9110 15.5.6
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{allow}Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("ascii") + (b"" if method == "HEAD" else body)
