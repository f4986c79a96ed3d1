"""Run trials in subprocesses, interleaved, and aggregate them (median, min-max)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._scenarios import CONTENDERS, unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIAL_TIMEOUT = 300.0


@dataclass
class Case:
    """One row of a table: a contender with its trial parameters."""

    key: str
    contender: str
    n: int
    thread: bool = False
    label: str = ""
    trials: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = CONTENDERS[self.contender][1]
            if self.thread:
                self.label += ", from a foreign thread"

    def values(self, metric: str) -> list[float]:
        return [t[metric] for t in self.trials if t.get(metric) is not None]

    def median(self, metric: str) -> float | None:
        vals = self.values(metric)
        return statistics.median(vals) if vals else None

    def span(self, metric: str) -> tuple[float, float] | None:
        vals = self.values(metric)
        return (min(vals), max(vals)) if vals else None

    def lost(self) -> int | None:
        vals = [t["lost"] for t in self.trials if t.get("lost") is not None]
        return max(vals) if vals else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "label": self.label,
            "contender": self.contender,
            "n": self.n,
            "thread": self.thread,
            "trials": len(self.trials),
            "lost_max": self.lost(),
            "errors": self.errors,
        }
        for metric in ("call_us", "e2e_rps", "lag_p99_ms", "lag_max_ms", "rss_peak_mb"):
            out[metric] = {"median": self.median(metric), "span": self.span(metric)}
        out["rss_growth_mb"] = {
            "median": statistics.median(
                [t["rss_peak_mb"] - t["rss_base_mb"] for t in self.trials] or [0.0]
            )
        }
        out["raw"] = self.trials
        return out


def run_trial(case: Case, burst: int, extra: dict[str, Any] | None = None) -> None:
    """Run one trial of ``case`` in a fresh interpreter; append its result or error."""
    spec = {"contender": case.contender, "n": case.n, "burst": burst, "thread": case.thread}
    spec.update(extra or {})
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks._scenarios", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=TRIAL_TIMEOUT,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        case.errors.append(f"timed out after {TRIAL_TIMEOUT:.0f} s")
        return
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = proc.stderr.strip().splitlines()[-3:]
        case.errors.append(f"exit {proc.returncode}: {' | '.join(tail)}")
        return
    case.trials.append(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_interleaved(
    cases: Sequence[Case],
    trials: int,
    burst: int,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Run ``trials`` rounds; each round runs every case once, in a rotated order, so
    slow drifts of the shared machine spread over every case alike."""
    for r in range(trials):
        shift = r % len(cases) if cases else 0
        for case in list(cases[shift:]) + list(cases[:shift]):
            t0 = time.perf_counter()
            before = len(case.trials)
            run_trial(case, burst)
            if len(case.trials) > before:
                case.trials[-1]["round"] = r
            if progress is not None:
                last = case.trials[-1] if case.trials else None
                what = (
                    f"{last['call_us']:.1f} us/call, {last['e2e_rps']:,.0f} rec/s"
                    if last and not case.errors
                    else (case.errors[-1] if case.errors else "?")
                )
                progress(
                    f"  round {r + 1}/{trials} {case.key:<28} {what} "
                    f"({time.perf_counter() - t0:.1f} s)"
                )


def available(names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Split contender names into runnable ones and skipped ones (with the reason)."""
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        why = unavailable(name)
        if why is None:
            ok.append(name)
        else:
            skipped[name] = why
    return ok, skipped


def fmt_span(case: Case, metric: str, digits: int = 1, scale: float = 1.0) -> str:
    med, span = case.median(metric), case.span(metric)
    if med is None or span is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    if len(case.trials) == 1:
        return f.format(med * scale)
    return f"{f.format(med * scale)} ({f.format(span[0] * scale)}-{f.format(span[1] * scale)})"


def paired(a: Case, b: Case, metric: str, op: str = "ratio") -> float | None:
    """The median over rounds of ``a/b`` (or ``a-b``) for ``metric``, each round's
    trials of the two cases compared with each other.

    The rounds are interleaved, so a drift of the shared machine during one round
    moves both; the median of the paired values is what a noisy machine still
    measures reliably (the ratio of two medians mixes rounds)."""
    mine = {t.get("round"): t.get(metric) for t in a.trials}
    theirs = {t.get("round"): t.get(metric) for t in b.trials}
    vals = []
    for r, x in mine.items():
        y = theirs.get(r)
        if x is None or y is None or (op == "ratio" and not y):
            continue
        vals.append(x / y if op == "ratio" else x - y)
    return statistics.median(vals) if vals else None


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "—"
    return f"{a / b:.2f}x"
