"""Load generators for the service benchmark, run as their own process.

``python -m benchmarks._loadgen open PORT RATE SECONDS [WARMUP]`` sends ``GET /work`` at a
fixed rate (open loop): request k is due at ``start + k / RATE`` whether or not the
earlier ones were answered, and its latency is counted from when it was *due*, so a
server that falls behind is charged for the queue it builds (no coordinated omission).
Requests due in the first WARMUP seconds are sent but not counted (their failures
neither).

``open PORT_A,PORT_B ...`` runs the open loop against two servers in turn, in
``SLICE``-second slices ordered ABBA ABBA ..., SECONDS for each (the warm-up alternates
requests between them): their percentiles are then measured over the same seconds,
interleaved, so a drift of the machine's speed moves both alike, and each server
has the CPU to itself during its slices (the other is idle, as in its own phase).

``python -m benchmarks._loadgen closed PORT CONNECTIONS SECONDS`` keeps CONNECTIONS
keep-alive connections busy (closed loop, saturation); the service's requests/s.

Only a ``200`` answer counts as answered, in requests/s and in the percentiles; a
request answered with another status or lost to a socket error counts in ``errors``.

Both print one JSON object. The client is plain HTTP/1.1 over asyncio streams (a few
µs per request), so on a small machine the generator leaves most of the CPU to the
service. Every wait is bounded: a request not answered ``DRAIN`` seconds after the
phase ended is counted as timed out, with its latency censored at that point.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

REQUEST = b"GET /work HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
#: seconds after the end of a phase that answers are still waited for
DRAIN = 5.0
#: connections the open-loop generator may use at once (requests beyond wait for one)
POOL = 256


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self) -> int:
        """Send one request, read its response; return the status."""
        self.writer.write(REQUEST)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def percentiles(lat_s: list[float]) -> dict[str, float | None]:
    """p50/p99/p99.9/max in ms (nearest rank)."""
    if not lat_s:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    xs = sorted(lat_s)

    def q(p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1e3

    return {"p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": xs[-1] * 1e3}


#: the open loop's slice when it alternates between two servers, s
SLICE = 0.5


def slice_side(index: int, sides: int) -> int:
    """The server slice ``index`` goes to: ABBA ABBA ... for two (a drift linear over
    four slices moves both alike), always the first for one."""
    return 0 if sides == 1 else int(index % 4 in (1, 2))


async def open_loop(
    ports: list[int], rate: float, seconds: float, warmup: float, slice_s: float = SLICE
) -> dict[str, Any]:
    """The open loop against each of ``ports`` for ``seconds`` (in alternating slices
    when there are two); one result per port in ``sides``, the first's also at the top."""
    n = len(ports)
    # at least two slices a side, so that a short phase alternates ABBA too
    slice_s = min(slice_s, seconds / 2)
    pools: list[asyncio.Queue[Conn]] = [asyncio.Queue() for _ in ports]
    opened = [8] * n
    for port, pool in zip(ports, pools, strict=True):
        for _ in range(8):
            pool.put_nowait(await Conn.open(port))
    lat: list[list[float]] = [[] for _ in ports]
    errors = [0] * n
    sent = [0] * n
    loop = asyncio.get_running_loop()
    perf = time.perf_counter
    start = perf() + 0.05
    counted_from = start + warmup
    end = counted_from + seconds * n
    tasks: dict[asyncio.Task[None], tuple[float, int, bool]] = {}

    async def one(due: float, side: int, counted: bool) -> None:
        pool, port = pools[side], ports[side]
        if pool.empty() and opened[side] < POOL:
            opened[side] += 1
            try:
                conn = await Conn.open(port)
            except OSError:
                opened[side] -= 1
                conn = await pool.get()
        else:
            conn = await pool.get()
        try:
            status = await conn.get()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors[side] += counted
            conn.close()
            opened[side] -= 1
            return
        done = perf()
        pool.put_nowait(conn)
        if not counted:
            return
        if status == 200:
            lat[side].append(done - due)
        else:
            errors[side] += 1

    k = 0
    while True:
        due = start + k / rate
        if due >= end:
            break
        now = perf()
        if due > now:
            await asyncio.sleep(due - now)
        counted = due >= counted_from
        # the warm-up alternates request by request; then ABBA slices
        side = slice_side(int((due - counted_from) / slice_s), n) if counted else k % n
        t = loop.create_task(one(due, side, counted))
        tasks[t] = (due, side, counted)
        t.add_done_callback(tasks.pop)
        k += 1
        sent[side] += counted
    if tasks:
        await asyncio.wait(set(tasks), timeout=DRAIN)
    answered = [len(x) for x in lat]
    cutoff = perf()
    late: list[list[float]] = [[] for _ in ports]
    for due, side, counted in tasks.values():
        if counted:
            late[side].append(due)
    for t in list(tasks):
        t.cancel()
    sides: list[dict[str, Any]] = []
    for side in range(n):
        # a request still unanswered counts with its latency censored at the cutoff (a
        # lower bound), so the percentiles of a server that fell behind are not flattered
        lat[side].extend(cutoff - due for due in late[side])
        sides.append(
            {
                "port": ports[side],
                "rate": rate,
                "sent": sent[side],
                "answered": answered[side],
                "timed_out": len(late[side]),
                "errors": errors[side],
                **percentiles(lat[side]),
            }
        )
    for pool in pools:
        while not pool.empty():
            pool.get_nowait().close()
    return {"mode": "open", **sides[0], "sides": sides}


async def closed_loop(port: int, connections: int, seconds: float) -> dict[str, Any]:
    perf = time.perf_counter
    lat: list[float] = []
    errors = 0
    conns = [await Conn.open(port) for _ in range(connections)]
    start = perf()
    end = start + seconds

    async def worker(conn: Conn) -> None:
        nonlocal errors
        while True:
            t0 = perf()
            if t0 >= end:
                return
            try:
                status = await conn.get()
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                return
            # a failed request is often answered faster than a served one: counted as
            # throughput, a server failing every request would look fastest
            if status == 200:
                lat.append(perf() - t0)
            else:
                errors += 1

    tasks = [asyncio.ensure_future(worker(c)) for c in conns]
    _, pending = await asyncio.wait(tasks, timeout=seconds + DRAIN)
    for t in pending:
        t.cancel()
    elapsed = min(perf() - start, seconds)
    for c in conns:
        c.close()
    return {
        "mode": "closed",
        "connections": connections,
        "answered": len(lat),
        "errors": errors,
        "timed_out": len(pending),
        "seconds": elapsed,
        "rps": len(lat) / elapsed if lat else 0.0,
        **percentiles(lat),
    }


def main() -> None:
    mode = sys.argv[1]
    if mode == "open":
        warmup = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
        ports = [int(p) for p in sys.argv[2].split(",")]
        coro = open_loop(ports, float(sys.argv[3]), float(sys.argv[4]), warmup)
    elif mode == "closed":
        coro = closed_loop(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(asyncio.run(coro)))


if __name__ == "__main__":
    main()
