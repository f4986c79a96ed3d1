"""RotatingFileSink leaves the files RotatingFileHandler leaves, byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import random
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._record import RecordBatch, freeze

from ..conftest import IN_CI
from ..helpers import CaptureHandler, fresh_logger
from . import _oracle

REFERENCE = _oracle.reference_python()

WORDS = ["alpha", "beta", "gamma", "délta", "日本語", "x" * 30, "ok", "Größe", "end"]


def messages(n: int, seed: int, max_words: int = 6) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_words)))
        for i in range(n)
    ]


class Recorder(als.RotatingFileSink):
    """Counts handleError calls instead of printing them."""

    failures = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures += 1


async def play_sink(
    scenario: dict[str, Any],
    directory: Path,
    batch_sizes: Sequence[int],
    cls: type = Recorder,
    frozen: bool = False,
) -> Any:
    """Play the scenario into the sink; with ``frozen``, as a Dispatcher hands batches
    over (frozen records in a RecordBatch: the sink's fast path)."""
    path = _oracle.prepare_dir(scenario, str(directory))
    sink = cls(path, **_oracle.handler_kwargs(scenario))
    sink.setFormatter(logging.Formatter(_oracle.FMT))
    records = [r for now, msgs in scenario["steps"] for r in _oracle.make_records(msgs, now)]
    sizes = iter(batch_sizes)
    async with sink:
        i = 0
        while i < len(records):
            n = next(sizes, len(records))
            batch = records[i : i + n]
            await sink.emit_batch(RecordBatch([freeze(r) for r in batch]) if frozen else batch)
            i += n
    return sink


def scenario(kwargs: dict[str, Any], msgs: list[str], **extra: Any) -> dict[str, Any]:
    steps = [[1_700_000_000 + i, [m]] for i, m in enumerate(msgs)]
    return {"kind": "rotating", "kwargs": kwargs, "steps": steps, **extra}


COMBOS = [
    {"maxBytes": 0, "backupCount": 0},
    {"maxBytes": 0, "backupCount": 3},
    {"maxBytes": 120, "backupCount": 0},
    {"maxBytes": 120, "backupCount": 1},
    {"maxBytes": 200, "backupCount": 3},
    {"maxBytes": 333, "backupCount": 5, "delay": True},
    {"maxBytes": 1000, "backupCount": 2},
    {"maxBytes": 150, "backupCount": 12, "encoding": "utf-16"},
]
CASES = [
    (combo, enc, batches)
    for combo in COMBOS
    for enc in (["utf-8", "latin-1"] if "encoding" not in combo else [combo["encoding"]])
    for batches in ([10_000], [1, 7, 3, 50, 2])
]


@pytest.fixture(scope="module")
def stdlib_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """All scenarios played once through the reference stdlib (3.13 or newer)."""
    if REFERENCE is None:
        (pytest.fail if IN_CI else pytest.skip)("no Python >= 3.13 to run the reference handler")
    root = tmp_path_factory.mktemp("stdlib")
    scenarios = []
    for n, (combo, enc, _) in enumerate(CASES):
        kwargs = {**combo, "encoding": enc}
        # latin-1 cannot encode some records: both sides send them to handleError
        scenarios.append(scenario(kwargs, messages(300, seed=n)))
    errors = _oracle.run_stdlib(scenarios, str(root), REFERENCE)
    for s, e in zip(scenarios, errors, strict=True):
        s["errors"] = e
    return root, scenarios


@pytest.mark.parametrize("frozen", [False, True], ids=["records", "frozen"])
@pytest.mark.parametrize("case", range(len(CASES)))
async def test_same_files_as_stdlib(
    case: int, frozen: bool, stdlib_runs: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, scenarios = stdlib_runs
    sc = scenarios[case]
    sink = await play_sink(sc, tmp_path, CASES[case][2], frozen=frozen)
    expected = _oracle.read_dir(str(root / str(case)))
    got = _oracle.read_dir(str(tmp_path))
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
    assert sink.failures == sc["errors"]
    if sc["kwargs"]["maxBytes"] and sc["kwargs"]["backupCount"]:
        assert len(expected) > 1  # the case really rolled over


@pytest.mark.parametrize("frozen", [False, True], ids=["records", "frozen"])
async def test_many_rollovers_in_one_batch_against_this_pythons_stdlib(
    tmp_path: Path, frozen: bool
) -> None:
    # records shorter than maxBytes: every stdlib since 3.5 agrees with 3.13 here
    sc = scenario({"maxBytes": 90, "backupCount": 40, "encoding": "utf-8"}, messages(400, 1, 3))
    _oracle.run_stdlib([sc], str(tmp_path / "ref"))
    (tmp_path / "ours").mkdir()
    await play_sink(sc, tmp_path / "ours", [10_000], frozen=frozen)
    expected = _oracle.read_dir(str(tmp_path / "ref" / "0"))
    assert len(expected) == 41
    assert _oracle.read_dir(str(tmp_path / "ours")) == expected


def lines_oldest_first(directory: Path, base: str = "app.log") -> list[str]:
    """The lines of ``base.N`` ... ``base.1``, ``base``: the order they were written."""
    backups = [n for n in os.listdir(directory) if n.startswith(base + ".")]
    backups.sort(key=lambda n: int(n.rpartition(".")[2]), reverse=True)
    lines: list[str] = []
    for name in [*backups, base]:
        lines += (directory / name).read_text().splitlines()
    return lines


async def test_a_record_larger_than_maxbytes_never_leaves_empty_backups(tmp_path: Path) -> None:
    # gh-116263 (3.13): an empty file never rolls over
    async with Recorder(tmp_path / "app.log", maxBytes=10, backupCount=3) as sink:
        await sink.emit_batch(_oracle.make_records(["a" * 50, "b" * 50, "c"], 1.0))
    files = _oracle.read_dir(str(tmp_path))
    assert sorted(files) == ["app.log", "app.log.1", "app.log.2"]
    assert all(files.values())


async def test_the_size_counts_bytes_of_the_file_and_characters_of_the_record(
    tmp_path: Path,
) -> None:
    # the stdlib compares tell() (bytes) + len(msg + "\n") (characters) with maxBytes
    sink = Recorder(tmp_path / "app.log", maxBytes=8, backupCount=1, encoding="utf-8")
    sink.setFormatter(logging.Formatter("%(message)s"))
    async with sink:
        await sink.emit_batch(_oracle.make_records(["ééé", "a"], 1.0))  # 7 bytes, then 7+2
    assert (tmp_path / "app.log.1").read_bytes() == "ééé\n".encode()
    assert (tmp_path / "app.log").read_bytes() == b"a\n"


async def test_maxbytes_forces_append_mode(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("before\n")
    async with als.RotatingFileSink(tmp_path / "app.log", mode="w", maxBytes=1000) as sink:
        assert sink.mode == "a"
        await sink.emit_batch(_oracle.make_records(["after"], 1.0))
    assert (tmp_path / "app.log").read_text().startswith("before\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maxBytes": -1}, "maxBytes: expected an int >= 0, got -1"),
        ({"backupCount": -2}, "backupCount: expected an int >= 0, got -2"),
    ],
)
def test_invalid_counts_name_the_parameter(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        als.RotatingFileSink("app.log", **kwargs)


def test_non_int_maxbytes_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="maxBytes"):
        als.RotatingFileSink("app.log", maxBytes="10")  # type: ignore[arg-type]


# -- namer and rotator ---------------------------------------------------------------


def _sync_namer(name: str) -> str:
    return name + ".bak"


async def _async_namer(name: str) -> str:
    await asyncio.sleep(0)
    return name + ".bak"


def _sync_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as f, open(dest, "wb") as g:
        g.write(f.read().upper())
    os.remove(source)


async def _async_rotator(source: str, dest: str) -> None:
    await asyncio.to_thread(_sync_rotator, source, dest)


@pytest.mark.parametrize("namer", [_sync_namer, _async_namer])
@pytest.mark.parametrize("rotator", [_sync_rotator, _async_rotator])
async def test_namer_and_rotator_plain_or_async_are_used(
    tmp_path: Path, namer: Any, rotator: Any
) -> None:
    sink = Recorder(tmp_path / "app.log", maxBytes=20, backupCount=2)
    sink.setFormatter(logging.Formatter("%(message)s"))
    sink.namer = namer
    sink.rotator = rotator
    async with sink:
        await sink.emit_batch(_oracle.make_records(["one" * 4, "two" * 4, "three" * 3], 1.0))
    assert sorted(os.listdir(tmp_path)) == ["app.log", "app.log.1.bak", "app.log.2.bak"]
    assert (tmp_path / "app.log.2.bak").read_text() == "ONEONEONEONE\n"
    assert (tmp_path / "app.log.1.bak").read_text() == "TWOTWOTWOTWO\n"
    assert (tmp_path / "app.log").read_text() == "threethreethree\n"
    assert sink.failures == 0


async def test_gzip_rotator_output_decompresses_to_the_lines(tmp_path: Path) -> None:
    sink = Recorder(tmp_path / "app.log", maxBytes=60, backupCount=5)
    sink.setFormatter(logging.Formatter("%(message)s"))
    sink.rotator, sink.namer = als.gzip_rotator, als.gzip_namer
    lines = [f"line {i:03d} " + "z" * 10 for i in range(20)]
    async with sink:
        await sink.emit_batch(_oracle.make_records(lines, 1.0))
    names = sorted(os.listdir(tmp_path))
    assert names == ["app.log"] + [f"app.log.{i}.gz" for i in range(1, 6)]
    text = (
        "".join(
            gzip.decompress((tmp_path / f"app.log.{i}.gz").read_bytes()).decode()
            for i in range(5, 0, -1)
        )
        + (tmp_path / "app.log").read_text()
    )
    assert text.splitlines() == lines[-len(text.splitlines()) :]
    assert len(text.splitlines()) == 12  # 2 lines per file, 6 files: older ones deleted


@pytest.mark.parametrize("broken", ["namer", "rotator"])
async def test_a_raising_namer_or_rotator_goes_to_handle_error(tmp_path: Path, broken: str) -> None:
    def boom(*args: str) -> str:
        raise RuntimeError("broken " + broken)

    sink = Recorder(tmp_path / "app.log", maxBytes=10, backupCount=2)
    sink.setFormatter(logging.Formatter("%(message)s"))
    setattr(sink, broken, boom)
    async with sink:
        await sink.emit_batch(_oracle.make_records(["first line", "second", "third"], 1.0))
    # as the stdlib: each record whose rollover failed is dropped and reported
    assert sink.failures == 2
    assert (tmp_path / "app.log").read_text() == "first line\n"


async def test_unformattable_record_goes_to_handle_error_and_the_rest_is_written(
    tmp_path: Path,
) -> None:
    sink = Recorder(tmp_path / "app.log", maxBytes=50, backupCount=1)
    sink.setFormatter(logging.Formatter("%(message)s"))
    bad = logging.makeLogRecord({"msg": "%d", "args": ("x",)})
    async with sink:
        await sink.emit_batch(
            [*_oracle.make_records(["a"], 1.0), bad, *_oracle.make_records(["b"], 1.0)]
        )
    assert sink.failures == 1
    assert (tmp_path / "app.log").read_text() == "a\nb\n"


async def test_end_to_end_through_install(tmp_path: Path) -> None:
    sink = als.RotatingFileSink(tmp_path / "app.log", maxBytes=500, backupCount=100)
    sink.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("rotating-e2e")
    async with als.install(sink, logger=log, level=logging.INFO) as d:
        for i in range(1000):
            log.info("record %d", i)
        await d.flush()
    assert lines_oldest_first(tmp_path) == [f"record {i}" for i in range(1000)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize(("max_bytes", "written"), [(0, b"a\nb\n"), (1000, b"")])
async def test_a_pipe_path_is_written_unless_a_size_needs_its_position(
    tmp_path: Path, max_bytes: int, written: bytes
) -> None:
    # /dev/stdout piped to a log collector, as in a container. As the stdlib (3.13):
    # maxBytes=0 writes every record; maxBytes > 0 asks the pipe for its position,
    # which fails for every record
    path = tmp_path / "pipe"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink = Recorder(path, maxBytes=max_bytes, backupCount=2, delay=True)
        sink.setFormatter(logging.Formatter("%(message)s"))
        async with sink:
            await sink.emit_batch(_oracle.make_records(["a", "b"], 1.0))
        assert sink.failures == (0 if max_bytes == 0 else 2)
        assert os.read(reader, 65536) == written
    finally:
        os.close(reader)


async def test_a_directory_that_replaced_the_log_is_never_rolled_over(tmp_path: Path) -> None:
    # as the stdlib (3.13, bpo-45401): the size says roll over, the path is not a
    # regular file, so the records go on into the open file and the directory stays
    path = tmp_path / "app.log"
    sink = Recorder(path, maxBytes=60, backupCount=3)
    sink.setFormatter(logging.Formatter("%(message)s"))
    async with sink:
        await sink.emit_batch(_oracle.make_records([f"record {n:03d}" for n in range(3)], 1.0))
        os.remove(path)
        os.mkdir(path)
        (path / "user-data").write_text("precious")
        for n in range(3, 20):
            await sink.emit_batch(_oracle.make_records([f"record {n:03d}"], 1.0))
    assert sink.failures == 0
    assert sorted(os.listdir(tmp_path)) == ["app.log"]
    assert (path / "user-data").read_text() == "precious"


async def test_records_written_before_an_abandoned_rollover_count_as_delivered(
    tmp_path: Path,
) -> None:
    # aclose(timeout=...) gives up while the batch waits for its rollover: the chunk
    # written before it is in the file, so it is delivered, and only the records
    # after it are undelivered and go to the fallback (each record once)
    path = tmp_path / "app.log"
    rotating, release, rotated = threading.Event(), threading.Event(), threading.Event()

    def slow_rotator(source: str, dest: str) -> None:
        rotating.set()
        release.wait(30)
        os.rename(source, dest)
        rotated.set()

    sink = als.RotatingFileSink(path, maxBytes=200, backupCount=5)
    sink.rotator = slow_rotator
    fallback = CaptureHandler()
    dispatcher = als.Dispatcher(sink, fallback=fallback)
    dispatcher.start()
    log = fresh_logger("t.rotating.abandoned")
    log.addHandler(dispatcher.handler)
    try:
        for i in range(50):  # one batch: a few records fill the first file
            log.info("rec %03d %s", i, "s" * 30)
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, rotating.wait, 30)
        await dispatcher.aclose(timeout=0.2)
    finally:
        log.removeHandler(dispatcher.handler)
        release.set()
    assert await asyncio.get_running_loop().run_in_executor(None, rotated.wait, 30)
    (stats,) = dispatcher.stats().sinks.values()
    in_files = set()
    for name in os.listdir(tmp_path):
        in_files |= set(re.findall(r"rec (\d{3})", (tmp_path / name).read_text()))
    in_fallback = {m for r in fallback.records for m in re.findall(r"rec (\d{3})", r.getMessage())}
    assert in_files and not in_files & in_fallback
    assert stats.delivered == len(in_files)
    assert stats.undelivered == len(in_fallback) == 50 - len(in_files)
