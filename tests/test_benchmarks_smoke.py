"""The benchmark code keeps working: a tiny run of the service benchmark, and the
statistics its verdicts rest on. Nothing here is timed or compared with a speed."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from benchmarks import _loadgen, _stats, attribute, instructions, service

from .conftest import require_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# uvicorn and fastapi come with the test extra: missing, the smoke tests fail


def run_smoke(*args: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(
        _run_module("benchmarks.service", "--smoke", "--json", *args)
    )
    return doc


def cells_by_key(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    cells = doc["cells"]
    assert isinstance(cells, list)
    return {c["key"]: c for c in cells}


def test_service_smoke_fastapi_counts_every_record_at_a_file_and_a_stalling_peer() -> None:
    doc = run_smoke("--dest", "file,stall", "--only", "aiologsinks")
    cells = cells_by_key(doc)
    assert set(cells) == {"null", "file/aiologsinks", "stall/aiologsinks"}
    for key, cell in cells.items():
        run = cell["runs"]["0"]
        assert run["logged"] > 0, key
        assert run["open_answered"] > 0 and run["closed_answered"] > 0, key
        assert run["closed_server_cpu_ms_per_kreq"] > 0, key  # the server worked
        # its CPU split: the kernel's share and the cyclic GC's (the app's own clock)
        assert 0 <= run["closed_server_kernel_ms_per_kreq"] <= run["closed_server_cpu_ms_per_kreq"]
        assert 0 <= run["closed_server_gc_full_ms_per_kreq"] <= run["closed_server_gc_ms_per_kreq"]
        # the stalling peer is a process whose CPU is counted; a file has none
        assert ("closed_peer_cpu_ms_per_kreq" in run) == key.startswith("stall"), key
        if key != "null":
            assert run["delivered"] == run["logged"], key
            assert run["lost"] == 0, key
        # saturation alternated with the floor's server beside it (the floor's own cell
        # too: the A/A check): both answered
        assert run["closed_ref_rps"] > 0 and run["closed_rps"] > 0, key
        assert run["closed_ratio"] == pytest.approx(run["closed_rps"] / run["closed_ref_rps"])
        # so did the open loop: both sides answered and have a p99
        assert run["open_ref_p99_ms"] > 0 and run["open_p99_ms"] > 0, key
    # each cell had a floor server of its own, as fresh as the cell's (one kept for a
    # whole round slowed as it aged and favoured the cells run late in the round)
    ref_pids = [cell["runs"]["0"]["ref_pid"] for cell in cells.values()]
    assert len(set(ref_pids)) == len(cells)
    verdicts = {v["target"]: v["verdict"] for v in doc["verdicts"]}
    assert verdicts["local file: 0 lost"] == "met"


def test_service_linger_gives_one_aiologsinks_row_per_value_each_server_with_its_own() -> None:
    doc = run_smoke("--dest", "file", "--only", "aiologsinks", "--linger", "5,0")
    cells = cells_by_key(doc)
    assert set(cells) == {"null", "file/aiologsinks@5ms", "file/aiologsinks@0ms"}
    for key, linger in (("file/aiologsinks@5ms", 0.005), ("file/aiologsinks@0ms", 0.0)):
        run = cells[key]["runs"]["0"]
        assert run["linger"] == linger, key  # what the server's Dispatcher had
        assert run["logged"] > 0 and run["lost"] == 0, key
    verdicts = {v["target"] for v in doc["verdicts"]}
    assert "local file, linger 0 ms: 0 lost" in verdicts


def test_service_linger_max_gives_one_aiologsinks_row_per_value() -> None:
    doc = run_smoke("--dest", "file", "--only", "aiologsinks", "--linger-max", "0,64")
    cells = cells_by_key(doc)
    assert set(cells) == {"null", "file/aiologsinks@max0", "file/aiologsinks@max64"}
    for key, bound in (("file/aiologsinks@max0", 1 << 30), ("file/aiologsinks@max64", 64)):
        run = cells[key]["runs"]["0"]
        assert run["linger_max"] == bound, key  # what the server's lanes had
        assert run["logged"] > 0 and run["lost"] == 0, key
    verdicts = {v["target"] for v in doc["verdicts"]}
    assert "local file, lanes linger without a record bound: 0 lost" in verdicts


def test_service_linger_rejects_what_is_not_milliseconds() -> None:
    for bad in ("fast", "-1"):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.service", "--smoke", "--linger", bad],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, bad
        assert "--linger" in proc.stderr, bad


def test_service_smoke_aiohttp_app_runs() -> None:
    doc = run_smoke("--framework", "aiohttp", "--dest", "file", "--only", "aiologsinks")
    cell = cells_by_key(doc)["file/aiologsinks"]
    run = cell["runs"]["0"]
    assert run["logged"] > 0 and run["delivered"] == run["logged"]
    assert run["closed_server_gc_ms_per_kreq"] >= 0  # the aiohttp app's /stats has the clock


def test_service_smoke_otlp_counts_every_record_through_a_real_collector() -> None:
    # OTLPSink -> rotel -> the counting receiver; rotel comes with the test extra
    doc = run_smoke("--dest", "otlp", "--only", "aiologsinks")
    cells = cells_by_key(doc)
    assert set(cells) == {"null", "otlp/aiologsinks"}
    run = cells["otlp/aiologsinks"]["runs"]["0"]
    assert run["logged"] > 0 and run["delivered"] == run["logged"] and run["lost"] == 0


def test_the_sdk_contender_is_omitted_with_a_reason_without_the_exporter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    gone = "opentelemetry.exporter.otlp.proto.http"
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == gone else real(name, *a)
    )
    cells, skipped = service.build_cells(["otlp"], None)
    assert [c.key for c in cells] == ["null", "otlp/aiologsinks"]
    assert skipped == [f"otlp/otel: {gone} is not installed (pip install -e '.[bench]')"]


def test_optional_contenders_are_skipped_when_their_package_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("loguru", "aiologger") else real(name, *a),
    )
    cells, skipped = service.build_cells(["file"], None)
    assert [c.contender for c in cells] == ["null", "stdlib", "queue", "aiologsinks"]
    assert any(s.startswith("file/loguru") for s in skipped)


def test_saturation_slices_alternate_abba_and_merge_over_their_total_time() -> None:
    assert service.slice_order(2) == [True, False, False, True]
    assert service.slice_order(3) == [True, False, False, True, True, False]
    for n in range(1, 8):
        order = service.slice_order(n)
        assert order.count(True) == order.count(False) == n
    merged = service.merge_slices(
        [
            {"rps": 1000.0, "answered": 1000, "errors": 1, "p99_ms": 4.0},
            {"rps": 3000.0, "answered": 1500, "timed_out": 2, "p99_ms": 6.0},
        ]
    )
    # 2,500 requests in 1 s + 0.5 s: not the mean of the slices' rates (2,000)
    assert merged["rps"] == pytest.approx(2500 / 1.5)
    assert merged["answered"] == 2500
    assert (merged["errors"], merged["timed_out"]) == (1, 2)
    assert merged["p99_ms"] == 5.0


def test_open_loop_slices_alternate_abba_between_two_servers() -> None:
    two = [_loadgen.slice_side(i, 2) for i in range(12)]
    assert two == [0, 1, 1, 0] * 3
    assert [_loadgen.slice_side(i, 1) for i in range(5)] == [0] * 5


def test_p99_is_paired_with_the_floor_beside_the_cell_when_the_run_has_it() -> None:
    floor = service.Cell("null", "file")
    floor.runs = {0: {"open_p99_ms": 5.0, "open_ref_p99_ms": 4.5}, 1: {"open_p99_ms": 9.0}}
    cell = service.Cell("aiologsinks", "file")
    cell.runs = {
        r: {"open_p99_ms": 6.0 + r, "open_ref_p99_ms": 5.5 + r} for r in range(_stats.MIN_ROUNDS)
    }
    paired_beside = service.p99_vs_floor(cell, floor)
    assert paired_beside is not None and paired_beside.median == pytest.approx(0.5)
    # the floor's own cell: its A/A check against the floor beside it
    aa = service.p99_vs_floor(floor, floor)
    assert aa is not None and aa.median == pytest.approx(0.5)
    # results saved before the open loop alternated: against the floor's cell of the round
    old = service.Cell("aiologsinks", "file")
    old.runs = {0: {"open_p99_ms": 7.0}, 1: {"open_p99_ms": 8.0}}
    before = service.p99_vs_floor(old, floor)
    # 7 - 5 and 8 - 9
    assert before is not None and (before.rounds, before.median) == (2, pytest.approx(0.5))


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    est = _stats.paired({0: 2.0, 1: 6.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert est is not None
    assert est.median == 2.0  # ratios 2, 3, 1
    assert est.low <= est.median <= est.high


def test_verdicts_follow_the_interval() -> None:
    le = _stats.Target("x <= 1.3", "<=", 1.3, strict_high=1.4)
    assert le.verdict(_stats.Estimate(1.2, 1.1, 1.35, 9)) == _stats.MET
    assert le.verdict(_stats.Estimate(1.2, 1.1, 1.45, 9)) == _stats.UNDECIDED
    assert le.verdict(_stats.Estimate(1.5, 1.35, 1.6, 9)) == _stats.MISSED
    ge = _stats.Target("x >= 1.5", ">=", 1.5)
    assert ge.verdict(_stats.Estimate(1.6, 1.55, 1.7, 9)) == _stats.MET
    assert ge.verdict(_stats.Estimate(1.5, 1.4, 1.6, 9)) == _stats.UNDECIDED
    assert ge.verdict(_stats.Estimate(1.3, 1.2, 1.45, 9)) == _stats.MISSED


def test_too_few_rounds_get_no_verdict() -> None:
    le = _stats.Target("x <= 1.3", "<=", 1.3)
    assert le.verdict(_stats.Estimate(2.0, 1.9, 2.1, 2)).startswith("not judged")


def test_bootstrap_is_reproducible_and_brackets_the_median() -> None:
    values = [1.1, 1.4, 1.2, 1.3, 1.25, 1.35, 1.15, 1.28, 1.32]
    a, b = _stats.bootstrap(values), _stats.bootstrap(values)
    assert a == b and a is not None
    assert a.low <= a.median <= a.high
    assert min(values) <= a.low and a.high <= max(values)


def _run_module(module: str, *args: str, timeout: float = 120) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_fixed_rate_smoke_prints_a_row_per_destination() -> None:
    out = _run_module(
        "benchmarks.fixed_rate", "--rounds", "1", "--seconds", "0.3", "--rate", "500",
        "--dest", "file", "--linger-max", "0",
    )  # fmt: skip
    cpu, gc = [line for line in out.splitlines() if line.startswith("| file |")]
    assert "floor (NullHandler)" in out and "a lingering lane has no bound in records" in out
    # the collections table: generations 0 / 1 / 2, as shipped and with linger=0
    assert re.fullmatch(r"\| file \| [\d.]+ / [\d.]+ / [\d.]+ \| [\d.]+ / [\d.]+ / [\d.]+ \|", gc)
    assert cpu.count("|") == 5


def test_encoding_benchmark_checks_both_paths_agree() -> None:
    out = _run_module("benchmarks.bench_encode", "--n", "300", "--rounds", "1")
    # the gzip section needs isal (the test extra has it)
    sections = 4 if importlib.util.find_spec("isal") is not None else 3
    assert out.count("first / second") == sections or "not in use" in out


def test_instruction_count_smoke_counts_the_floor_server_under_valgrind() -> None:
    require_program("valgrind")
    doc = json.loads(_run_module("benchmarks.instructions", "--smoke", "--json", timeout=600))
    (cell,) = doc["cells"]
    assert cell["contender"] == "null" and not cell["errors"]
    (per_request,) = cell["per_request"]
    # an aiohttp request with three logging calls is tens of thousands of instructions
    assert 10_000 < per_request < 10_000_000
    assert cell["logged"][0] >= 25 * 3


def test_instruction_table_gives_each_option_over_the_floor_per_record() -> None:
    floor = instructions.Cell("file", "null", "floor", per_request=[100_000.0, 102_000.0])
    ours = instructions.Cell("file", "aiologsinks", "ours", per_request=[131_000.0, 133_000.0])
    broken = instructions.Cell("http", "stdlib", "theirs", errors=["RuntimeError('x')"])
    text = instructions.table([floor, ours, broken], records_per_request=3.0)
    rows = text.splitlines()[2:]
    assert rows[0] == "| any | floor | 101,000 (100,000 to 102,000) | — | 1.00x |"
    # (132,000 - 101,000) / 3 records; 101,000 / 132,000
    assert rows[1] == "| file | ours | 132,000 (131,000 to 133,000) | +10,333 | 0.77x |"
    assert "failed: RuntimeError('x')" in rows[2]
    assert "I1 misses" not in text  # no cache simulation, no second table


def test_instruction_table_with_simulated_caches_gives_the_misses_against_the_floor(
    tmp_path: pathlib.Path,
) -> None:
    # what cachegrind --cache-sim=yes writes: the events, then their totals
    out = tmp_path / "cachegrind.out"
    out.write_text(
        "desc: I1 cache: 65536 B, 64 B, 8-way associative\n"
        "cmd: python -m benchmarks._service_app\n"
        "events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw\n"
        "fl=x.c\nfn=f\n1 9 1 0 3 1 0 2 0 0\n"
        "summary: 1019032 23100 0 328389 16327 5 151496 1838 1\n"
    )
    totals = instructions.events(str(out))
    assert totals["Ir"] == 1019032 and totals["I1mr"] == 23100 and totals["DLmr"] == 5
    assert instructions.instructions(str(out)) == 1019032  # the first event, as before
    floor = instructions.Cell("file", "null", "floor", per_request=[100_000.0])
    floor.misses = {"I1mr": [2_000.0], "D1mr": [1_000.0], "DLmr": [0.0]}
    ours = instructions.Cell("file", "aiologsinks", "ours", per_request=[110_000.0])
    ours.misses = {"I1mr": [2_300.0], "D1mr": [1_050.0], "DLmr": [-0.25]}
    text = instructions.table([floor, ours], records_per_request=3.0)
    misses = text.split("\n\n")[1].splitlines()
    assert "I1 misses" in misses[0]
    assert misses[2] == "| any | floor | 100,000 | 2,000 | 1,000 | 0 | — |"
    # each over the floor's: +10% instructions, +15% I1, +5% D1; the last level's
    # fraction of a miss a request is the two runs' noise: 0, no ratio
    over = "+10.0% · +15.0% · +5.0% · —"
    assert misses[3] == f"| file | ours | 110,000 | 2,300 | 1,050 | 0 | {over} |"


def test_attribute_charges_a_sample_to_its_innermost_python_function_or_our_compiled_code() -> None:
    # `perf script -F comm,tid,ip,sym,dso` of four samples: one in the kernel under
    # aiohttp, one in libpython under a logging frame, one in aiologsinks' compiled
    # shim under a logging frame (the shim comes first: it is charged to us), one in a
    # collection of the cyclic GC under a Starlette frame
    script = "\n".join(
        [
            "python 4242",
            "\tffffffff81000000 tcp_sendmsg ([kernel.kallsyms])",
            "\t7f0000000001 _PyEval_EvalFrameDefault (/usr/lib/libpython3.12.so)",
            "\t7f0000000002 py::StreamWriter.write:/x/aiohttp/http_writer.py (/tmp/perf-1.map)",
            "\t7f0000000003 py::Logger.info:/x/logging/__init__.py (/tmp/perf-1.map)",
            "",
            "python 4242",
            "\t7f0000000004 PyDict_GetItem (/usr/lib/libpython3.12.so)",
            "\t7f0000000005 py::LogRecord.__init__:/x/logging/__init__.py (/tmp/perf-1.map)",
            "",
            "python 4243",
            "\t7f0000000006 PyTuple_New (/usr/lib/libpython3.12.so)",
            "\t7f0000000007 shim_call (/x/aiologsinks/_speedups.cpython-312-x86_64-linux-gnu.so)",
            "\t7f0000000008 py::Logger.callHandlers:/x/logging/__init__.py (/tmp/perf-1.map)",
            "",
            "python 4242",
            "\t7f0000000009 visit_reachable (/usr/lib/libpython3.12.so)",
            "\t7f000000000a gc_collect_main (/usr/lib/libpython3.12.so)",
            "\t7f000000000b py::Request.json:/x/starlette/requests.py (/tmp/perf-1.map)",
            "",
        ]
    )
    stacks = list(attribute.samples(script))
    assert len(stacks) == 4
    counts = attribute.attribute(stacks)
    assert counts["all"] == 4 and counts["kernel"] == 1
    assert counts["cyclic GC"] == 1  # not the function whose allocation started it
    assert counts["aiohttp"] == 1
    assert counts["logging (stdlib)"] == 1
    assert counts["aiologsinks"] == 1
    per = attribute.per_request(counts, requests=10, frequency=100)
    assert per["all"] == pytest.approx(4 / 100 / 10 * 1e6)  # 4 samples of 10 ms, 10 requests


def test_attribute_says_what_it_needs_instead_of_failing_later() -> None:
    why = attribute.missing()
    if sys.version_info < (3, 12):
        assert why is not None and "3.12" in why
    else:
        assert why is None or "perf" in why or "wrk" in why
