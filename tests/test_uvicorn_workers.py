"""A real ``uvicorn --workers 2 --log-config log.json`` run whose config uses a sink.

The parent process configures logging and never runs an event loop; the workers are
spawned processes that configure it again and serve on their own loops. Every line of
the parent, and each worker's start-up, "Shutting down" and request lines must reach
the configured file, counted.

A worker re-raises SIGTERM once its server is shut down, and the signal's default
action kills it on the spot: the lines it logs in that last millisecond ("Waiting for
application shutdown." ... "Finished server process") may not have been written yet
(README, Known limits). Everything logged before "Shutting down" has been.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from .peers.records import free_port

REQUESTS = 30

APP = """
import logging
import os

from fastapi import FastAPI

app = FastAPI()
log = logging.getLogger("app")


@app.get("/hit/{n}")
async def hit(n: int) -> dict[str, int]:
    log.info("request %d served by %d", n, os.getpid())
    return {"pid": os.getpid()}
"""


def log_config(path: Path) -> dict[str, object]:
    handler = {"handlers": ["file"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(process)d %(name)s %(message)s"}},
        "handlers": {
            "file": {"class": "aiologsinks.FileSink", "filename": str(path), "formatter": "plain"}
        },
        "loggers": {"uvicorn": handler, "uvicorn.access": handler, "app": handler},
    }


def wait_for(predicate: object, what: str, proc: subprocess.Popen[str], timeout: float) -> None:
    """Poll ``predicate`` (a condition on the log file) until true; fail on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited early ({proc.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a file the server writes: there is no event to wait on


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200
        return int(body["pid"])
    finally:
        conn.close()


@pytest.mark.allow_blocking
def test_uvicorn_parent_and_workers_deliver_every_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    log_file = tmp_path / "uvicorn.log"
    config = tmp_path / "log.json"
    config.write_text(json.dumps(log_config(log_file)))
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--app-dir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-config",
            str(config),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def text() -> str:
        return log_file.read_text() if log_file.exists() else ""

    try:
        wait_for(
            lambda: text().count("Application startup complete.") == 2,
            "both workers' start-up",
            proc,
            60,
        )
        served = Counter(get(port, f"/hit/{n}") for n in range(REQUESTS))
        wait_for(lambda: text().count(" served by ") == REQUESTS, "the request lines", proc, 30)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr  # the parent exits normally: it delivers all
    assert "never awaited" not in stderr and "Traceback" not in stderr, stderr

    lines = text().splitlines()
    parent = proc.pid
    by_pid = Counter(int(line.split(" ", 1)[0]) for line in lines)
    workers = set(by_pid) - {parent}
    assert len(workers) == 2, by_pid

    def count(pattern: str, pid: int | None = None) -> int:
        return sum(
            1
            for line in lines
            if re.search(pattern, line) and (pid is None or line.startswith(f"{pid} "))
        )

    # the parent: it never ran an event loop
    assert count(r"Started parent process", parent) == 1
    assert count(r"Received SIGTERM, exiting\.", parent) == 1
    assert count(r"Terminated child process", parent) == 2
    assert count(r"Waiting for child process", parent) == 2
    assert count(r"Stopping parent process", parent) == 1
    # each worker: start-up, shutdown, and exactly the requests it served
    for pid in workers:
        assert count(r"Application startup complete\.", pid) == 1
        assert count(r"Started server process", pid) == 1
        assert count(r"Shutting down", pid) == 1
        assert count(r" served by ", pid) == served[pid]
        assert count(r'"GET /hit/\d+ HTTP/1.1" 200', pid) == served[pid]
    assert count(r" served by ") == REQUESTS
    assert sorted(int(m) for m in re.findall(r"request (\d+) served", text())) == list(
        range(REQUESTS)
    )
