"""KafkaSink: log records to a Kafka topic through aiokafka, with acknowledged delivery."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._backoff import Backoff
from .._exceptions import SinkConnectError, SinkDeliveryError
from .._json import JSONFormatter
from .._outbox import Failure, Loss, Outbox, OutboxSinkMixin
from .._sink import Sink, emit_one
from .._validate import ArgumentTypeError, ArgumentValueError, check_int

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

__all__ = ["KafkaSink"]

_ACKS = {0: 0, 1: 1, -1: "all", "0": 0, "1": 1, "all": "all", "-1": "all"}
_COMPRESSION = (None, "gzip", "snappy", "lz4", "zstd")
#: most records in one delivery (one set of producer batches awaited together)
CHUNK = 2048
#: aiokafka's default ``max_request_size``: a larger message is never accepted
MAX_REQUEST_SIZE = 1_048_576


class _Msg:
    """One message waiting in the outbox: its record, key and value, when it is given
    up (monotonic clock), and how many times it was handed to the producer."""

    __slots__ = ("deadline", "key", "record", "tries", "value")

    def __init__(
        self, record: logging.LogRecord, key: bytes | None, value: bytes, deadline: float
    ) -> None:
        self.record = record
        self.key = key
        self.value = value
        self.deadline = deadline
        self.tries = 0


def _deadline(msg: _Msg) -> float:
    return msg.deadline


class KafkaSink(OutboxSinkMixin, Sink):
    """Produce each record to a Kafka ``topic`` and wait for the broker's acknowledgement.

    ``bootstrap_servers`` is a ``"host:port"`` string (several comma-separated, as
    aiokafka reads it) or a list of them. The value of
    each message is the record formatted by the sink's formatter — a
    :class:`~aiologsinks.JSONFormatter` unless :meth:`setFormatter` set another one —
    as UTF-8. ``key`` names a record attribute whose value becomes the message key
    (``"name"`` keys by logger; an ``extra=`` field such as ``"tenant"`` keeps one
    tenant's records in one partition, in order); a callable ``key(record)`` may return
    str, bytes or None. ``acks`` (``0``, ``1`` or ``"all"``, default ``"all"``),
    ``compression`` (``None``, ``"gzip"``, ``"snappy"``, ``"lz4"``, ``"zstd"``; the last
    three need their codec packages), ``idempotent`` (the idempotent producer; needs a
    broker that grants producer ids) and ``linger_ms`` go to the producer;
    ``producer_options`` passes any other ``AIOKafkaProducer`` option. What the broker
    or the producer would refuse at every attempt (a topic name Kafka does not allow,
    a port that is not a number, an option ``AIOKafkaProducer`` does not have, a codec
    aiokafka cannot import) raises at construction, naming the parameter.

    Delivery goes through the retrying outbox. Each batch from the lane becomes
    producer batches (``create_batch``/``send_batch``: one future per batch, not per
    record), one run of records per partition — keyed records on their key's partition
    (the producer's partitioner), records without a key spread over the available
    partitions in contiguous runs — with at most ``max_in_flight`` batches per
    partition unacknowledged. :meth:`emit_batch` returns when the broker acknowledged
    them, or they wait in the outbox during an outage (``buffer_size`` records; the
    oldest are dropped first, counted). Records the broker did not acknowledge are sent
    again, in their order but after what the broker acknowledged meanwhile (so across a
    broker failure a partition's order can break, as with Kafka's producer retrying
    without idempotence), after a back-off (``backoff``; 0.1 s doubling up to 2 s) until
    ``delivery_timeout`` seconds after they reached the sink; then they go to
    :meth:`handleError`, counted (one report per batch given up). An error the broker
    will not get over (not retriable: an authorisation failure, a record too large)
    counts the records it concerns at once. :meth:`flush` returns when every record was
    acknowledged or counted; :meth:`aclose` makes one last attempt within
    ``close_timeout`` seconds (waiting for a delivery in progress, even one whose
    producer is still connecting), counts what is left, and stops the producer, also
    one still starting. What it counts as lost is what the broker did not
    acknowledge: records already written to a broker that did not answer (stopped,
    overloaded) may still arrive in the topic when it goes on (and be in both places
    if a fallback or :meth:`handleError` kept them); only what had not left this host
    is discarded. An outage
    is reported by :meth:`report_outage` as a few notices (down, still down with
    counts, back). Counts are in ``stats()`` and ``outbox.statistics()``; ``resent``
    counts messages handed to the producer again.

    aiokafka logs every failed reconnection: keep its ``aiokafka`` loggers away from
    this sink (``logging.Filter`` on the sink, or ``propagate = False``) so that an
    outage does not feed records about itself into the topic it cannot reach.
    """

    def __init__(
        self,
        topic: str,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        key: str | Callable[[logging.LogRecord], str | bytes | None] | None = None,
        acks: int | str = "all",
        compression: str | None = None,
        idempotent: bool = False,
        linger_ms: int = 5,
        client_id: str | None = None,
        delivery_timeout: float = 30.0,
        request_timeout: float = 5.0,
        close_timeout: float = 5.0,
        max_in_flight: int = 4,
        buffer_size: int = 10_000,
        backoff: Backoff | None = None,
        producer_options: Mapping[str, Any] | None = None,
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        import aiokafka  # noqa: F401 - loaded with the first sink, not on the loop

        _check_topic(topic)
        servers = _check_servers(bootstrap_servers)
        if key is not None and not isinstance(key, str) and not callable(key):
            raise ArgumentTypeError("key", f"expected an attribute name or a callable, got {key!r}")
        if isinstance(acks, bool) or not isinstance(acks, (int, str)) or acks not in _ACKS:
            raise ArgumentValueError("acks", f"expected 0, 1 or 'all', got {acks!r}")
        _check_compression("compression", compression)
        if isinstance(linger_ms, bool) or not isinstance(linger_ms, int) or linger_ms < 0:
            raise ArgumentValueError("linger_ms", f"expected an int >= 0, got {linger_ms!r}")
        for name, value in (
            ("delivery_timeout", delivery_timeout),
            ("request_timeout", request_timeout),
            ("close_timeout", close_timeout),
        ):
            # (not NaN: it expires every record at once; not inf: no producer starts)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ArgumentValueError(name, f"expected a positive number, got {value!r}")
            if not 0 < value < math.inf:
                raise ArgumentValueError(name, f"expected a positive number, got {value!r}")
        for name, count in (("max_in_flight", max_in_flight), ("buffer_size", buffer_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ArgumentValueError(name, f"expected an int >= 1, got {count!r}")
        options = _check_producer_options(producer_options)
        from aiokafka.partitioner import DefaultPartitioner

        self.topic = topic
        self.bootstrap_servers = servers
        self.key = key
        self.acks = _ACKS[acks]
        self.compression = compression
        self.idempotent = bool(idempotent)
        self.linger_ms = linger_ms
        self.client_id = client_id
        self.delivery_timeout = float(delivery_timeout)
        self.request_timeout = float(request_timeout)
        self.close_timeout = float(close_timeout)
        self.max_in_flight = max_in_flight
        self.buffer_size = buffer_size
        self._connecting = asyncio.Lock()
        self.backoff = backoff if backoff is not None else Backoff(0.1, 2.0, 2.0)
        self.producer_options = options
        # the producer's partitioner places keyed records, as producer.send() would
        self._partitioner: Callable[..., int] = (
            self.producer_options.get("partitioner") or DefaultPartitioner()
        )
        self._max_size: int = self.producer_options.get("max_request_size", MAX_REQUEST_SIZE)
        #: where the next run of records without a key starts (round robin)
        self._next_partition = 0
        # the default reads no contextvars: records need not carry the caller's
        # context for it (a formatter the user sets is taken as any other)
        self._formatter = JSONFormatter()
        #: messages sent again after the broker did not acknowledge them (never reset)
        self.resent = 0
        self._producer: AIOKafkaProducer | None = None
        _check_settings(self._producer_settings())
        #: the producer being started and the task starting it (aclose stops both)
        self._starting: tuple[AIOKafkaProducer, asyncio.Task[None]] | None = None
        #: set once aclose gave up on delivery: no producer may be started after it
        self._shut = False
        #: the last delivery error (named when records are given up)
        self._last_error: BaseException | None = None
        #: the retrying outbox: records wait here, in order, while the broker is away
        self.outbox: Outbox[_Msg] = Outbox(
            self._send,
            name=repr(self),
            buffer_size=buffer_size,
            chunk_size=CHUNK,
            backoff=self.backoff,
            classify=self._classify,
            on_lost=self._on_lost,
            on_failed=self._count_refused,
            notify=self.report_outage,
            deadline=_deadline,
        )

    # -- encoding -----------------------------------------------------------------------

    def message_key(self, record: logging.LogRecord) -> bytes | None:
        """The message key for ``record`` (None: let the partitioner spread records)."""
        if self.key is None:
            return None
        value = self.key(record) if callable(self.key) else getattr(record, self.key, None)
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode("utf-8")

    def message_value(self, record: logging.LogRecord) -> bytes:
        """The message value: the record formatted by the sink's formatter, as UTF-8."""
        fmt = self.formatter
        if type(fmt) is JSONFormatter:
            return fmt.format_bytes(record)  # skips a decode and an encode
        return self.format(record).encode("utf-8")

    def _message(self, record: logging.LogRecord, deadline: float) -> _Msg:
        key = self.message_key(record)
        value = self.message_value(record)
        size = len(value) + (len(key) if key is not None else 0)
        if size > self._max_size:
            # the producer would refuse it at every attempt: it goes alone
            raise SinkDeliveryError(
                f"{self!r}: a message of {size} bytes exceeds max_request_size={self._max_size}"
            )
        return _Msg(record, key, value, deadline)

    # -- delivery -------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Connect the producer now (it also connects on the first batch)."""
        # on failure the first batch tries again, and reports what it cannot deliver
        with contextlib.suppress(SinkConnectError):
            await self._get_producer()

    async def emit(self, record: logging.LogRecord) -> None:
        """Produce one record and wait for its acknowledgement."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Produce the records; returns when the broker acknowledged them, or they
        wait in the outbox (during an outage), or they went to :meth:`handleError`.

        A record not acknowledged is sent again until ``delivery_timeout`` seconds
        after this call, then it goes to :meth:`handleError`, counted.
        """
        if not records:
            return
        deadline = time.monotonic() + self.delivery_timeout
        items: list[_Msg] = []
        append = items.append
        fmt = self.formatter
        # the common case without a call per record for the key and the value
        fast = type(fmt) is JSONFormatter and self.key is None and self._max_size > 0
        to_bytes = fmt.format_bytes if type(fmt) is JSONFormatter else None
        for record in records:
            try:
                if fast and to_bytes is not None:
                    value = to_bytes(record)
                    if len(value) <= self._max_size:
                        append(_Msg(record, None, value, deadline))
                        continue
                append(self._message(record, deadline))
            except Exception:  # noqa: BLE001 - per-record boundary: the batch goes on
                self.report_error(record)
        if items:
            self._take_over(len(records))  # the outbox delivers or counts each now
            await self.outbox.put(items)

    async def flush(self) -> None:
        """Wait until every record was acknowledged or given up on (and counted):
        at most ``delivery_timeout`` seconds after the last one reached the sink."""
        await self.outbox.drain()

    async def aclose(self, timeout: float | None = None) -> None:
        """Close within ``timeout`` seconds (default ``close_timeout``): wait for a
        delivery in progress and make one last attempt at what waits, then count what
        is left as lost and stop the producer (also one still starting); idempotent.

        A producer that does not stop in time (a broker that does not answer) is
        aborted: it sends nothing more, and its tasks end without waiting for the
        broker, within aiokafka's retry back-off (0.1 s by default); this waits for
        that while ``timeout`` allows, and a close cut short leaves them to end by
        themselves."""
        if timeout is not None:
            self.close_timeout = timeout
        await super().aclose()

    async def _aclose(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.close_timeout
        clean = False
        try:
            clean = await self.outbox.aclose(self.close_timeout)
        finally:
            # what the producer still holds was counted by the outbox: a broker that
            # does not answer cannot hold the close beyond its bound, and a graceful
            # stop() would send it again to a broker coming back (what was already
            # written to the broker's socket, it may still read: see _reset_connections)
            self._shut = True
            if not clean and self._producer is not None:
                _abort(self._producer)
            if self._starting is not None:
                # a connect still in progress (a send the outbox gave up on): were it
                # to finish, it would deliver records already counted as abandoned
                producer, starting = self._starting
                _cancel_once(starting)
                await asyncio.wait({starting}, timeout=max(end - loop.time(), 0.05))
                _retrieve(starting)
                await _stop_quietly(producer, max(end - loop.time(), 0.05))
            await self._drop_producer(max(end - loop.time(), 0.05))

    async def _send(self, chunk: list[_Msg]) -> int:
        """Produce ``chunk`` as producer batches and await their acknowledgements.

        Returns how many messages left the outbox (acknowledged, or refused for good
        and counted); those come first in ``chunk`` afterwards, the ones to send again
        after them. Raises when none was acknowledged.
        """
        producer = await self._get_producer()
        try:
            return await asyncio.wait_for(
                self._produce(producer, chunk), 2 * self.request_timeout + 1.0
            )
        except BaseException:
            if not _usable(producer):  # its sender died: the next attempt starts anew
                await self._drop_producer(self.close_timeout)
            raise

    async def _produce(self, producer: AIOKafkaProducer, chunk: list[_Msg]) -> int:
        runs = await self._partition(producer, chunk)
        batches: list[tuple[asyncio.Future[Any], list[int]]] = []
        unacked: dict[int, list[asyncio.Future[Any]]] = {}
        topic = self.topic
        # partitions take turns, one producer batch each, so that one request to the
        # broker carries a batch for every partition
        cursors = {partition: 0 for partition in runs}
        handoff_error: Exception | None = None
        while cursors and handoff_error is None:
            for partition in list(cursors):
                run, start = runs[partition], cursors[partition]
                batch = producer.create_batch()
                end = start
                while end < len(run):
                    msg = chunk[run[end]]
                    if batch.append(key=msg.key, value=msg.value, timestamp=None) is None:
                        break  # full (the first message always fits)
                    self.resent += msg.tries > 0
                    msg.tries += 1
                    end += 1
                batch.close()  # sent now: no linger for a batch we filled ourselves
                window = unacked.setdefault(partition, [])
                while len(window) >= self.max_in_flight:
                    await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
                    window[:] = [f for f in window if not f.done()]
                try:
                    future = await producer.send_batch(batch, topic, partition=partition)
                except Exception as exc:  # noqa: BLE001 - settled below, with what went
                    handoff_error = exc  # (e.g. no room in the producer within request_timeout)
                    break
                # seen whatever happens to it: a delivery cancelled (a close cut
                # short) before it looked left "exception was never retrieved"
                future.add_done_callback(_retrieve)
                _seen(producer, batch)
                window.append(future)
                batches.append((future, run[start:end]))
                if end < len(run):
                    cursors[partition] = end
                else:
                    del cursors[partition]
        if handoff_error is not None:
            # what the producer did not take fails with its error; what it took is awaited
            future = asyncio.get_running_loop().create_future()
            future.set_exception(handoff_error)
            rest = sorted(i for p, at in cursors.items() for i in runs[p][at:])
            batches.append((future, rest))
        results = await asyncio.gather(*(f for f, _ in batches), return_exceptions=True)
        return self._settle(chunk, batches, results)

    def _settle(
        self,
        chunk: list[_Msg],
        batches: list[tuple[asyncio.Future[Any], list[int]]],
        results: list[Any],
    ) -> int:
        """Sort ``chunk`` into acknowledged, refused and to-retry; count the refused."""
        acked: list[int] = []
        refused: list[int] = []
        retry: list[int] = []
        refusal: BaseException | None = None
        failure: BaseException | None = None
        for (_, members), result in zip(batches, results, strict=True):
            if not isinstance(result, BaseException):
                acked.extend(members)
            elif isinstance(result, asyncio.CancelledError) or self._classify(result).retryable:
                retry.extend(members)
                failure = result
            else:
                refused.extend(members)
                refusal = result
        if failure is not None and not acked and not refused:
            raise failure  # nothing went: the outbox backs off and retries all
        if refusal is not None and not acked and not retry:
            raise refusal  # the whole chunk is refused: the outbox counts it
        if refused:
            items = [chunk[i] for i in sorted(refused)]
            try:
                raise SinkDeliveryError(
                    f"{self!r}: the broker refused {len(items)} record(s): {refusal!r}"
                ) from refusal
            except SinkDeliveryError as exc:
                self.outbox.fail(items, exc)
        if retry:
            done = sorted(acked + refused)
            chunk[:] = [chunk[i] for i in done] + [chunk[i] for i in sorted(retry)]
        return len(acked) + len(refused)

    async def _partition(
        self, producer: AIOKafkaProducer, chunk: list[_Msg]
    ) -> dict[int, list[int]]:
        """Each partition's run of ``chunk`` indices, in order."""
        topic = self.topic
        partitions = sorted(await producer.partitions_for(topic))
        available = sorted(producer.client.cluster.available_partitions_for_topic(topic) or ())
        runs: dict[int, list[int]] = {}
        unkeyed: list[int] = []
        for i, msg in enumerate(chunk):
            if msg.key is None:
                unkeyed.append(i)
            else:
                runs.setdefault(self._partitioner(msg.key, partitions, available), []).append(i)
        if unkeyed:
            # contiguous runs over the available partitions: big batches, and the
            # records of one run stay in order
            spread = available or partitions
            share = -(-len(unkeyed) // len(spread))
            first = self._next_partition
            for n, start in enumerate(range(0, len(unkeyed), share)):
                partition = spread[(first + n) % len(spread)]
                runs.setdefault(partition, []).extend(unkeyed[start : start + share])
            self._next_partition = (first + 1) % len(spread)
        for run in runs.values():
            run.sort()
        return runs

    async def _get_producer(self) -> AIOKafkaProducer:
        async with self._connecting:
            if self._producer is None:
                self._producer = await self._new_producer()
            return self._producer

    async def _new_producer(self) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        if self._shut:
            raise SinkConnectError(f"{self!r}: closed")
        producer = AIOKafkaProducer(**self._producer_settings())
        # a task of its own, so that aclose can stop a start that another task awaits
        starting = asyncio.ensure_future(self._start(producer))
        # seen whatever ends it: a close may cancel this coroutine before it looks
        starting.add_done_callback(_retrieve)
        self._starting = producer, starting
        timed_out = False
        try:
            try:
                await asyncio.wait({starting}, timeout=self.request_timeout)
            finally:
                if not starting.done():  # timed out, or our own task is cancelled
                    timed_out = True
                    _cancel_once(starting)
                    await asyncio.wait({starting})
                    _retrieve(starting)
                    # (a start cancelled before it ran has nothing of its own to stop)
                    await _stop_quietly(producer, self.close_timeout)
            if timed_out:
                error: BaseException | None = asyncio.TimeoutError()
            elif starting.cancelled() or self._shut:
                # aclose took the producer over (it stops it): not ours to hand out
                raise SinkConnectError(f"{self!r}: closed while the producer was starting")
            else:
                error = starting.exception()
        finally:
            self._starting = None
        if isinstance(error, (KafkaError, OSError, asyncio.TimeoutError)):
            raise SinkConnectError(
                f"{self!r}: cannot start the producer (brokers unreachable or refusing): {error!r}"
            ) from error
        if error is not None:
            raise error
        return producer

    def _producer_settings(self) -> dict[str, Any]:
        """The producer's keyword arguments: the sink's settings, then ``producer_options``."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "acks": self.acks,
            "compression_type": self.compression,
            "enable_idempotence": self.idempotent,
            "linger_ms": self.linger_ms,
            "request_timeout_ms": int(self.request_timeout * 1000),
            "client_id": self.client_id,
        }
        options.update(self.producer_options)
        return options

    async def _start(self, producer: AIOKafkaProducer) -> None:
        """Start ``producer``; if that fails or is cancelled, stop what it started
        (connections, the metadata task) before this task ends."""
        try:
            await producer.start()
        except BaseException:
            await _stop_quietly(producer, self.close_timeout)
            raise

    async def _drop_producer(self, timeout: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, timeout)

    # -- accounting -----------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> Failure:
        """Connection failures, timeouts and the errors Kafka calls retriable are
        retried; any other error is final."""
        from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

        self._last_error = exc
        if isinstance(
            exc,
            (
                SinkConnectError,
                OSError,
                asyncio.TimeoutError,
                KafkaConnectionError,
                KafkaTimeoutError,
            ),
        ) or getattr(exc, "retriable", False):
            return Failure(True)
        return Failure(False)

    def _on_lost(self, items: Sequence[_Msg], why: Loss) -> None:
        if why is Loss.DROPPED:  # the outbox's notices say so; no report per record
            self._count_lost(items, why)
            return
        reason = (
            f"not acknowledged within {self.delivery_timeout:g} s"
            if why is Loss.EXPIRED
            else "still unacknowledged at close"
        )
        error = self._last_error
        # one traceback per batch given up, every record counted
        self._report_lost(
            [item.record for item in items],
            f"{self!r}: {len(items)} record(s) {reason}: {error!r}",
            error,
        )

    def _count_refused(self, items: Sequence[_Msg], exc: BaseException) -> None:
        # called inside the except block: one traceback per refusal, every record counted
        self.report_batch_error([item.record for item in items])

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return (
            f"<{type(self).__name__} {self.topic} @ {','.join(self.bootstrap_servers)} ({level})>"
        )


#: what a Kafka topic name may be made of (1-249 of these, not "." or "..")
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
#: producer options the producer turns into ints: (name, smallest value)
_INT_OPTIONS = (
    ("max_request_size", 1),
    ("max_batch_size", 1),
    ("linger_ms", 0),
    ("request_timeout_ms", 1),
    ("retry_backoff_ms", 0),
    ("metadata_max_age_ms", 0),
    ("connections_max_idle_ms", 0),
    ("transaction_timeout_ms", 1),
)


def _check_topic(topic: object) -> None:
    """A name the broker can create: otherwise every attempt fails until
    ``delivery_timeout``, looking like an outage."""
    if not isinstance(topic, str):
        raise ArgumentTypeError("topic", f"expected a str, got {topic!r}")
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        shown = repr(topic) if len(topic) <= 60 else f"a name of {len(topic)} characters"
        raise ArgumentValueError(
            "topic",
            "expected a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, "
            f"not '.' or '..'), got {shown}",
        )


def _check_servers(servers: object, param: str = "bootstrap_servers") -> list[str]:
    """``servers`` as a list of ``host:port``; a str may list several, comma-separated
    (as aiokafka reads a str)."""
    from aiokafka.conn import get_ip_port_afi

    if isinstance(servers, str):
        hosts = [s.strip() for s in servers.split(",")]
    elif isinstance(servers, Sequence) and all(isinstance(s, str) for s in servers):
        hosts = [s.strip() for s in servers]
    else:
        raise ArgumentTypeError(param, f"expected 'host:port' or a list of them, got {servers!r}")
    if not hosts:
        raise ArgumentValueError(param, f"expected 'host:port', got {servers!r}")
    for host in hosts:
        try:
            name, port, _ = get_ip_port_afi(host)
        except ValueError:
            name, port = "", 0
        if not name or any(c.isspace() or c == "," for c in name) or not 0 < port < 65536:
            raise ArgumentValueError(
                param, f"expected 'host:port' with a port from 1 to 65535, got {host!r}"
            )
    return hosts


def _check_compression(param: str, compression: object) -> None:
    """A codec aiokafka knows and can import: the producer refuses any other."""
    import aiokafka.codec

    if compression not in _COMPRESSION:
        raise ArgumentValueError(param, f"expected one of {_COMPRESSION}, got {compression!r}")
    has_codec = getattr(aiokafka.codec, f"has_{compression}", None)
    if compression is not None and (has_codec is None or not has_codec()):
        raise ArgumentValueError(
            param,
            f"{compression!r} needs a codec package that aiokafka cannot import "
            f"(pip install 'aiokafka[{compression}]')",
        )


def _check_producer_options(options: object) -> dict[str, Any]:
    """``AIOKafkaProducer`` options by name, checked now rather than by the producer
    at the first batch (where a mistake would cost every record)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ArgumentTypeError("producer_options", f"expected a mapping, got {options!r}")
    known = _producer_parameters()
    for name in options:
        if not isinstance(name, str):
            raise ArgumentTypeError("producer_options", f"expected str keys, got {name!r}")
        if name not in known:
            raise ArgumentValueError(
                f'producer_options["{name}"]', "not an option of aiokafka's AIOKafkaProducer"
            )
    checked = dict(options)
    for name, least in _INT_OPTIONS:
        if name in checked:
            check_int(f'producer_options["{name}"]', checked[name], min=least)
    if "compression_type" in checked:
        _check_compression('producer_options["compression_type"]', checked["compression_type"])
    if "acks" in checked and (isinstance(checked["acks"], bool) or checked["acks"] not in _ACKS):
        raise ArgumentValueError(
            'producer_options["acks"]', f"expected 0, 1 or 'all', got {checked['acks']!r}"
        )
    if "bootstrap_servers" in checked:
        checked["bootstrap_servers"] = _check_servers(
            checked["bootstrap_servers"], 'producer_options["bootstrap_servers"]'
        )
    if checked.get("partitioner") is not None and not callable(checked["partitioner"]):
        raise ArgumentTypeError(
            'producer_options["partitioner"]',
            f"expected a callable, got {checked['partitioner']!r}",
        )
    return checked


def _check_settings(settings: dict[str, Any]) -> None:
    """Make (never start) a producer with ``settings``, so that aiokafka's own checks
    (``acks=1`` with ``idempotent=True``, an unknown ``security_protocol``...) fail
    here rather than at every batch.

    A producer is made in a running loop: the caller's when there is one (its
    ``stop()``, which connects nothing, then runs as a task), else a loop of its own
    in a thread (not this thread's: ``asyncio.run`` would unset a loop the caller
    set for later)."""
    from aiokafka import AIOKafkaProducer

    failed: list[BaseException] = []
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        try:
            producer = AIOKafkaProducer(**settings)
        except Exception as exc:  # noqa: BLE001 - reported below, naming the settings
            failed.append(exc)
        else:
            # stopped, never started: no "unclosed" warning when it is collected
            _hold(producer, loop.create_task(producer.stop()))
    else:

        async def build() -> None:
            await AIOKafkaProducer(**settings).stop()

        def run() -> None:
            try:
                asyncio.run(build())
            except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
                failed.append(exc)

        thread = threading.Thread(target=run, name="aiologsinks-kafka-settings")
        thread.start()
        thread.join()
    if failed:
        raise ArgumentValueError(
            "producer_options", f"the producer refuses these settings: {failed[0]}"
        ) from failed[0]


@functools.cache
def _producer_parameters() -> frozenset[str]:
    """The keyword arguments of the installed aiokafka's ``AIOKafkaProducer``
    (``loop`` excluded: the producer is made on the loop the sink runs on)."""
    from aiokafka import AIOKafkaProducer

    names = inspect.signature(AIOKafkaProducer).parameters
    return frozenset(names) - {"loop"}


def _cancel_once(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` unless it was already asked to: a second request would cut the
    clean-up that the first one started."""
    cancelling = getattr(task, "cancelling", None)  # 3.11+
    if not task.done() and not (cancelling is not None and cancelling()):
        task.cancel()


def _seen(producer: AIOKafkaProducer, builder: Any) -> None:
    """Mark the failure of the batch just queued for ``builder`` as seen, whenever it
    comes. ``send_batch`` hands out a shield of the batch's own future, and aiokafka
    leaves the batch API's futures to the caller: with the shield cancelled (a close
    cut short), a failure coming later (the abort's, a request timing out) was
    "never retrieved"."""
    accumulator = getattr(producer, "_message_accumulator", None)
    for queue in getattr(accumulator, "_batches", {}).values():
        for batch in reversed(queue):
            if getattr(batch, "_builder", None) is builder:
                batch.future.add_done_callback(_retrieve)
                batch._drain_waiter.add_done_callback(_retrieve)
                return


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark the error of a start, a stop or a batch's delivery given up on as seen:
    its caller reports (or counted) the failure."""
    if task.done() and not task.cancelled():
        task.exception()


def _usable(producer: AIOKafkaProducer) -> bool:
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is None or not task.done()


async def _stop_quietly(producer: AIOKafkaProducer, timeout: float) -> None:
    """Stop ``producer`` within ``timeout``; a broker that does not answer cannot hold
    the close (what was not acknowledged is already counted by the caller).

    Past ``timeout``, failed, or cancelled (a dispatcher giving up on the sink's close),
    the producer is aborted (:func:`_abort`): ``stop()`` waits for its batches to be
    acknowledged, and a ``stop()`` merely cancelled left its sender running. An aborted
    producer (here or before) ends by itself; this waits for that within ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    ending = _ENDING.get(producer)
    if ending is None:
        stopping = asyncio.ensure_future(producer.stop())
        stopping.add_done_callback(_retrieve)
        try:
            done, _ = await asyncio.wait({stopping}, timeout=timeout)
        except asyncio.CancelledError:
            _abort(producer, stopping)
            raise
        if done and not stopping.cancelled() and stopping.exception() is None:
            return
        # (a stop() that raised may have ended before closing the client)
        ending = _abort(producer, stopping)
    # the end of an aborted producer waits for no answer of the broker: it is short,
    # and were this wait cut, it would go on by itself
    await asyncio.wait({ending}, timeout=max(end - loop.time(), 0.05))


#: producers ending by themselves, and the task ending each (held: a task nobody
#: references may be collected before it ends): aborted producers, and those made
#: only to check settings (their stop())
_ENDING: dict[AIOKafkaProducer, asyncio.Future[Any]] = {}


def _hold(producer: AIOKafkaProducer, ending: asyncio.Future[Any]) -> None:
    _ENDING[producer] = ending
    ending.add_done_callback(lambda _: _ENDING.pop(producer, None))
    ending.add_done_callback(_retrieve)


def _abort(
    producer: AIOKafkaProducer, stopping: asyncio.Future[Any] | None = None
) -> asyncio.Future[Any]:
    """End ``producer``'s sending now, without waiting for the broker: its sender
    cancelled, its batches failed, its connections reset, and no new connection
    made. Returns the task that waits for the rest of the producer (and for
    ``stopping``, a ``stop()`` of it under way) to end and closes its client: the
    same task for a producer aborted before."""
    ending = _ENDING.get(producer)
    if ending is not None:
        return ending
    sender = getattr(producer, "_sender", None)
    sender_task = getattr(sender, "sender_task", None)
    if sender_task is not None and not sender_task.done():
        sender_task.cancel()  # no batch goes out any more
    client = getattr(producer, "client", None)
    if client is not None:
        # aiokafka's own answer for a broker it cannot reach: the metadata task, or a
        # produce request drained before the abort, would otherwise open a connection
        # again once these are reset (and send on it, or wait for the broker's answer
        # for request_timeout). The metadata task then fails its updates at once, so
        # that what waits for one ends; closing the client ends it.
        client._get_conn = _no_connection
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        from aiokafka.errors import ProducerClosed  # loaded with the producer

        # its batches fail at once: stop() no longer waits for their acknowledgements
        accumulator.fail_all(ProducerClosed())
    _reset_connections(producer)
    ending = asyncio.ensure_future(_end(producer, (sender_task, stopping)))
    _hold(producer, ending)
    return ending


async def _no_connection(*args: Any, **kwargs: Any) -> None:
    """What an aborted producer's client gets for a connection: none (as for a broker
    that cannot be reached)."""
    return None


async def _end(producer: AIOKafkaProducer, tasks: tuple[asyncio.Future[Any] | None, ...]) -> None:
    """Wait for an aborted producer's ``tasks`` to end, then close its client (the
    metadata task, the connections). Nothing here waits for the broker: its sender
    ends once its produce requests failed with the reset (within aiokafka's retry
    back-off); the bound is there for an aiokafka that would wait anyway."""
    client = producer.client
    bound = 2 * getattr(client, "_request_timeout_ms", 40_000) / 1000 + 1.0
    running = {task for task in tasks if task is not None and not task.done()}
    if running:
        await asyncio.wait(running, timeout=bound)
    _reset_connections(producer)  # (none is made after the abort; none is left)
    # stop() marks the producer closed (no "Unclosed AIOKafkaProducer" warning); a
    # stop() that ran already may have ended before closing the client
    closing = asyncio.ensure_future(
        client.close() if getattr(producer, "_closed", True) else producer.stop()
    )
    closing.add_done_callback(_retrieve)
    await asyncio.wait({closing}, timeout=bound)


def _reset_connections(producer: AIOKafkaProducer) -> None:
    """Reset (RST) the producer's connections at once: what of a produce request has
    not left this host yet (the transport's buffer, the kernel's send buffer) is
    discarded with the connection, instead of reaching a broker that has not read it
    (stopped, overloaded) after the sink counted its records as lost. What the
    broker's host received already stays in its receive queue: on Linux a broker
    that goes on reads it before it sees the reset, and writes those records to the
    topic. Its read tasks end with them."""
    client = getattr(producer, "client", None)
    for conn in list(getattr(client, "_conns", {}).values()):
        writer = getattr(conn, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # linger on, for 0 s: close() sends RST and drops what the
                    # kernel has not sent yet (not what the peer's kernel holds)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            transport.abort()
        with contextlib.suppress(Exception):
            conn.close(reason="aborted")


_RESET = struct.pack("ii", 1, 0)
