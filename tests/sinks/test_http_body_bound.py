"""HTTPSink's JSON batches against a real aiohttp server that limits request bodies.

A backlog must not become one request larger than the server takes (aiohttp's and
nginx's servers refuse bodies over 1 MiB by default): ``max_batch_bytes`` bounds each
body, a server with a lower limit (413) gets smaller requests, and every record is
delivered once, in order, or reported once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks._exceptions import SinkDeliveryError
from aiologsinks._stats import assert_accounted
from aiologsinks.sinks.http import MAX_BATCH_BYTES, HTTPSink
from tests.helpers import fresh_logger, started
from tests.peers.http import Request, http_peer

from .test_http import RecordingHTTPSink, make_record

# about 600 bytes of JSON per record: 2,000 of them are over a megabyte
N = 2000


def records(n: int = N, start: int = 0) -> list[logging.LogRecord]:
    return [make_record(f"n {i}") for i in range(start, start + n)]


def delivered(requests: list[Request]) -> list[str]:
    return [item["msg"] for r in requests for item in json.loads(r.body)]


async def test_a_backlog_goes_out_in_requests_within_max_batch_bytes_in_order() -> None:
    async with http_peer() as peer:
        sink = RecordingHTTPSink(peer.netloc, "/bulk", json_batch=True, max_batch_bytes=20_000)
        async with sink:
            await sink.emit_batch(records())
        ok = peer.ok
    assert sink.errors == [] and sink.error_count == 0
    assert delivered(ok) == [f"n {i}" for i in range(N)]
    assert len(ok) == len(peer.requests) > 20  # nothing refused, many requests
    assert max(len(r.body) for r in ok) <= 20_000
    # full requests, not one piece each: all but the last hold at least half the bound
    assert min(len(r.body) for r in ok[:-1]) > 10_000


async def test_the_bound_is_on_the_body_before_compression() -> None:
    async with http_peer() as peer:
        sink = RecordingHTTPSink(
            peer.netloc, "/bulk", json_batch=True, gzip=True, max_batch_bytes=20_000
        )
        async with sink:
            await sink.emit_batch(records())
        ok = peer.ok
    # aiohttp's server inflates each body before the handler sees it
    assert all(r.headers.get("Content-Encoding") == "gzip" for r in ok)
    assert max(len(r.body) for r in ok) <= 20_000
    assert delivered(ok) == [f"n {i}" for i in range(N)]


async def test_a_server_that_answers_413_gets_smaller_requests_and_loses_nothing() -> None:
    async with http_peer(max_body=30_000) as peer:
        sink = RecordingHTTPSink(peer.netloc, "/bulk", json_batch=True)
        async with sink:
            await sink.emit_batch(records())
            refused = [r for r in peer.requests if r.status == 413]
            assert len(refused) >= 1  # the default bound is above this server's
            await sink.emit_batch(records(100, start=N))
        ok = peer.ok
    assert sink.errors == [] and sink.error_count == 0
    assert delivered(ok) == [f"n {i}" for i in range(N + 100)]
    # the sink keeps the lower bound: the later batch was not refused first
    assert len([r for r in peer.requests if r.status == 413]) == len(refused)
    assert sink.max_batch_bytes == MAX_BATCH_BYTES  # what the user set is unchanged


async def test_a_record_alone_over_the_bound_is_reported_and_the_rest_delivered() -> None:
    async with http_peer() as peer:
        sink = RecordingHTTPSink(peer.netloc, "/bulk", json_batch=True, max_batch_bytes=5_000)
        batch = [*records(10), make_record("x" * 10_000), *records(10, start=10)]
        async with sink:
            await sink.emit_batch(batch)
        ok = peer.ok
    assert [r.msg for r in sink.errors] == ["x" * 10_000]
    assert sink.error_count == 1
    (exc,) = sink.excs
    assert isinstance(exc, SinkDeliveryError) and "max_batch_bytes=5000" in str(exc)
    assert delivered(ok) == [f"n {i}" for i in range(20)]


async def test_a_single_record_the_server_refuses_as_too_large_is_reported() -> None:
    async with http_peer(max_body=2_000) as peer:
        sink = RecordingHTTPSink(peer.netloc, "/bulk", json_batch=True)
        async with sink:
            await sink.emit_batch([make_record("y" * 3_000), *records(3)])
        ok = peer.ok
    assert [r.msg for r in sink.errors] == ["y" * 3_000]
    assert "413" in str(sink.excs[0])
    assert delivered(ok) == ["n 0", "n 1", "n 2"]


class FailingMapSink(RecordingHTTPSink):
    """mapLogRecord raises for one message: that record is reported, the rest sent."""

    def mapLogRecord(self, record: logging.LogRecord) -> Mapping[str, Any]:
        if record.msg == "bad":
            raise ValueError("cannot map this one")
        return super().mapLogRecord(record)


@pytest.mark.parametrize("max_body", [None, 25_000])
async def test_a_record_that_fails_to_encode_is_reported_once_across_requests(
    max_body: int | None,
) -> None:
    async with http_peer(max_body=max_body) as peer:
        sink = FailingMapSink(peer.netloc, "/bulk", json_batch=True, max_batch_bytes=40_000)
        batch = [*records(1000), make_record("bad"), *records(1000, start=1000)]
        async with sink:
            await sink.emit_batch(batch)
        ok = peer.ok
    assert [r.msg for r in sink.errors] == ["bad"]
    assert sink.error_count == 1
    assert delivered(ok) == [f"n {i}" for i in range(N)]


async def test_a_burst_through_install_fits_an_aiohttp_servers_default_limit() -> None:
    # the peer is aiohttp's own server with its default limit (bodies up to 1 MiB):
    # a burst logged faster than it is sent reaches the sink as batches of thousands
    async with http_peer() as peer:
        sink = RecordingHTTPSink(peer.netloc, "/bulk", json_batch=True)
        logger = logging.getLogger("test.http.body_bound")
        logger.propagate = False
        try:
            async with als.install(sink, logger=logger, level=logging.INFO) as dispatcher:
                for i in range(10_000):
                    logger.info("event %d %s", i, "z" * 200)
                await dispatcher.flush()
        finally:
            logger.propagate = True
        ok = peer.ok
    assert sink.errors == [] and sink.error_count == 0
    assert [r.status for r in peer.requests] == [200] * len(peer.requests)
    assert delivered(ok) == [f"event {i} {'z' * 200}" for i in range(10_000)]
    assert max(len(r.body) for r in ok) <= MAX_BATCH_BYTES < 1024 * 1024


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_batch_bytes": 10_000}, ValueError, "max_batch_bytes.*json_batch=True"),
        ({"json_batch": True, "max_batch_bytes": 10}, ValueError, "max_batch_bytes.*64"),
        ({"json_batch": True, "max_batch_bytes": "1MB"}, TypeError, "max_batch_bytes"),
        ({"json_batch": True, "max_batch_bytes": True}, TypeError, "max_batch_bytes"),
    ],
)
def test_bad_max_batch_bytes_names_the_parameter(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        HTTPSink("localhost", "/log", **kwargs)


async def test_repr_is_plain_while_a_failed_name_lookup_waits_for_the_back_off() -> None:
    # repr() used to raise here, and to forget the failed lookup (so the next
    # request looked the name up again before the back-off allowed it)
    sink = RecordingHTTPSink("nowhere.invalid:8080", "/bulk", json_batch=True)
    async with sink:
        await sink.emit_batch(records(3))
        assert sink.error_count == 3 and sink.errors == []  # an outage: counted
        assert not sink.backoff.ready()
        assert repr(sink) == "<RecordingHTTPSink POST http://nowhere.invalid:8080/bulk (NOTSET)>"
        await sink.emit_batch(records(2))
        # the failed lookup is still what the next request meets (no new lookup)
        assert sink._unresolved is not None
    assert sink.error_count == 5


def test_max_batch_bytes_from_a_config_file() -> None:
    from aiologsinks import config

    base = '[sinks.h]\ntype = "http"\nhost = "127.0.0.1:8080"\nurl = "/"\njson_batch = true\n'
    (sink,) = config.loads(base + "max_batch_bytes = 500000\n").sinks.values()
    assert isinstance(sink, HTTPSink) and sink.max_batch_bytes == 500_000
    with pytest.raises(config.ConfigError, match="max_batch_bytes"):
        config.loads(base + 'max_batch_bytes = "1MB"\n')


async def test_a_split_backlog_to_a_server_that_never_answers_is_counted_in_full() -> None:
    # every request times out: nothing is delivered, every record is counted once
    async with http_peer(delay=5.0) as peer:
        sink = RecordingHTTPSink(
            peer.netloc, "/bulk", json_batch=True, max_batch_bytes=20_000, timeout=0.05
        )
        async with sink:
            await asyncio.wait_for(sink.emit_batch(records()), 5.0)
        stats = sink.outbox.statistics()
    assert stats.delivered == 0 and stats.pending == 0
    assert sink.error_count == N and sink.errors == []  # an outage: counted, no traceback


async def test_close_bounds_a_split_backlog_in_retry_mode_and_counts_what_is_left() -> None:
    # the first request goes through, then the server holds every request: flush(timeout)
    # and aclose(timeout=1) return within their bounds, and every record is accounted
    log = fresh_logger("t.http.body_bound.hung")
    async with http_peer() as peer:
        sink = RecordingHTTPSink(
            peer.netloc,
            "/bulk",
            json_batch=True,
            max_batch_bytes=20_000,
            retry=True,
            buffer_size=N,
            timeout=None,
        )
        dispatcher = started(log, sink)
        try:
            for i in range(N):
                log.info("n %d", i)
            await peer.wait_ok(1)
            peer.delay = 30.0  # from now on the server holds each request
            with pytest.raises(TimeoutError, match="HTTPSink"):
                await asyncio.wait_for(dispatcher.flush(timeout=0.5), 5.0)
        finally:
            stats = await asyncio.wait_for(dispatcher.aclose(timeout=1), 5.0)
            log.removeHandler(dispatcher.handler)
        got = delivered(peer.ok)
    assert_accounted(stats, logged=N)
    assert 0 < len(got) < N and got == [f"n {i}" for i in range(len(got))]
    (share,) = stats.sinks.values()
    # what the held requests carried and what waited behind them: counted, not delivered
    assert share.delivered + share.errors + share.undelivered == N
    assert share.errors + share.undelivered >= N - len(got) > 0
