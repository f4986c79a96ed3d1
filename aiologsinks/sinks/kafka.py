"""KafkaSink: log records to a Kafka topic through aiokafka, with acknowledged delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._backoff import Backoff
from .._exceptions import SinkConnectError, SinkDeliveryError
from .._json import JSONFormatter
from .._sink import Sink
from .._validate import ArgumentTypeError, ArgumentValueError

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

__all__ = ["KafkaSink"]

#: one message: the record, its key, its value
_Msg = tuple[logging.LogRecord, "bytes | None", bytes]
#: one send of a batch: futures of the messages that went, those messages, the ones
#: that could not be handed to the producer, and the last error
_Sent = tuple["list[asyncio.Future[Any]]", "list[_Msg]", "list[_Msg]", "BaseException | None"]

_ACKS = {0: 0, 1: 1, -1: "all", "0": 0, "1": 1, "all": "all", "-1": "all"}
_COMPRESSION = (None, "gzip", "snappy", "lz4", "zstd")


class KafkaSink(Sink):
    """Produce each record to a Kafka ``topic`` and wait for the broker's acknowledgement.

    ``bootstrap_servers`` is a ``"host:port"`` string (or a list of them). The value of
    each message is the record formatted by the sink's formatter — a
    :class:`~aiologsinks.JSONFormatter` unless :meth:`setFormatter` set another one —
    as UTF-8. ``key`` names a record attribute whose value becomes the message key
    (``"name"`` keys by logger; an ``extra=`` field such as ``"tenant"`` keeps one
    tenant's records in one partition, in order); a callable ``key(record)`` may return
    str, bytes or None. ``acks`` (``0``, ``1`` or ``"all"``, default ``"all"``),
    ``compression`` (``None``, ``"gzip"``, ``"snappy"``, ``"lz4"``, ``"zstd"``; the last
    three need their codec packages), ``idempotent`` (the idempotent producer; needs a
    broker that grants producer ids) and ``linger_ms`` go to the producer;
    ``producer_options`` passes any other ``AIOKafkaProducer`` option.

    Delivery is confirmed per batch: each batch's acknowledgements are awaited by a task
    of the sink, with up to ``max_in_flight`` batches in flight (the next batch waits
    for room, so an outage holds the lane back instead of piling up). Messages the
    broker did not acknowledge are sent again after a back-off (``backoff``; 0.1 s
    doubling up to 2 s) until ``delivery_timeout`` seconds after the batch's first
    attempt; then they go to :meth:`handleError`, counted. :meth:`flush` returns when
    every batch was acknowledged or counted; :meth:`aclose` waits for that at most
    ``close_timeout`` seconds, counts what is left, and stops the producer.
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
        backoff: Backoff | None = None,
        producer_options: Mapping[str, Any] | None = None,
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        import aiokafka  # noqa: F401 - loaded with the first sink, not on the loop

        if not isinstance(topic, str) or not topic:
            raise ArgumentValueError("topic", f"expected a non-empty str, got {topic!r}")
        if isinstance(bootstrap_servers, str):
            servers = [bootstrap_servers]
        elif isinstance(bootstrap_servers, Sequence) and all(
            isinstance(s, str) for s in bootstrap_servers
        ):
            servers = list(bootstrap_servers)
        else:
            raise TypeError(
                f"bootstrap_servers: expected 'host:port' or a list of them, "
                f"got {bootstrap_servers!r}"
            )
        if not servers or not all(servers):
            raise ArgumentValueError(
                "bootstrap_servers", f"expected 'host:port', got {bootstrap_servers!r}"
            )
        if key is not None and not isinstance(key, str) and not callable(key):
            raise ArgumentTypeError("key", f"expected an attribute name or a callable, got {key!r}")
        if isinstance(acks, bool) or acks not in _ACKS:
            raise ArgumentValueError("acks", f"expected 0, 1 or 'all', got {acks!r}")
        if compression not in _COMPRESSION:
            raise ArgumentValueError(
                "compression", f"expected one of {_COMPRESSION}, got {compression!r}"
            )
        if isinstance(linger_ms, bool) or not isinstance(linger_ms, int) or linger_ms < 0:
            raise ArgumentValueError("linger_ms", f"expected an int >= 0, got {linger_ms!r}")
        for name, value in (
            ("delivery_timeout", delivery_timeout),
            ("request_timeout", request_timeout),
            ("close_timeout", close_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ArgumentValueError(name, f"expected a positive number, got {value!r}")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ArgumentValueError(
                "max_in_flight", f"expected an int >= 1, got {max_in_flight!r}"
            )
        if producer_options is not None and not isinstance(producer_options, Mapping):
            raise ArgumentTypeError(
                "producer_options", f"expected a mapping, got {producer_options!r}"
            )
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
        #: batches whose acknowledgements are awaited, oldest first (owned tasks)
        self._batches: deque[asyncio.Task[None]] = deque()
        self._connecting = asyncio.Lock()
        self.backoff = backoff if backoff is not None else Backoff(0.1, 2.0, 2.0)
        self.producer_options = dict(producer_options or {})
        self.formatter = JSONFormatter()
        #: messages sent again after the broker did not acknowledge them (never reset)
        self.resent = 0
        self._producer: AIOKafkaProducer | None = None

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

    # -- delivery -------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Connect the producer now (it also connects on the first batch)."""
        # on failure the first batch tries again, and reports what it cannot deliver
        with contextlib.suppress(SinkConnectError):
            await self._get_producer()

    async def emit(self, record: logging.LogRecord) -> None:
        """Produce one record and wait for its acknowledgement."""
        await self.emit_batch((record,))

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Hand the records to the producer, in order, and confirm them in the background.

        Returns once they were sent (the broker's acknowledgements are awaited by a
        task per batch, at most ``max_in_flight`` batches at a time: a full window makes
        this wait for the oldest batch). A record not acknowledged is sent again until
        ``delivery_timeout`` seconds after its batch's first attempt, then it goes to
        :meth:`handleError`, counted. :meth:`flush` waits for every batch.
        """
        pending: list[_Msg]
        pending, _ = self.contain_each(
            records, lambda record: (record, self.message_key(record), self.message_value(record))
        )
        if not pending:
            return
        await self._make_room()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delivery_timeout
        first = await self._send_all(pending)
        self._batches.append(
            loop.create_task(self._confirm(first, deadline), name=f"{self!r} acknowledgements")
        )

    async def _make_room(self) -> None:
        """Retire finished batches; wait for the oldest while the window is full."""
        batches = self._batches
        while batches and (len(batches) >= self.max_in_flight or batches[0].done()):
            await asyncio.shield(batches[0])  # our cancellation must not cancel it
            if batches and batches[0].done():
                batches.popleft()

    async def _send_all(self, pending: list[_Msg]) -> _Sent:
        """Send ``pending`` once: (futures of what went, what went, what did not, error)."""
        from aiokafka.errors import KafkaError

        try:
            producer = await self._get_producer()
        except SinkConnectError as exc:
            return [], [], pending, exc
        futures: list[asyncio.Future[Any]] = []
        sent: list[_Msg] = []
        failed: list[_Msg] = []
        error: BaseException | None = None
        for item in pending:
            try:
                futures.append(await producer.send(self.topic, item[2], key=item[1]))
                sent.append(item)
            except KafkaError as exc:  # e.g. the buffer timed out waiting for the broker
                failed.append(item)
                error = exc
            except Exception:  # noqa: BLE001 - e.g. message too large: not retryable
                self.report_error(item[0])
        return futures, sent, failed, error

    async def _collect(self, sent: _Sent) -> tuple[list[_Msg], BaseException | None]:
        """Await the acknowledgements; return what must be sent again, and why."""
        from aiokafka.errors import KafkaError

        futures, items, failed, error = sent
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = list(failed)
        for item, result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, KafkaError) and not _retriable(result):
                    try:
                        raise SinkDeliveryError(f"{self!r}: {result!r}") from result
                    except SinkDeliveryError:
                        self.report_error(item[0])
                    continue
                failed.append(item)
                error = result
        producer = self._producer
        if failed and producer is not None and not _usable(producer):
            await self._drop_producer()
        return failed, error

    async def _confirm(self, first: _Sent, deadline: float) -> None:
        """One batch's acknowledgements, re-sends, and losses (never raises)."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.backoff.retryStart, self.backoff.retryFactor, self.backoff.retryMax)
        pending: list[_Msg] = [*first[1], *first[2]]
        error: BaseException | None = None
        try:
            pending, error = await self._collect(first)
            while pending:
                wait = backoff.failed()
                if loop.time() + wait >= deadline:
                    break
                await asyncio.sleep(wait)
                self.resent += len(pending)
                pending, error = await self._collect(await self._send_all(pending))
        except asyncio.CancelledError:
            self._lose([r for r, _, _ in pending], error, "still unacknowledged at close")
            raise
        except Exception as exc:  # noqa: BLE001 - the task's boundary: count, never raise
            self._lose([r for r, _, _ in pending], exc)
            return
        self._lose([r for r, _, _ in pending], error)

    async def _get_producer(self) -> AIOKafkaProducer:
        async with self._connecting:  # batches re-sending at once share one producer
            if self._producer is None:
                self._producer = await self._new_producer()
            return self._producer

    async def _new_producer(self) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

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
        producer = AIOKafkaProducer(**options)
        try:
            await asyncio.wait_for(producer.start(), self.request_timeout)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            await _stop_quietly(producer, self.close_timeout)
            raise SinkConnectError(
                f"{self!r}: cannot start the producer (brokers unreachable or refusing): {exc!r}"
            ) from exc
        return producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, self.close_timeout)

    async def flush(self) -> None:
        """Wait until every batch was acknowledged or given up on (and counted)."""
        batches = self._batches
        while batches:
            await asyncio.shield(batches[0])
            if batches and batches[0].done():
                batches.popleft()

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop the producer within ``timeout`` seconds (default ``close_timeout``);
        idempotent."""
        if timeout is not None:
            self.close_timeout = timeout
        await super().aclose()

    async def _aclose(self) -> None:
        """Wait for the batches in flight within ``close_timeout``; what is still
        unacknowledged then is counted as lost; the producer is stopped."""
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flush(), self.close_timeout)
            batches, self._batches = list(self._batches), deque()
            for task in batches:
                task.cancel()
            await asyncio.gather(*batches, return_exceptions=True)
        finally:
            await self._drop_producer()

    # -- accounting -----------------------------------------------------------------------

    def _lose(
        self,
        records: Sequence[logging.LogRecord],
        error: BaseException | None,
        why: str = "",
    ) -> None:
        if not records:
            return
        why = why or f"not acknowledged within {self.delivery_timeout:g} s"
        try:
            raise SinkDeliveryError(f"{self!r}: {len(records)} records {why}: {error!r}") from error
        except SinkDeliveryError:
            self.report_batch_error(records)  # one traceback per batch, every record counted

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return (
            f"<{type(self).__name__} {self.topic} @ {','.join(self.bootstrap_servers)} ({level})>"
        )


def _retriable(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    return isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)) or bool(
        getattr(exc, "retriable", False)
    )


def _usable(producer: AIOKafkaProducer) -> bool:
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is None or not task.done()


async def _stop_quietly(producer: AIOKafkaProducer, timeout: float) -> None:
    """Stop ``producer`` within ``timeout``; a broker that does not answer cannot hold
    the close (what was not acknowledged is already counted by the caller)."""
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    if not done:
        stopping.cancel()
    await asyncio.gather(stopping, return_exceptions=True)
