"""CPU per request at a fixed request rate: what lingering saves a service that is busy
but not saturated.

A coroutine "serves" ``--rate`` requests a second for ``--seconds`` (each logs the
service benchmark's three records: one with arguments, one with ``extra=``, one
more), paced by a 1 ms tick, through ``install()`` to a file, the HTTP collector
(2 ms per request) or the OTLP collector (rotel); each configuration runs in a
process of its own. The measure is the process's CPU time (user + system, all
threads) per request, minus the NullHandler floor of the same round: what the logging
pipeline costs on top. Contenders: aiologsinks as shipped (the dispatcher lingers
5 ms, the HTTP and OTLP sinks 50 ms) and with every linger off (``linger=0``).
Rounds are interleaved; the saving is paired per round (``benchmarks/_stats.py``).

Each run also counts the cyclic GC's collections per 1,000 requests, by generation
(no app garbage here: what the logging's own live objects cause). ``--linger-max N``
sets how many waiting records end a lingering lane (``aiologsinks._lane``'s
``LINGER_MAX_RECORDS``; 0 or unset: no bound but a full batch, as shipped) to show
what such a bound does to them.

    python -m benchmarks.fixed_rate                 # 9 rounds, about 6 minutes
    python -m benchmarks.fixed_rate --rounds 3 --dest file
    python -m benchmarks.fixed_rate --rounds 3 --rate 5000 --dest http,otlp --linger-max 256

Bounded: each run lasts ``--seconds`` plus a final flush under a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks._stats import bootstrap, paired  # noqa: E402

DESTS = ("file", "http", "otlp")


def _one(log: logging.Logger, i: int) -> None:
    log.info("request started: %s %s client=%s", "GET", "/work", "127.0.0.1:5555")
    log.info("loaded user profile", extra={"user_id": i % 1000, "tenant": "acme"})
    log.info("request finished: status=%d in %.3f ms", 200, 0.123)


class _Collections:
    """The cyclic GC's collections by generation, counted while running."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            self.count[info["generation"]] += 1


async def _serve(
    dest: str, linger: bool, port: int, rate: int, seconds: float
) -> tuple[float, list[float]]:
    import gc

    import aiologsinks as als
    from aiologsinks import _lane

    linger_max = int(os.environ.get("FIXED_RATE_LINGER_MAX", "-1"))
    if linger_max >= 0:
        _lane.LINGER_MAX_RECORDS = linger_max or 1 << 30

    log = logging.getLogger("svc.app")
    log.propagate = False
    log.setLevel(logging.INFO)
    dispatcher = None
    if dest == "null":
        log.addHandler(logging.NullHandler())
    else:
        off: dict[str, Any] = {} if linger else {"linger": 0}
        sink: Any
        if dest == "file":
            sink = als.FileSink(os.path.join(os.environ["FIXED_RATE_DIR"], "service.log"))
        elif dest == "http":
            sink = als.HTTPSink(f"127.0.0.1:{port}", "/log", "POST", json_batch=True, **off)
        else:
            sink = als.OTLPSink(endpoint=f"http://127.0.0.1:{port}/v1/logs", **off)
        dispatcher = als.Dispatcher(sink, **off)
        dispatcher.start()
        log.addHandler(dispatcher.handler)
    for i in range(200):  # warm-up: connections made, code paths taken
        _one(log, i)
    if dispatcher is not None:
        await asyncio.wait_for(dispatcher.flush(), 30)
    # the process's CPU clock (all threads, user + system) in ns: os.times() counts
    # 10 ms ticks, which a short smoke run can see none of
    collections = _Collections()
    gc.callbacks.append(collections)
    before = time.process_time()
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) < start + seconds:
        due = int((now - start) * rate)
        while n < due:
            _one(log, n)
            n += 1
        await asyncio.sleep(0.001)
    if dispatcher is not None:
        await asyncio.wait_for(dispatcher.flush(), 30)
    after = time.process_time()
    gc.callbacks.remove(collections)
    if dispatcher is not None:
        await asyncio.wait_for(dispatcher.aclose(), 30)
        stats = dispatcher.stats()
        if stats.lost:
            raise SystemExit(f"{dest}: {stats.lost} record(s) lost")
    per_k = [c * 1000 / max(n, 1) for c in collections.count]
    return (after - before) / max(n, 1) * 1e6, per_k


def _child(argv: list[str]) -> None:
    dest, linger, port, rate, seconds = argv
    us, gc_per_k = asyncio.run(_serve(dest, linger == "1", int(port), int(rate), float(seconds)))
    print(json.dumps({"us": us, "gc_per_k": gc_per_k}))


def _run(
    dest: str, linger: bool, port: int, opts: argparse.Namespace, tmp: str
) -> tuple[float, list[float]]:
    """One run in a process of its own: CPU µs per request, collections per 1k."""
    env = dict(os.environ, FIXED_RATE_DIR=tmp, PYTHONPATH=ROOT)
    if opts.linger_max is not None:
        env["FIXED_RATE_LINGER_MAX"] = str(opts.linger_max)
    args = [dest, "1" if linger else "0", str(port), str(opts.rate), str(opts.seconds)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.fixed_rate", "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=opts.seconds + 120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["us"]), [float(c) for c in result["gc_per_k"]]


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table of µs per request over the floor."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--rate", type=int, default=3000, help="requests a second")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--dest", default=",".join(DESTS))
    parser.add_argument(
        "--linger-max",
        type=int,
        default=None,
        help="records that end a lingering lane (0: no bound; default: as shipped)",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        _child(opts.child)
        return 0
    import tempfile

    from benchmarks._otlp_peer import OTLPPeer
    from benchmarks._peers import Peer

    dests = opts.dest.split(",")
    peers: dict[str, Any] = {}
    results: dict[tuple[str, bool], dict[int, float | None]] = {}
    floor: dict[int, float | None] = {}
    collections: dict[tuple[str, bool], list[list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if "http" in dests:
                peers["http"] = Peer("collector")
            if "otlp" in dests:
                peers["otlp"] = OTLPPeer()
            for r in range(opts.rounds):
                floor[r], _ = _run("null", False, 0, opts, tmp)
                for dest in dests:
                    port = peers[dest].port if dest in peers else 0
                    # the order of the two alternates, so neither always runs first
                    for linger in (r % 2 == 0, r % 2 == 1):
                        us, per_k = _run(dest, linger, port, opts, tmp)
                        results.setdefault((dest, linger), {})[r] = us
                        collections.setdefault((dest, linger), []).append(per_k)
                print(f"  round {r + 1}/{opts.rounds} done", file=sys.stderr)
        finally:
            for peer in peers.values():
                peer.close()
    print(
        f"\nCPU per request at {opts.rate:,} requests/s over the NullHandler floor "
        f"(process user + system, all threads), {opts.rounds} interleaved rounds, "
        f"Python {sys.version.split()[0]}\n"
    )
    print("| destination | lingering (as shipped) µs | linger=0 µs | saved |")
    print("|---|---|---|---|")
    for dest in dests:
        over = {
            linger: {r: v - f for r, v in results[(dest, linger)].items() if (f := floor[r])}
            for linger in (True, False)
        }
        on, off = bootstrap(list(over[True].values())), bootstrap(list(over[False].values()))
        saved = paired(over[False], over[True], op="diff")
        if on is None or off is None or saved is None:
            continue
        print(
            f"| {dest} | {on.fmt(1, '')} | {off.fmt(1, '')} | {saved.fmt(1, ' µs', signed=True)} |"
        )
    floor_est = bootstrap([v for v in floor.values() if v is not None])
    if floor_est is not None:
        print(f"\nfloor (NullHandler): {floor_est.fmt(1, ' µs')} per request")
    from aiologsinks._lane import linger_max_records

    limit = linger_max_records() if opts.linger_max is None else opts.linger_max
    bound = f"ends at {limit} waiting records" if 0 < limit < 1 << 30 else "has no bound in records"
    print(
        f"\nCyclic GC collections per 1,000 requests, generations 0 / 1 / 2 (medians; "
        f"a lingering lane {bound})\n"
    )
    print("| destination | lingering (as shipped) | linger=0 |")
    print("|---|---|---|")
    for dest in dests:
        cells = []
        for linger in (True, False):
            runs = collections.get((dest, linger), [])
            gens = [statistics.median(run[g] for run in runs) for g in range(3)] if runs else []
            cells.append(" / ".join(f"{c:.2f}" for c in gens) or "—")
        print(f"| {dest} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
