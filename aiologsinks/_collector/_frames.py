"""Record frames on a byte stream: where one ends and the next begins.

The framings the collector reads, written once for every reader of them (the test
and benchmark peers split with these functions; the collector's channels share the
constants):

* pickled records (``SocketHandler`` / ``SocketSink``): a 4-byte big-endian length,
  then the pickle; over UDP one such frame per datagram;
* syslog over TCP: RFC 6587 octet counting (``LEN SP MSG``), or messages ended by a
  terminator (NUL for ``SysLogHandler``, LF for most daemons).

The splitters are pure: they take the complete frames from the head of a
``bytearray`` and leave the rest for the next read, so an asyncio protocol and a
stream reader frame the same way. What a pickled frame holds is read by
``_unpickle.load_record``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

__all__ = [
    "HEADER",
    "SYSLOG_STARTS",
    "FramingError",
    "frame_length",
    "octet_count",
    "starts_like",
    "take_frames",
    "take_octet_counted",
    "take_terminated",
]

#: the length prefix of a pickled record frame
HEADER = struct.Struct(">L")
#: ``frame_length(buf, pos) -> (length,)``: the length announced at ``pos``
frame_length = HEADER.unpack_from
#: what a syslog message starts with (a PRI, or an octet count)
SYSLOG_STARTS = frozenset(b"<0123456789")
#: the longest octet count RFC 6587 framing is given before it must be a number
_MAX_COUNT_DIGITS = 12
_LT = ord("<")


class FramingError(ValueError):
    """The framing of a stream is broken (a frame longer than allowed, an octet count
    that is no number): nothing after it on that stream can be trusted."""


def take_frames(buf: bytearray, max_frame: int) -> list[bytes]:
    """Remove the complete length-prefixed frames from the head of ``buf``; return
    their bodies (without the prefix).

    Raises :class:`FramingError` when the frame at the head announces more than
    ``max_frame`` bytes; the complete frames before it are returned first (the call
    after them raises).
    """

    def frame_at(pos: int, end: int) -> tuple[int, int] | None:
        if end - pos < 4:
            return None
        (size,) = frame_length(buf, pos)
        if size > max_frame:
            raise FramingError(f"frame of {size} bytes, more than {max_frame}")
        return pos + 4, pos + 4 + size

    return _take(buf, frame_at)


def take_octet_counted(buf: bytearray, max_frame: int) -> list[bytes]:
    """Remove the complete RFC 6587 octet-counted messages (``LEN SP MSG``) from the
    head of ``buf``; return the messages.

    Raises :class:`FramingError` when the head is not an octet count (or counts more
    than ``max_frame``); the complete messages before it are returned first.
    """

    def message_at(pos: int, end: int) -> tuple[int, int] | None:
        space = buf.find(b" ", pos, pos + _MAX_COUNT_DIGITS)
        if space < 0:
            if end - pos < _MAX_COUNT_DIGITS:
                return None  # the count itself has not arrived yet
            count = b""
        else:
            count = bytes(buf[pos:space])
        if not count.isdigit() or int(count) > max_frame:
            raise FramingError(f"not an RFC 6587 octet count up to {max_frame}: {count[:12]!r}")
        return space + 1, space + 1 + int(count)

    return _take(buf, message_at)


def octet_count(buf: bytearray) -> int | None:
    """The length of an RFC 6587 octet-counted frame at the head of ``buf`` ("LEN SP"
    and a message that starts with its PRI's ``<``), -1 when that cannot be told yet,
    None when ``buf`` does not start with one (a message without a PRI that starts
    with a digit, such as a timestamp, framed by LF or NUL)."""
    space = buf.find(b" ", 0, _MAX_COUNT_DIGITS + 1)
    if space < 0:
        head = buf[:_MAX_COUNT_DIGITS]
        return -1 if len(buf) <= _MAX_COUNT_DIGITS and head.isdigit() else None
    if not buf[:space].isdigit():
        return None
    if len(buf) == space + 1:
        return -1
    return int(buf[:space]) if buf[space + 1] == _LT else None


def starts_like(buf: bytearray, pos: int) -> bool:
    """Whether the line at ``pos`` starts as the message at the head of ``buf`` did, so
    may be the next message: a PRI after a PRI (``<`` and a digit), a digit (a
    timestamp) after a message without one. A line of a multi-line message rarely
    does (a traceback's or an embedded log's lines start with spaces or a date)."""
    if buf[0] == _LT:
        return buf[pos] == _LT and buf[pos + 1 : pos + 2].isdigit()
    return buf[pos] in SYSLOG_STARTS and buf[pos] != _LT


def take_terminated(buf: bytearray, terminator: bytes = b"\x00") -> list[bytes]:
    """Remove the complete messages ended by ``terminator`` from the head of ``buf``;
    return them (without the terminator). ``SysLogHandler`` ends each message with a
    NUL, so an LF inside one (a traceback) is part of it."""
    end = buf.rfind(terminator)
    if end < 0:
        return []
    messages = bytes(buf[:end]).split(terminator)
    del buf[: end + len(terminator)]
    return messages


def _take(buf: bytearray, locate: Callable[[int, int], tuple[int, int] | None]) -> list[bytes]:
    """Remove from the head of ``buf`` the pieces that ``locate(pos, end)`` finds one
    after another (``(start, stop)`` of the piece whose header is at ``pos``, None
    while its header is incomplete) as long as each has arrived completely; return
    them. A :class:`FramingError` of ``locate`` is raised once the pieces before it
    were taken (by the next call)."""
    pieces: list[bytes] = []
    pos, end = 0, len(buf)
    while pos < end:
        try:
            found = locate(pos, end)
        except FramingError:
            if pieces:
                break
            raise
        if found is None or found[1] > end:
            break
        start, pos = found
        pieces.append(bytes(buf[start:pos]))
    if pos:
        del buf[:pos]
    return pieces
