"""KafkaSink closing while its producer is still starting (a broker slow to answer).

A :class:`~tests.peers.kafka.HeldProxy` in front of a real Tansu broker holds the
bootstrap connection until the test releases it, so "still connecting" lasts exactly
as long as the test needs. Every ``AIOKafkaProducer`` the sink makes is recorded,
with whether its ``stop()`` ran to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiologsinks import _supervise
from aiologsinks.sinks import kafka as kafka_module

from ..helpers import fresh_logger, started
from ..peers.kafka import HeldProxy, tansu_broker, tansu_program
from .test_kafka import Sink


class Producers(list[Any]):
    """The producers made so far; ``start_error`` is raised by each once it started."""

    start_error: Exception | None = None


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Producers]:
    tansu_program()  # aiokafka and the broker, as the other Kafka tests need them
    import aiokafka

    made = Producers()

    class Recorded(aiokafka.AIOKafkaProducer):  # type: ignore[misc]
        stopped = False

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            made.append(self)

        async def start(self) -> None:
            await super().start()
            if made.start_error is not None:
                raise made.start_error

        async def stop(self) -> None:
            await super().stop()
            self.stopped = True

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Recorded)
    yield made


def kafka_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still running aiokafka code (a producer's connections, metadata, sender)
    or a producer's start."""
    running = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if task.done() or code is None:
            continue
        # (by name and file: code objects have no qualified name before Python 3.11)
        is_start = code.co_name == "_start" and code.co_filename == kafka_module.__file__
        if "aiokafka" in code.co_filename or is_start:
            running.append(task)
    return running


def records(n: int) -> list[logging.LogRecord]:
    return [
        logging.makeLogRecord({"name": "x", "levelno": 20, "levelname": "INFO", "msg": f"m{i}"})
        for i in range(n)
    ]


async def test_aclose_while_connecting_stops_the_producer_and_counts_each_record_once(
    tmp_path: Path, producers: Producers
) -> None:
    async with tansu_broker(tmp_path) as broker, HeldProxy(("127.0.0.1", broker.port)) as proxy:
        sink = Sink("held", proxy.netloc, request_timeout=60.0)
        emitting = asyncio.create_task(sink.emit_batch(records(10)))
        await asyncio.wait_for(proxy.connected.wait(), 10)
        await asyncio.wait_for(sink.aclose(timeout=0.2), 10)
        # once aclose returned, nothing of a producer runs
        assert producers and all(p.stopped for p in producers)
        assert not kafka_tasks()
        proxy.release()  # the broker answers now: no producer is left to deliver there
        await asyncio.wait_for(emitting, 10)
        stats = sink.outbox.statistics()
        assert (stats.delivered, stats.abandoned, stats.pending) == (0, 10, 0)
        assert sink.error_count == 10 and sink._producer is None
        # what was counted as abandoned is not in the topic: only a later sink's record
        async with Sink("held", broker.bootstrap) as later:
            await later.emit_batch(records(1))
        assert await broker.count("held") == 1
        assert later.error_count == 0


async def test_aclose_waits_within_its_timeout_for_a_batch_still_connecting(
    tmp_path: Path, producers: Producers
) -> None:
    async with tansu_broker(tmp_path) as broker, HeldProxy(("127.0.0.1", broker.port)) as proxy:
        sink = Sink("waited", proxy.netloc, request_timeout=60.0)
        emitting = asyncio.create_task(sink.emit_batch(records(10)))
        await asyncio.wait_for(proxy.connected.wait(), 10)
        closing = asyncio.create_task(sink.aclose(timeout=60.0))
        await asyncio.wait_for(_until(lambda: sink.outbox.closed), 10)
        assert not closing.done()  # it waits for the batch the emit is delivering
        proxy.release()
        await asyncio.wait_for(closing, 30)
        await asyncio.wait_for(emitting, 10)
        stats = sink.outbox.statistics()
        assert (stats.delivered, stats.abandoned, stats.pending) == (10, 0, 0)
        assert sink.error_count == 0 and not sink.reported
        assert producers and all(p.stopped for p in producers)
        messages = await broker.consume("waited", 10)
    assert len(messages) == 10


async def test_cancelling_aopen_while_connecting_stops_the_half_started_producer(
    producers: Producers,
) -> None:
    # the proxy is never released: its upstream is never reached
    async with HeldProxy(("127.0.0.1", 9)) as proxy:
        sink = Sink("t", proxy.netloc, request_timeout=60.0)
        opening = asyncio.create_task(sink.aopen())
        await asyncio.wait_for(proxy.connected.wait(), 10)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert producers and all(p.stopped for p in producers)
        assert not kafka_tasks() and sink._producer is None
        await sink.aclose()


async def test_a_dispatcher_closed_while_the_sink_connects_leaves_no_producer(
    producers: Producers,
) -> None:
    async with HeldProxy(("127.0.0.1", 9)) as proxy:
        sink = Sink("t", proxy.netloc, request_timeout=60.0)
        log = fresh_logger("app.kafka.close")
        dispatcher = started(log, sink)
        for i in range(10):
            log.info("m%d", i)
        await asyncio.wait_for(proxy.connected.wait(), 10)
        await asyncio.wait_for(dispatcher.aclose(timeout=0.2), 10)
        assert producers and all(p.stopped for p in producers)
        assert not kafka_tasks() and sink._producer is None
        (stats,) = dispatcher.stats().sinks.values()
        assert stats.received == 10 and stats.delivered == 0


async def test_a_dispatcher_closed_while_the_broker_is_frozen_leaves_no_producer_running(
    tmp_path: Path,
) -> None:
    # the broker stops reading (SIGSTOP) with the producer connected: the dispatcher's
    # bound cuts the sink's close, which aborts the producer; nothing of it may go on
    async with tansu_broker(tmp_path) as broker:
        assert broker.proc is not None
        sink = Sink("frozen", broker.bootstrap)
        log = fresh_logger("app.kafka.frozen")
        dispatcher = started(log, sink)
        log.info("warm-up")
        await asyncio.wait_for(dispatcher.flush(), 10)
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(300):
                log.info("m%d", i)
            await asyncio.wait_for(dispatcher.aclose(timeout=1.0), 10)
            # the abort waits for no answer of the broker: its tasks end at once
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_until(lambda: not kafka_tasks()), 2.0)
            assert not kafka_tasks()
            (stats,) = dispatcher.stats().sinks.values()
            assert stats.received == 301
            assert stats.delivered + stats.lost == 301
            assert stats.delivered == 1  # the warm-up: a stopped broker acknowledges nothing
        finally:
            broker.proc.send_signal(signal.SIGCONT)


async def test_a_close_cut_short_leaves_no_batch_failure_unseen(tmp_path: Path) -> None:
    # the batches the cut close gave up on fail later (the abort, a request timing out
    # once the broker goes on): each failure is seen, none printed by the loop as
    # "Future exception was never retrieved" when collected
    unseen: list[str] = []
    loop = asyncio.get_running_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "never retrieved" in context.get("message", ""):
            unseen.append(repr(context.get("exception")))
        else:
            loop.default_exception_handler(context)

    previous, debug = loop.get_exception_handler(), loop.get_debug()
    loop.set_exception_handler(handler)
    # (debug mode: a future's creation is recorded, and one never retrieved is told
    # as soon as it is freed)
    loop.set_debug(True)
    try:
        async with tansu_broker(tmp_path) as broker:
            assert broker.proc is not None
            sink = Sink("cut", broker.bootstrap, delivery_timeout=5.0, request_timeout=1.0,
                        close_timeout=1.5)  # fmt: skip
            log = fresh_logger("app.kafka.cut")
            dispatcher = started(log, sink)
            for i in range(200):
                log.info("a%d", i)
            await asyncio.wait_for(dispatcher.flush(), 10)
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                for i in range(200):
                    log.info("b%d", i)
                # (not a wait for an event: the requests the frozen broker holds age a
                # little, as in a service, before the close gives up on them)
                await asyncio.sleep(0.3)
                await asyncio.wait_for(dispatcher.aclose(timeout=0.5), 10)
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            await asyncio.wait_for(
                _until(lambda: not _supervise._abandoned and not kafka_tasks()), 10
            )
            (stats,) = dispatcher.stats().sinks.values()
            assert stats.delivered + stats.lost == 400
        gc.collect()
        await asyncio.sleep(0)  # (the loop reports what the collection found)
    finally:
        loop.set_exception_handler(previous)
        loop.set_debug(debug)
    assert unseen == []


async def test_a_start_failing_with_any_error_stops_the_producer(
    tmp_path: Path, producers: Producers
) -> None:
    producers.start_error = ValueError("not a Kafka error")
    async with tansu_broker(tmp_path) as broker:
        sink = Sink("t", broker.bootstrap)
        await sink.emit_batch(records(3))
        assert producers and all(p.stopped for p in producers) and not kafka_tasks()
        stats = sink.outbox.statistics()
        assert stats.failed == 3 and sink.error_count == 3
        assert "not a Kafka error" in sink.reported[0]
        await sink.aclose()


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)  # polling the sink's own progress
