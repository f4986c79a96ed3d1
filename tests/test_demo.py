"""The demo, run as a user runs it: a subprocess that exits 0 with nothing lost."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiologsinks as als

#: the demo's rows for each sink class of the contract (once the class is exported)
ROWS = {
    "FileSink": ["file"],
    "RotatingFileSink": ["rotating"],
    "TimedRotatingFileSink": ["timed rotating"],
    "WatchedFileSink": ["watched"],
    "SocketSink": ["socket"],
    "DatagramSink": ["datagram"],
    "SysLogSink": ["syslog udp", "syslog tcp"],
    "HTTPSink": ["http"],
    "SMTPSink": ["smtp digest"],
    "MemorySink": ["memory"],
}


async def run_demo(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiologsinks", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_demo_json_shows_zero_lost_for_every_sink() -> None:
    code, out, err = await run_demo("--records", "500", "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    assert result["records"] == 500 and result["lost"] == 0
    assert result["invalid_frames"] == 0
    rows = {row["sink"]: row for row in result["sinks"]}
    expected = [row for cls, names in ROWS.items() if hasattr(als, cls) for row in names]
    assert sorted(rows) == sorted(expected), result["skipped"]
    for row in rows.values():
        assert (row["sent"], row["received"], row["lost"], row["errors"]) == (500, 500, 0, 0), row
        assert row["elapsed_ms"] > 0 and row["worst_stall_ms"] >= 0


async def test_demo_table_and_exit_code() -> None:
    code, out, err = await run_demo("--records", "50")
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "sink", "sent", "received", "lost", "errors", "ms", "stall", "ms",
    ]  # fmt: skip
    assert "nothing lost" in out
    assert "file" in err  # progress: one line per finished sink


async def test_demo_rejects_a_bad_record_count() -> None:
    code, _, err = await run_demo("--records", "0")
    assert code == 2 and "--records" in err


def _interruptible() -> None:
    # as in a terminal: a test run started in the background inherits SIGINT ignored,
    # and Python then never turns it into KeyboardInterrupt
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_ctrl_c_during_the_demo_is_one_line_and_exit_code_130() -> None:
    import signal

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiologsinks", "demo", "--records", "300000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_interruptible,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        # the first sink's progress line: the demo is running, with ten sinks to go
        first = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert b"received" in first
        proc.send_signal(signal.SIGINT)
        err = await asyncio.wait_for(proc.stderr.read(), 30)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, err
    assert err.decode() == "aiologsinks demo: interrupted\n"
