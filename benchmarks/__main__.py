"""The benchmark suite: ``python -m benchmarks [--quick] [--json] [--trials N]``.

Every contender runs in its own process; rounds are interleaved; each cell is the
median with the min-max of the trials; ratios are against the stdlib NullHandler
floor (call cost) and stdlib FileHandler (throughput) of the same run. Writes
``benchmarks/results/results.json``, ``results.md`` and ``results.png`` (``--quick``:
``results-quick.*``). Exits 1
when a stdlib or aiologsinks contender lost a record or a trial failed (third-party
peers' losses are reported loudly; ``--strict-peers`` makes them fail too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from . import _stats
from ._harness import Case, available, fmt_span, run_interleaved, run_trial
from ._scenarios import CONTENDERS
from ._stats import Estimate, Target, bootstrap

#: issue 17: loop-side CPU per record at most this (kept in step with stages.py)
LOOP_SIDE_TARGET_US = 1.5

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

FILE_GROUP = (
    "null",
    "stdlib-file",
    "stdlib-queue",
    "loguru",
    "aiologger",
    "aiologsinks",
    "aiologsinks-devnull",
)
PAIRS = (
    ("stdlib-rotating", "aiologsinks-rotating"),
    ("stdlib-socket", "aiologsinks-socket"),
    ("stdlib-syslog", "aiologsinks-syslog"),
    ("stdlib-http", "aiologsinks-http"),
    ("stdlib-http", "aiologsinks-http-batch"),
)
THIRD_PARTY = {"loguru", "aiologger"}
#: bytes per queued record used by the RSS bound (measured: see README)
RSS_OPTIONS = {"queue_size": 10_000, "lane_size": 10_000, "batch_size": 4000}


def build_cases(n: int, n_http: int, n_rss: int) -> tuple[list[Case], dict[str, str], Case | None]:
    names = list(FILE_GROUP) + list(dict.fromkeys(name for pair in PAIRS for name in pair))
    ok, skipped = available(names)
    cases: list[Case] = []
    for name in ok:
        count = n_http if CONTENDERS[name][2] == "http" else n
        cases.append(Case(name, name, count))
        if name in ("null", "aiologsinks"):
            cases.append(Case(name + "@thread", name, count, thread=True))
    rss = Case("aiologsinks@1M", "aiologsinks", n_rss, label="aiologsinks FileSink, 1M burst")
    return cases, skipped, rss if n_rss else None


def markdown(cases: list[Case], skipped: dict[str, str], rss: dict[str, Any] | None) -> str:
    by = {c.key: c for c in cases}
    lines = [
        "| option | µs per call | x floor | records/s end to end | x FileHandler "
        "| lost | loop lag p99 ms | lag max ms | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        base = by.get("null@thread" if c.thread else "null")
        group = CONTENDERS[c.contender][2]
        ref = by.get("stdlib-file") if group in ("file", "rotating") else _pair_ref(c, by)
        lost = c.lost()
        counted = CONTENDERS[c.contender][0].counts
        lines.append(
            f"| {c.label}{f' (n={c.n:,})' if group == 'http' else ''} "
            f"| {fmt_span(c, 'call_us', 2)} "
            f"| {_fmt_est(_pair(c, base, 'call_us')) if base else '—'} "
            f"| {fmt_span(c, 'e2e_rps', 0) if counted else '—'} "
            f"| {_fmt_est(_pair(c, ref, 'e2e_rps')) if ref and counted else '—'} "
            f"| {'—' if lost is None else ('**' + str(lost) + '**' if lost else '0')} "
            f"| {fmt_span(c, 'lag_p99_ms', 1)} | {fmt_span(c, 'lag_max_ms', 1)} "
            f"| {fmt_span(c, 'rss_peak_mb', 0)} |"
        )
    out = "\n".join(lines)
    out += (
        "\n\nx floor: against the NullHandler floor measured the same way "
        "(loop, or foreign thread); x FileHandler: against stdlib FileHandler for the file rows, "
        "against the stdlib handler of the same destination for the network rows. Ratios are "
        "the median of the per-round ratios (each round runs every contender once), "
        "with a bootstrap 95% interval in brackets."
    )
    for name, why in skipped.items():
        out += f"\n\nskipped {name}: {why}"
    if rss:
        out += (
            f"\n\nRSS under a {rss['n']:,}-record burst: grew {rss['growth_mb']:.1f} MB "
            f"(bound {rss['bound_mb']:.1f} MB = (queue_size + lane_size + 2 x batch_size) x "
            f"{rss['per_record_kb']:.2f} KB + {rss['fixed_mb']:.0f} MB fixed); "
            f"{'holds' if rss['holds'] else 'EXCEEDED'}; lost {rss['lost']}"
        )
    return out


def _pair_ref(c: Case, by: dict[str, Case]) -> Case | None:
    for std, ours in PAIRS:
        if c.key in (std, ours) and std in by:
            return by[std]
    return None


def _pair(a: Case, b: Case | None, metric: str, op: str = "ratio") -> Estimate | None:
    """Per-round ratio (or difference) of ``a`` to ``b`` with its bootstrap interval."""
    if b is None:
        return None
    mine = {int(t.get("round", i)): t.get(metric) for i, t in enumerate(a.trials)}
    theirs = {int(t.get("round", i)): t.get(metric) for i, t in enumerate(b.trials)}
    return _stats.paired(mine, theirs, op)


def _fmt_est(est: Estimate | None) -> str:
    return "—" if est is None else est.fmt()


#: issue 17's targets (and issue 8's, kept), each judged on a paired interval
CALL_TARGET = Target("call on the loop <= 1.3x floor (upper end < 1.4x)", "<=", 1.3, 1.4)
E2E_TARGET = Target("file records/s end to end >= 1.5x FileHandler", ">=", 1.5)
THREAD_TARGET = Target("call from a thread <= 2x floor", "<=", 2.0)
HTTP_TARGET = Target("HTTP (json_batch) records/s >= 20x HTTPHandler", ">=", 20.0)
STAGES_TARGET = Target(
    f"loop-side CPU per record (stages.py) <= {LOOP_SIDE_TARGET_US} µs", "<=", LOOP_SIDE_TARGET_US
)


def targets(
    cases: list[Case], rounds: int | None = None, quick: bool = False
) -> list[tuple[str, str, str]]:
    """(verdict, target, value) per target: met / missed / undecided at this noise;
    an estimate from fewer than ``rounds`` rounds says ``(n=...)``; a ``quick`` run
    judges nothing."""
    by = {c.key: c for c in cases}
    out: list[tuple[str, str, str]] = []

    def pair(a: str, b: str, metric: str, op: str = "ratio") -> Estimate | None:
        return _pair(by[a], by[b], metric, op) if a in by and b in by else None

    def verdict(target: Target, est: Estimate) -> str:
        return _stats.QUICK if quick else target.verdict(est)

    def add(target: Target, est: Estimate | None, what: str | None = None, **fmt: Any) -> None:
        if est is not None:
            text = est.fmt(**fmt, asked=rounds)
            out.append((verdict(target, est), what or target.what, text))

    add(CALL_TARGET, pair("aiologsinks", "null", "call_us"))
    what = CALL_TARGET.what.replace("on the loop", "on the loop, CPU time of the loop thread,")
    add(CALL_TARGET, pair("aiologsinks", "null", "call_cpu_us"), what)
    thread_loop = pair("aiologsinks@thread", "null", "call_us")
    if thread_loop is not None:
        text = thread_loop.fmt(asked=rounds) + " (loop floor)"
        out.append((verdict(THREAD_TARGET, thread_loop), THREAD_TARGET.what, text))
    thread = pair("aiologsinks@thread", "null@thread", "call_us")
    add(THREAD_TARGET, thread, "  (vs the thread floor)")
    add(E2E_TARGET, pair("aiologsinks", "stdlib-file", "e2e_rps"))
    for key in ("aiologsinks", "aiologsinks-socket", "aiologsinks-http-batch"):
        over = pair(key, "null", "lag_p99_ms", "diff")
        if over is not None:
            t = Target(f"{key} lag p99 <= floor + 1 ms", "<=", 1.0)
            text = "floor " + over.fmt(1, " ms", signed=True, asked=rounds)
            out.append((verdict(t, over), t.what, text))
    add(HTTP_TARGET, pair("aiologsinks-http-batch", "stdlib-http", "e2e_rps"))
    return out


def stages_rounds(rounds: int, log: Callable[[str], None]) -> tuple[list[float], str]:
    """``benchmarks/stages.py``'s loop-side CPU per record, ``rounds`` times (each its own
    process, so each has its own heap and GC history)."""
    values: list[float] = []
    last = ""
    for r in range(rounds):
        proc = subprocess.run(
            [sys.executable, os.path.join(os.path.dirname(__file__), "stages.py"), "--json"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            log(f"  stages round {r + 1}: failed: {proc.stderr.strip()[-200:]}")
            continue
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
        values.append(doc["loop_side"])
        last = doc["table"]
        log(
            f"  stages round {r + 1}/{rounds}: loop-side {doc['loop_side']:.2f} µs per record "
            f"(the floor: {doc['floor']:.2f} µs, {doc['loop_side'] / doc['floor']:.2f}x)"
        )
    return values, last


def notes(cases: list[Case]) -> str:
    """What the targets do not say: where the file sink's loop lag comes from."""
    by = {c.key: c for c in cases}
    if not all(k in by for k in ("null", "aiologsinks", "aiologsinks-devnull")):
        return ""
    lag = {k: by[k].median("lag_p99_ms") for k in ("null", "aiologsinks", "aiologsinks-devnull")}
    if any(v is None for v in lag.values()):
        return ""
    return (
        f"\n\nlag p99 medians: floor {lag['null']:.1f} ms, FileSink {lag['aiologsinks']:.1f} ms, "
        f"FileSink to /dev/null {lag['aiologsinks-devnull']:.1f} ms: the lag over the floor is "
        "the pipeline's CPU on the loop (the /dev/null row has it too), not the disk"
    )


def rss_check(case: Case, per_record_kb: float, fixed_mb: float) -> dict[str, Any] | None:
    if not case.trials:
        return None
    t = case.trials[-1]
    growth = t["rss_peak_mb"] - t["rss_base_mb"]
    o = RSS_OPTIONS
    records = o["queue_size"] + o["lane_size"] + 2 * o["batch_size"]
    bound = records * per_record_kb / 1024 + fixed_mb
    return {
        "n": case.n,
        "growth_mb": growth,
        "bound_mb": bound,
        "per_record_kb": per_record_kb,
        "fixed_mb": fixed_mb,
        "holds": growth <= bound,
        "lost": t["lost"],
    }


def chart(cases: list[Case], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in cases if c.trials]
    labels = [c.label.replace(", from a foreign thread", " (thread)") for c in rows]
    fig, axes = plt.subplots(1, 3, figsize=(17, 0.42 * len(rows) + 1.6), sharey=True)
    specs = (
        ("call_us", "µs per logging call (lower is better)"),
        ("e2e_rps", "records/s end to end (higher is better)"),
        ("lag_p99_ms", "loop lag p99, ms (lower is better)"),
    )
    for ax, (metric, title) in zip(axes, specs, strict=True):
        meds = [c.median(metric) or 0.0 for c in rows]
        spans = [c.span(metric) or (0.0, 0.0) for c in rows]
        err = [
            [m - s[0] for m, s in zip(meds, spans, strict=True)],
            [s[1] - m for m, s in zip(meds, spans, strict=True)],
        ]
        colors = [
            "tab:green" if c.contender.startswith("aiologsinks") else "tab:gray" for c in rows
        ]
        ax.barh(range(len(rows)), meds, xerr=err, color=colors, capsize=2)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels(labels, fontsize=8)
    fig.suptitle(
        f"aiologsinks vs stdlib and peers — {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs; median and min-max of trials",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small N, 2 rounds (sanity: no verdicts)"
    )
    parser.add_argument("--trials", type=int, help="interleaved rounds (9; quick: 2)")
    parser.add_argument("--n", type=int, help="records per trial (100000; quick: 10000)")
    parser.add_argument("--only", help="comma-separated contender keys to run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-rss", action="store_true", help="skip the 1M-record RSS run")
    parser.add_argument("--strict-peers", action="store_true", help="peers' losses fail too")
    parser.add_argument(
        "--no-pyperf", action="store_true", help="skip the pyperf per-call rounds (micro_pyperf)"
    )
    parser.add_argument(
        "--stages", type=int, help="rounds of stages.py for the loop-side CPU target (5; quick 1)"
    )
    args = parser.parse_args(argv)
    n = args.n or (10_000 if args.quick else 100_000)
    trials = args.trials or (2 if args.quick else 9)
    n_http = 300 if args.quick else 2000
    n_rss = 0 if args.no_rss else (100_000 if args.quick else 1_000_000)
    cases, skipped, rss_case = build_cases(min(n, n), n_http, n_rss)
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c.key in keep or c.contender in keep]
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    log(f"{len(cases)} contenders, n={n:,} (HTTP {n_http:,}), {trials} interleaved rounds")
    for name, why in skipped.items():
        log(f"  skipped {name}: {why}")
    started = time.perf_counter()
    run_interleaved(cases, trials, 1000, progress=log)
    rss = None
    if rss_case is not None:
        log(f"  RSS run: {rss_case.n:,} records ...")
        run_trial(rss_case, 1000, {"options": RSS_OPTIONS})
        rss = rss_check(rss_case, per_record_kb=PER_RECORD_KB, fixed_mb=FIXED_MB)
    table = markdown(cases, skipped, rss)
    checks = targets(cases, trials, args.quick)
    extra = ""
    if not args.no_pyperf and importlib.util.find_spec("pyperf") is not None:
        from . import micro_pyperf

        log(f"  pyperf: {trials} interleaved rounds of {len(micro_pyperf.CONTENDERS)} benchmarks")
        res = micro_pyperf.run_rounds(trials, args.quick, log)
        ptable, pest = micro_pyperf.table(res)
        extra += "\n\npyperf, per call on the loop (`benchmarks/micro_pyperf.py`):\n\n" + ptable
        if pest is not None:
            t = micro_pyperf.TARGET
            pv = _stats.QUICK if args.quick else t.verdict(pest)
            checks.insert(0, (pv, t.what + " (pyperf)", pest.fmt(asked=trials)))
    stage_rounds = args.stages if args.stages is not None else (1 if args.quick else 5)
    if stage_rounds:
        values, stage_table = stages_rounds(stage_rounds, log)
        est = bootstrap(values)
        if est is not None:
            sv = _stats.QUICK if args.quick else STAGES_TARGET.verdict(est)
            text = est.fmt(2, " µs", asked=stage_rounds)
            checks.append((sv, STAGES_TARGET.what, text))
            extra += (
                f"\n\n`benchmarks/stages.py` (the last of {len(values)} runs):\n\n{stage_table}"
            )
    check_text = "\n".join(f"- **{verdict}**: {what}: {value}" for verdict, what, value in checks)
    if rss is not None:
        # one trial, no interval: a check of the bound, judged only in a full run
        held = _stats.QUICK if args.quick else _stats.MET if rss["holds"] else _stats.MISSED
        check_text += f"\n- **{held}**: peak RSS within the bound (one trial)"
    check_text = (
        "Targets (verdicts: met when the whole 95% interval is on the right side of the "
        "target, missed when the whole interval is on the wrong side, undecided at this "
        "noise when it straddles the target; the per-call targets, looser, are met when "
        "the median is <= 1.3x and the interval's upper end < 1.4x; not judged in a quick "
        "run or below 5 rounds):\n\n" + check_text + notes(cases)
    )
    table += extra
    os.makedirs(RESULTS, exist_ok=True)
    # a sanity run must not replace the full run's results
    name = "results-quick" if args.quick else "results"
    doc = {
        "python": platform.python_version(),
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "n": n,
        "trials": trials,
        "seconds": time.perf_counter() - started,
        "cases": [c.summary() for c in cases],
        "skipped": skipped,
        "rss": rss,
        "targets": [{"target": w, "verdict": ok, "value": v} for ok, w, v in checks],
    }
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(table + "\n\n" + check_text + "\n")
    try:
        chart(cases, os.path.join(RESULTS, f"{name}.png"))
    except ImportError:
        log("  matplotlib is not installed: no chart")
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print()
        print(table)
        print()
        print(check_text)
        print(f"\nwritten to {RESULTS}/{name}.{{json,md,png}}")
    failed = False
    for c in cases:
        lost = c.lost()
        peer = c.contender in THIRD_PARTY
        if c.errors or not c.trials:
            print(f"FAILED {c.key}: {'; '.join(c.errors) or 'no trial'}", file=sys.stderr)
            failed = True
        elif lost:
            print(f"LOST {lost} record(s): {c.label}", file=sys.stderr)
            failed |= args.strict_peers or not peer
    if rss is not None and rss["lost"]:
        print(f"LOST {rss['lost']} record(s) in the RSS run", file=sys.stderr)
        failed = True
    return 1 if failed else 0


#: measured size of one prepared record while queued (see benchmarks/README.md)
PER_RECORD_KB = 0.75
#: the file worker thread, the rendered batch and allocator slack
FIXED_MB = 8.0

if __name__ == "__main__":
    sys.exit(main())
