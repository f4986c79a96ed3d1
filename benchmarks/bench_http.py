"""HTTP logging on an event loop: stdlib HTTPHandler vs HTTPSink (per record, JSON batch).

A separate process serves HTTP on 127.0.0.1 and answers every request after 2 ms (a
nearby log collector). The client logs N records from a coroutine, as an app would,
while a 1 ms ticker measures how late the loop runs it (the loop's stall), then waits
until every record is delivered. For each contender it prints records/s (logging
start to last record delivered), the loop's p99 and max stall, and the ratios.

    python benchmarks/bench_http.py            # 10,000 records each
    python benchmarks/bench_http.py --n 2000   # quicker

Bounded: every phase has a timeout, the server process is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aiologsinks as als  # noqa: E402

DELAY = 0.002
PHASE_TIMEOUT = 120.0


# -- the server process -------------------------------------------------------------------


def serve() -> None:
    """Answer every request after DELAY; count records (one per form, N per JSON array)."""
    from aiohttp import web

    received = 0

    async def log(request: web.Request) -> web.Response:
        nonlocal received
        body = await request.read()
        if request.content_type == "application/json":
            received += len(json.loads(body))
        else:
            received += 1
        await asyncio.sleep(DELAY)
        return web.Response(text="ok")

    async def count(request: web.Request) -> web.Response:
        nonlocal received
        value = received
        if request.query.get("reset"):
            received = 0
        return web.Response(text=str(value))

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/log", log)
        app.router.add_get("/count", count)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
        await runner.cleanup()

    asyncio.run(main())


# -- the client ---------------------------------------------------------------------------


class Ticker:
    """A 1 ms periodic task; its lateness is how long the loop was blocked."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            self.lags.append(max(0.0, time.perf_counter() - due))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def p99_ms(self) -> float:
        if not self.lags:
            return 0.0
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000

    def max_ms(self) -> float:
        return max(self.lags, default=0.0) * 1000


async def produce(logger: logging.Logger, n: int) -> None:
    """Log n records, yielding to the loop every 50 (an app does other work too)."""
    for i in range(n):
        logger.info("request %d served in %.1f ms", i, 1.5)
        if i % 50 == 49:
            await asyncio.sleep(0)


async def server_count(netloc: str, reset: bool = False) -> int:
    """Ask the server how many records arrived (a raw request: no client library)."""
    reader, writer = await asyncio.open_connection(*netloc.split(":"))
    query = "?reset=1" if reset else ""
    writer.write(
        f"GET /count{query} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n\r\n".encode()
    )
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(data.rsplit(b"\r\n\r\n", 1)[1])


async def run_stdlib(netloc: str, n: int, logger: logging.Logger) -> None:
    handler = logging.handlers.HTTPHandler(netloc, "/log", "POST")
    logger.addHandler(handler)
    try:
        await produce(logger, n)  # every call blocks the loop for a whole request
    finally:
        logger.removeHandler(handler)
        handler.close()


def run_sink(**kwargs: Any) -> Callable[[str, int, logging.Logger], Awaitable[None]]:
    async def run(netloc: str, n: int, logger: logging.Logger) -> None:
        sink = als.HTTPSink(netloc, "/log", "POST", **kwargs)
        async with als.install(sink, logger=logger) as dispatcher:
            await produce(logger, n)
            await dispatcher.flush()

    return run


CONTENDERS: dict[str, tuple[str, Callable[[str, int, logging.Logger], Awaitable[None]]]] = {
    "stdlib": ("stdlib HTTPHandler on the loop", run_stdlib),
    "sink": ("HTTPSink, one request per record", run_sink()),
    "json": ("HTTPSink, JSON batch mode", run_sink(json_batch=True)),
}


async def measure(key: str, netloc: str, n: int) -> dict[str, float]:
    run = CONTENDERS[key][1]
    logger = logging.getLogger(f"bench.http.{key}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    await server_count(netloc, reset=True)
    ticker = Ticker()
    ticker.start()
    start = time.perf_counter()
    await asyncio.wait_for(run(netloc, n, logger), PHASE_TIMEOUT)
    delivered = await server_count(netloc)
    while delivered < n and time.perf_counter() - start < PHASE_TIMEOUT:
        await asyncio.sleep(0.01)
        delivered = await server_count(netloc)
    elapsed = time.perf_counter() - start
    await ticker.stop()
    return {
        "rps": delivered / elapsed,
        "p99_ms": ticker.p99_ms(),
        "max_ms": ticker.max_ms(),
        "lost": float(n - delivered),
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=10_000, help="records per contender")
    parser.add_argument("--only", choices=sorted(CONTENDERS), action="append")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        netloc = f"127.0.0.1:{int(server.stdout.readline())}"
        results: dict[str, dict[str, float]] = {}
        for key in args.only or list(CONTENDERS):
            results[key] = asyncio.run(measure(key, netloc, args.n))
            r = results[key]
            print(
                f"{CONTENDERS[key][0]:<36} {r['rps']:>9.0f} records/s   "
                f"loop p99 stall {r['p99_ms']:>6.2f} ms   max {r['max_ms']:>7.2f} ms   "
                f"lost {int(r['lost'])}   ({r['seconds']:.1f} s)",
                flush=True,
            )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if "stdlib" in results:
        base = results["stdlib"]
        for key in [k for k in results if k != "stdlib"]:
            r = results[key]
            stall = base["p99_ms"] / r["p99_ms"] if r["p99_ms"] else float("inf")
            print(
                f"{CONTENDERS[key][0]}: {r['rps'] / base['rps']:.1f}x the stdlib's records/s, "
                f"{stall:.1f}x lower loop p99 stall"
            )
    print(f"(n={args.n}, server answers after {DELAY * 1000:.0f} ms, 127.0.0.1)")


if __name__ == "__main__":
    main()
