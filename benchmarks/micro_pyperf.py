"""Per-call cost of a logging call on the event loop, timed by pyperf, rounds interleaved.

    python -m benchmarks.micro_pyperf [--rounds 9] [--quick]

pyperf (CPython's benchmark runner) does what a hand-written loop does badly:
calibrates the number of calls per value, warms up, runs the values in fresh worker
processes and keeps the raw values. Each *round* here runs one pyperf benchmark per
contender, in a rotated order, so a slow spell of the shared machine hits every
contender of that round; the per-round ratios against the NullHandler floor are
summarised by ``benchmarks/_stats.py`` (median, bootstrap 95% interval, verdict).

A value is the CPU time of the loop's thread (``time.thread_time``) inside bursts of
1000 ``logger.info("request %d handled in %.3f ms", i, 1.5)`` calls made on a running
event loop, with ``await asyncio.sleep(0)`` between bursts so the pipeline runs as in
a service; divided by the calls. CPU time rather than wall time because this machine
is shared: descheduled time is not a cost of the call (the wall-clock harness,
``python -m benchmarks``, keeps that view).

The ratios to the floor are *paired in-process*: in each contender's worker process,
bursts of the floor (a second logger with a NullHandler) and of the contender
alternate, the floor first in every other pair and the contender first in the others
(the second of a pair had run a few percent slower for its place alone); pyperf gets
the contender's time as the value, and the worker also writes each value's floor time
beside it (a file named by ``AIOLOGSINKS_PYPERF_PAIRS``). This
machine's speed drifts by tens of percent between processes, which separate
benchmarks cannot cancel; bursts a millisecond apart share it. A round's ratio is the
median over the values of contender time / floor time; the floor's own benchmark
gives the absolute floor.

Needs pyperf (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import logging.handlers
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._stats import QUICK, Estimate, Target, bootstrap

FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MSG = "request %d handled in %.3f ms"
BURST = 1000
CONTENDERS = {
    "null": "stdlib logging + NullHandler (floor)",
    "stdlib-file": "stdlib FileHandler on the loop",
    "stdlib-queue": "stdlib QueueHandler (+ QueueListener -> FileHandler)",
    "aiologsinks": "aiologsinks FileSink",
}
TARGET = Target(
    "per-call cost on the loop <= 1.3x floor, interval upper end < 1.4x", "<=", 1.3, 1.4
)


def _setup(
    name: str, tmp: str, loop: asyncio.AbstractEventLoop, logger_name: str = "bench.pyperf"
) -> logging.Logger:
    logger = logging.getLogger(logger_name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    path = os.path.join(tmp, "bench.log")
    handler: logging.Handler
    if name == "null":
        handler = logging.NullHandler()
    elif name == "stdlib-file":
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(FMT))
    elif name == "stdlib-queue":
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        target = logging.FileHandler(path)
        target.setFormatter(logging.Formatter(FMT))
        logging.handlers.QueueListener(q, target).start()
        handler = logging.handlers.QueueHandler(q)
    elif name == "aiologsinks":
        import aiologsinks as als

        sink = als.FileSink(path)
        sink.setFormatter(logging.Formatter(FMT))
        dispatcher = als.Dispatcher(sink)

        async def start() -> None:
            dispatcher.start()

        loop.run_until_complete(start())
        handler = dispatcher.handler
    else:
        raise SystemExit(f"unknown contender {name!r}")
    logger.addHandler(handler)
    return logger


def _worker() -> None:
    """Run under pyperf: one benchmark, one contender (``--contender``)."""
    import pyperf

    def add_cmdline_args(cmd: list[str], args: Any) -> None:
        cmd.extend(("--contender", args.contender, "--pyperf-child"))
        if args.paired:
            cmd.append("--paired")

    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument("--contender", required=True, choices=sorted(CONTENDERS))
    runner.argparser.add_argument("--paired", action="store_true")
    args = runner.parse_args()
    loop = asyncio.new_event_loop()
    tmp = tempfile.mkdtemp(prefix="aiologsinks-pyperf-")
    atexit.register(shutil.rmtree, tmp, True)  # each worker process cleans up its own
    info = _setup(args.contender, tmp, loop).info
    # paired: a floor logger whose bursts alternate with the contender's (module docstring)
    floor = _setup("null", tmp, loop, "bench.pyperf.floor").info if args.paired else None

    async def timed(loops: int) -> float:
        # CPU time of the loop's thread: what the call costs the loop, without the time a
        # shared machine's scheduler hands to other processes mid-burst
        perf = time.thread_time

        def burst(call: Any, k: int) -> float:
            t0 = perf()
            for i in range(k):
                call(MSG, i, 1.5)
            return perf() - t0

        spent = floor_spent = 0.0
        done = bursts = 0
        while done < loops:
            k = min(BURST, loops - done)
            # the floor first in even bursts, the contender first in odd ones: always
            # second, the contender ran 2.5-4.5% slower for its place alone
            floor_first = floor is not None and bursts % 2 == 0
            if floor_first:
                floor_spent += burst(floor, k)
            spent += burst(info, k)
            if floor is not None and not floor_first:
                floor_spent += burst(floor, k)
            done += k
            bursts += 1
            await asyncio.sleep(0)
        if floor is not None:
            with open(os.environ[PAIRS], "a") as f:
                f.write(f"{loops} {spent!r} {floor_spent!r}\n")
        return spent

    def time_func(loops: int) -> float:
        return loop.run_until_complete(timed(loops))

    runner.bench_time_func(f"log-call-{args.contender}", time_func)


def run_one(name: str, quick: bool, paired: bool = False) -> tuple[float, float | None]:
    """One pyperf benchmark of ``name`` in fresh processes: µs per call (median value)
    and, ``paired``, the median ratio to the floor alternated in-process."""
    import pyperf

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--pyperf-child",
            "--contender",
            name,
            "--quiet",
            "-o",
            out,
            # one list: a second --inherit-environ would replace the first
            "--inherit-environ",
            ",".join(
                ["PYTHONPATH", PAIRS]
                # set, it measures the pure-Python path
                + (["AIOLOGSINKS_PURE_PYTHON"] if os.environ.get("AIOLOGSINKS_PURE_PYTHON") else [])
            ),
            *(["--paired"] if paired else []),
        ]
        cmd += ["--processes", "2", "--values", "3", "--warmups", "1"]
        if quick:
            cmd += ["--min-time", "0.05"]
        pairs = os.path.join(tmp, "pairs.txt")
        env = {**os.environ, PAIRS: pairs}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-400:])
        bench = pyperf.Benchmark.load(out)
        value = float(statistics.median(bench.get_values())) * 1e6
        if not paired:
            return value, None
        with open(pairs) as f:
            rows = [line.split() for line in f]
        # the values (and warmups) ran the calibrated loops; calibration ran fewer
        most = max(int(r[0]) for r in rows)
        ratios = [float(r[1]) / float(r[2]) for r in rows if int(r[0]) == most]
        return value, statistics.median(ratios)


#: the file a paired worker writes its (loops, contender time, floor time) lines to
PAIRS = "AIOLOGSINKS_PYPERF_PAIRS"
#: key of a contender's per-round ratio to the floor (paired in-process) in the results
RATIO = "{}/x-floor"


def run_rounds(rounds: int, quick: bool, log: Any = print) -> dict[str, dict[int, float]]:
    """Per round, each contender's µs per call and (``RATIO`` keys) each non-floor
    contender's ratio to the floor, paired in-process; contenders in a rotated order."""
    names = list(CONTENDERS)
    res: dict[str, dict[int, float]] = {n: {} for n in names}
    res.update({RATIO.format(n): {} for n in names if n != "null"})
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            value, ratio = run_one(name, quick, paired=name != "null")
            res[name][r] = value
            line = f"  pyperf round {r + 1}/{rounds} {name:<14} {value:.2f} µs/call"
            if ratio is not None:
                res[RATIO.format(name)][r] = ratio
                line += f", {ratio:.3f}x the floor (paired)"
            log(line)
    return res


def table(res: dict[str, dict[int, float]]) -> tuple[str, Estimate | None]:
    """The markdown table, and aiologsinks' ratio to the floor."""
    lines = [
        "| option | CPU µs per call (pyperf) | x floor, paired in-process [95% CI] |",
        "|---|---|---|",
    ]
    ours = None
    for name in CONTENDERS:
        est = bootstrap(list(res[name].values()))
        ratios = res.get(RATIO.format(name))
        ratio = bootstrap(list(ratios.values())) if ratios else None
        if name == "aiologsinks":
            ours = ratio
        lines.append(
            f"| {CONTENDERS[name]} | {est.fmt(2, '') if est else '—'} "
            f"| {'1.00x' if name == 'null' else ratio.fmt() if ratio else '—'} |"
        )
    return "\n".join(lines), ours


def main(argv: list[str] | None = None) -> int:
    if "--pyperf-child" in sys.argv:
        sys.argv.remove("--pyperf-child")
        _worker()
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro_pyperf")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (9; quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, short values (no verdict)")
    parser.add_argument("--json", action="store_true", help="print raw per-round values")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 9)
    res = run_rounds(rounds, args.quick)
    text, ours = table(res)
    print()
    print(text)
    print()
    verdict = QUICK if args.quick else TARGET.verdict(ours)
    print(f"- **{verdict}**: {TARGET.what}: {ours.fmt(asked=rounds) if ours else '—'}")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
