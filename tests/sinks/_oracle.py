"""The stdlib's rotating handlers as the reference for differential tests.

A *scenario* is plain JSON: which handler (``rotating``/``timed``), its keyword
arguments, an optional pre-existing file, and *steps* ``[now, [message, ...]]``: at
clock time ``now`` the messages are logged (``created == now``). :func:`run_stdlib`
plays scenarios through ``logging.handlers`` with ``time.time`` patched inside that
module only. The sinks follow CPython 3.13, so when this Python is older the
scenarios run under a newer interpreter in a subprocess (this file is its script:
``python _oracle.py < scenarios.json``); it imports nothing but the stdlib.
"""

from __future__ import annotations

import datetime
import glob
import json
import logging
import logging.handlers
import os
import shutil
import subprocess
import sys
import time
from typing import Any

FMT = "%(asctime)s %(levelname)s %(name)s %(message)s"
NEWEST = (3, 13)


def namer_date_before_ext(name: str) -> str:
    """``/d/app.log.2024-01-02`` -> ``/d/app.2024-01-02.log`` (a typical custom namer)."""
    head, _, suffix = name.rpartition(".log.")
    return f"{head}.{suffix}.log" if head else name


NAMERS = {"date_before_ext": namer_date_before_ext}


def make_records(messages: list[str], now: float) -> list[logging.LogRecord]:
    """Records as a logger would make them at ``now``, with fixed ``created``."""
    out = []
    for i, msg in enumerate(messages):
        r = logging.LogRecord("app", logging.INFO, __file__, i, msg, None, None)
        r.created = now
        r.msecs = (now - int(now)) * 1000
        out.append(r)
    return out


def handler_kwargs(scenario: dict[str, Any]) -> dict[str, Any]:
    """The scenario's keyword arguments, with ``atTime`` as a ``datetime.time``."""
    kwargs = dict(scenario["kwargs"])
    if kwargs.get("atTime") is not None:
        kwargs["atTime"] = datetime.time.fromisoformat(kwargs["atTime"])
    return kwargs


def prepare_dir(scenario: dict[str, Any], directory: str) -> str:
    """Create the scenario's pre-existing files; return the log file's path."""
    path = os.path.join(directory, "app.log")
    pre = scenario.get("existing")
    if pre is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(pre["text"])
        os.utime(path, (pre["mtime"], pre["mtime"]))
    for name in scenario.get("backups", []):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write("old backup\n")
    return path


class _Clock:
    """Stands in for the ``time`` module inside ``logging.handlers``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _play(scenario: dict[str, Any], directory: str) -> int:
    """Play one scenario through the stdlib handler; return its handleError count."""
    path = prepare_dir(scenario, directory)
    errors = 0
    clock = _Clock(scenario["steps"][0][0] if scenario.get("start") is None else scenario["start"])
    saved = logging.handlers.time
    logging.handlers.time = clock  # type: ignore[assignment]
    try:
        cls = {
            "rotating": logging.handlers.RotatingFileHandler,
            "timed": logging.handlers.TimedRotatingFileHandler,
        }[scenario["kind"]]
        handler = cls(path, **handler_kwargs(scenario))
        if scenario.get("namer"):
            handler.namer = NAMERS[scenario["namer"]]

        def count_error(record: logging.LogRecord) -> None:
            nonlocal errors
            errors += 1

        handler.handleError = count_error  # type: ignore[method-assign]
        handler.setFormatter(logging.Formatter(FMT))
        for now, messages in scenario["steps"]:
            clock.now = now
            for record in make_records(messages, now):
                handler.handle(record)
        handler.close()
    finally:
        logging.handlers.time = saved
    return errors


def read_dir(directory: str) -> dict[str, bytes]:
    """Every file in ``directory``: name -> bytes."""
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def _newer_python() -> str | None:
    names = [shutil.which(f"python3.{minor}") for minor in range(20, NEWEST[1] - 1, -1)]
    names += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[3-9]*/bin/python3")))
    for exe in filter(None, names):
        try:
            out = subprocess.run(
                [exe, "-c", f"import sys; print(sys.version_info >= {NEWEST})"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return exe
    return None


def reference_python() -> str | None:
    """``""`` when this Python is the reference, a newer interpreter, or ``None``."""
    if sys.version_info >= NEWEST:
        return ""
    return _newer_python()


def run_stdlib(
    scenarios: list[dict[str, Any]], root: str, python: str = "", tz: str | None = None
) -> list[int]:
    """Play each scenario into ``root/<index>``; return the handleError counts.

    ``python`` empty: in this process (``TZ`` must already be set by the caller).
    """
    for i in range(len(scenarios)):
        os.makedirs(os.path.join(root, str(i)), exist_ok=True)
    if not python:
        return [_play(s, os.path.join(root, str(i))) for i, s in enumerate(scenarios)]
    env = dict(os.environ)
    if tz is not None:
        env["TZ"] = tz
    out = subprocess.run(
        [python, __file__],
        input=json.dumps({"root": root, "scenarios": scenarios}),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return list(json.loads(out.stdout))


def compute_rollovers(settings: list[dict[str, Any]], times: list[int]) -> list[list[int]]:
    """``computeRollover(t)`` of a stdlib handler per settings, for every t."""
    out = []
    for setting in settings:
        directory = setting["dir"]
        clock = _Clock(times[0])
        saved = logging.handlers.time
        logging.handlers.time = clock  # type: ignore[assignment]
        try:
            handler = logging.handlers.TimedRotatingFileHandler(
                os.path.join(directory, "app.log"), delay=True, **handler_kwargs(setting)
            )
        finally:
            logging.handlers.time = saved
        out.append([handler.computeRollover(t) for t in times])
        handler.close()
    return out


def compute_rollovers_in(
    python: str, settings: list[dict[str, Any]], times: list[int], tz: str
) -> list[list[int]]:
    """:func:`compute_rollovers` under another interpreter with ``TZ=tz``."""
    out = subprocess.run(
        [python, __file__],
        input=json.dumps({"compute": settings, "times": times}),
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": tz},
        timeout=120,
        check=True,
    )
    return list(json.loads(out.stdout))


if __name__ == "__main__":
    request = json.load(sys.stdin)
    if "compute" in request:
        result: Any = compute_rollovers(request["compute"], request["times"])
    else:
        result = run_stdlib(request["scenarios"], request["root"])
    json.dump(result, sys.stdout)
