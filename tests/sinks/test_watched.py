"""WatchedFileSink keeps every line when the file is moved, deleted or rotated."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

import aiologsinks as als
from tests.peers.logrotate import Logrotate

from ._oracle import make_records


def sink_for(path: Path, **kwargs: object) -> als.WatchedFileSink:
    sink = als.WatchedFileSink(path, **kwargs)  # type: ignore[arg-type]
    sink.setFormatter(logging.Formatter("%(message)s"))
    return sink


def all_lines(directory: Path) -> list[str]:
    lines: list[str] = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("app.log"):
            lines += (directory / name).read_text().splitlines()
    return lines


async def test_reopens_after_the_file_was_moved_away(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with sink_for(path) as sink:
        await sink.emit_batch(make_records(["one", "two"], 1.0))
        os.rename(path, tmp_path / "app.log.1")
        await sink.emit_batch(make_records(["three"], 2.0))
    assert (tmp_path / "app.log.1").read_text() == "one\ntwo\n"
    assert path.read_text() == "three\n"


async def test_reopens_after_the_file_was_deleted(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with sink_for(path) as sink:
        await sink.emit_batch(make_records(["gone"], 1.0))
        path.unlink()
        await sink.emit_batch(make_records(["back", "again"], 2.0))
    assert path.read_text() == "back\nagain\n"


async def test_replaced_by_another_file_is_detected_by_inode(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with sink_for(path) as sink:
        await sink.emit_batch(make_records(["old"], 1.0))
        os.rename(path, tmp_path / "moved")
        path.write_text("created by someone else\n")
        await sink.emit_batch(make_records(["new"], 2.0))
    assert path.read_text() == "created by someone else\nnew\n"
    assert (tmp_path / "moved").read_text() == "old\n"


async def test_unchanged_file_is_not_reopened(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with sink_for(path) as sink:
        await sink.emit_batch(make_records(["a"], 1.0))
        first = sink._file
        await sink.emit_batch(make_records(["b"], 1.0))
        assert sink._file is first
        assert (sink.dev, sink.ino) == (path.stat().st_dev, path.stat().st_ino)


async def test_delay_opens_on_first_batch_and_records_the_inode(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with sink_for(path, delay=True) as sink:
        assert not path.exists() and sink.ino == -1
        await sink.emit_batch(make_records(["late"], 1.0))
        assert sink.ino == path.stat().st_ino
    assert path.read_text() == "late\n"


@pytest.mark.peer
async def test_real_logrotate_while_logging_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    rotator = Logrotate(path)
    sink = sink_for(path)
    log = logging.getLogger("watched-logrotate")
    sent = 0
    async with als.install(sink, logger=log, level=logging.INFO) as d:
        # a non-empty file before each run, so each run rotates (notifempty)
        for _ in range(10):
            log.info("before line %d", sent)
            sent += 1
        await d.flush()
        for round_ in range(8):
            rotating = asyncio.ensure_future(rotator.rotate())
            # keep logging from the loop while logrotate renames the file under us
            while not rotating.done():
                for _ in range(20):
                    log.info("round %d line %d", round_, sent)
                    sent += 1
                await d.flush()
            await rotating
            for _ in range(50):
                log.info("round %d line %d", round_, sent)
                sent += 1
            await d.flush()
    lines = all_lines(tmp_path)
    assert len(lines) == sent
    assert sorted(int(line.rsplit(" ", 1)[1]) for line in lines) == list(range(sent))
    backups = [n for n in os.listdir(tmp_path) if n.startswith("app.log.")]
    assert len(backups) == rotator.runs == 8
