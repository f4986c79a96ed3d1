"""``python -m aiologsinks receive --config ...`` run as a real process for tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def toml(data: dict[str, Any]) -> str:
    """A TOML document for nested dicts of scalars and lists (enough for configs)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(v)

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) or prefix.count(".") >= 1}
        nested = {k: v for k, v in d.items() if k not in scalars}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{json.dumps(k)} = {value(v)}")
        for k, v in nested.items():
            table(f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k), v)

    table("", data)
    return "\n".join(lines) + "\n"


class Collector:
    """The collector process: ``ports`` once listening, ``lines`` of its stderr."""

    def __init__(self, config: dict[str, Any], directory: Path, *args: str) -> None:
        self.path = directory / "collector.toml"
        self.path.write_text(toml(config))
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30.0) -> Collector:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiologsinks", "receive", "--config", str(self.path),
            *self.args, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.wait_line("listening on", timeout)
        line = next(ln for ln in self.lines if "listening on" in ln)
        for part in line.split("listening on ", 1)[1].split(", "):
            channel, address = part.split(" ", 1)
            self.ports[channel] = int(address.rsplit(":", 1)[1])
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_line(self, text: str, timeout: float = 20.0, count: int = 1) -> str:
        """Wait until ``count`` stderr lines contain ``text``; return the last of them."""

        async def until() -> str:
            while True:
                found = [ln for ln in self.lines if text in ln]
                if len(found) >= count:
                    return found[-1]
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"collector ended without {text!r}: {self.lines}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"no {text!r} in {timeout} s; last lines: {self.lines[-3:]}"
            ) from None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit; return the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return rc

    async def __aenter__(self) -> Collector:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)

    @property
    def summary(self) -> str:
        """The ``stopped; ...`` line (after :meth:`stop`)."""
        return next((ln for ln in self.lines if "stopped;" in ln), "")
