"""Instructions per request: what logging adds to a service, counted instead of timed.

    python -m benchmarks.instructions                       # aiohttp app, every option
    python -m benchmarks.instructions --framework fastapi --only aiologsinks
    python -m benchmarks.instructions --smoke               # the code runs (CI)

The service of ``benchmarks/service.py`` (the same app, logging options, destinations
and peers) runs under valgrind's cachegrind, counting instructions only
(``--cache-sim=no``). Each option's server is started twice: it answers ``N1``
requests, then is stopped with SIGTERM (its shutdown delivers what it holds); then
``N2``. The instructions its process executed on all its threads, per request, are
``(I(N2) - I(N1)) / (N2 - N1)``: start-up and shutdown cancel out. Requests come from
``--connections`` keep-alive connections at once, as in the closed loop of the timed
benchmark.

Why: on a shared machine the timed requests/s ratios move by about +-10% between
rounds (the A/A check of ``benchmarks/service.py``), more than the differences being
measured; an instruction count does not move with the machine's speed or its other
work. ``floor / option`` is then what requests/s at saturation would be if every
instruction cost the same time. It is an estimate of the time ratio, not the time
ratio: cache misses, branch mispredictions and system calls' time in the kernel are
not counted (the stdlib's per-record ``write`` and ``send`` calls are cheaper here
than on the clock). ``--repeat`` runs each count again: the spread is printed.

Valgrind runs the server tens of times slower, and aiologsinks batches by time (the
dispatcher's 5 ms ``linger``, the HTTP and OTLP sinks' 50 ms): slowed down, its
batches would hold tens of times fewer records than at full speed, and every
per-batch cost (a POST, a write, a task step) would be counted that much more often
per request. So its windows are stretched by the slowdown (``--time-scale``; by
default measured: the floor's requests/s at full speed, driven as the timed benchmark
drives it, over its rate under valgrind), which keeps its batches the size they have
at full speed. The other options batch by count or not at all (the OpenTelemetry
SDK's processor exports 512 records at a time under load) and run as they are.

Large copies (a batch's request body: hundreds of KB) are counted as the CPU executes
them: glibc's ``memcpy`` moves large blocks with ``rep movsb``, one instruction that
valgrind counts once per byte, and the server runs with ``GLIBC_TUNABLES`` set so that
glibc uses its vector loop at every size instead (``VECTOR_COPIES``; ``--rep-movsb``
counts as glibc would copy by default).

The destination that stalls is left out: its stalls are in wall-clock time, which
valgrind stretches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import service
from benchmarks._loadgen import Conn

#: the destinations counted here (the stalling peer is not: see the module's doc)
DESTS = ("file", "http", "syslog", "otlp")
EVENTS = re.compile(r"^events:\s+(.+)$", re.MULTILINE)
SUMMARY_LINE = re.compile(r"^summary:\s+(.+)$", re.MULTILINE)
#: the simulated cache's misses a run with ``--cache-sim`` reports per request:
#: first-level instruction and data-read misses, last-level read misses
MISSES = ("I1mr", "D1mr", "DLmr")


@dataclass
class Cell:
    """One logging option for one destination, and its counts."""

    dest: str
    contender: str
    label: str
    #: instructions per request, one per repeat
    per_request: list[float] = field(default_factory=list)
    #: with --cache-sim: each of MISSES per request, one per repeat
    misses: dict[str, list[float]] = field(default_factory=dict)
    logged: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def send(port: int, n: int, connections: int) -> int:
    """``GET /work`` ``n`` times over ``connections`` keep-alive connections; the
    number answered with 200."""
    conns = [await Conn.open(port) for _ in range(connections)]
    todo = iter(range(n))
    ok = 0

    async def worker(conn: Conn) -> None:
        nonlocal ok
        for _ in todo:
            # awaited first: `ok += await ...` would read ok before the await
            status = await conn.get()
            ok += status == 200

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return ok


def instructions(out_file: str) -> int:
    """The total instruction count cachegrind wrote to ``out_file``."""
    return events(out_file)["Ir"]


def events(out_file: str) -> dict[str, int]:
    """Every total cachegrind wrote to ``out_file``, by event (``Ir``, and with the
    cache simulation ``I1mr``, ``D1mr``, ``DLmr``...)."""
    with open(out_file) as f:
        text = f.read()
    names, totals = EVENTS.search(text), SUMMARY_LINE.search(text)
    if names is None or totals is None:
        raise RuntimeError(f"no events or summary line in {out_file}")
    return dict(zip(names.group(1).split(), map(int, totals.group(1).split()), strict=True))


#: glibc copies large blocks with ``rep movsb``, which valgrind counts as one instruction
#: per byte moved, where the CPU moves 32-64 bytes a cycle with it: a 300 KB request body
#: copied once counted as 300,000 instructions. This threshold makes glibc use its
#: vector loop (one instruction per 32 bytes, counted as executed) for every size.
VECTOR_COPIES = "glibc.cpu.x86_rep_movsb_threshold=4294967295"


def count(
    framework: str,
    contender: str,
    dest: str,
    n: int,
    connections: int,
    scale: float = 1.0,
    vector_copies: bool = True,
    cache_sim: bool = False,
) -> tuple[dict[str, int], int, float]:
    """Run one server under cachegrind for ``n`` requests, aiologsinks' batching
    windows stretched ``scale``-fold (with ``cache_sim``, caches simulated too); (the
    event totals, ``Ir`` the instructions; logged; seconds the requests took)."""
    peer = service.start_peer(service.DESTS[dest][1] if contender != "null" else None)
    with tempfile.TemporaryDirectory(prefix="aiologsinks-ir-") as tmp:
        out_file = os.path.join(tmp, "cachegrind.out")
        spec = service.server_spec(framework, contender, dest, tmp, peer)
        spec["time_scale"] = scale
        port = spec["port"]
        tunables = ("env", f"GLIBC_TUNABLES={VECTOR_COPIES}") if vector_copies else ()
        prefix = (
            *tunables,
            "valgrind",
            "--tool=cachegrind",
            f"--cache-sim={'yes' if cache_sim else 'no'}",
            f"--cachegrind-out-file={out_file}",
        )
        server = None
        try:
            server = service.start_server(spec, prefix=prefix, ready_limit=600.0)
            t0 = time.perf_counter()
            answered = asyncio.run(send(port, n, connections))
            took = time.perf_counter() - t0
            if answered != n:
                raise RuntimeError(f"{answered} of {n} requests answered with 200")
            logged = int(service._get_json(port, "/stats", timeout=60)["logged"])
            server.send_signal(signal.SIGTERM)
            server.wait(600)
            if peer is not None:
                peer.settle(logged, patience=2.0, limit=60.0)
            return events(out_file), logged, took
        finally:
            if server is not None and server.poll() is None:
                server.kill()
                server.wait()
            if peer is not None:
                peer.close()


def build_cells(dests: list[str], only: set[str] | None) -> tuple[list[Cell], list[str]]:
    """The timed benchmark's cells (the floor, then each available option per
    destination) and the skipped, with the reason."""
    cells, skipped = service.build_cells(dests, only)
    return [Cell(c.dest, c.contender, c.label) for c in cells], skipped


def full_speed_rps(framework: str) -> float:
    """The floor server's requests/s at full speed (no valgrind), at saturation as the
    timed benchmark drives it: ``wrk`` with 32 connections where installed (a Python
    client cannot keep the lighter app busy), else the Python closed loop."""
    wrk = shutil.which("wrk") is not None
    with service.reference_server(framework) as floor:
        service.closed_loop(floor.port, 1.0, 32, wrk)  # warm-up
        return float(service.closed_loop(floor.port, 3.0, 32, wrk)["rps"])


def run(cells: list[Cell], opts: argparse.Namespace, log: Any) -> None:
    """Each cell's count per request, ``opts.repeat`` times, the cells interleaved (the
    floor first: with ``--time-scale auto`` its run under valgrind sets the scale)."""
    n1, n2 = opts.requests
    for r in range(opts.repeat):
        for cell in cells:
            t0 = time.perf_counter()
            args = (opts.framework, cell.contender, cell.dest)
            try:
                scale, vector = opts.scale or 1.0, not opts.rep_movsb
                e1, _, took1 = count(*args, n1, opts.connections, scale, vector, opts.cache_sim)
                e2, logged, took2 = count(
                    *args, n2, opts.connections, scale, vector, opts.cache_sim
                )
            except Exception as exc:  # a failed count is reported in the table
                cell.errors.append(repr(exc))
                log(f"  {r + 1}/{opts.repeat} {cell.dest}/{cell.contender}: {exc!r}")
                continue
            if opts.scale is None and cell.contender == "null":
                slowed = (n2 - n1) / max(took2 - took1, 1e-9)
                opts.scale = max(1.0, opts.full_rps / slowed)
                log(
                    f"  time scale {opts.scale:.0f}: the floor answers {opts.full_rps:,.0f} "
                    f"requests/s at full speed, {slowed:,.0f} under valgrind"
                )
            cell.per_request.append((e2["Ir"] - e1["Ir"]) / (n2 - n1))
            for name in MISSES if opts.cache_sim else ():
                per = (e2.get(name, 0) - e1.get(name, 0)) / (n2 - n1)
                cell.misses.setdefault(name, []).append(per)
            cell.logged.append(logged)
            log(
                f"  {r + 1}/{opts.repeat} {cell.dest}/{cell.contender:<12} "
                f"{cell.per_request[-1]:>11,.0f} instructions per request "
                f"({time.perf_counter() - t0:.0f} s)"
            )


def table(cells: list[Cell], records_per_request: float) -> str:
    """The markdown table: instructions per request, over the floor, the estimate;
    then, when the caches were simulated, each option's misses per request."""
    floor = statistics.median(cells[0].per_request) if cells[0].per_request else None
    lines = [
        "| destination | option | instructions per request (median; range) "
        "| over the floor, per record | floor / option (requests/s estimate) |",
        "|---|---|---|---|---|",
    ]
    for c in cells:
        if not c.per_request:
            lines.append(f"| {c.dest} | {c.label} | failed: {'; '.join(c.errors)} | — | — |")
            continue
        med = statistics.median(c.per_request)
        spread = f"{min(c.per_request):,.0f} to {max(c.per_request):,.0f}"
        if c.contender == "null" or floor is None:
            over, ratio = "—", "1.00x"
        else:
            over = f"{(med - floor) / records_per_request:+,.0f}"
            ratio = f"{floor / med:.2f}x"
        dest = "any" if c.contender == "null" else c.dest
        lines.append(f"| {dest} | {c.label} | {med:,.0f} ({spread}) | {over} | {ratio} |")
    text = "\n".join(lines)
    simulated = [c for c in cells if c.misses]
    return f"{text}\n\n{_misses(simulated)}" if simulated else text


def _misses(cells: list[Cell]) -> str:
    """Each option's simulated cache misses per request (medians), and against the
    floor's (the first cell)."""
    lines = [
        "| destination | option | instructions | I1 misses | D1 read misses "
        "| LL read misses | each over the floor's |",
        "|---|---|---|---|---|---|---|",
    ]
    base = cells[0]

    def med(cell: Cell, name: str) -> float:
        values = cell.per_request if name == "Ir" else cell.misses.get(name, [])
        return statistics.median(values) if values else 0.0

    for c in cells:
        values = [med(c, name) for name in ("Ir", *MISSES)]
        # (below one a request, a count is noise: the differences of two runs)
        over = " · ".join(
            f"{v / b - 1:+.1%}" if b >= 1 else "—"
            for v, b in zip(values, [med(base, n) for n in ("Ir", *MISSES)], strict=True)
        )
        dest = "any" if c.contender == "null" else c.dest
        lines.append(
            f"| {dest} | {c.label} | "
            + " | ".join(f"{max(v, 0.0):,.0f}" for v in values)
            + f" | {'—' if c is base else over} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--framework", choices=("aiohttp", "fastapi"), default="aiohttp")
    parser.add_argument(
        "--requests",
        default="300,1500",
        help="N1,N2: requests of the two runs per count (300,1500)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="counts per option (2)")
    parser.add_argument("--connections", type=int, default=8, help="connections at once (8)")
    parser.add_argument(
        "--time-scale",
        default="auto",
        help="stretch aiologsinks' batching windows this much (auto: measured)",
    )
    parser.add_argument("--dest", help=f"comma-separated destinations ({','.join(DESTS)})")
    parser.add_argument("--only", help="comma-separated contenders (null is always run)")
    parser.add_argument(
        "--rep-movsb",
        action="store_true",
        help="let glibc copy large blocks with rep movsb, counted per byte (see VECTOR_COPIES)",
    )
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="simulate the caches too: I1, D1 and last-level misses per request (slower)",
    )
    parser.add_argument("--smoke", action="store_true", help="the floor alone, tiny counts")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    opts = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if opts.smoke:
        opts.requests, opts.repeat, opts.only, opts.dest = "5,25", 1, "null", "file"
    try:
        n1, n2 = (int(x) for x in opts.requests.split(","))
    except ValueError:
        parser.error(f"--requests: expected N1,N2, got {opts.requests!r}")
    if not 0 < n1 < n2:
        parser.error(f"--requests: expected 0 < N1 < N2, got {n1},{n2}")
    opts.requests = (n1, n2)
    opts.scale = None
    if opts.time_scale != "auto":
        try:
            opts.scale = float(opts.time_scale)
        except ValueError:
            parser.error(f"--time-scale: expected auto or a number, got {opts.time_scale!r}")
        if opts.scale <= 0:
            parser.error(f"--time-scale: expected a positive number, got {opts.scale:g}")
    dests = (opts.dest or ",".join(DESTS)).split(",")
    for d in dests:
        if d not in DESTS:
            parser.error(f"--dest: unknown destination {d!r} (counted: {', '.join(DESTS)})")
    only = set(opts.only.split(",")) if opts.only else None
    cells, skipped = build_cells(dests, only)
    log = (lambda s: print(s, file=sys.stderr)) if opts.json else print
    log(
        f"{opts.framework}: {len(cells)} options under cachegrind, {n1} and {n2} requests "
        f"per count over {opts.connections} connections, {opts.repeat} count(s) each"
    )
    for s in skipped:
        log(f"  skipped {s}")
    started = time.perf_counter()
    if opts.scale is None:
        opts.full_rps = full_speed_rps(opts.framework)
    run(cells, opts, log)
    from benchmarks._service_app import EXC_EVERY

    records = 3 + 1 / EXC_EVERY
    text = table(cells, records)
    header = (
        f"{opts.framework}, Python {platform.python_version()}, instructions counted by "
        f"valgrind (cachegrind, --cache-sim={'yes' if opts.cache_sim else 'no'}) in the "
        f"server process, all its threads; "
        f"(I({n2}) - I({n1})) / {n2 - n1} requests over {opts.connections} connections; "
        f"{opts.repeat} count(s) per option; aiologsinks' batching windows x"
        f"{opts.scale or 1.0:.0f}; large copies "
        f"{'by rep movsb, counted per byte' if opts.rep_movsb else 'by vector loop'}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    doc = {
        "header": header,
        "framework": opts.framework,
        "python": platform.python_version(),
        "records_per_request": records,
        "time_scale": opts.scale,
        "cells": [
            {
                "dest": c.dest,
                "contender": c.contender,
                "label": c.label,
                "per_request": c.per_request,
                "misses_per_request": c.misses,
                "logged": c.logged,
                "errors": c.errors,
            }
            for c in cells
        ],
        "skipped": skipped,
    }
    if opts.json:
        print(json.dumps(doc, indent=1))
    else:
        print()
        print(header)
        print()
        print(text)
    return 0 if all(c.per_request for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
