"""Hostile input against a running collector, on every channel.

Each case starts ``python -m aiologsinks receive`` (all channels, ``max_frame`` 1 MiB,
``max_connections`` 64, ``read_timeout`` 1 s), opens an honest ``SocketHandler``-style
connection, runs the attack, then sends one more honest record on that connection.
It asserts: the honest records are written, nothing from the attack ran (no file
created by a pickle calling ``os.system``), the collector spent at most
``CPU_BOUND`` seconds of CPU and its peak RSS grew by at most ``RSS_BOUND`` during the
attack, and SIGTERM still ends it within its drain bound with exit code 0.

Figures measured on a shared 2-core machine (the bounds asserted are generous): a
3 KB memo bomb standing for 10^12 list items costs 0.01 s of CPU and no memory (over
UDP and TCP); 40 connections each sending 1 MiB - 1 byte of a frame and idling cost
0.12 s of CPU and +40 MiB peak RSS until the read timeout closes all 40 (the old
receiver grew by 641 MiB with 16 MB frames and never closed them); oversized length
prefixes, pickles calling ``os.system`` in every protocol, format-string and size
bombs, syslog and HTTP abuse, 150 connections against a limit of 64: each under
0.05 s of CPU and +2 MiB; frames shaped like the flat records the fast path hands
to the C unpickler but each with what must keep them from it (a far memo index,
references to a 600 KB string, a tuple key that takes 2**60 steps to hash, 100,000
pairs, 20,000 colliding int keys): 0.19 s of CPU and +5 MiB in all; SIGTERM ends the
collector in under 0.6 s after any of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from ..peers.collector import Collector

CPU_BOUND = 5.0  # seconds of CPU the collector may spend on one attack
RSS_BOUND = 200 * 1024 * 1024  # bytes its peak RSS may grow by
MIB = 1024 * 1024


def frame(obj: Any, protocol: int = 1) -> bytes:
    data = pickle.dumps(obj, protocol)
    return struct.pack(">L", len(data)) + data


def memo_bomb(levels: int = 6, width: int = 100) -> bytes:
    """A record whose msg is a list of references to lists of references...:
    width**levels items (10^12) in about 3 KB, without a single global."""
    out = bytearray(b"\x80\x02}q\x00(X\x03\x00\x00\x00msgq\x01]q\x02(")
    out += b"N" * width + b"e"
    for level in range(1, levels):
        out += b"0]r" + struct.pack("<I", level + 2) + b"("
        out += (b"j" + struct.pack("<I", level + 1)) * width + b"e"
    out += b"u."
    return bytes(out)


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (os.system, (f"touch {self.marker}",))


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss  # pragma: no cover - not Linux


async def send_all(port: int, data: bytes, read_answer: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10) if read_answer else b""
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def udp_send(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


Attack = Callable[[dict[str, int], Path], Awaitable[None]]


async def memo_bomb_udp(ports: dict[str, int], tmp: Path) -> None:
    bomb = memo_bomb()
    assert len(bomb) < 8192
    udp_send(ports["udp"], struct.pack(">L", len(bomb)) + bomb)


async def memo_bomb_tcp(ports: dict[str, int], tmp: Path) -> None:
    bomb = memo_bomb()
    await send_all(ports["tcp"], (struct.pack(">L", len(bomb)) + bomb) * 5)


async def far_memo_index(ports: dict[str, int], tmp: Path) -> None:
    # 7 bytes that make the stdlib's restricted C Unpickler allocate 776 MB
    data = b"".join(b"}r" + struct.pack("<I", i) + b"." for i in (50_000_000, 2**31 - 1))
    await send_all(ports["tcp"], b"".join(struct.pack(">L", 7) + d for d in [data[:7], data[7:]]))


async def code_execution(ports: dict[str, int], tmp: Path) -> None:
    evil = Evil(tmp / "pwned")
    data = b"".join(frame(evil, p) for p in range(pickle.HIGHEST_PROTOCOL + 1))
    await send_all(ports["tcp"], data)
    udp_send(ports["udp"], frame(evil, 2))


async def idle_partial_frames(ports: dict[str, int], tmp: Path) -> None:
    # 40 connections, each 1 MiB - 1 byte of a frame announced as 1 MiB, then silence
    size = MIB
    readers, writers = [], []
    for _ in range(40):
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["tcp"])
        writer.write(struct.pack(">L", size) + b"x" * (size - 1))
        readers.append(reader)
        writers.append(writer)
    for writer in writers:
        await writer.drain()
    # ... and wait: the read timeout (1 s) closes every one of them
    for reader in readers:
        assert await asyncio.wait_for(reader.read(), 20) == b""
    for writer in writers:
        writer.close()


async def oversized_prefix(ports: dict[str, int], tmp: Path) -> None:
    for prefix in (16 * MIB - 1, 0xFFFFFFFF, MIB + 1):
        await send_all(ports["tcp"], struct.pack(">L", prefix) + b"x" * 1000, read_answer=True)


async def format_and_size_bombs(ports: dict[str, int], tmp: Path) -> None:
    records = [
        {"msg": "%999999999d", "args": (1,)},
        {"msg": "%(a)s" * 50_000, "args": {"a": "x" * 100}},
        {"msg": "x", "args": ("%s" * 100,), "created": 1e308, "levelno": 10**30},
        {
            "msg": "deep",
            "extra": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
        },
        {"msg": "int", "n": 10**150},
    ]
    await send_all(ports["tcp"], b"".join(frame(r) for r in records))


async def syslog_garbage(ports: dict[str, int], tmp: Path) -> None:
    await send_all(ports["syslog"], b"<14>" + b"y" * (2 * MIB))  # never terminated
    await send_all(ports["syslog"], b"99999999999 <14>x")  # absurd octet count
    for data in (b"", b"<999>x", b"\xff" * 60000, b"<14>\x1b]0;title\x07"):
        udp_send(ports["syslog"], data)


async def http_abuse(ports: dict[str, int], tmp: Path) -> None:
    port = ports["http"]
    answers = [
        await send_all(port, b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", True),
        await send_all(port, b"POST / HTTP/1.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 200001\r\nConnection: close\r\n\r\n"
                       + b"[" * 100000 + b"1" + b"]" * 100000, True),
        await send_all(port, b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n", True),
        await send_all(port, b"POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n"
                       b"\r\na&b", True),
    ]  # fmt: skip
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 4"), answer[:60]


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


async def flat_look_alikes(ports: dict[str, int], tmp: Path) -> None:
    # frames shaped like the flat records the fast path hands to the C unpickler,
    # each with the one thing that must send it to the budgeted interpreter instead
    name = _text("name") + _text("flat")
    shared = _text("msg") + _text("m" * 600_000) + b"q\x01"
    bodies = [
        # a far memo index after a key: the C unpickler would allocate 776 MB
        b"}q\x00(" + name + _text("msg") + b"r" + struct.pack("<I", 50_000_000) + b"N" + b"u.",
        # 20 references to a 600 KB string: 12 MB once expanded (over budget)
        b"}q\x00(" + shared + b"".join(_text(f"k{i}") + b"h\x01" for i in range(20)) + b"u.",
        # a tuple key whose hashing would take 2**60 steps: refused by expanded size
        b"}q\x00(N\x85q\x01"
        + b"".join(b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1])
                   for i in range(1, 61))
        + _text("v") + b"u.",
        # 100,000 pairs in one frame: over the operation budget
        b"}q\x00(" + (_text("k") + b"N") * 100_000 + b"u.",
        # 20,000 int keys with one hash (quadratic to insert): read as their repr
        b"}q\x00(" + name + _text("k")
        + b"}(" + b"".join(b"L%dL\nN" % (i * (2**61 - 1)) for i in range(20_000)) + b"uu.",
    ]  # fmt: skip
    await send_all(ports["tcp"], b"".join(struct.pack(">L", len(b)) + b for b in bodies))


async def connection_flood(ports: dict[str, int], tmp: Path) -> None:
    writers = []
    for _ in range(150):  # more than max_connections (64): the rest are refused
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", ports["tcp"])
        except OSError:
            continue
        writers.append(writer)
    for writer in writers:
        writer.close()


#: each attack, and how many of its TCP frames are records (written, made safe)
ATTACKS: dict[str, tuple[Attack, int]] = {
    "memo-bomb-udp": (memo_bomb_udp, 0),
    "memo-bomb-tcp": (memo_bomb_tcp, 0),
    "far-memo-index": (far_memo_index, 2),  # two empty records
    "code-execution": (code_execution, 0),
    "idle-partial-frames": (idle_partial_frames, 0),
    "oversized-prefix": (oversized_prefix, 0),
    "format-and-size-bombs": (format_and_size_bombs, 4),  # too deep: invalid
    "syslog-garbage": (syslog_garbage, 0),
    "http-abuse": (http_abuse, 0),
    "connection-flood": (connection_flood, 0),
    "flat-look-alikes": (flat_look_alikes, 2),  # the far index and the colliding keys
}


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_hostile_input_is_bounded_and_honest_senders_are_served(
    tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out.log"
    config = {
        "collector": {
            "tcp": 0, "udp": 0, "syslog": 0, "http": 0, "stats_interval": 0.1,
            "max_connections": 64, "read_timeout": 1.0, "idle_timeout": 5.0,
            "drain_timeout": 5.0,
        },
        "formatters": {"plain": {"format": "%(name)s %(message)s"}},
        "sinks": {"out": {"type": "FileSink", "filename": str(out), "formatter": "plain"}},
    }  # fmt: skip
    async with Collector(config, tmp_path) as collector:
        proc = psutil.Process(collector.pid)
        _, honest = await asyncio.open_connection("127.0.0.1", collector.ports["tcp"])
        honest.write(frame({"name": "honest", "msg": "before"}))
        await honest.drain()
        await collector.wait_line("tcp 1 received")
        cpu_before = sum(proc.cpu_times()[:2])
        rss_before = proc.memory_info().rss

        attack, accepted = ATTACKS[name]
        await attack(collector.ports, tmp_path)

        honest.write(frame({"name": "honest", "msg": "after"}))
        await honest.drain()
        await collector.wait_line(f"tcp {2 + accepted} received", timeout=30)
        if name == "idle-partial-frames":
            await collector.wait_line("40 timed out", timeout=30)
        cpu = sum(proc.cpu_times()[:2]) - cpu_before
        rss_growth = peak_rss(collector.pid) - rss_before
        honest.close()
        loop = asyncio.get_running_loop()
        asked = loop.time()
        assert await collector.stop(timeout=15) == 0
        stop_seconds = loop.time() - asked
    logging.getLogger(__name__).info(
        "%s: %.3f s CPU, peak RSS +%.1f MiB, stopped in %.2f s",
        name, cpu, rss_growth / MIB, stop_seconds,
    )  # fmt: skip
    assert cpu < CPU_BOUND, f"{name}: {cpu:.2f} s of CPU"
    assert rss_growth < RSS_BOUND, f"{name}: peak RSS grew by {rss_growth / MIB:.0f} MiB"
    assert stop_seconds < 10  # the drain bound (5 s) plus start-up slack
    assert not (tmp_path / "pwned").exists()
    lines = (await asyncio.to_thread(out.read_text)).splitlines()
    assert "honest before" in lines and "honest after" in lines
    assert all("\x1b" not in ln and "\x07" not in ln for ln in lines)
    assert "stopped;" in collector.summary
