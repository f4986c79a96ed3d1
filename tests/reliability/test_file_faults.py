"""File faults: a full disk, a directory without permission, a file replaced underneath.

Figures: 200 records per phase; every record that failed is counted in stats().errors
and went to handleError; every record after the fault is removed arrives.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiologsinks as als

from ..conftest import require
from ..helpers import ListSink, fresh_logger


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "64k") -> Iterator[Path]:
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    require(proc.returncode == 0, f"a tmpfs mount ({proc.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


class ErrorCountingFileSink(als.FileSink):
    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)
        self.failed = 0

    def handleError(self, record: object) -> None:
        self.failed += 1


async def test_a_full_disk_goes_to_handle_error_and_delivery_resumes(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            f.write(b"\0" * 1024 * 1024)  # fill the 64k tmpfs to the brim
        sink = ErrorCountingFileSink(disk / "app.log")
        other = ListSink()
        log = fresh_logger("t.fulldisk")
        async with als.install(sink, other, logger=log, batch_size=50) as dispatcher:
            for i in range(200):
                log.info("while full %03d %s", i, "x" * 100)
            await dispatcher.flush()
            full = dispatcher.stats().sinks["ErrorCountingFileSink#0"]
            assert full.errors == 200 and full.emitted == 0
            assert sink.failed >= 1
            assert len(other.records) == 200  # the other sink is unaffected
            filler.unlink()  # the fault is removed
            for i in range(200):
                log.info("after %03d", i)
            await dispatcher.flush()
            after = dispatcher.stats().sinks["ErrorCountingFileSink#0"]
        lines = (disk / "app.log").read_text().splitlines()
        assert [line for line in lines if line.startswith("after")] == [
            f"after {i:03d}" for i in range(200)
        ]
        assert after.emitted == 200


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp dirs are root-only)."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="aiologsinks-perm-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_directory_without_permission_then_with_it(shared_dir: Path) -> None:
    """Run as an unprivileged user (root ignores permissions)."""
    logdir = shared_dir / "locked"
    logdir.mkdir()
    script = textwrap.dedent(
        """
        import asyncio, logging, os, sys
        import aiologsinks as als

        if os.getuid() == 0:
            os.setgid(65534); os.setuid(65534)

        async def main():
            logdir = sys.argv[1]
            os.chmod(logdir, 0o500)
            sink = als.FileSink(os.path.join(logdir, "app.log"), delay=True)
            errors = []
            sink.handleError = errors.append
            log = logging.getLogger("p"); log.propagate = False
            async with als.install(sink, logger=log, level="INFO") as d:
                for i in range(200):
                    log.info("denied %d", i)
                await d.flush()
                denied = d.stats().sinks["FileSink#0"]
                os.chmod(logdir, 0o700)
                for i in range(200):
                    log.info("allowed %d", i)
                await d.flush()
                allowed = d.stats().sinks["FileSink#0"]
            print("denied", denied.errors, denied.emitted, len(errors))
            print("allowed", allowed.emitted)

        asyncio.run(main())
        """
    )
    if os.getuid() == 0:
        os.chown(logdir, 65534, 65534)
    src = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script, str(logdir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "denied 200 0" in proc.stdout
    assert "allowed 200" in proc.stdout
    lines = (logdir / "app.log").read_text().splitlines()
    assert lines == [f"allowed {i}" for i in range(200)]


async def test_writing_to_dev_full_never_crashes_the_pipeline() -> None:
    sink = ErrorCountingFileSink(Path("/dev/full"))
    other = ListSink()
    log = fresh_logger("t.devfull")
    async with als.install(sink, other, logger=log) as dispatcher:
        for i in range(300):
            log.error("to /dev/full %d", i)
        await dispatcher.flush()
        stats = dispatcher.stats()
    assert stats.sinks["ErrorCountingFileSink#0"].errors == 300
    assert len(other.records) == 300
    assert sink.closed
