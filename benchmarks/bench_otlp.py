"""OTLPSink against the OpenTelemetry SDK's own logging path, into the same real collector.

A real collector (rotel, from its wheel) listens on 127.0.0.1 and re-exports what it
accepts to a counting OTLP receiver in a separate process, so "received" means the
collector accepted the record. Each contender logs N records from a coroutine, as an
async service would (a ``sleep(0)`` every 100 records), then waits until the
collector has passed on every record or nothing arrives for 3 s. Reported per contender:

* cost per logging call (the caller's time per ``log.info``, in microseconds);
* records/s end to end (first call to the last record through the collector);
* records lost (logged - received), and what the contender itself counted as lost.

Contenders: the SDK (``LoggingHandler`` + ``BatchLogRecordProcessor`` + OTLP/HTTP
protobuf exporter, default settings) and ``OTLPSink`` (protobuf and JSON, default
settings, through ``als.install``).

    python benchmarks/bench_otlp.py             # 20,000 records per contender
    python benchmarks/bench_otlp.py --n 5000
    python benchmarks/bench_otlp.py --yield-every 0   # one burst: where the SDK's queue drops
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aiologsinks as als  # noqa: E402
from tests.helpers import fresh_logger  # noqa: E402
from tests.peers.otel_collector import Rotel, rotel_environment  # noqa: E402
from tests.peers.records import free_port  # noqa: E402

PHASE_TIMEOUT = 120.0


# -- the counting receiver (its own process) ---------------------------------------------


def serve(port: int) -> None:
    """Count the log records of every OTLP/HTTP protobuf export; GET /count tells."""
    from aiohttp import web

    from benchmarks._otlp_peer import records_in

    count = 0

    async def logs(request: web.Request) -> web.Response:
        nonlocal count
        count += records_in(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def get_count(request: web.Request) -> web.Response:
        return web.Response(text=str(count))

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/logs", logs)
    app.router.add_get("/count", get_count)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def received(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as r:
        return int(r.read())


async def wait_received(port: int, expected: int, start: int) -> tuple[int, float]:
    """Wait until ``expected`` more records arrived, or none for 3 s; (got, when)."""
    loop = asyncio.get_running_loop()
    last, last_change = -1, time.perf_counter()
    while True:
        got = await loop.run_in_executor(None, received, port) - start
        now = time.perf_counter()
        if got != last:
            last, last_change = got, now
        if got >= expected or now - last_change > 3.0:
            return got, last_change
        await asyncio.sleep(0.02)


# -- the contenders ------------------------------------------------------------------------


#: records logged between two yields to the loop (0: one burst, no yield)
YIELD_EVERY = 100


async def log_burst(log: logging.Logger, n: int) -> float:
    """Log ``n`` records as a coroutine would; return the seconds spent in the calls."""
    spent = 0.0
    step = YIELD_EVERY or n
    for start in range(0, n, step):
        t0 = time.perf_counter()
        for i in range(start, min(start + step, n)):
            log.info("request %d handled", i, extra={"path": "/api/items", "status": 200})
        spent += time.perf_counter() - t0
        await asyncio.sleep(0)
    return spent


async def run_sdk(endpoint: str, port: int, n: int) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    processor = BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint))
    provider.add_log_record_processor(processor)
    handler = LoggingHandler(logger_provider=provider)
    log = fresh_logger("bench.sdk")
    log.addHandler(handler)
    start = await asyncio.get_running_loop().run_in_executor(None, received, port)
    t0 = time.perf_counter()
    spent = await log_burst(log, n)
    await asyncio.get_running_loop().run_in_executor(None, provider.force_flush)
    got, t_end = await wait_received(port, n, start)
    await asyncio.get_running_loop().run_in_executor(None, provider.shutdown)
    log.removeHandler(handler)
    return {"call_us": spent / n * 1e6, "rate": got / (t_end - t0), "lost": n - got, "counted": "-"}


async def run_ours(endpoint: str, port: int, n: int, encoding: str) -> dict[str, Any]:
    sink = als.OTLPSink(endpoint, encoding)
    log = fresh_logger(f"bench.ours.{encoding}")
    start = await asyncio.get_running_loop().run_in_executor(None, received, port)
    t0 = time.perf_counter()
    async with als.install(sink, logger=log) as dispatcher:
        spent = await log_burst(log, n)
        await dispatcher.flush()
        got, t_end = await wait_received(port, n, start)
        stats = dispatcher.stats()
    counted = stats.dropped + sum(s.dropped + s.errors for s in stats.sinks.values())
    return {"call_us": spent / n * 1e6, "rate": got / (t_end - t0), "lost": n - got,
            "counted": counted}  # fmt: skip


async def main_async(n: int) -> None:
    from tests.peers.otel_collector import rotel_program

    sink_port = free_port()
    counter = subprocess.Popen([sys.executable, __file__, "--serve", str(sink_port)])
    directory = Path(tempfile.mkdtemp(prefix="bench-otlp-"))
    collector = Rotel(rotel_program(), directory, f"http://127.0.0.1:{sink_port}")
    try:
        for _ in range(500):
            try:
                received(sink_port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        await collector.start()
        endpoint = collector.endpoint
        results = {}
        results["OTel SDK (BatchLogRecordProcessor)"] = await asyncio.wait_for(
            run_sdk(endpoint, sink_port, n), PHASE_TIMEOUT
        )
        for encoding in ("protobuf", "json"):
            results[f"OTLPSink ({encoding})"] = await asyncio.wait_for(
                run_ours(endpoint, sink_port, n, encoding), PHASE_TIMEOUT
            )
    finally:
        await collector.stop()
        counter.terminate()
        counter.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    print(
        f"{n} records per contender into rotel on 127.0.0.1, yield every {YIELD_EVERY}, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"  {'contender':36s} {'us/call':>8s} {'records/s':>10s} {'lost':>6s} {'counted':>8s}")
    for name, r in results.items():
        counted = str(r["counted"])
        print(f"  {name:36s} {r['call_us']:8.2f} {r['rate']:10.0f} {r['lost']:6d} {counted:>8s}")
    sdk = results["OTel SDK (BatchLogRecordProcessor)"]
    ours = results["OTLPSink (protobuf)"]
    print(
        f"  OTLPSink/SDK: cost per call {ours['call_us'] / sdk['call_us']:.2f}x, "
        f"records/s {ours['rate'] / sdk['rate']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument(
        "--yield-every", type=int, default=100, help="records between yields (0: one burst)"
    )
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global YIELD_EVERY
    YIELD_EVERY = args.yield_every
    if args.serve:
        serve(args.serve)
        return
    _ = rotel_environment  # the collector's environment comes from the test peer
    asyncio.run(main_async(args.n))


if __name__ == "__main__":
    main()
