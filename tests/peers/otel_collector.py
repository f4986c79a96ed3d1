"""OTLP peers: a real collector (rotel) and a small OTLP/HTTP logs receiver of ours.

* :class:`OTLPReceiver` — an aiohttp server on the test's loop that accepts
  ``POST /v1/logs`` in both OTLP encodings (protobuf and JSON, gzipped or not), decodes
  every request with ``opentelemetry-proto`` into an ``ExportLogsServiceRequest`` and
  keeps it. Planned answers (``answers=[(429, {"Retry-After": "1"}), ...]``) and a
  partial-success body let the error paths run on demand — a real collector produces
  them only under real overload.
* :class:`Rotel` — the ``rotel`` collector (an OpenTelemetry collector shipped as a
  wheel), started on free 127.0.0.1 ports with its OTLP exporter pointed at an
  :class:`OTLPReceiver` over OTLP/HTTP protobuf. What the collector accepted is what it
  exports: the test decodes that with ``opentelemetry-proto``, so a payload the collector
  misread shows up as a wrong field. Readiness is awaited by connecting to its HTTP port.

A missing peer skips locally and fails when ``CI=true`` (``.ci/run`` installs both).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import importlib.util
import json
import os
import signal
import sysconfig
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import require
from tests.peers._waiting import wait_until
from tests.peers.records import free_port


def require_module(name: str) -> None:
    """Skip when the Python package ``name`` is missing locally; fail when CI=true."""
    require(importlib.util.find_spec(name) is not None, f"{name} (the test extra installs it)")


def packaged_program(package: str, *parts: str) -> str:
    """A binary a Python package ships inside its directory (skip or fail if absent)."""
    require_module(package)
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent.joinpath(*parts)
    require(os.access(path, os.X_OK), f"{path} (from {package}) to be an executable")
    return str(path)


def rotel_program() -> str:
    """The ``rotel-agent`` binary that the ``rotel`` package ships next to its modules."""
    return packaged_program("rotel", "rotel-agent")


def decode_request(body: bytes, content_type: str) -> Any:
    """An ``ExportLogsServiceRequest`` from an OTLP/HTTP body (gzip detected by magic)."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    message = ExportLogsServiceRequest()
    if content_type.startswith("application/json"):
        # OTLP JSON writes trace and span ids in hex where proto3 JSON expects base64
        data = json.loads(body)
        for rl in data.get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                for lr in sl.get("logRecords", []):
                    for key in ("traceId", "spanId"):
                        if key in lr:
                            lr[key] = base64.b64encode(bytes.fromhex(lr[key])).decode()
        json_format.ParseDict(data, message)
    else:
        message.ParseFromString(body)
    return message


@dataclass
class Export:
    """One request the receiver got: headers, raw body, the decoded message, our answer."""

    headers: dict[str, str]
    body: bytes
    message: Any
    status: int


@dataclass
class OTLPReceiver:
    """An OTLP/HTTP logs endpoint on 127.0.0.1 that keeps and decodes every request."""

    port: int = 0
    #: planned answers, used first: (status, headers) per request
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    #: when set, 200 answers carry this partial success: (rejected count, message)
    partial: tuple[int, str] | None = None
    exports: list[Export] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/logs"

    def records(self) -> list[tuple[Any, Any, Any]]:
        """(resource, scope, log record) of every record accepted with 2xx, in order."""
        out = []
        for export in self.exports:
            if export.status >= 300:
                continue
            for rl in export.message.resource_logs:
                for sl in rl.scope_logs:
                    out.extend((rl.resource, sl.scope, lr) for lr in sl.log_records)
        return out

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        try:
            message = decode_request(body, content_type)
        except Exception:
            status, headers = 400, {}
            message = None
        else:
            status, headers = self.answers.pop(0) if self.answers else (200, {})
        self.exports.append(Export(dict(request.headers), body, message, status))
        async with self._changed:
            self._changed.notify_all()
        if status == 200 and self.partial is not None:
            rejected, why = self.partial
            reply: bytes = b'{"partialSuccess":{"rejectedLogRecords":"%d","errorMessage":"%s"}}' % (
                rejected,
                why.encode(),
            )
            if not content_type.startswith("application/json"):
                from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
                    ExportLogsServiceResponse,
                )

                response = ExportLogsServiceResponse()
                response.partial_success.rejected_log_records = rejected
                response.partial_success.error_message = why
                reply = response.SerializeToString()
            return web.Response(status=200, body=reply, content_type=content_type or None)
        return web.Response(status=status, headers=headers, body=b"")

    async def start(self) -> None:
        """Listen (again) on ``port`` (a free one the first time)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/logs", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_records(self, count: int, timeout: float = 10.0) -> list[tuple[Any, Any, Any]]:
        """Wait until ``count`` records were accepted; return them all."""
        await wait_until(self._changed, lambda: len(self.records()) >= count, timeout)
        return self.records()

    async def wait_exports(self, count: int, timeout: float = 10.0) -> list[Export]:
        """Wait until ``count`` requests arrived, whatever the answer."""
        await wait_until(self._changed, lambda: len(self.exports) >= count, timeout)
        return self.exports


@asynccontextmanager
async def otlp_receiver(**options: Any) -> AsyncIterator[OTLPReceiver]:
    """Serve an :class:`OTLPReceiver` until the block exits."""
    receiver = OTLPReceiver(**options)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def rotel_environment() -> dict[str, str]:
    """The environment for rotel: it links the libpython of the interpreter its wheel
    was built for (for its Python processors), so the running interpreter's shared
    library directory goes on the loader path."""
    env = {**os.environ, "NO_COLOR": "1"}
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
        )
    return env


class Rotel:
    """A running rotel collector: OTLP/HTTP in on :attr:`endpoint`, OTLP/HTTP out."""

    def __init__(self, program: str, directory: Path, export_to: str) -> None:
        self.program = program
        self.dir = directory
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.export_to = export_to
        self.output = directory / "rotel.out"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/logs"

    async def start(self, timeout: float = 15.0) -> None:
        args = [
            "start",
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--otlp-receiver-traces-disabled",
            "--otlp-receiver-metrics-disabled",
            "--pid-file", str(self.dir / "rotel.pid"),
            "--log-file", str(self.dir / "rotel.log"),
            "--exporter", "otlp",
            "--otlp-exporter-protocol", "http",
            "--otlp-exporter-endpoint", self.export_to,
            "--otlp-exporter-compression", "none",
            "--batch-timeout", "10ms",
        ]  # fmt: skip
        with self.output.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                self.program, *args, stdout=out, stderr=out, env=rotel_environment()
            )
        try:
            await wait_port(self.http_port, self.proc, "rotel", timeout)
        except RuntimeError:
            raise RuntimeError(f"rotel exited: {self.output.read_text(errors='replace')}") from None

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        await stop_process(proc)


async def wait_port(port: int, proc: asyncio.subprocess.Process, what: str, timeout: float) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection; raise if ``proc`` exits
    (RuntimeError) or ``timeout`` passes (TimeoutError)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"{what} did not open port {port}") from None
            await asyncio.sleep(0.01)  # polling a port that is not open yet
            continue
        writer.close()
        await writer.wait_closed()
        return


async def stop_process(proc: asyncio.subprocess.Process | None) -> None:
    """SIGTERM, then SIGKILL after a second (with clients connected a peer may wait
    for them: a second is plenty here)."""
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 1.0)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


@asynccontextmanager
async def rotel_collector(directory: Path) -> AsyncIterator[tuple[Rotel, OTLPReceiver]]:
    """A real rotel collector exporting everything it accepts to an OTLPReceiver."""
    program = rotel_program()
    require_module("opentelemetry.proto")
    async with otlp_receiver() as downstream:
        collector = Rotel(program, directory, f"http://127.0.0.1:{downstream.port}")
        await collector.start()
        try:
            yield collector, downstream
        finally:
            await collector.stop()
