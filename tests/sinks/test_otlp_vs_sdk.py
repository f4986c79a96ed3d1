"""One burst into a stopped collector: the OpenTelemetry SDK's handler loses records
without a count, OTLPSink delivers them or counts every loss.

The collector is a real rotel process, stopped (SIGSTOP) while the burst is logged:
it holds the first export request unanswered, as a collector stuck in a long GC pause
or a full pipeline does, and answers it once continued (SIGCONT). The same burst, from
a thread, goes once through the SDK's path (``LoggingHandler`` ->
``BatchLogRecordProcessor`` with its default bounded queue of 2048 -> OTLP/HTTP
exporter) and once through ``als.install(OTLPSink(...))``. What the collector passed on
is decoded downstream and compared with what each side says it delivered.

The SDK's processor drops the oldest records when its queue is full; the drop counter
it has is an OpenTelemetry metric, a no-op unless the application configured a
MeterProvider, and the application is told nothing else it can count. Nothing here
waits on time: the stopped collector holds the first export for as long as the burst
takes, and every wait is on a count of records with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als

from ..helpers import fresh_logger
from ..peers.otel_collector import OTLPReceiver, Rotel, require_module, rotel_collector

#: records in the burst: more than the SDK's queue (2048) plus one export batch (512)
N = 6000


def burst(log: logging.Logger, n: int) -> None:
    """Log ``n`` records as fast as a busy thread can."""
    for i in range(n):
        log.info("burst %d", i)


@asynccontextmanager
async def stopped(collector: Rotel) -> AsyncIterator[None]:
    """The collector process is stopped inside the block (it accepts connections,
    the kernel queues them, nothing answers), and continued on exit."""
    proc = collector.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def bodies(downstream: OTLPReceiver, service: str) -> list[str]:
    """The bodies of the burst records of ``service`` the collector passed on."""
    out = []
    for resource, _, record in downstream.records():
        names = {kv.value.string_value for kv in resource.attributes if kv.key == "service.name"}
        if service in names:
            body = record.body.string_value
            if body.startswith("burst "):  # not the pipeline's own notices
                out.append(body)
    return out


async def wait_bodies(downstream: OTLPReceiver, service: str, count: int) -> list[str]:
    async def enough() -> None:
        while len(bodies(downstream, service)) < count:
            await downstream.wait_exports(len(downstream.exports) + 1, timeout=30)

    await asyncio.wait_for(enough(), 30)
    return bodies(downstream, service)


@pytest.fixture
def _needs_sdk() -> None:
    require_module("opentelemetry.sdk")
    require_module("opentelemetry.exporter.otlp.proto.http")


@pytest.mark.usefixtures("_needs_sdk")
async def test_the_sdk_handler_loses_part_of_a_burst_and_counts_none(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
    from opentelemetry.sdk.resources import Resource

    class CountingExporter(OTLPLogExporter):
        """The SDK's exporter, counting the records the collector accepted."""

        accepted = 0

        def export(self, batch: Sequence[Any]) -> Any:
            result = super().export(batch)
            if result is LogRecordExportResult.SUCCESS:
                self.accepted += len(batch)
            return result

    async with rotel_collector(tmp_path) as (collector, downstream):
        exporter = CountingExporter(endpoint=collector.endpoint, timeout=30)
        provider = LoggerProvider(resource=Resource.create({"service.name": "sdk"}))
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))  # defaults
        with warnings.catch_warnings():
            # 1.39+ points to the contrib package's handler; this one is still the SDK's
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(logger_provider=provider)
        log = fresh_logger("burst.sdk")
        log.addHandler(handler)
        sdk_logger = logging.getLogger("opentelemetry")
        quiet = sdk_logger.level, sdk_logger.propagate
        sdk_logger.setLevel(logging.CRITICAL)  # its "Queue full" line per dropped record
        try:
            async with stopped(collector):
                await asyncio.to_thread(burst, log, N)
            await asyncio.to_thread(provider.shutdown)  # exports what its queue kept
        finally:
            log.removeHandler(handler)
            sdk_logger.setLevel(quiet[0])
        got = await wait_bodies(downstream, "sdk", exporter.accepted)
    # the collector passed on exactly what the SDK exported, and that is not the burst
    assert len(got) == exporter.accepted
    lost = N - len(set(got))
    # while the export in flight waits, its queue (2048) is all it keeps besides that
    # export's batch (512): the rest of the burst is gone
    assert lost >= N - 2048 - 512
    # its queue made room by dropping the oldest records: the newest survived
    assert f"burst {N - 1}" in got


@pytest.mark.usefixtures("_needs_sdk")
@pytest.mark.parametrize(
    "bounds",
    [
        pytest.param({}, id="default-bounds"),
        # the SDK's bound, dropping the oldest as it does: losses happen, and are counted
        pytest.param(
            {"queue_size": 2048, "lane_size": 2048, "overflow": "drop_oldest"}, id="sdk-bounds"
        ),
    ],
)
async def test_otlpsink_delivers_the_same_burst_or_counts_every_loss(
    tmp_path: Path, bounds: dict[str, Any]
) -> None:
    async with rotel_collector(tmp_path) as (collector, downstream):
        sink = als.OTLPSink(collector.endpoint, resource={"service.name": "ours"}, timeout=30)
        log = fresh_logger("burst.ours")
        async with als.install(sink, logger=log, **bounds) as dispatcher:
            async with stopped(collector):
                await asyncio.to_thread(burst, log, N)
            await dispatcher.flush()
            stats = dispatcher.stats()
        counted = stats.dropped + sum(s.dropped + s.errors for s in stats.sinks.values())
        got = await wait_bodies(downstream, "ours", N - counted)
    assert len(set(got)) + counted == N  # every record delivered, or counted as lost
    if not bounds:
        assert counted == 0 and sorted(set(got)) == sorted(f"burst {i}" for i in range(N))
