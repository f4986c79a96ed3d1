"""The pure encoders of ``_wire``: the stdlib's bytes, computed without I/O.

Each encoder is checked against what the stdlib handler it stands for produces from
the same input, byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import logging.handlers
import socket
import threading
import types
import urllib.parse
import zlib
from typing import Any

import pytest

from aiologsinks import _transport, _wire

from .conftest import IN_CI


def record(msg: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    r = logging.LogRecord("wire.test", logging.WARNING, "f.py", 7, msg, args or ("x",), None)
    r.__dict__.update(extra)
    return r


def copy(r: logging.LogRecord) -> logging.LogRecord:
    return logging.makeLogRecord(dict(r.__dict__))


@pytest.mark.parametrize(
    "r",
    [record(), record("extras %s", user="ann", tags=[1, {"a": 2}]), record("é ✓ %s", "ü")],
    ids=["args", "extras", "unicode"],
)
def test_pickle_frames_are_the_socket_handlers(r: logging.LogRecord) -> None:
    stdlib = logging.handlers.SocketHandler("localhost", None)
    try:
        expected = stdlib.makePickle(copy(r))
    finally:
        stdlib.close()
    assert _wire.pickle_frame(copy(r)) == expected
    assert _wire.dict_frame(_wire.pickle_dict(copy(r))) == expected


def test_a_pickle_dict_merges_the_message_and_drops_what_cannot_travel() -> None:
    d = _wire.pickle_dict(record("a %s", "b", message="stale"))
    assert (d["msg"], d["args"], d["exc_info"]) == ("a b", None, None)
    assert "message" not in d


def test_an_unpicklable_record_raises_for_its_sink_to_report() -> None:
    with pytest.raises(Exception):
        _wire.pickle_frame(record(lock=threading.Lock()))


@pytest.mark.parametrize(("ident", "nul"), [("", True), ("app: ", True), ("", False)])
def test_syslog_messages_are_the_syslog_handlers(ident: str, nul: bool) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    stdlib = logging.handlers.SysLogHandler(receiver.getsockname())
    stdlib.ident, stdlib.append_nul = ident, nul
    try:
        r = record("ünïcode %s", "msg")
        stdlib.emit(r)
        pri = _wire.encode_priority("user", "warning")
        assert _wire.syslog_message(pri, stdlib.format(r), ident, nul) == receiver.recv(65536)
    finally:
        stdlib.close()
        receiver.close()


def test_priorities_are_encoded_as_the_syslog_handler_does() -> None:
    stdlib = logging.handlers.SysLogHandler(("127.0.0.1", 9))
    try:
        for facility in ("user", "local7", 3):
            for priority in ("debug", "err", "critical", 0):
                assert _wire.encode_priority(facility, priority) == stdlib.encodePriority(
                    facility, priority
                )
    finally:
        stdlib.close()
    with pytest.raises(KeyError):
        _wire.encode_priority("nope", "debug")
    assert _wire.encode_priority("mine", "debug", {"mine": 30}) == (30 << 3) | 7


def test_rfc6587_framing() -> None:
    assert _wire.octet_frame(b"<14>hi") == b"6 <14>hi"
    assert _wire.lf_frame(b"<14>hi\x00") == b"<14>hi\n"
    assert _wire.lf_frame(b"<14>two\n\n") == b"<14>two\n"


@pytest.mark.parametrize(
    ("data", "limit", "keep_nul", "expected"),
    [
        (b"short", 10, False, b"short"),
        ("aé".encode() * 3, 4, False, "aéa".encode()),  # never half a character
        ("aé".encode() * 3, 5, False, "aéa".encode()),
        (b"abcdef\x00", 5, True, b"abcd\x00"),
    ],
)
def test_truncation_keeps_whole_characters_and_the_nul(
    data: bytes, limit: int, keep_nul: bool, expected: bytes
) -> None:
    out = _wire.truncate_utf8(data, limit, keep_nul)
    assert out == expected and len(out) <= limit
    out.decode("utf-8")


def test_http_bodies_and_urls_are_the_http_handlers() -> None:
    mapping = {"msg": "a b&c", "n": 1, "u": "é"}
    assert _wire.http_form(mapping) == urllib.parse.urlencode(mapping)
    assert _wire.http_get_url("/log", "a=1") == "/log?a=1"
    assert _wire.http_get_url("/log?t=x", "a=1") == "/log?t=x&a=1"


def test_basic_auth_is_the_http_handlers() -> None:
    value = _wire.basic_auth(("bob", "pässword"))
    assert value.startswith("Basic ")
    assert base64.b64decode(value[6:]).decode("utf-8") == "bob:pässword"


def test_json_batches_join_pieces_and_never_raise_on_odd_values() -> None:
    pieces = [_wire.json_items([{"a": 1}, {"b": object}]), b"", _wire.json_items([{"c": [2]}])]
    body = _wire.json_array(pieces)
    items = json.loads(body)
    assert items[0] == {"a": 1} and items[2] == {"c": [2]} and isinstance(items[1]["b"], str)


@pytest.mark.parametrize("lib", ["isal", "zlib"])
def test_large_bodies_are_compressed_off_the_loop(
    lib: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if lib == "isal" and _transport._isal_zlib is None:
        (pytest.fail if IN_CI else pytest.skip)("isal is not installed (the test extra has it)")
    threads: list[int] = []

    def recording(module: Any) -> Any:
        real = module.compressobj

        def compressobj(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return real(*args, **kwargs)

        return types.SimpleNamespace(compressobj=compressobj, DEFLATED=module.DEFLATED)

    fast = recording(_transport._isal_zlib if lib == "isal" else zlib)
    monkeypatch.setattr(_transport, "_fast_zlib", fast)
    monkeypatch.setattr(_transport, "zlib", recording(zlib))
    big = b"a JSON batch of log records " * 1000
    small = big[: _transport.GZIP_INLINE_MAX]

    async def main() -> None:
        here = threading.get_ident()
        packed = await _transport.gzip_off_loop(big)
        assert threads[-1] != here  # the loop ran on while zlib worked
        # one gzip member, deflate, no flags; MTIME 0 (the same records give the same
        # bytes); level 1, the fastest (zlib's XFL byte says so: 4; ISA-L writes 0)
        assert packed[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
        assert packed[8] == (0 if lib == "isal" else 4)
        assert packed == await _transport.gzip_off_loop(big)
        assert gzip.decompress(packed) == big
        assert len(threads) == 2  # level 1: the fast compressor, each time
        assert gzip.decompress(await _transport.gzip_off_loop(small)) == small
        assert threads[-1] == here  # not worth a thread
        # shutting down: no executor to hand it to, so it is compressed here; another
        # level keeps zlib's meaning
        await asyncio.get_running_loop().shutdown_default_executor()
        six = await _transport.gzip_off_loop(big, 6)
        assert gzip.decompress(six) == big and six[8] == 0  # zlib's XFL for level 6
        assert threads[-1] == here and len(threads) == 4

    asyncio.run(main())


def test_mail_headers_cannot_be_injected() -> None:
    assert _wire.safe_subject("a\r\nBcc: x@y\u2028z") == "a Bcc: x@y z"
    with pytest.raises(ValueError, match="toaddrs"):
        _wire.mail_message("a@b", ["c@d\r\nBcc: e@f"], "s", "body")
    msg = _wire.mail_message("a@b", ["c@d", "e@f"], "subject", "body")
    assert (msg["From"], msg["Subject"]) == ("a@b", "subject")
    assert [a.strip() for a in str(msg["To"]).split(",")] == ["c@d", "e@f"]
