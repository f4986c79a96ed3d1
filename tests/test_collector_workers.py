"""The multi-worker recipe for real: ``uvicorn --workers 4``, one collector, rotated files.

Every worker of a FastAPI app logs each request through a ``SocketSink`` to the
collector, which owns a ``RotatingFileSink`` rolling over every ~4 KB. The collector
is stopped (SIGTERM) and started again while requests go on; the workers keep their
records in the sink's buffer meanwhile and send them after reconnecting. At the end
(SIGTERM to the uvicorn master, then to the collector), the rotated set holds every
request's line exactly once, and each worker's lines in the order it logged them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

from tests.peers.collector import ROOT, Collector

REQUESTS = 2000
WORKERS = 4
LINE = re.compile(r"^(\d+) request (\d+) seq (\d+)$")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rotated_in_order(directory: Path) -> list[str]:
    """Lines of app.log.N ... app.log.1, app.log: oldest first."""
    backups = sorted(directory.glob("app.log.*"), key=lambda p: -int(p.suffix[1:]))
    lines: list[str] = []
    for path in [*backups, directory / "app.log"]:
        lines.extend(path.read_text().splitlines())
    return lines


async def test_uvicorn_workers_through_a_restarted_collector_lose_nothing(
    tmp_path: Path,
) -> None:
    config = {
        "collector": {"tcp": 0},
        "formatters": {"line": {"format": "%(process)d %(message)s"}},
        "sinks": {
            "file": {
                "type": "RotatingFileSink",
                "filename": str(tmp_path / "app.log"),
                "maxBytes": 4000,
                "backupCount": 10_000,
                "formatter": "line",
            }
        },
    }
    first = await Collector(config, tmp_path).start()
    port = first.ports["tcp"]
    http_port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT),
        "tests.peers.collector_app:app", "--host", "127.0.0.1", "--port", str(http_port),
        "--workers", str(WORKERS), "--lifespan", "on", "--no-access-log",
        env={**os.environ, "COLLECTOR_PORT": str(port), "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    second: Collector | None = None
    try:
        assert server.stderr is not None
        started = 0
        while started < WORKERS:  # each worker says so once its lifespan started
            line = await asyncio.wait_for(server.stderr.readline(), 60)
            assert line, "uvicorn ended before its workers started"
            started += b"Application startup complete" in line
        stderr_lines: list[bytes] = []
        drain = asyncio.ensure_future(_collect(server.stderr, stderr_lines))

        done = 0
        halfway = asyncio.Event()
        pids: set[int] = set()

        async def client(session: aiohttp.ClientSession, ids: range) -> None:
            nonlocal done
            for i in ids:
                async with session.get(f"http://127.0.0.1:{http_port}/r/{i}") as resp:
                    assert resp.status == 200
                    pids.add((await resp.json())["pid"])
                done += 1
                if done == REQUESTS // 2:
                    halfway.set()

        async def restart() -> Collector:
            await halfway.wait()
            assert await first.stop() == 0
            await first.__aexit__()
            # the same port: the workers reconnect to it
            return await Collector(config, tmp_path, "--tcp", str(port)).start()

        # A connection per request: kept-alive connections would stay with whichever
        # worker won the first accepts (on an idle machine, often one of them for all)
        connector = aiohttp.TCPConnector(limit=20, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            restarting = asyncio.ensure_future(restart())
            chunk = REQUESTS // 20
            await asyncio.gather(
                *(client(session, range(k, k + chunk)) for k in range(0, REQUESTS, chunk))
            )
            second = await restarting
        server.send_signal(signal.SIGTERM)
        # recent uvicorn re-raises the signal once shut down: -SIGTERM is a clean exit
        assert await asyncio.wait_for(server.wait(), 60) in (0, -signal.SIGTERM)
        await drain
        assert sum(b"Application shutdown complete" in ln for ln in stderr_lines) == WORKERS
        assert await second.stop() == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        await first.__aexit__()
        if second is not None:
            await second.__aexit__()

    for summary in (first.summary, second.summary):
        assert "/0 invalid" in summary, summary
        assert set(re.findall(r"(\d+) lost", summary)) == {"0"}, summary
    lines = await asyncio.to_thread(rotated_in_order, tmp_path)
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), [ln for ln, m in zip(lines, parsed) if not m][:5]
    requests = sorted(int(m.group(2)) for m in parsed if m)
    missing = sorted(set(range(REQUESTS)) - set(requests))
    # what the workers' sinks said (outage notices, counted losses) explains a miss
    notices = [ln.decode(errors="replace") for ln in stderr_lines if b"SocketSink" in ln]
    assert not missing, (first.summary, second.summary, len(missing), missing[:20], notices)
    assert requests == list(range(REQUESTS))  # every request's line, exactly once
    by_worker: dict[int, list[int]] = {}
    for m in parsed:
        assert m is not None
        by_worker.setdefault(int(m.group(1)), []).append(int(m.group(3)))
    assert set(by_worker) == pids and len(pids) > 1
    for seqs in by_worker.values():
        assert seqs == list(range(1, len(seqs) + 1))  # each worker's lines in order
    assert len(list(tmp_path.glob("app.log.*"))) >= 8  # many rollovers


async def _collect(stream: asyncio.StreamReader, into: list[bytes]) -> None:
    while line := await stream.readline():
        into.append(line)
