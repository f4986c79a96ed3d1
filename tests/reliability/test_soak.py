"""Soak: many records from 8 threads and the loop into file + socket + HTTP sinks.

``AIOLOGSINKS_SOAK_RECORDS`` sets the record count (default 60,000, a few seconds on
2 cores, so it runs in the default suite). The full-size run:

    AIOLOGSINKS_SOAK_RECORDS=1000000 python -m pytest -m soak tests/reliability/test_soak.py -s

Checks: zero loss in every sink, per-producer order kept in every sink, peak RSS
growth bounded by the configured queue sizes (not by the record count), and no open
file descriptors or tasks left afterwards. The figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import re
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from aiohttp import web

import aiologsinks as als

from ..helpers import fresh_logger, wait_until
from ..peers.records import free_port

RECORDS = int(os.environ.get("AIOLOGSINKS_SOAK_RECORDS", "60000"))
PRODUCERS = 9  # 8 threads + the loop
QUEUE_SIZE, LANE_SIZE, BATCH_SIZE = 5_000, 5_000, 1_000
#: generous per-record cost of a queued record (measured ~0.7 kB in the benchmarks)
PER_RECORD = 2048
_MSG = re.compile(r"p(\d) (\d+)")

pytestmark = [pytest.mark.soak, pytest.mark.timeout(max(120, RECORDS // 2000))]


class OrderCheck:
    """Counts records per producer and notes any out-of-order or repeated one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last = [-1] * PRODUCERS
        self.count = 0
        self.disorder = 0

    def see(self, msg: str) -> None:
        m = _MSG.match(msg)
        assert m is not None, msg
        p, n = int(m.group(1)), int(m.group(2))
        if n != self.last[p] + 1:
            self.disorder += 1
        self.last[p] = n
        self.count += 1


async def pickle_server(check: OrderCheck) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(4)
                chunk = await reader.readexactly(struct.unpack(">L", header)[0])
                check.see(pickle.loads(chunk)["msg"])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def json_server(check: OrderCheck) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        for item in json.loads(await request.read()):
            check.see(item["msg"])
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/log", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def produce(log: logging.Logger, producer: int, count: int) -> None:
    for i in range(count):
        log.info("p%d %d", producer, i)


async def test_soak_file_socket_http_from_8_threads_and_the_loop(tmp_path: Path) -> None:
    """RECORDS records (default 60,000; 1,000,000 full size) from 9 producers into
    3 sinks: 0 lost, 0 out of order, RSS growth bounded by the queues, 0 fds and 0
    tasks left."""
    per = RECORDS // PRODUCERS
    total = per * PRODUCERS
    proc = psutil.Process()
    await _reserve_loop_descriptors()
    fds_before = proc.num_fds()
    tasks_before = len(asyncio.all_tasks())
    rss_before = proc.memory_info().rss
    peak = rss_before
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.01)  # a sampler thread, off the loop: it only watches

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sock_check, http_check = OrderCheck("socket"), OrderCheck("http")
    server = await pickle_server(sock_check)
    runner, http_port = await json_server(http_check)
    path = tmp_path / "soak.log"
    started = time.monotonic()
    try:
        sinks = [
            als.FileSink(path),
            als.SocketSink("127.0.0.1", server.sockets[0].getsockname()[1]),
            als.HTTPSink(f"127.0.0.1:{http_port}", "/log", json_batch=True),
        ]
        sinks[0].setFormatter(logging.Formatter("%(message)s"))
        log = fresh_logger("t.soak")
        async with als.install(
            *sinks,
            logger=log,
            queue_size=QUEUE_SIZE,
            lane_size=LANE_SIZE,
            batch_size=BATCH_SIZE,
        ) as dispatcher:
            threads = [
                threading.Thread(target=produce, args=(log, p, per)) for p in range(1, PRODUCERS)
            ]
            for t in threads:
                t.start()
            for i in range(per):
                log.info("p0 %d", i)
                if i % 500 == 0:
                    await asyncio.sleep(0)  # the loop logs between awaits, as services do
            await asyncio.to_thread(_join, threads)
            await dispatcher.flush()
            done: Callable[[], bool] = lambda: sock_check.count >= total  # noqa: E731
            await wait_until(done, timeout=60)
        stats = dispatcher.stats()
        took = time.monotonic() - started
    finally:
        sampling = False
        sampler.join()
        server.close()
        await server.wait_closed()
        await runner.cleanup()
    file_check = OrderCheck("file")
    with path.open(encoding="utf-8") as f:
        for line in f:
            file_check.see(line)
    growth = peak - rss_before
    bound = (QUEUE_SIZE + 3 * (LANE_SIZE + BATCH_SIZE)) * PER_RECORD + 64 * 1024**2
    fds_after = proc.num_fds()
    tasks_after = len(asyncio.all_tasks())
    print(
        f"\nsoak: {total} records x 3 sinks in {took:.1f}s ({total / took:,.0f}/s); "
        f"peak RSS +{growth / 1024**2:.1f} MiB (bound {bound / 1024**2:.0f} MiB); "
        f"fds {fds_before}->{fds_after}; tasks {tasks_before}->{tasks_after}; "
        f"lost {stats.lost}"
    )
    for check in (file_check, sock_check, http_check):
        assert (check.name, check.count, check.disorder) == (check.name, total, 0)
    assert stats.lost == 0
    assert growth < bound
    assert fds_after <= fds_before
    assert tasks_after <= tasks_before


async def _reserve_loop_descriptors() -> None:
    """Have the running loop take the descriptors it keeps for its whole life.

    uvloop (libuv) opens one on the loop's first stream handle and holds it until the
    loop closes, its reserve for accepting under EMFILE: counted before and after the
    test, it would pass for a descriptor the sinks leaked.
    """
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    server.close()
    await server.wait_closed()


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join()
