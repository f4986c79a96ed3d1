"""TimedRotatingFileSink rolls over when, and into the files, the stdlib's handler does."""

from __future__ import annotations

import datetime
import logging
import logging.handlers
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._record import RecordBatch, freeze

from ..conftest import IN_CI
from . import _oracle

REFERENCE = _oracle.reference_python()
TZ = "Europe/Berlin"  # has DST: March and October transitions
T0 = 1711738800  # 2024-03-29 20:00 in Berlin, two days before DST starts
UNITS = {"S": 1, "M": 60, "H": 3600, "D": 86400, "MIDNIGHT": 86400}
WHENS = ["S", "M", "H", "D", "MIDNIGHT", *(f"W{d}" for d in range(7))]


@pytest.fixture
def tz() -> Iterator[str]:
    """Run the test with TZ set (the stdlib and the sink read local time)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = TZ
    time.tzset()
    yield TZ
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def period(when: str, interval: int) -> int:
    return UNITS.get(when, 7 * 86400) * interval


def steps(when: str, interval: int, seed: int, n: int = 30) -> list[list[Any]]:
    """n clock steps covering about a dozen rollover periods, one or two records each."""
    rng = random.Random(seed)
    t, out = T0, []
    p = period(when, interval)
    for i in range(n):
        t += rng.randint(0, max(1, p * 2 // 3))
        out.append([t, [f"{i} at {t}"] * rng.randint(1, 2)])
    return out


def timed(when: str, seed: int, **kwargs: Any) -> dict[str, Any]:
    interval = kwargs.get("interval", 1)
    # delay=True: a stdlib handler that creates its file in __init__ takes the first
    # rollover time from that new file's mtime, i.e. the real clock, not the test's
    kw = {"when": when, "backupCount": 3, "encoding": "utf-8", "delay": True, **kwargs}
    return {"kind": "timed", "kwargs": kw, "steps": steps(when, interval, seed), "start": T0}


def build_scenarios() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seed = 0
    for when in WHENS:
        for interval in (1, 3):
            for utc in (False, True):
                seed += 1
                out.append(timed(when, seed, interval=interval, utc=utc))
    for when in ["MIDNIGHT", "W0", "W3", "W6", "D"]:
        for at in ["00:00:00", "02:30:00", "13:45:30"]:
            seed += 1
            out.append(timed(when, seed, atTime=at, utc=seed % 2 == 0, interval=1 + seed % 2))
    for when in ["H", "MIDNIGHT", "W2"]:
        seed += 1
        sc = timed(when, seed, delay=False)
        # the first rollover follows the existing file's mtime, not the clock
        sc["existing"] = {"text": "from the last run\n", "mtime": T0 - period(when, 1) // 2}
        out.append(sc)
        seed += 1
        sc = timed(when, seed, backupCount=2)
        sc["namer"] = "date_before_ext"
        out.append(sc)
    seed += 1
    sc = timed("D", seed, backupCount=2)
    # an unrelated file and old backups: only matching backups are deleted, and a
    # rollover whose target exists is skipped (3.13)
    sc["backups"] = ["app.log.2024-03-01", "app.log.2024-03-30", "app.log.notes", "other.log"]
    out.append(sc)
    return out


SCENARIOS = build_scenarios()


class Recorder(als.TimedRotatingFileSink):
    failures = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures += 1


async def play_sink(sc: dict[str, Any], directory: Path, frozen: bool = False) -> Recorder:
    path = _oracle.prepare_dir(sc, str(directory))
    now = [float(sc["start"])]
    sink = Recorder(path, **_oracle.handler_kwargs(sc), clock=lambda: now[0])
    if sc.get("namer"):
        sink.namer = _oracle.NAMERS[sc["namer"]]
    sink.setFormatter(logging.Formatter(_oracle.FMT))
    async with sink:
        for t, msgs in sc["steps"]:
            now[0] = t
            records = _oracle.make_records(msgs, t)
            # frozen: as a Dispatcher hands batches over (the sink's fast path)
            await sink.emit_batch(RecordBatch([freeze(r) for r in records]) if frozen else records)
    return sink


@pytest.fixture(scope="module")
def stdlib_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if REFERENCE is None:
        (pytest.fail if IN_CI else pytest.skip)("no Python >= 3.13 to run the reference handler")
    root = tmp_path_factory.mktemp("stdlib-timed")
    if REFERENCE:
        _oracle.run_stdlib(SCENARIOS, str(root), REFERENCE, tz=TZ)
    else:
        saved = os.environ.get("TZ")
        os.environ["TZ"] = TZ
        time.tzset()
        try:
            _oracle.run_stdlib(SCENARIOS, str(root))
        finally:
            os.environ.pop("TZ") if saved is None else os.environ.update(TZ=saved)
            time.tzset()
    return root


def _id(i: int) -> str:
    sc = SCENARIOS[i]
    kw = sc["kwargs"]
    tags = [kw["when"], f"i{kw.get('interval', 1)}"]
    tags += ["utc"] if kw.get("utc") else []
    tags += [f"at{kw['atTime']}"] if kw.get("atTime") else []
    tags += [k for k in ("existing", "namer", "backups") if sc.get(k)]
    return f"{i}-" + "-".join(tags)


@pytest.mark.parametrize("frozen", [False, True], ids=["records", "frozen"])
@pytest.mark.parametrize("case", range(len(SCENARIOS)), ids=_id)
async def test_same_files_as_stdlib(
    case: int, frozen: bool, stdlib_runs: Path, tmp_path: Path, tz: str
) -> None:
    await play_sink(SCENARIOS[case], tmp_path, frozen)
    expected = _oracle.read_dir(str(stdlib_runs / str(case)))
    got = _oracle.read_dir(str(tmp_path))
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
    assert len(expected) > 1  # the scenario really rolled over


async def test_same_files_as_this_pythons_stdlib_where_versions_agree(
    tmp_path: Path, tz: str
) -> None:
    # fixed-length periods in UTC: every stdlib since 3.5 decides these alike
    scenarios = [timed(w, n, interval=2, utc=True) for n, w in enumerate("SMHD")]
    _oracle.run_stdlib(scenarios, str(tmp_path / "ref"))
    for i, sc in enumerate(scenarios):
        ours = tmp_path / f"ours{i}"
        ours.mkdir()
        await play_sink(sc, ours)
        assert _oracle.read_dir(str(ours)) == _oracle.read_dir(str(tmp_path / "ref" / str(i)))


# -- computeRollover over a grid --------------------------------------------------------


def grid_settings() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for when in WHENS:
        ats: list[str | None] = [None]
        if when == "MIDNIGHT" or when.startswith("W"):
            ats += ["00:00:00", "02:30:00", "13:45:30", "23:59:59"]
        for interval in (1, 2, 7):
            for utc in (False, True):
                for at in ats:
                    out.append(
                        {"kwargs": {"when": when, "interval": interval, "utc": utc, "atTime": at}}
                    )
    return out


def grid_times() -> list[int]:
    rng = random.Random(7)
    year = 1704067200  # 2024-01-01 UTC
    times = [year + rng.randrange(366 * 86400) for _ in range(300)]
    for transition in (1711846800, 1729990800):  # 2024 DST start and end, Berlin
        times += range(transition - 7200, transition + 7200, 900)
    for day in (1711756800, 1711843200, 1729900800, 1729987200, 1730073600):
        # local midnights and the atTimes of the grid on days around the transitions
        for offset in (-3600, -7200, 0, 3600, 9000, 49530, 86399, 82800):
            times += [day + offset - 1, day + offset, day + offset + 1]
    return sorted(set(times))


@pytest.mark.parametrize("zone", [TZ, "Australia/Lord_Howe", "UTC"])
def test_compute_rollover_equals_stdlib_over_a_grid(zone: str, tmp_path: Path) -> None:
    if REFERENCE is None:
        (pytest.fail if IN_CI else pytest.skip)("no Python >= 3.13 to run the reference handler")
    settings = grid_settings()
    for s in settings:
        s["dir"] = str(tmp_path)
    times = grid_times()
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        if REFERENCE:
            expected = _oracle.compute_rollovers_in(REFERENCE, settings, times, zone)
        else:
            expected = _oracle.compute_rollovers(settings, times)
        for setting, want in zip(settings, expected, strict=True):
            sink = als.TimedRotatingFileSink(
                tmp_path / "app.log", delay=True, **_oracle.handler_kwargs(setting)
            )
            got = [sink.computeRollover(t) for t in times]
            assert got == want, setting
    finally:
        os.environ.pop("TZ") if saved is None else os.environ.update(TZ=saved)
        time.tzset()
    assert len(settings) * len(times) > 100_000


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["X", "W7", "W", "", "midnightx", "W01"])
def test_invalid_when_names_the_parameter(when: str) -> None:
    message = f"when: expected S, M, H, D, MIDNIGHT or W0-W6, got {when!r}"
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        als.TimedRotatingFileSink("app.log", when=when)


@pytest.mark.parametrize("interval", [0, -1])
def test_invalid_interval_names_the_parameter(interval: int) -> None:
    with pytest.raises(ValueError, match="interval: expected an int >= 1"):
        als.TimedRotatingFileSink("app.log", interval=interval)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"interval": 1.5}, "interval"), ({"atTime": "10:00"}, "atTime"), ({"when": 3}, "when")],
)
def test_wrong_types_name_the_parameter(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(TypeError, match=name):
        als.TimedRotatingFileSink("app.log", **kwargs)


def test_suffix_and_ext_match_follow_the_stdlib() -> None:
    sink = als.TimedRotatingFileSink("app.log", when="m", interval=5)
    assert (sink.when, sink.interval, sink.suffix) == ("M", 300, "%Y-%m-%d_%H-%M")
    assert sink.extMatch.fullmatch("2024-03-31_02-05")
    assert not sink.extMatch.search("12024-03-31_02-05")
    w = als.TimedRotatingFileSink("app.log", when="w4", atTime=datetime.time(1, 2, 3))
    assert (w.dayOfWeek, w.interval, w.suffix) == (4, 7 * 86400, "%Y-%m-%d")


async def test_rotated_files_go_through_an_async_namer_and_gzip(tmp_path: Path, tz: str) -> None:
    now = [float(T0)]
    sink = Recorder(tmp_path / "app.log", when="H", backupCount=2, clock=lambda: now[0])
    sink.rotator = als.gzip_rotator

    async def namer(name: str) -> str:
        return name + ".gz"

    sink.namer = namer
    sink.setFormatter(logging.Formatter("%(message)s"))
    async with sink:
        for hour in range(5):
            now[0] = T0 + hour * 3600 + 1
            await sink.emit_batch(_oracle.make_records([f"hour {hour}"], now[0]))
    names = sorted(os.listdir(tmp_path))
    assert names == ["app.log", "app.log.2024-03-29_22.gz", "app.log.2024-03-29_23.gz"]
    assert sink.failures == 0


def test_a_patched_time_time_is_followed_as_by_the_stdlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no clock captured at import or definition: freezegun / monkeypatch work
    frozen = 1_700_000_000.0
    monkeypatch.setattr(time, "time", lambda: frozen)
    ours = als.TimedRotatingFileSink(tmp_path / "a.log", when="S", interval=10, delay=True)
    theirs = logging.handlers.TimedRotatingFileHandler(
        tmp_path / "b.log", when="S", interval=10, delay=True
    )
    try:
        assert ours.rolloverAt == theirs.rolloverAt == int(frozen) + 10
        record = logging.makeLogRecord({"msg": "x"})
        assert not ours.shouldRollover(record) and not theirs.shouldRollover(record)
        frozen += 10
        assert ours.shouldRollover(record) and theirs.shouldRollover(record)
    finally:
        theirs.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
async def test_a_pipe_path_is_written_and_never_rolled_over(tmp_path: Path) -> None:
    # /dev/stdout piped to a log collector, as in a container: the stdlib (3.13)
    # writes every record and skips the rollovers of a file that is not a regular one
    path = tmp_path / "pipe"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    now = [1_700_000_000.0]
    failures: list[logging.LogRecord] = []

    class Recorder(als.TimedRotatingFileSink):
        def handleError(self, record: logging.LogRecord) -> None:
            failures.append(record)

    try:
        sink = Recorder(path, when="S", backupCount=2, clock=lambda: now[0])
        sink.setFormatter(logging.Formatter("%(message)s"))
        async with sink:
            await sink.emit_batch(_oracle.make_records(["a"], now[0]))
            now[0] += 10  # a rollover is due
            await sink.emit_batch(_oracle.make_records(["b"], now[0]))
        assert failures == []
        assert os.read(reader, 65536) == b"a\nb\n"
        assert sorted(os.listdir(tmp_path)) == ["pipe"]
    finally:
        os.close(reader)


async def test_a_directory_that_replaced_the_log_is_never_rotated(tmp_path: Path) -> None:
    # as the stdlib (3.13, gh-89564): the rollover time came, the path is not a
    # regular file, so the rollover is skipped and the next one scheduled
    path = tmp_path / "app.log"
    now = [1_700_000_000.0]
    failures: list[logging.LogRecord] = []

    class Recorder(als.TimedRotatingFileSink):
        def handleError(self, record: logging.LogRecord) -> None:
            failures.append(record)

    sink = Recorder(path, when="S", backupCount=2, clock=lambda: now[0])
    sink.setFormatter(logging.Formatter("%(message)s"))
    async with sink:
        await sink.emit_batch(_oracle.make_records(["before"], now[0]))
        os.remove(path)
        os.mkdir(path)
        (path / "user-data").write_text("precious")
        now[0] += 10  # a rollover is due
        await sink.emit_batch(_oracle.make_records(["after"], now[0]))
        assert sink.rolloverAt == sink.computeRollover(int(now[0]))
    assert failures == []
    assert sorted(os.listdir(tmp_path)) == ["app.log"]
    assert (path / "user-data").read_text() == "precious"
