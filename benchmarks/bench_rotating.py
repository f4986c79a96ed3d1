"""Size-based rotation on an event loop: stdlib RotatingFileHandler vs RotatingFileSink.

A coroutine logs N records (about 60 bytes each) through a logger, yielding to the
loop every 100 records as a busy app would, while a 1 ms ticker measures how late the
loop runs it (the loop's stall). ``maxBytes`` is chosen for about 100 rollovers,
``backupCount=5``. The stdlib handler writes and rotates on the loop; the sink goes
through ``aiologsinks.install`` (the dispatcher), the time ends when ``flush()``
returned. Prints records/s, the worst and p99 stall per contender, and the ratios
(median of the trials, contenders interleaved).

    python benchmarks/bench_rotating.py              # 200,000 records, 3 trials
    python benchmarks/bench_rotating.py --n 20000    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aiologsinks as als  # noqa: E402 - after the path set-up above

FMT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LINE_BYTES = 60  # about: "2024-.. INFO bench-rotating record 123456 payload"
BACKUPS = 5


class Ticker:
    """Sleeps 1 ms in a loop and records how late each wake-up is."""

    def __init__(self) -> None:
        self.lates: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lates.append(time.perf_counter() - t - 0.001)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task

    def worst_ms(self) -> float:
        return max(self.lates, default=0.0) * 1000

    def p99_ms(self) -> float:
        if not self.lates:
            return 0.0
        return sorted(self.lates)[int(len(self.lates) * 0.99)] * 1000


@asynccontextmanager
async def stdlib(
    path: str, max_bytes: int, logger: logging.Logger
) -> AsyncIterator[Callable[[], Any]]:
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(FMT))
    logger.addHandler(handler)

    async def done() -> None:
        handler.flush()

    try:
        yield done
    finally:
        logger.removeHandler(handler)
        handler.close()


@asynccontextmanager
async def sink(
    path: str, max_bytes: int, logger: logging.Logger
) -> AsyncIterator[Callable[[], Any]]:
    s = als.RotatingFileSink(path, maxBytes=max_bytes, backupCount=BACKUPS, encoding="utf-8")
    s.setFormatter(logging.Formatter(FMT))
    async with als.install(s, logger=logger) as d:
        yield d.flush
        stats = d.stats()
        if stats.lost:
            print(f"  warning: {stats.lost} records lost", file=sys.stderr)


CONTENDERS: dict[str, Callable[..., AbstractAsyncContextManager[Callable[[], Any]]]] = {
    "stdlib RotatingFileHandler (on the loop)": stdlib,
    "RotatingFileSink (via install)": sink,
}


async def trial(name: str, n: int, directory: str) -> dict[str, float]:
    max_bytes = n * LINE_BYTES // 100
    logger = logging.getLogger("bench-rotating")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    path = os.path.join(directory, "app.log")
    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(0.01)
    async with CONTENDERS[name](path, max_bytes, logger) as done:
        t0 = time.perf_counter()
        for i in range(n):
            logger.info("record %06d payload", i)
            if i % 100 == 99:
                await asyncio.sleep(0)
        await done()
        elapsed = time.perf_counter() - t0
    await ticker.stop()
    rotated = len(os.listdir(directory)) - 1
    return {
        "rps": n / elapsed,
        "worst": ticker.worst_ms(),
        "p99": ticker.p99_ms(),
        "files": rotated,
    }


async def main(n: int, trials: int) -> None:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    for _ in range(trials):
        for name in CONTENDERS:
            directory = tempfile.mkdtemp(prefix="bench-rotating-")
            try:
                results[name].append(await trial(name, n, directory))
            finally:
                shutil.rmtree(directory)
    print(f"{n} records, maxBytes={n * LINE_BYTES // 100} (~100 rollovers), backupCount={BACKUPS}")
    print(f"{'contender':44} {'records/s':>10} {'worst stall ms':>15} {'p99 stall ms':>13}")
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        med[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = med[name]
        print(f"{name:44} {m['rps']:10.0f} {m['worst']:15.2f} {m['p99']:13.2f}")
    ref, ours = (med[name] for name in CONTENDERS)
    print(f"throughput ratio (sink / stdlib): {ours['rps'] / ref['rps']:.2f}")
    print(f"worst-stall ratio (stdlib / sink): {ref['worst'] / max(ours['worst'], 1e-6):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.trials))
