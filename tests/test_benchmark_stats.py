"""The pure logic the benchmarks' verdicts rest on: statistics, slice orders, failed
requests, round counts and the A/A gate. Nothing here runs a benchmark or is timed."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import pytest

from benchmarks import _stats, service


def test_bootstrap_leaves_out_nan_and_infinite_rounds_and_counts_only_the_rest() -> None:
    est = _stats.bootstrap([0.8] * 8 + [math.nan])
    assert est is not None and (est.median, est.rounds) == (0.8, 8)
    ge = _stats.Target("x >= 0.9", ">=", 0.9)
    # a NaN first or in the middle moved the median and gave "met"
    assert ge.verdict(_stats.bootstrap([math.nan] + [0.8] * 8)) == _stats.MISSED
    mixed = _stats.bootstrap([0.8] * 4 + [math.nan] + [0.95] * 4)
    assert mixed is not None and mixed.rounds == 8
    assert _stats.bootstrap([0.95] * 8 + [math.inf]) == _stats.bootstrap([0.95] * 8)
    assert _stats.bootstrap([math.nan] * 9) is None
    assert _stats.bootstrap([None, 1.0, None]) == _stats.Estimate(1.0, 1.0, 1.0, 1)


def _cell(contender: str, runs: dict[int, dict[str, Any]]) -> service.Cell:
    cell = service.Cell(contender, "file")
    cell.runs = runs
    return cell


GOOD = {
    "open_p99_ms": 3.0,
    "open_ref_p99_ms": 3.0,
    "closed_ratio": 0.95,
    "closed_rps": 5000.0,
    "logged": 1000,
    "delivered": 1000,
    "lost": 0,
}


def _floor(rounds: int = 9, **kw: Any) -> service.Cell:
    # a floor against a second floor server: no difference unless ``kw`` says otherwise
    floor = {**GOOD, "delivered": None, "lost": None, "closed_ratio": 1.0, **kw}
    return _cell("null", {r: dict(floor) for r in range(rounds)})


def _verdicts(cells: list[service.Cell], **kw: Any) -> dict[str, str]:
    return {what.split(": ", 1)[1]: v for v, what, _ in service.verdicts(cells, **kw)}


def test_wrk_counts_as_requests_per_second_only_the_responses_that_succeeded() -> None:
    w = {"requests": 1000, "duration_us": 2_000_000, "errors": 600, "status": 600,
         "timeouts": 3, "p50_us": 100, "p99_us": 900, "p999_us": 950, "max_us": 990}  # fmt: skip
    res = service.wrk_result(w)
    assert (res["answered"], res["rps"], res["seconds"]) == (400, 200.0, 2.0)
    assert (res["errors"], res["timed_out"]) == (600, 3)
    everything_failed = service.wrk_result(dict(w, status=1000, errors=1000))
    assert (everything_failed["answered"], everything_failed["rps"]) == (0, 0.0)


def test_failed_requests_sum_both_phases_for_the_option_and_the_floor_apart() -> None:
    run = {"open_errors": 2, "closed_errors": 5, "closed_timed_out": 1,
           "open_ref_errors": 7, "closed_ref_errors": 0, "closed_ref_timed_out": 4}  # fmt: skip
    assert service.failed_requests(run) == 8
    assert service.failed_requests(run, "ref_") == 11
    assert service.failed_requests({}) == 0  # results saved before errors were kept


def test_a_slice_that_answered_nothing_still_counts_its_time() -> None:
    merged = service.merge_slices(
        [
            {"rps": 1000.0, "answered": 1000, "seconds": 1.0},
            {"rps": 0.0, "answered": 0, "errors": 900, "seconds": 1.0},
        ]
    )
    assert merged["rps"] == 500.0 and merged["errors"] == 900


def test_any_failed_request_makes_the_options_latency_and_throughput_verdicts_missed() -> None:
    cell = _cell("aiologsinks", {r: dict(GOOD) for r in range(9)})
    assert set(_verdicts([_floor(), cell]).values()) == {_stats.MET}
    cell.runs[4]["closed_errors"] = 3
    v = _verdicts([_floor(), cell])
    assert v["request p99 within 1 ms of the floor"] == "missed (3 failed requests)"
    assert v["requests/s >= 0.9x the floor"] == "missed (3 failed requests)"
    # every request failed: no p99 at all, still missed rather than "not measured"
    for run in cell.runs.values():
        run.update(open_p99_ms=None, open_errors=100)
    assert _verdicts([_floor(), cell])["request p99 within 1 ms of the floor"].startswith("missed")
    # the floor beside it failing leaves the comparison undecided
    ok = _cell("aiologsinks", {r: dict(GOOD, open_ref_errors=1) for r in range(9)})
    assert _verdicts([_floor(), ok])["requests/s >= 0.9x the floor"].startswith("undecided")


def test_an_estimate_says_how_many_rounds_it_rests_on_when_fewer_than_asked() -> None:
    est = _stats.Estimate(0.95, 0.9, 1.0, 7)
    assert est.fmt(asked=9) == "0.95x [0.90x, 1.00x] (n=7)"
    assert est.fmt(asked=7) == est.fmt() == "0.95x [0.90x, 1.00x]"


def test_verdicts_from_failed_rounds_say_so_and_lost_is_not_met_over_them() -> None:
    cell = _cell("aiologsinks", {r: dict(GOOD) for r in range(5)})
    cell.errors = [f"round {r + 1}: server exited" for r in range(5, 9)]
    checks = {what.split(": ", 1)[1]: (v, value) for v, what, value in
              service.verdicts([_floor(), cell])}  # fmt: skip
    assert checks["requests/s >= 0.9x the floor"][1].endswith("(n=5)")
    assert checks["0 lost"] == ("undecided at this noise (4 of 9 rounds failed)",
                                "0 lost over 5 of 9 rounds")  # fmt: skip
    # one round of nine: no interval, no verdict, and the count says why
    cell.runs = {0: dict(GOOD)}
    cell.errors = [f"round {r + 1}: server exited" for r in range(1, 9)]
    v = _verdicts([_floor(), cell])
    assert v["requests/s >= 0.9x the floor"].startswith("not judged (1 rounds")
    assert v["0 lost"].startswith("undecided")
    # every round failed: still three lines, none of them met
    cell.runs = {}
    cell.errors.append("round 1: server exited")
    assert set(_verdicts([_floor(), cell]).values()) == {"not measured (all 9 rounds failed)"}


def test_the_header_says_how_many_rounds_each_option_completed() -> None:
    full = _cell("aiologsinks", {r: dict(GOOD) for r in range(9)})
    assert service.rounds_text([_floor(), full], 9) == "9 interleaved rounds, all completed"
    short = _cell("aiologsinks", {r: dict(GOOD) for r in range(7)})
    assert service.rounds_text([_floor(), short], 9) == (
        "9 interleaved rounds, completed by all but: file/aiologsinks 7"
    )


def test_a_quick_run_judges_nothing_not_even_lost_records() -> None:
    cell = _cell("aiologsinks", {r: dict(GOOD) for r in range(9)})
    assert set(_verdicts([_floor(), cell], quick=True).values()) == {_stats.QUICK}


def test_the_micro_benchmarks_judge_nothing_quick_and_count_missing_rounds() -> None:
    from benchmarks import __main__ as micro
    from benchmarks._harness import Case

    floor, ours = Case("null", "null", 10), Case("aiologsinks", "aiologsinks", 10)
    floor.trials = [{"round": r, "call_us": 1.0} for r in range(9)]
    ours.trials = [{"round": r, "call_us": 1.1} for r in range(7)]  # two rounds failed
    ((verdict, _, value),) = micro.targets([floor, ours], rounds=9)
    assert (verdict, value) == (_stats.MET, "1.10x [1.10x, 1.10x] (n=7)")
    ((verdict, _, _),) = micro.targets([floor, ours], rounds=9, quick=True)
    assert verdict == _stats.QUICK


def test_records_delivered_beyond_those_logged_leave_zero_lost_undecided() -> None:
    runs = {r: dict(GOOD, duplicated=0) for r in range(9)}
    runs[3].update(delivered=1002, duplicated=2)
    cell = _cell("aiologsinks", runs)
    assert cell.duplicated() == 2 and cell.lost() == 0
    checks = {what.split(": ", 1)[1]: (v, value) for v, what, value in
              service.verdicts([_floor(), cell])}  # fmt: skip
    verdict, value = checks["0 lost"]
    assert (
        verdict
        == "undecided at this noise (delivered more than logged: duplicates may hide losses)"
    )
    assert value == "0 lost over 9 rounds, 2 delivered more than logged"
    assert "| **2** |" in service.table([_floor(), cell], None)
    # a loss stays missed, duplicates or not
    runs[5].update(lost=1)
    assert _verdicts([_floor(), cell])["0 lost"] == _stats.MISSED


def test_an_aa_check_that_leaves_out_no_difference_gates_the_verdicts_it_could_flip() -> None:
    # the floor against a second floor server: 0.97x in every round, p99 unbiased
    biased = _floor(closed_ratio=0.97)
    near = _cell("aiologsinks", {r: dict(GOOD, closed_ratio=0.89) for r in range(9)})
    v = _verdicts([biased, near])
    # 0.89x misses 0.9x, but the method reads 3% low: 0.89 / 0.97 would meet it
    assert v["requests/s >= 0.9x the floor"] == (
        "undecided (A/A check biased: 0.97x [0.97x, 0.97x])"
    )
    assert v["request p99 within 1 ms of the floor"] == _stats.MET
    assert v["0 lost"] == _stats.MET
    far = _cell("aiologsinks", {r: dict(GOOD) for r in range(9)})
    # 0.95x meets 0.9x whichever way a 3% bias goes
    assert _verdicts([biased, far])["requests/s >= 0.9x the floor"] == _stats.MET
    slow_ref = _floor()
    for r, run in slow_ref.runs.items():
        run["open_ref_p99_ms"] = 3.5 + r / 100  # the floor beside it answers later
    late = _cell("aiologsinks", {r: dict(GOOD, open_p99_ms=3.9) for r in range(9)})
    v = _verdicts([slow_ref, late])
    # +0.9 ms is within 1 ms, but the method reads about 0.5 ms low
    assert v["request p99 within 1 ms of the floor"].startswith("undecided (A/A check biased: -0.5")
    assert v["requests/s >= 0.9x the floor"] == _stats.MET
    assert _verdicts([slow_ref, far])["request p99 within 1 ms of the floor"] == _stats.MET


def test_the_aa_gate_judges_again_with_the_interval_widened_by_the_bias() -> None:
    rps = _stats.Target("requests/s >= 0.9x the floor", ">=", 0.9)
    p99 = _stats.Target("request p99 within 1 ms of the floor", "<=", 1.0)
    unbiased = _stats.Estimate(1.0, 0.97, 1.02, 9)
    missed = _stats.Estimate(0.85, 0.84, 0.86, 9)
    assert _stats.aa_gate(rps, missed, unbiased, unbiased.fmt()) == _stats.MISSED
    low = _stats.Estimate(0.97, 0.96, 0.98, 9)
    near = _stats.Estimate(0.89, 0.88, 0.895, 9)  # / [0.96, 0.98]: [0.898, 0.932]
    assert _stats.aa_gate(rps, near, low, low.fmt()).startswith("undecided (A/A")
    assert _stats.aa_gate(rps, _stats.Estimate(0.95, 0.94, 0.96, 9), low, "") == _stats.MET
    # the service run of 1cca28e: a p99 A/A of -0.14 ms [-0.37, -0.08] cannot move
    # +0.07 ms [-0.04, +0.25] past 1 ms
    aa = _stats.Estimate(-0.14, -0.37, -0.08, 9)
    assert _stats.aa_gate(p99, _stats.Estimate(0.07, -0.04, 0.25, 9), aa, "") == _stats.MET
    edge = _stats.Estimate(0.8, 0.7, 0.9, 9)  # + [0.08, 0.37]: up to 1.27 ms
    assert _stats.aa_gate(p99, edge, aa, aa.fmt()).startswith("undecided (A/A")
    # nothing to gate in what was not judged
    few = _stats.Estimate(0.95, 0.94, 0.96, 3)
    assert _stats.aa_gate(rps, few, low, "").startswith("not judged")


def test_a_run_names_the_commit_it_measured_and_when() -> None:
    prov = service.provenance()
    assert set(prov) == {"commit", "dirty", "date"} and prov["date"].endswith("UTC")
    text = service.provenance_text({"commit": "abc1234", "dirty": True, "date": "D"})
    assert text == "on abc1234 (with uncommitted changes), D"
    assert service.provenance_text({"commit": None, "dirty": None, "date": "D"}) == (
        "commit unknown, D"
    )


def test_replotting_a_quick_run_says_it_is_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    drawn: list[str] = []
    monkeypatch.setattr(service, "chart", lambda cells, out, title: drawn.append(title))
    doc = {"header": "fastapi; 2 interleaved rounds", "quick": True, "cells": []}
    path = tmp_path / "service-fastapi-quick.json"
    path.write_text(json.dumps(doc))
    assert service.replot(str(path), str(tmp_path / "x.png")) == 0
    assert drawn[0].startswith("QUICK RUN, NOT A MEASUREMENT")
    assert "--quick run" in capsys.readouterr().err
    path.write_text(json.dumps(dict(doc, quick=False)))
    service.replot(str(path), str(tmp_path / "x.png"))
    assert drawn[1].startswith("A service logging")


def _mean_positions(order: list[bool]) -> tuple[float, float]:
    mine = [i for i, m in enumerate(order) if m]
    floor = [i for i, m in enumerate(order) if not m]
    return sum(mine) / len(mine), sum(floor) / len(floor)


def test_saturation_slices_are_balanced_within_a_round_or_over_two() -> None:
    assert service.slice_order(1, flip=True) == [False, True]
    assert service.slice_order(3, flip=True) == [False, True, True, False, False, True]
    for n in range(1, 9):
        a, b = service.slice_order(n), service.slice_order(n, flip=True)
        assert a.count(True) == b.count(True) == n
        # over a pair of rounds each side's mean position in time is the same
        pair = _mean_positions(a + b)
        assert pair[0] == pair[1], n
        if n % 2 == 0:
            assert _mean_positions(a)[0] == _mean_positions(a)[1], n


def test_the_per_call_rule_is_looser_than_the_generic_one_as_its_words_say() -> None:
    est = _stats.Estimate(1.25, 1.1, 1.35, 9)  # median under 1.3x, upper end past it
    per_call = _stats.Target("call <= 1.3x, upper end < 1.4x", "<=", 1.3, strict_high=1.4)
    assert per_call.verdict(est) == _stats.MET
    assert _stats.Target("call <= 1.3x", "<=", 1.3).verdict(est) == _stats.UNDECIDED
