"""OTLPSink: log records to an OpenTelemetry collector over OTLP/HTTP (``/v1/logs``)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import importlib.util
import logging
import os
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _otlp_map, _trace
from .._backoff import Backoff
from .._exceptions import SinkConnectError, SinkDeliveryError
from .._sink import Sink

if TYPE_CHECKING:
    import aiohttp

__all__ = ["OTLPSink"]

DEFAULT_ENDPOINT = "http://localhost:4318/v1/logs"
#: the statuses the OTLP/HTTP specification calls retryable
RETRYABLE = frozenset((429, 502, 503, 504))
#: the longest Retry-After honoured (a misconfigured server must not park us for a day)
MAX_RETRY_AFTER = 300.0
#: at most one "still down" notice per this many seconds of an outage
NOTICE_INTERVAL = 60.0
_CONTENT_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}
_PROTOCOLS = {"http/protobuf": "protobuf", "http/json": "json"}


class _Retryable(SinkDeliveryError):
    """The collector may accept later (429/502/503/504): the request waits in the outbox."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Request:
    """One encoded export request and the records it carries."""

    body: bytes
    records: list[logging.LogRecord]


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_LOGS_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``."""
    for key in (f"OTEL_EXPORTER_OTLP_LOGS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(key, "").strip()
        if value:
            return value
    return None


def _parse_headers(text: str) -> dict[str, str]:
    headers = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return headers


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class OTLPSink(Sink):
    """Export records to an OpenTelemetry collector over OTLP/HTTP (``POST /v1/logs``).

    Each record becomes an OTLP log record (see ``_otlp_map``: body, severity, times in
    ns, ``code.*``/``thread.*``/``exception.*`` attributes, ``extra=`` fields and bound
    context, the trace and span ids active at the logging call; scope = logger name),
    under one resource (``service.name`` and friends; ``resource`` adds or overrides).
    A batch from the lane is sent as one request, or several when it exceeds
    ``max_batch_records`` records or ``max_batch_bytes`` bytes (before compression).

    ``encoding`` is ``"protobuf"`` (``application/x-protobuf``; needs the ``otlp`` extra,
    ``opentelemetry-proto``) or ``"json"`` (the OTLP JSON mapping, no extra dependency);
    the default is protobuf when ``opentelemetry-proto`` is installed, JSON otherwise.
    ``compression`` is ``"gzip"`` (default) or ``"none"``; ``timeout`` bounds each
    request (seconds, default 10); ``headers`` are added to each request (e.g. an API
    key; never shown in ``repr`` or errors).

    Unset arguments come from the standard variables, the logs-specific one first:
    ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` (used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (``/v1/logs`` appended), ``..._HEADERS``, ``..._TIMEOUT`` (milliseconds),
    ``..._COMPRESSION`` and ``..._PROTOCOL`` (``http/protobuf`` or ``http/json``), and
    ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` for the resource. The default
    endpoint is ``http://localhost:4318/v1/logs``.

    Delivery follows the OTLP specification: an answer of 429, 502, 503 or 504 or a
    connection error keeps the request in a bounded outbox (``buffer_size`` records; the
    oldest are dropped first, counted) and retries it, in order, after a back-off
    (``backoff``; 1 s doubling up to 30 s) or after the server's ``Retry-After``. Any
    other error answer (400 included) is not retried: its records go to
    :meth:`handleError`, counted. A ``partial_success`` with rejected log records
    counts that many records as lost, with the collector's message. An outage is
    reported as a few notices through :meth:`handleError` (down, still down at most
    once a minute with counts — neither counted as a lost record) and a WARNING record
    sent through the sink once the collector is back. :meth:`aclose` makes one last
    attempt bounded by ``close_timeout`` seconds; what is left is counted as lost.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        encoding: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        compression: str | None = None,
        resource: Mapping[str, Any] | None = None,
        max_batch_records: int = 512,
        max_batch_bytes: int = 4 * 1024 * 1024,
        buffer_size: int = 10_000,
        backoff: Backoff | None = None,
        close_timeout: float = 5.0,
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        import aiohttp  # noqa: F401 - loaded with the first sink, not on the loop

        environ = os.environ
        if endpoint is None:
            endpoint = environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip() or None
        if endpoint is None:
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            endpoint = base.rstrip("/") + "/v1/logs" if base else DEFAULT_ENDPOINT
        if not isinstance(endpoint, str):
            raise TypeError(f"endpoint: expected a URL str, got {endpoint!r}")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint: expected an http(s) URL, got {endpoint!r}")
        if encoding is None:
            protocol = _env(environ, "PROTOCOL")
            if protocol is not None:
                if protocol not in _PROTOCOLS:
                    raise ValueError(
                        f"OTEL_EXPORTER_OTLP_PROTOCOL: expected http/protobuf or http/json, "
                        f"got {protocol!r} (OTLPSink speaks OTLP/HTTP)"
                    )
                encoding = _PROTOCOLS[protocol]
            elif importlib.util.find_spec("opentelemetry.proto") is not None:
                encoding = "protobuf"
            else:
                encoding = "json"
        if encoding not in _CONTENT_TYPES:
            raise ValueError(f"encoding: expected 'protobuf' or 'json', got {encoding!r}")
        if encoding == "protobuf" and importlib.util.find_spec("opentelemetry.proto") is None:
            raise ValueError(
                "encoding: 'protobuf' needs opentelemetry-proto (the 'otlp' extra); "
                "use encoding='json' without it"
            )
        if compression is None:
            compression = _env(environ, "COMPRESSION") or "gzip"
        if compression not in ("gzip", "none"):
            raise ValueError(f"compression: expected 'gzip' or 'none', got {compression!r}")
        if timeout is None:
            env_timeout = _env(environ, "TIMEOUT")
            try:
                timeout = float(env_timeout) / 1000 if env_timeout else 10.0
            except ValueError:
                raise ValueError(
                    f"OTEL_EXPORTER_OTLP_TIMEOUT: expected milliseconds, got {env_timeout!r}"
                ) from None
        for name, value in (("timeout", timeout), ("close_timeout", close_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        for name, count in (
            ("max_batch_records", max_batch_records),
            ("max_batch_bytes", max_batch_bytes),
            ("buffer_size", buffer_size),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {count!r}")
        if headers is not None and not isinstance(headers, Mapping):
            raise TypeError(f"headers: expected a mapping of str to str, got {type(headers)}")
        if resource is not None and not isinstance(resource, Mapping):
            raise TypeError(f"resource: expected a mapping, got {type(resource)}")
        env_headers = _env(environ, "HEADERS")
        self.headers: dict[str, str] = _parse_headers(env_headers) if env_headers else {}
        self.headers.update({str(k): str(v) for k, v in (headers or {}).items()})
        self.endpoint = endpoint
        self.encoding = encoding
        self.compression = compression
        self.timeout = float(timeout)
        self.close_timeout = float(close_timeout)
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.buffer_size = buffer_size
        self.resource = _otlp_map.resource_attributes(resource)
        self.backoff = backoff if backoff is not None else Backoff()
        #: requests waiting for the collector, oldest first (bounded by buffer_size records)
        self.outbox: deque[_Request] = deque()
        self._outbox_records = 0
        #: records dropped from a full outbox, and requests retried (never reset)
        self.dropped = 0
        self.retries = 0
        self._session: aiohttp.ClientSession | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._send_lock: asyncio.Lock | None = None
        self._down_since: float | None = None
        self._last_notice = 0.0
        self._lost_in_outage = 0
        self._encode_log = _otlp_map.protobuf_log if encoding == "protobuf" else _otlp_map.json_log
        self._encode_request = (
            _otlp_map.encode_protobuf if encoding == "protobuf" else _otlp_map.encode_json
        )
        _trace.enable()

    # -- encoding -------------------------------------------------------------------------

    def body(self, record: logging.LogRecord) -> str:
        """The log body: the formatter's output when one is set, else the message."""
        if self.formatter is not None:
            return self.format(record)
        return record.getMessage()

    def _requests(self, records: Sequence[logging.LogRecord]) -> list[_Request]:
        """Encode ``records`` into requests within the count and byte limits.

        A record that cannot be mapped or encoded goes to handleError alone; one that
        alone exceeds ``max_batch_bytes`` too (the collector would refuse it).
        """
        observed = time.time_ns()
        pid = self.resource.get("process.pid")
        requests: list[_Request] = []
        groups: dict[str, list[bytes]] = {}
        batch: list[logging.LogRecord] = []
        size = 0
        for record in records:
            try:
                log = _otlp_map.map_record(record, self.body(record), observed, pid)
                encoded = self._encode_log(log)
                if len(encoded) > self.max_batch_bytes:
                    raise SinkDeliveryError(
                        f"{self!r}: a record of {len(encoded)} bytes exceeds "
                        f"max_batch_bytes={self.max_batch_bytes}"
                    )
            except Exception:  # noqa: BLE001 - per-record boundary: the batch goes on
                self._fail(record)
                continue
            cost = len(encoded) + _otlp_map.framing_overhead(len(encoded)) + len(log.scope) + 8
            if batch and (
                len(batch) >= self.max_batch_records or size + cost > self.max_batch_bytes
            ):
                requests.append(self._request(groups, batch))
                groups, batch, size = {}, [], 0
            groups.setdefault(log.scope, []).append(encoded)
            batch.append(record)
            size += cost
        if batch:
            requests.append(self._request(groups, batch))
        return requests

    def _request(self, groups: dict[str, list[bytes]], batch: list[logging.LogRecord]) -> _Request:
        body = self._encode_request(self.resource, list(groups.items()))
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        return _Request(body, batch)

    # -- delivery ---------------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Export one record (a batch of one)."""
        await self.emit_batch((record,))

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Export the records; returns when the collector answered or they wait in the
        outbox (during an outage) or went to :meth:`handleError`."""
        if not records:
            return
        requests = self._requests(records)
        if not requests:
            return
        async with self._lock():
            self._enqueue(requests)
            await self._drain()

    async def flush(self) -> None:
        """Try once more to deliver what waits in the outbox (if the back-off allows)."""
        if self.outbox:
            async with self._lock():
                await self._drain()

    async def aclose(self, timeout: float | None = None) -> None:
        """Close: one last attempt at the outbox within ``timeout`` seconds (default
        ``close_timeout``), then what is left is counted as lost; idempotent."""
        if timeout is not None:
            self.close_timeout = timeout
        await super().aclose()

    async def _aclose(self) -> None:
        try:
            task, self._retry_task = self._retry_task, None
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if self.outbox:
                self.backoff.retryTime = None  # a last attempt, whatever the back-off says
                # what is left after the last attempt is counted below
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._final_drain(), self.close_timeout)
                left = [r for request in self.outbox for r in request.records]
                self.outbox.clear()
                self._outbox_records = 0
                self._lose(left, "undelivered when the sink closed")
        finally:
            session, self._session = self._session, None
            if session is not None:
                await session.close()

    async def _final_drain(self) -> None:
        async with self._lock():
            await self._drain(final=True)

    def _lock(self) -> asyncio.Lock:
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        return self._send_lock

    def _enqueue(self, requests: list[_Request]) -> None:
        for request in requests:
            self.outbox.append(request)
            self._outbox_records += len(request.records)
        dropped: list[logging.LogRecord] = []
        while self._outbox_records > self.buffer_size and len(self.outbox) > 1:
            oldest = self.outbox.popleft()
            self._outbox_records -= len(oldest.records)
            dropped.extend(oldest.records)
        if dropped:
            self.dropped += len(dropped)
            self._lost_in_outage += len(dropped)
            self._lose(dropped, f"dropped: outbox full ({self.buffer_size} records)")

    async def _drain(self, final: bool = False) -> None:
        """Send waiting requests in order until none is left or a retry is due."""
        while self.outbox and (final or self.backoff.ready()):
            request = self.outbox[0]
            try:
                await self._send(request)
            except (SinkConnectError, _Retryable) as exc:
                if final:
                    return
                self.retries += 1
                wait = self.backoff.failed()
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    self.backoff.retryTime = self.backoff.clock() + retry_after
                    wait = retry_after
                self._outage_notice(exc, wait)
                self._schedule_retry()
                return
            except Exception:  # noqa: BLE001 - not retryable: this request's records are lost
                self._pop()
                self._fail_all(request.records)
            else:
                self._pop()
            was_down = self._down_since is not None
            self.backoff.succeeded()
            if was_down:
                await self._recovered()

    def _pop(self) -> None:
        request = self.outbox.popleft()
        self._outbox_records -= len(request.records)

    def _schedule_retry(self) -> None:
        if self.closed:
            return  # aclose() makes the last attempt itself
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(
                self._retry_loop(), name=f"{type(self).__name__} retry"
            )

    async def _retry_loop(self) -> None:
        while self.outbox and not self.closed:
            await asyncio.sleep(self.backoff.delay())
            async with self._lock():
                await self._drain()

    async def _send(self, request: _Request) -> None:
        """POST one export request; raise by the OTLP rules; count partial success."""
        import aiohttp

        headers = {**self.headers, "Content-Type": _CONTENT_TYPES[self.encoding]}
        if self.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        session = self._get_session()
        try:
            async with session.post(self.endpoint, data=request.body, headers=headers) as resp:
                reply = await resp.read()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "")
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise SinkConnectError(f"{self!r}: cannot reach the collector: {exc}") from exc
        if status in RETRYABLE:
            raise _Retryable(
                f"{self!r}: the collector answered {status}", _retry_after(retry_after)
            )
        if status >= 300:
            message = reply[:200].decode("utf-8", "replace")
            raise SinkDeliveryError(f"{self!r}: the collector answered {status}: {message}")
        try:
            rejected, message = _otlp_map.parse_partial_success(reply, content_type)
        except Exception:  # noqa: BLE001 - an unreadable 2xx body: the records were accepted
            rejected, message = 0, ""
        if rejected > 0:
            rejected = min(rejected, len(request.records))
            try:
                raise SinkDeliveryError(
                    f"{self!r}: the collector rejected {rejected} of {len(request.records)} "
                    f"log records: {message or '(no message)'}"
                )
            except SinkDeliveryError:
                # which records were rejected is not said: count them, report one
                self.error_count += rejected - 1
                self._fail(request.records[0])

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=True,
            )
        return self._session

    # -- accounting and notices ---------------------------------------------------------------

    def _fail_all(self, records: Sequence[logging.LogRecord]) -> None:
        # one traceback per failed request, but every record is counted as lost
        self.error_count += len(records) - 1
        self._fail(records[0])

    def _lose(self, records: Sequence[logging.LogRecord], why: str) -> None:
        if not records:
            return
        try:
            raise SinkDeliveryError(f"{self!r}: {len(records)} records {why}")
        except SinkDeliveryError:
            self._fail_all(records)

    def _outage_notice(self, exc: BaseException, wait: float) -> None:
        """Down (first failure) and still down (at most once per NOTICE_INTERVAL):
        reported to handleError, not counted as lost records."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._lost_in_outage = 0
            what = "collector unavailable"
        elif now - self._last_notice >= NOTICE_INTERVAL:
            what = f"collector still unavailable after {now - self._down_since:.0f} s"
        else:
            return
        self._last_notice = now
        notice = logging.LogRecord(
            "aiologsinks",
            logging.WARNING,
            __file__,
            0,
            "aiologsinks: %s: %s; %d records wait in the outbox, %d dropped; retry in %.1f s",
            (what, exc, self._outbox_records, self._lost_in_outage, wait),
            None,
        )
        try:
            raise exc
        except BaseException:  # noqa: BLE001 - re-raised only so handleError prints it
            self.handleError(notice)

    async def _recovered(self) -> None:
        """The collector is back: say so through the sink itself, once."""
        assert self._down_since is not None
        down_for = time.monotonic() - self._down_since
        self._down_since = None
        notice = logging.LogRecord(
            "aiologsinks",
            logging.WARNING,
            __file__,
            0,
            "aiologsinks: OTLP collector reachable again after %.1f s; %d records dropped "
            "during the outage",
            (down_for, self._lost_in_outage),
            None,
        )
        notice.msg, notice.args = notice.getMessage(), None
        # after the backlog: what waited goes first, in order
        for request in self._requests([notice]):
            self.outbox.append(request)
            self._outbox_records += len(request.records)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        parts = urllib.parse.urlsplit(self.endpoint)
        # scheme, host and path only: a query may carry a token
        return f"<{type(self).__name__} {parts.scheme}://{parts.netloc}{parts.path} ({level})>"
