"""FileSink: FileHandler's file, mode, encoding, errors and delay, written off the loop."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import aiologsinks as als

from ._oracle import make_records

ROOT = Path(__file__).resolve().parents[2]


class Recorder(als.FileSink):
    failures: list[logging.LogRecord]

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures.append(record)


def recorder(path: Path, **kwargs: object) -> Recorder:
    sink = Recorder(path, **kwargs)  # type: ignore[arg-type]
    sink.failures = []
    sink.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return sink


async def test_appends_formatted_records_with_the_terminator(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("kept\n")
    async with recorder(path) as sink:
        await sink.emit_batch(make_records(["a", "b"], 1.0))
        await sink.handle(make_records(["c"], 1.0)[0])
    assert path.read_text() == "kept\nINFO a\nINFO b\nINFO c\n"


async def test_mode_w_truncates(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("old\n")
    async with recorder(path, mode="w") as sink:
        await sink.emit_batch(make_records(["new"], 1.0))
    assert path.read_text() == "INFO new\n"


def test_invalid_mode_names_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        als.FileSink(tmp_path / "x.log", mode="r")
    with pytest.raises(ValueError, match="mode"):
        als.FileSink(tmp_path / "x.log", mode="ab")


async def test_encoding_and_errors_are_the_files(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with recorder(path, encoding="ascii", errors="backslashreplace") as sink:
        await sink.emit_batch(make_records(["größe"], 1.0))
    assert path.read_bytes() == b"INFO gr\\xf6\\xdfe\n"


async def test_default_encoding_is_the_stdlibs(tmp_path: Path) -> None:
    sink = als.FileSink(tmp_path / "app.log")
    assert sink.encoding == logging.FileHandler(tmp_path / "ref.log", delay=True).encoding


async def test_a_record_that_cannot_be_encoded_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with recorder(path, encoding="latin-1") as sink:
        await sink.emit_batch(make_records(["first", "日本", "third"], 1.0))
    assert path.read_text(encoding="latin-1") == "INFO first\nINFO third\n"
    assert [r.msg for r in sink.failures] == ["日本"]
    assert sink.error_count == 1


async def test_a_record_that_cannot_be_formatted_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    bad = logging.makeLogRecord({"msg": "%d items", "args": ("many",)})
    async with recorder(path) as sink:
        await sink.emit_batch([*make_records(["ok"], 1.0), bad, *make_records(["fine"], 1.0)])
    assert path.read_text() == "INFO ok\nINFO fine\n"
    assert sink.failures == [bad]


async def test_delay_creates_the_file_on_first_record(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with recorder(path, delay=True) as sink:
        assert not path.exists()
        await sink.emit_batch(make_records(["now"], 1.0))
        assert path.exists()
    assert path.read_text() == "INFO now\n"


async def test_without_delay_the_file_exists_once_opened(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with recorder(path):
        assert path.exists()


async def test_unwritable_path_goes_to_handle_error(tmp_path: Path) -> None:
    # the directory vanishes after construction (which checks it): a write error
    (tmp_path / "gone").mkdir()
    sink = recorder(tmp_path / "gone" / "app.log", delay=True)
    (tmp_path / "gone").rmdir()
    async with sink:
        await sink.emit_batch(make_records(["x", "y"], 1.0))
    assert len(sink.failures) == 1
    assert sink.error_count == 2


async def test_aclose_is_idempotent_and_closes_the_file(tmp_path: Path) -> None:
    sink = recorder(tmp_path / "app.log")
    await sink.aopen()
    await sink.aclose()
    await sink.aclose()
    assert sink.closed and sink._file is None


def _descriptors_of(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return count


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux")
async def test_a_closed_sink_holds_no_descriptor_of_its_file(tmp_path: Path) -> None:
    """When aclose() returns, every descriptor of the file is closed, the writer
    thread's duplicate too (it used to close it a moment later, on its own)."""
    path = tmp_path / "app.log"
    cpus = os.sched_getaffinity(0)
    # one CPU for this thread and the writer threads it starts: the one that closes
    # the duplicate runs only when this one lets it (as on a busy machine)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        for n in range(30):
            sink = recorder(path)
            await sink.aopen()
            await sink.emit_batch(make_records(["a", "b", "c"], 0.0))
            assert _descriptors_of(path) >= 1
            await sink.aclose()
            assert _descriptors_of(path) == 0, n
    finally:
        os.sched_setaffinity(0, cpus)
    assert len(path.read_text().splitlines()) == 90


def test_base_filename_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # resolved at construction, as the stdlib (os.getcwd: outside the loop here)
    monkeypatch.chdir(tmp_path)
    assert als.FileSink("rel.log", delay=True).baseFilename == str(tmp_path / "rel.log")


async def test_a_relative_file_name_resolves_against_the_cwd_inside_async_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sink = als.FileSink("relative.log")
    assert sink.baseFilename == str(tmp_path / "relative.log")
    await sink.aclose()


# -- fail fast at construction ------------------------------------------------------------


@pytest.mark.parametrize("cls", [als.FileSink, als.WatchedFileSink, als.RotatingFileSink])
def test_a_missing_directory_fails_at_construction_naming_the_path(
    tmp_path: Path, cls: type[als.FileSink]
) -> None:
    target = tmp_path / "no" / "such" / "app.log"
    with pytest.raises(FileNotFoundError, match=r"filename: directory .*no/such") as info:
        cls(target)
    assert info.value.param == "filename"  # type: ignore[attr-defined]
    assert info.value.filename == str(tmp_path / "no" / "such")
    assert not (tmp_path / "no").exists()


def test_a_link_to_a_file_in_a_missing_directory_fails_at_construction(tmp_path: Path) -> None:
    # FileHandler's open() raises there; the sink was made, and lost every record
    link = tmp_path / "app.log"
    link.symlink_to(tmp_path / "gone" / "real.log")
    with pytest.raises(FileNotFoundError, match=r"filename: directory .*gone' of") as info:
        als.FileSink(link)
    assert info.value.filename == str(tmp_path / "gone")
    als.FileSink(link, mkdir=True).close()  # mkdir makes the directory the link names
    assert (tmp_path / "gone").is_dir()


async def test_mkdir_creates_the_directory_and_the_file_is_written(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "deep" / "app.log"
    async with als.TimedRotatingFileSink(target, mkdir=True) as sink:
        await sink.emit_batch(make_records(["made"], 1.0))
    assert target.read_text() == "made\n"


def test_a_path_under_a_regular_file_fails_at_construction(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    with pytest.raises(NotADirectoryError, match="filename"):
        als.FileSink(tmp_path / "plain" / "app.log")


@pytest.mark.parametrize("cls", [als.FileSink, als.RotatingFileSink, als.WatchedFileSink])
def test_a_file_name_that_is_a_directory_fails_at_construction(
    tmp_path: Path, cls: type[als.FileSink]
) -> None:
    # as the stdlib handler's open() does, rather than a sink that never opens
    with pytest.raises(IsADirectoryError, match=r"filename: .* is a directory"):
        cls(tmp_path)


@pytest.mark.parametrize(("param", "value"), [("encoding", "no-such-codec"), ("errors", "nope")])
def test_unknown_codecs_raise_lookup_error_naming_the_parameter(
    tmp_path: Path, param: str, value: str
) -> None:
    with pytest.raises(LookupError, match=f"^{param}: unknown") as info:
        als.FileSink(tmp_path / "app.log", **{param: value})
    assert info.value.param == param  # type: ignore[attr-defined]


def test_a_binary_codec_is_refused_as_encoding(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^encoding: expected a text encoding"):
        als.FileSink(tmp_path / "app.log", encoding="base64")


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"filename": None}, TypeError, "filename"),
        ({"filename": ""}, ValueError, "filename"),
        ({"mode": 1}, TypeError, "mode"),
        ({"mode": "r"}, ValueError, "mode"),
        ({"encoding": 8}, TypeError, "encoding"),
    ],
)
def test_bad_file_arguments_name_the_parameter(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], param: str
) -> None:
    args: dict[str, object] = {"filename": tmp_path / "app.log", **kwargs}
    with pytest.raises(error, match=f"^{param}: ") as info:
        als.FileSink(**args)  # type: ignore[arg-type]
    assert info.value.param == param  # type: ignore[attr-defined]


FIFO_SCRIPT = """
import asyncio, logging, os, sys
import aiologsinks as als

path, phase, kind = sys.argv[1], sys.argv[2], sys.argv[3]
os.mkfifo(path)
if phase == "write":
    keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
sinks = {
    "file": lambda: als.FileSink(path),
    "watched": lambda: als.WatchedFileSink(path),
}

async def main():
    sink = sinks[kind]()
    log = logging.getLogger("fifo")
    log.propagate = False
    async with als.install(sink, logger=log, level=logging.INFO) as dispatcher:
        for i in range(3000):  # ~180 KiB: more than a pipe holds
            log.info("rec %d %s", i, "x" * 50)
        await dispatcher.aclose(timeout=0.5)
    (s,) = dispatcher.stats().sinks.values()
    print(s.received, s.delivered, s.errors, s.undelivered)

asyncio.run(main())
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize("kind", ["file", "watched"])
@pytest.mark.parametrize("phase", ["open", "write"])
def test_a_fifo_nobody_reads_lets_the_process_exit_with_every_record_counted(
    tmp_path: Path, phase: str, kind: str
) -> None:
    # "open": no reader ever, the open() never returns; "write": a reader that never
    # reads, the pipe fills and a write() never returns
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(FIFO_SCRIPT),
            str(tmp_path / "app.log"),
            phase,
            kind,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    received, delivered, errors, undelivered = map(int, result.stdout.split())
    assert received == 3000
    assert delivered + errors + undelivered == received
    assert undelivered > 0  # what the FIFO never took went to the fallback


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
async def test_a_fifo_gets_the_bytes_file_handler_writes(tmp_path: Path, encoding: str) -> None:
    # FileHandler's file cannot seek on a FIFO: utf-16/32 write no BOM there
    def read_all(path: Path, got: list[bytes]) -> None:
        with open(path, "rb") as fifo:
            got.append(fifo.read())

    outputs: list[bytes] = []
    for kind in ("stdlib", "ours"):
        path = tmp_path / f"{kind}.fifo"
        os.mkfifo(path)
        got: list[bytes] = []
        reader = threading.Thread(target=read_all, args=(path, got))
        reader.start()
        records = [logging.makeLogRecord({"msg": text}) for text in ("one", "two")]
        if kind == "stdlib":
            handler = logging.FileHandler(path, encoding=encoding)
            for record in records:
                handler.handle(record)
            handler.close()
        else:
            sink = als.FileSink(path, encoding=encoding)
            async with sink:
                for record in records:
                    await sink.emit_batch([record])
        await asyncio.to_thread(reader.join, 10)
        outputs.append(got[0])
    assert outputs[1] == outputs[0]


class WatchedRecorder(als.WatchedFileSink):
    failures: list[logging.LogRecord]

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures.append(record)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
@pytest.mark.parametrize("cls", [Recorder, WatchedRecorder])
async def test_the_bom_is_written_when_the_first_batch_holds_a_record_that_cannot_be_encoded(
    tmp_path: Path, encoding: str, cls: type[Recorder] | type[WatchedRecorder]
) -> None:
    # as FileHandler: the BOM, then the records that can be encoded
    path = tmp_path / "app.log"
    sink = cls(path, encoding=encoding)
    sink.failures = []
    sink.setFormatter(logging.Formatter("%(message)s"))
    async with sink:
        await sink.emit_batch(make_records(["plain", "bad \udcff", "after"], 1.0))
    assert len(sink.failures) == 1
    assert path.read_bytes() == "plain\nafter\n".encode(encoding)
