"""Issue 2's benchmark: stdlib FileHandler, QueueHandler+QueueListener and aiologsinks.

    python benchmarks/pipeline.py [--n 100000] [--trials 3]

For N records written to a file with the same format, prints the µs per logging call
on the event loop and the end-to-end records/s (from the first call until every
record is in the file), each option in its own process, trials interleaved, with
ratios against stdlib ``logging`` + ``NullHandler`` (call cost) and stdlib
``FileHandler`` (throughput). Exits 1 if any option lost a record.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import Case, fmt_ratio, fmt_span, paired, run_interleaved

CONTENDERS = ("null", "stdlib-file", "stdlib-queue", "aiologsinks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="records per trial (100000)")
    parser.add_argument("--trials", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--burst", type=int, default=1000, help="calls between yields (1000)")
    args = parser.parse_args(argv)
    cases = [Case(name, name, args.n) for name in CONTENDERS]
    print(f"N={args.n:,} records, bursts of {args.burst}, {args.trials} interleaved trials")
    run_interleaved(cases, args.trials, args.burst, progress=print)
    floor, file = cases[0], cases[1]
    print()
    print(
        "| option | µs/call on the loop | x floor | records/s end to end | x FileHandler | lost |"
    )
    print("|---|---|---|---|---|---|")
    failed = False
    for case in cases:
        lost = case.lost()
        failed |= bool(lost) or bool(case.errors) or not case.trials
        print(
            f"| {case.label} | {fmt_span(case, 'call_us', 2)} | "
            f"{fmt_ratio(paired(case, floor, 'call_us'))} | "
            f"{fmt_span(case, 'e2e_rps', 0) if case.contender != 'null' else '—'} | "
            f"{fmt_ratio(paired(case, file, 'e2e_rps')) if case.contender != 'null' else '—'} | "
            f"{'—' if lost is None else lost} |"
        )
    for case in cases:
        for err in case.errors:
            print(f"ERROR {case.key}: {err}", file=sys.stderr)
    ours = cases[-1]
    call_ok = (paired(ours, floor, "call_us") or 1e9) <= 1.5
    rps_ok = (paired(ours, file, "e2e_rps") or 0) >= 1
    print()
    print(f"target call cost <= 1.5x floor: {'PASS' if call_ok else 'FAIL'}")
    print(f"target throughput >= stdlib FileHandler: {'PASS' if rps_ok else 'FAIL'}")
    if failed:
        print("FAILED: records were lost or a trial failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
