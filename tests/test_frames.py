"""The framing shared by the collector, the test peers and the benchmark peers."""

from __future__ import annotations

import logging
import logging.handlers
import pickle

import pytest

from aiologsinks._collector._frames import (
    HEADER,
    FramingError,
    take_frames,
    take_octet_counted,
    take_terminated,
)


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def test_take_frames_returns_the_complete_frames_and_keeps_the_partial_one() -> None:
    buf = bytearray(frame(b"one") + frame(b"") + frame(b"three")[:5])
    assert take_frames(buf, 100) == [b"one", b""]
    assert buf == frame(b"three")[:5]
    buf += frame(b"three")[5:]
    assert take_frames(buf, 100) == [b"three"]
    assert buf == b""


def test_take_frames_reads_what_socket_handler_sends() -> None:
    handler = logging.handlers.SocketHandler("127.0.0.1", 9)
    record = logging.makeLogRecord({"msg": "hello %s", "args": ("world",)})
    buf = bytearray(handler.makePickle(record) * 3)
    handler.close()
    bodies = take_frames(buf, 1 << 20)
    assert [pickle.loads(b)["msg"] for b in bodies] == ["hello world"] * 3


def test_an_oversized_frame_raises_after_the_frames_before_it() -> None:
    buf = bytearray(frame(b"ok") + HEADER.pack(11) + b"x" * 11)
    assert take_frames(buf, 10) == [b"ok"]
    with pytest.raises(FramingError, match="11 bytes, more than 10"):
        take_frames(buf, 10)


def test_octet_counted_messages_wait_for_their_count_and_their_body() -> None:
    buf = bytearray(b"5 <13>a4 <1")
    assert take_octet_counted(buf, 100) == [b"<13>a"]
    assert buf == b"4 <1"
    buf += b"3>"
    assert take_octet_counted(buf, 100) == [b"<13>"]
    buf += b"12"  # a count still arriving
    assert take_octet_counted(buf, 100) == []
    assert buf == b"12"


def test_a_broken_octet_count_raises_after_the_messages_before_it() -> None:
    buf = bytearray(b"2 ab<13>no count here at all")
    assert take_octet_counted(buf, 100) == [b"ab"]
    with pytest.raises(FramingError, match="octet count"):
        take_octet_counted(buf, 100)
    with pytest.raises(FramingError, match="octet count"):
        take_octet_counted(bytearray(b"101 " + b"x" * 101), 100)


def test_terminated_messages_keep_the_line_feeds_inside_them() -> None:
    buf = bytearray(b"<11>trace\n  line\x00<12>second\x00<13>part")
    assert take_terminated(buf, b"\x00") == [b"<11>trace\n  line", b"<12>second"]
    assert buf == b"<13>part"
    assert take_terminated(buf, b"\x00") == []
