"""Shared test fixtures.

* ``blockbuster`` (autouse): fails a test in which aiologsinks makes a blocking call
  on the event loop (guarantee 1 of DESIGN.md, enforced by the suite itself).
* ``_no_sink_left_capturing`` (autouse): a test closes the sinks it made that need the
  caller's context.
* ``require_program``: a test that needs an external peer (rsyslogd, logrotate) skips
  locally when it is missing, but fails when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from aiologsinks import _context

IN_CI = os.environ.get("CI", "").lower() == "true"
#: ``AIOLOGSINKS_TEST_LOOP=uvloop``: every test runs on uvloop's event loop (the one
#: ``uvicorn --loop uvloop`` runs), as .ci/run does once after the asyncio runs
TEST_LOOP = os.environ.get("AIOLOGSINKS_TEST_LOOP", "asyncio")
if TEST_LOOP not in ("asyncio", "uvloop"):
    raise pytest.UsageError(f"AIOLOGSINKS_TEST_LOOP: expected asyncio or uvloop, got {TEST_LOOP!r}")


def pytest_configure(config: pytest.Config) -> None:
    if TEST_LOOP == "uvloop":
        import uvloop

        # for the async tests and for the asyncio.run() calls of the sync ones
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def pytest_report_header(config: pytest.Config) -> str:
    return f"aiologsinks test loop: {TEST_LOOP}"


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail the test if aiologsinks code makes a blocking call on a running loop."""
    if request.node.get_closest_marker("allow_blocking"):
        yield None
        return
    with blockbuster_ctx(scanned_modules=["aiologsinks"]) as bb:
        # resolving a relative log file name asks the kernel for the cwd: no disk I/O,
        # and FileSink("app.log") inside async code must stay possible
        bb.functions["os.getcwd"].can_block_in("aiologsinks/sinks/file.py", "_abspath")
        # a file sink's constructor checks (or creates) its directory once (the one a
        # symbolic link names, for a link), so a wrong path fails at startup, as the
        # stdlib handler's open() in its constructor does
        for name in ("os.stat", "os.mkdir", "os.path.islink", "os.readlink", "os.path.abspath"):
            bb.functions[name].can_block_in("aiologsinks/_fileio.py", "check_directory")
        yield bb


@pytest.fixture(autouse=True)
def _no_sink_left_capturing() -> Iterator[None]:
    """Fail a test that leaves open a sink needing the caller's context (one with a
    filter or a formatter that may read contextvars). Such a sink keeps context capture
    on, and so records frozen as prepared copies, until the cyclic GC happens to find
    it: tests after it would then see capture flip at a moment nobody chose."""
    before = set(_context._owners)
    yield
    left = {key: ref() for key, ref in _context._owners.items() if key not in before}
    for key in left:
        _context.release_key(key)  # the next test starts clean either way
    still_open = [repr(owner) for owner in left.values() if owner is not None]
    if still_open:
        pytest.fail(f"sinks left open that need the caller's context: {still_open}")


def require_program(name: str) -> str:
    """Return the path of ``name``; skip when missing locally, fail when CI=true."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        msg = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require(available: bool, what: str) -> None:
    """Skip the test when ``what`` is not available locally; fail when CI=true.

    CI machines have every capability the suite uses: a missing one there is a
    broken machine, not a reason to test less.
    """
    if not available:
        msg = f"needs {what}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """Each test starts and ends with the root logger's handlers and level unchanged."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class RecordingSinkMixin:
    """Mixin for test sinks: collects records that reached handleError."""

    errors: list[logging.LogRecord]

    def handleError(self, record: logging.LogRecord) -> None:
        self.errors.append(record)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep every failure in ``$AIOLOGSINKS_FAILURE_LOG`` when it is set.

    Each failure is kept with the state its ``wait_until`` described, for the rare
    failures that only show up in a whole-suite run.
    """
    path = os.environ.get("AIOLOGSINKS_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"== {report.nodeid} ({report.when})\n{report.longreprtext}\n")
