"""Where the time goes per record: each stage of the pipeline timed on its own.

    python benchmarks/stages.py [--n 4000] [--repeat 7]

Times, per record, on this machine: the stdlib's record creation (the floor), the
shim (QueueHandler.handle: freeze + hand-off), the pump and lane moving a batch, the
file sink formatting a batch of frozen records, joining and writing it, and freeing
the records; then counts the cyclic GC's collections during a 100k-record trial of
the FileSink benchmark row. Each stage is the best of ``--repeat`` runs (timeit, GC
off), so the numbers are the stages' own cost, without the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import tempfile
import time
import timeit
from collections.abc import Callable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiologsinks as als
from aiologsinks._record import RecordBatch, freeze
from benchmarks._scenarios import FMT, MSG, trial


def best(fn: Callable[[], object], per: int, repeat: int) -> float:
    """µs per record of ``fn`` (which handles ``per`` records), best of ``repeat``."""
    return min(timeit.repeat(fn, number=1, repeat=repeat)) / per * 1e6


def freeing(records: list[logging.LogRecord], repeat: int) -> float:
    """µs per record to free a batch of frozen records, best of ``repeat``."""
    times = []
    for _ in range(repeat):
        batch = [freeze(r) for r in records]
        t0 = time.perf_counter()
        del batch
        times.append(time.perf_counter() - t0)
    return min(times) / len(records) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="records per timed batch (4000)")
    parser.add_argument("--repeat", type=int, default=7, help="best of (7)")
    args = parser.parse_args(argv)
    n, repeat = args.n, args.repeat
    log = logging.getLogger("bench.stages")
    log.propagate = False
    log.setLevel(logging.INFO)
    rows: list[tuple[str, float]] = []

    def calls() -> None:
        for i in range(n):
            log.info(MSG, i, 1.5)

    log.handlers[:] = [logging.NullHandler()]
    floor = best(calls, n, repeat)
    rows.append(("record creation (stdlib logging + NullHandler: the floor)", floor))
    dispatcher = als.Dispatcher(als.NullSink())  # not started: the queue only fills
    log.handlers[:] = [dispatcher.handler]

    def shim_calls() -> None:
        calls()
        dispatcher._queue.clear()

    rows.append(
        ("shim: QueueHandler.handle (freeze + hand-off)", best(shim_calls, n, repeat) - floor)
    )
    records = [
        log.makeRecord(log.name, logging.INFO, __file__, 1, MSG, (i, 1.5), None) for i in range(n)
    ]
    frozen = [freeze(r) for r in records]
    rows.append(
        (
            "  of which freeze (copy, merge or defer the arguments)",
            best(lambda: [freeze(r) for r in records], n, repeat),
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        sink = als.FileSink(os.path.join(tmp, "stages.log"))
        sink.setFormatter(logging.Formatter(FMT))
        rows.append(
            (
                "format a batch of frozen records (FileSink, plain Formatter)",
                best(lambda: sink.render_each(RecordBatch(frozen)), n, repeat),
            )
        )
        texts, _ = sink.render_each(RecordBatch(frozen))
        rows.append(("join the batch's lines", best(lambda: "".join(texts), n, repeat)))

        async def pipeline() -> float:
            async with als.Dispatcher(als.NullSink()) as d:
                t0 = time.perf_counter()
                for item in frozen:
                    d.submit(item)
                await d.flush()
                return (time.perf_counter() - t0) / n * 1e6

        moved = min(asyncio.run(pipeline()) for _ in range(repeat))
        rows.append(("hand-off + pump + lane to a NullSink (per record)", moved))
        rows.append(("free the frozen records", freeing(records, repeat)))
    stats: dict[int, list[float]] = {}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            stats.setdefault(info["generation"], []).append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    try:
        result = asyncio.run(trial("aiologsinks", 100_000, 1000, False))
    finally:
        gc.callbacks.remove(on_gc)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; µs per record")
    print()
    print("| stage | µs per record |")
    print("|---|---|")
    for what, us in rows:
        print(f"| {what} | {us:.2f} |")
    total = sum(sum(v) for v in stats.values())
    print()
    print(
        "cyclic GC during a 100k-record FileSink trial: "
        + ", ".join(f"gen{g}: {len(v)} ({sum(v) * 1e3:.1f} ms)" for g, v in sorted(stats.items()))
        + f"; {total / 100_000 * 1e6:.2f} µs per record"
    )
    print(
        f"that trial: {result['call_us']:.2f} µs per call, {result['e2e_rps']:,.0f} records/s, "
        f"loop lag p99 {result['lag_p99_ms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
