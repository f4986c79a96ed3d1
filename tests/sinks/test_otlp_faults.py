"""OTLPSink under faults: retry rules of the OTLP spec, outages, partial success, close.

A real collector will not answer 429 or 503 on demand, so these run against our own
OTLP receiver (tests/peers/otel_collector.py), which decodes every request it gets.
Every test checks the books: delivered + counted as lost == sent.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

import aiologsinks as als
from aiologsinks._backoff import Backoff

from ..helpers import fresh_logger
from ..peers.otel_collector import OTLPReceiver, otlp_receiver, require_module

pytestmark = pytest.mark.usefixtures("_needs_proto")


@pytest.fixture
def _needs_proto() -> None:
    require_module("opentelemetry.proto")


class Sink(als.OTLPSink):
    """Keeps what reached handleError (record message, exception text) and the outage
    notices."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.reported: list[tuple[str, str]] = []
        self.notices: list[str] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def handleError(self, record: logging.LogRecord) -> None:
        self.reported.append((record.getMessage(), str(sys.exc_info()[1])))

    def report_outage(self, message: str) -> None:
        self.notices.append(message)


def records(n: int, start: int = 0) -> list[logging.LogRecord]:
    return [
        logging.LogRecord("app", 20, "f", 1, f"r{i}", None, None) for i in range(start, start + n)
    ]


def bodies(receiver: OTLPReceiver) -> list[str]:
    return [lr.body.string_value for _, _, lr in receiver.records()]


def fast() -> Backoff:
    return Backoff(retryStart=0.01, retryFactor=2.0, retryMax=0.05)


async def wait_for_empty_outbox(sink: als.OTLPSink, timeout: float = 10.0) -> None:
    async def empty() -> None:
        while sink.outbox.pending:
            await asyncio.sleep(0.01)  # polling the sink's own retry task

    await asyncio.wait_for(empty(), timeout)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_are_retried_in_order_until_delivered(status: int) -> None:
    async with otlp_receiver(answers=[(status, {})] * 4) as receiver:
        async with Sink(receiver.endpoint, "json", backoff=fast()) as sink:
            await sink.emit_batch(records(5))
            await sink.emit_batch(records(5, 5))  # waits behind the first, in order
            await wait_for_empty_outbox(sink)
            assert bodies(receiver) == [f"r{i}" for i in range(10)]
            assert [e.status for e in receiver.exports] == [status] * 4 + [200]
            assert sink.error_count == 0 and sink.reported == []
            # one notice when it went down, one when it came back: not one per attempt
            assert len(sink.notices) == 2, sink.notices
            assert f"answered {status}" in sink.notices[0]
            assert "reachable again" in sink.notices[1]


async def test_retry_after_is_honoured_over_a_shorter_back_off() -> None:
    async with otlp_receiver(answers=[(429, {"Retry-After": "1.5"})]) as receiver:
        async with Sink(receiver.endpoint, "protobuf", backoff=fast()) as sink:
            await sink.emit_batch(records(3))
            # the next attempt is due after the server's 1.5 s, not the back-off's 10 ms
            # (a wide margin: a loaded machine may take a while to get here)
            assert 0.5 < sink.backoff.delay() <= 1.5
            await wait_for_empty_outbox(sink, timeout=10.0)
            assert bodies(receiver) == ["r0", "r1", "r2"]
            assert [e.status for e in receiver.exports] == [429, 200]


async def test_a_long_retry_after_postpones_the_next_attempt() -> None:
    async with otlp_receiver(answers=[(503, {"Retry-After": "120"})]) as receiver:
        sink = Sink(receiver.endpoint, "json", backoff=fast(), close_timeout=2.0)
        async with sink:
            await sink.emit_batch(records(2))
            assert sink.backoff.delay() > 100  # not the 10 ms back-off
            await sink.flush()  # not yet due: no request
            assert len(receiver.exports) == 1
        # aclose made one last attempt, which the receiver accepted
        assert bodies(receiver) == ["r0", "r1"]
        assert sink.error_count == 0


async def test_400_is_never_retried_and_its_records_are_counted() -> None:
    async with otlp_receiver(answers=[(400, {})]) as receiver:
        async with Sink(receiver.endpoint, "json", backoff=fast()) as sink:
            await sink.emit_batch(records(4))
            await sink.emit_batch(records(3, 4))
        assert len(receiver.exports) == 2
        assert bodies(receiver) == ["r4", "r5", "r6"]
        assert sink.error_count == 4
        assert len(sink.reported) == 1 and "answered 400" in sink.reported[0][1]
        assert sink.notices == []  # a refusal is not an outage


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed_and_its_records_are_counted(status: int) -> None:
    # followed, a 301/302 POST becomes a GET without the records, answered 2xx by some
    # server: the records would count as taken; nor do they go to another host
    async with otlp_receiver() as elsewhere:
        moved = {"Location": elsewhere.endpoint}
        async with otlp_receiver(answers=[(status, moved)]) as receiver:
            async with Sink(receiver.endpoint, "json", backoff=fast()) as sink:
                await sink.emit_batch(records(4))
                await sink.emit_batch(records(3, 4))
            assert bodies(receiver) == ["r4", "r5", "r6"]
        assert elsewhere.exports == []
        assert sink.error_count == 4
        assert len(sink.reported) == 1 and f"answered {status}" in sink.reported[0][1]


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_partial_success_counts_the_rejected_records_with_the_message(
    encoding: str,
) -> None:
    async with otlp_receiver(partial=(2, "attribute too long")) as receiver:
        async with Sink(receiver.endpoint, encoding) as sink:
            await sink.emit_batch(records(5))
        assert len(bodies(receiver)) == 5
        assert sink.error_count == 2
        assert "rejected 2 of 5" in sink.reported[0][1]
        assert "attribute too long" in sink.reported[0][1]


async def test_a_collector_down_for_a_while_loses_nothing() -> None:
    receiver = OTLPReceiver()
    await receiver.start()
    sent = 0
    try:
        sink = Sink(receiver.endpoint, "protobuf", backoff=fast())
        log = fresh_logger("t.otlp.down")
        async with als.install(sink, logger=log) as dispatcher:
            for i in range(20):
                log.info("before %d", i)
            sent += 20
            await dispatcher.flush()
            await receiver.stop()  # the collector goes away
            for i in range(30):
                log.info("during %d", i)
            sent += 30
            await dispatcher.flush()
            assert sink.outbox.pending == 30  # waiting, not lost
            await receiver.start()  # back on the same port
            await wait_for_empty_outbox(sink)
        delivered = bodies(receiver)
        assert delivered == [f"before {i}" for i in range(20)] + [f"during {i}" for i in range(30)]
        assert len(delivered) + sink.error_count == sent
        assert sink.error_count == 0
    finally:
        await receiver.stop()


async def test_credentials_in_the_endpoint_stay_out_of_repr_and_notices() -> None:
    receiver = OTLPReceiver()
    await receiver.start()
    try:
        netloc = f"user:s3cr3t@127.0.0.1:{receiver.port}"
        sink = Sink(f"http://{netloc}/v1/logs?token=t0ken", "json", backoff=fast())
        assert repr(sink) == f"<Sink http://127.0.0.1:{receiver.port}/v1/logs (NOTSET)>"
        async with sink:
            await sink.emit_batch(records(1))
            await receiver.stop()  # an outage: its notice names the sink
            await sink.emit_batch(records(1, 1))
            assert sink.notices
            await receiver.start()
            await wait_for_empty_outbox(sink)
        assert bodies(receiver) == ["r0", "r1"]
        assert receiver.exports[0].headers["Authorization"].startswith("Basic ")
        shown = " ".join([repr(sink), *sink.notices])
        assert "s3cr3t" not in shown and "t0ken" not in shown and "user" not in shown
    finally:
        await receiver.stop()


async def test_a_full_outbox_drops_the_oldest_and_counts_them() -> None:
    receiver = OTLPReceiver()
    await receiver.start()
    port = receiver.port
    await receiver.stop()
    try:
        sink = Sink(f"http://127.0.0.1:{port}/v1/logs", "json", buffer_size=10, backoff=fast())
        async with sink:
            for b in range(5):
                await sink.emit_batch(records(5, 5 * b))  # 25 records, room for 10
            assert sink.outbox.statistics().dropped == 15
            assert sink.error_count == 15
            receiver = OTLPReceiver(port=port)
            await receiver.start()
            await wait_for_empty_outbox(sink)
        delivered = bodies(receiver)
        assert delivered == [f"r{i}" for i in range(15, 25)]  # the newest, in order
        assert len(delivered) + sink.error_count == 25
        assert "15 record(s) lost" in sink.notices[-1]
    finally:
        await receiver.stop()


async def test_aclose_is_bounded_when_the_collector_hangs() -> None:
    hung = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.set()
        await reader.read()  # until the client goes away
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sink = Sink(f"http://127.0.0.1:{port}/v1/logs", "json", timeout=60.0, close_timeout=0.3)
        emitting = asyncio.ensure_future(sink.emit_batch(records(7)))
        await asyncio.wait_for(hung.wait(), 5)
        emitting.cancel()
        await asyncio.gather(emitting, return_exceptions=True)
        assert sink.outbox.pending == 7  # the cancelled request's records wait again
        await asyncio.wait_for(sink.aclose(), 5)  # bounded by close_timeout, not timeout
        assert sink.closed
        assert sink.error_count == 7
        assert "closed with 7 record(s) undelivered" in sink.notices[-1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("rejected", "wire"),
    [
        (3, b"\x0a\x02\x08\x03"),
        # -1 as an int64 varint: ten bytes of two's complement
        (-1, b"\x0a\x0b\x08" + b"\xff" * 9 + b"\x01"),
    ],
)
def test_partial_success_count_is_a_signed_int64_in_both_encodings(
    rejected: int, wire: bytes
) -> None:
    from aiologsinks import _otlp_map

    as_json = b'{"partialSuccess": {"rejectedLogRecords": %d}}' % rejected
    assert _otlp_map.parse_partial_success(as_json, "application/json") == (rejected, "")
    # the protobuf answer counts the same: -1 is not 18446744073709551615 rejected
    assert _otlp_map.parse_partial_success(wire, "application/x-protobuf") == (rejected, "")
