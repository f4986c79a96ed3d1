"""Exercises the public API under ``mypy --strict`` (checked by .ci/run, never run)."""

from __future__ import annotations

import logging

import aiologsinks as als


async def typed_usage() -> None:
    file_sink: als.Sink = als.FileSink("app.log", mode="a", encoding="utf-8", delay=True)
    file_sink.setLevel(logging.INFO)
    file_sink.setFormatter(logging.Formatter("%(message)s"))
    stream = als.StreamSink()
    stream.terminator = "\n"
    async with als.install(file_sink, stream, logger="app", level="INFO") as dispatcher:
        handler: logging.Handler = dispatcher.handler
        handler.setLevel(logging.DEBUG)
        await dispatcher.flush()
        stats: als.DispatcherStats = dispatcher.stats()
        per_sink: als.SinkStats = stats.sinks["FileSink#0"]
        total: int = per_sink.received + stats.lost
        del total
    dispatcher2 = als.Dispatcher(als.NullSink(), logging.NullHandler(), overflow="drop_oldest")
    dispatcher2.start()
    final: als.DispatcherStats = await dispatcher2.aclose(timeout=1.0)
    del final
