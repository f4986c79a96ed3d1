"""The OTLP destination of the service benchmark: a real collector and a counter behind it.

:class:`OTLPPeer` starts the ``rotel`` collector (an OpenTelemetry collector shipped as
a wheel) on a free 127.0.0.1 port, its OTLP/HTTP exporter pointed at a counting
receiver in a process of its own (``python -m benchmarks._otlp_peer``), so a record
counts as delivered once the collector accepted it and passed it on. It has the
interface of ``benchmarks._peers.Peer`` (``port``, ``count()``, ``settle()``,
``close()``): ``port`` is the collector's OTLP/HTTP port.

rotel links the libpython of the interpreter its wheel was built for, so the running
interpreter's library directory goes on ``LD_LIBRARY_PATH`` (as in
``tests/peers/otel_collector.py``).
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._peers import Peer

_count = 0


def missing() -> str | None:
    """Why the OTLP destination cannot run here, or None."""
    for module, what in (("rotel", "rotel"), ("opentelemetry.proto", "opentelemetry-proto")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{what} is not installed (pip install -e '.[test]')"
    if not os.access(rotel_program(), os.X_OK):
        return f"rotel is installed but {rotel_program()} is not an executable"
    return None


def rotel_program() -> str:
    spec = importlib.util.find_spec("rotel")
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).parent / "rotel-agent")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OTLPPeer(Peer):
    """rotel on :attr:`port` (OTLP/HTTP), exporting to a counting receiver."""

    def __init__(self) -> None:
        super().__init__(module="benchmarks._otlp_peer")  # the counting receiver
        counter_port = self.port
        self._dir = tempfile.mkdtemp(prefix="aiologsinks-rotel-")
        self.port = _free_port()
        renv = {**os.environ, "NO_COLOR": "1"}
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir:
            renv["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (libdir, renv.get("LD_LIBRARY_PATH", "")) if p
            )
        args = [
            "start",
            "--otlp-http-endpoint", f"127.0.0.1:{self.port}",
            "--otlp-grpc-endpoint", f"127.0.0.1:{_free_port()}",
            "--otlp-receiver-traces-disabled",
            "--otlp-receiver-metrics-disabled",
            "--pid-file", os.path.join(self._dir, "rotel.pid"),
            "--log-file", os.path.join(self._dir, "rotel.log"),
            "--exporter", "otlp",
            "--otlp-exporter-protocol", "http",
            "--otlp-exporter-endpoint", f"http://127.0.0.1:{counter_port}",
            "--otlp-exporter-compression", "none",
            "--batch-timeout", "10ms",
        ]  # fmt: skip
        self._out = open(os.path.join(self._dir, "rotel.out"), "wb")  # noqa: SIM115 - closed in close()
        self.rotel = subprocess.Popen(
            [rotel_program(), *args], stdout=self._out, stderr=self._out, env=renv
        )
        try:
            self._wait_ready(15.0)
        except Exception:
            self.close()
            raise

    def _wait_ready(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while True:
            if self.rotel.poll() is not None:
                with open(os.path.join(self._dir, "rotel.out"), "rb") as f:
                    out = f.read().decode(errors="replace")[-500:]
                raise RuntimeError(f"rotel exited with {self.rotel.returncode}: {out}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rotel did not open port {self.port}") from None
                time.sleep(0.02)  # polling a port that is not open yet (a process apart)

    def pids(self) -> list[int]:
        """rotel and the counting receiver."""
        return [self.rotel.pid, *super().pids()]

    def close(self) -> None:
        rotel = getattr(self, "rotel", None)
        if rotel is not None and rotel.poll() is None:
            rotel.send_signal(signal.SIGTERM)
            try:
                rotel.wait(2)
            except subprocess.TimeoutExpired:
                rotel.kill()
                rotel.wait()
        self._out.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        super().close()


def records_in(body: bytes) -> int:
    """How many log records one OTLP/HTTP protobuf export carries (gzip detected)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    message = ExportLogsServiceRequest()
    message.ParseFromString(body)
    return sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)


async def _serve() -> None:
    """Count the log records of every OTLP/HTTP protobuf export; answer stdin lines
    with the count (the protocol of ``benchmarks._peers``)."""
    from aiohttp import web

    async def logs(request: web.Request) -> web.Response:
        global _count
        _count += records_in(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=256 << 20)
    app.router.add_post("/v1/logs", logs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: Any = runner.addresses[0][1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(_count, flush=True)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(_serve())
