"""Records/s to a local TCP receiver, and the loop's p99 stall while it reads slowly.

Three ways to get records from a coroutine to a ``logging.handlers.SocketHandler``-style
receiver running in a separate process on 127.0.0.1:

* ``stdlib``: ``SocketHandler`` attached to the logger, sending on the event loop;
* ``queue``: stdlib ``QueueHandler`` + ``QueueListener`` + ``SocketHandler`` (a thread);
* ``sink``: ``aiologsinks.SocketSink`` through ``als.install`` (the dispatcher).

Throughput: the time from the first logging call until the receiver has read every
record. Stall: a 1 ms ticker on the loop while the receiver sleeps 1 ms per 100
records; the p99 and max of how late the ticker woke. Bounded loops, loopback only.

Run: ``python benchmarks/bench_socket.py [--records N] [--slow-records N]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import multiprocessing
import queue
import socketserver
import statistics
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection

import aiologsinks as als

# -- the receiver process ------------------------------------------------------------------


def _receiver(conn: Connection, port_out: Connection) -> None:
    lock = threading.Lock()
    state = {"count": 0, "target": -1, "slow": False}

    def bump() -> None:
        with lock:
            state["count"] += 1
            if state["count"] == state["target"]:
                conn.send("done")

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            n = 0
            while True:
                header = self.rfile.read(4)
                if len(header) < 4:
                    return
                if len(self.rfile.read(struct.unpack(">L", header)[0])) == 0:
                    return
                bump()
                n += 1
                if state["slow"] and n % 100 == 0:
                    time.sleep(0.001)

    class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port_out.send(server.server_address[1])
    while True:
        cmd, target, slow = conn.recv()
        if cmd == "stop":
            server.shutdown()
            return
        with lock:
            state.update(count=0, target=target, slow=slow)
        conn.send("ready")


class Receiver:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        port_in, port_out = ctx.Pipe()
        self.proc = ctx.Process(target=_receiver, args=(child, port_out), daemon=True)
        self.proc.start()
        self.port: int = port_in.recv()

    def expect(self, n: int, slow: bool) -> None:
        self.conn.send(("expect", n, slow))
        assert self.conn.recv() == "ready"

    async def done(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    def stop(self) -> None:
        self.conn.send(("stop", 0, False))
        self.proc.join(10)


# -- the three ways ------------------------------------------------------------------------

Setup = Callable[[logging.Logger, int], Awaitable[Callable[[], Awaitable[None]]]]


async def run_stdlib(logger: logging.Logger, port: int) -> Callable[[], Awaitable[None]]:
    handler = logging.handlers.SocketHandler("127.0.0.1", port)
    logger.addHandler(handler)

    async def finish() -> None:
        logger.removeHandler(handler)
        handler.close()

    return finish


async def run_queue(logger: logging.Logger, port: int) -> Callable[[], Awaitable[None]]:
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = logging.handlers.SocketHandler("127.0.0.1", port)
    listener = logging.handlers.QueueListener(q, handler)
    qh = logging.handlers.QueueHandler(q)
    logger.addHandler(qh)
    listener.start()

    async def finish() -> None:
        logger.removeHandler(qh)
        await asyncio.to_thread(listener.stop)
        handler.close()

    return finish


async def run_sink(logger: logging.Logger, port: int) -> Callable[[], Awaitable[None]]:
    cm = als.install(als.SocketSink("127.0.0.1", port), logger=logger, level=logging.INFO)
    await cm.__aenter__()

    async def finish() -> None:
        await cm.__aexit__(None, None, None)

    return finish


WAYS: dict[str, Setup] = {"stdlib": run_stdlib, "queue": run_queue, "sink": run_sink}


async def measure(way: str, receiver: Receiver, n: int, slow: bool) -> tuple[float, float, float]:
    """Return (records/s, p99 stall ms, max stall ms)."""
    logger = logging.getLogger(f"bench.{way}.{slow}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    receiver.expect(n, slow)
    finish = await WAYS[way](logger, receiver.port)
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append(max(0.0, loop.time() - t - 0.001))

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    done = asyncio.create_task(receiver.done())
    start = time.perf_counter()
    for i in range(n):
        logger.info("record %d of the benchmark with a little payload", i)
        if i % 100 == 99:
            await asyncio.sleep(0)  # a service does other work between log calls
    await done
    elapsed = time.perf_counter() - start
    stop.set()
    await tick
    await finish()
    lags.sort()
    p99 = lags[int(len(lags) * 0.99)] if lags else 0.0
    return n / elapsed, p99 * 1000, (lags[-1] if lags else 0.0) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--slow-records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    receiver = Receiver()
    try:
        rates: dict[str, float] = {}
        stalls: dict[str, tuple[float, float]] = {}
        for way in WAYS:
            rates[way] = statistics.median(
                [(await measure(way, receiver, args.records, False))[0] for _ in range(args.repeat)]
            )
            slow = [
                await measure(way, receiver, args.slow_records, True) for _ in range(args.repeat)
            ]
            stalls[way] = (
                statistics.median(s[1] for s in slow),
                statistics.median(s[2] for s in slow),
            )
    finally:
        receiver.stop()
    print(f"records: {args.records} (fast receiver), {args.slow_records} (slow receiver)")
    print(
        f"{'way':8} {'records/s':>12} {'p99 stall ms':>14} {'max stall ms':>14}"
        "  (medians of --repeat runs)"
    )
    for way in WAYS:
        print(f"{way:8} {rates[way]:12.0f} {stalls[way][0]:14.2f} {stalls[way][1]:14.2f}")
    print(
        "ratios: sink/stdlib throughput {:.2f}, sink/queue throughput {:.2f}; "
        "stdlib/sink p99 stall {:.1f}x".format(
            rates["sink"] / rates["stdlib"],
            rates["sink"] / rates["queue"],
            stalls["stdlib"][0] / max(stalls["sink"][0], 1e-3),
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
