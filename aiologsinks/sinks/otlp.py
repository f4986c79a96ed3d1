"""OTLPSink: log records to an OpenTelemetry collector over OTLP/HTTP (``/v1/logs``)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _otlp_map, _trace, _wire
from .._backoff import Backoff
from .._exceptions import SinkConnectError, SinkDeliveryError
from .._http import HTTPClient, ProtocolError, check_header, check_target, decode_body
from .._outbox import Failure, Outbox, OutboxSinkMixin, RetryableError
from .._record import ACCELERATED, Item, as_record
from .._record import travelled as _travelled
from .._sink import Sink, emit_one
from .._transport import close_outbox_and_session, gzip_off_loop
from .._validate import ArgumentTypeError, ArgumentValueError, check_number

__all__ = ["OTLPSink"]

DEFAULT_ENDPOINT = "http://localhost:4318/v1/logs"
#: the statuses the OTLP/HTTP specification calls retryable
RETRYABLE = frozenset((429, 502, 503, 504))
#: the longest Retry-After honoured (a misconfigured server must not park us for a day)
MAX_RETRY_AFTER = 300.0
_CONTENT_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}
_PROTOCOLS = {"http/protobuf": "protobuf", "http/json": "json"}


#: what waits in the outbox: a record, its scope (logger name), its encoded log record
_Item = tuple[Item, str, bytes]
#: the compiled grouping loop of OTLPSink._body (see _speedups.c), or None
_otlp_group: Any = None
if ACCELERATED:
    from .._speedups import otlp_group as _otlp_group


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


def _classify(exc: BaseException) -> Failure:
    """The OTLP rules: retry 429/502/503/504 (``RetryableError``), timeouts and
    connection errors; every other failure (400 included) is final."""
    if isinstance(exc, RetryableError):
        return Failure(True, exc.retry_after)
    if isinstance(exc, (SinkConnectError, asyncio.TimeoutError)):
        return Failure(True)
    return Failure(False)


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


class OTLPSink(OutboxSinkMixin, Sink):
    """Export records to an OpenTelemetry collector over OTLP/HTTP (``POST /v1/logs``).

    Each record becomes an OTLP log record (see ``_otlp_map``: body, severity, times in
    ns, ``code.*``/``thread.*``/``exception.*`` attributes, ``extra=`` fields and bound
    context, the trace and span ids active at the logging call; scope = logger name),
    under one resource (``service.name`` and friends; ``resource`` adds or overrides).
    A batch from the lane is sent as one request, or several when it exceeds
    ``max_batch_records`` records or ``max_batch_bytes`` bytes (before compression).

    ``encoding`` is ``"protobuf"`` (``application/x-protobuf``, the default) or ``"json"``
    (the OTLP JSON mapping); neither needs an extra dependency (the protobuf wire format
    is written directly; ``opentelemetry-proto`` is only what the tests decode with).
    ``compression`` is ``"gzip"`` (default; level 1, the fastest) or ``"none"``;
    ``timeout`` bounds each request (seconds, default 10); ``headers`` are added to
    each request (e.g. an API key; never shown in ``repr`` or errors).

    Unset arguments come from the standard variables, the logs-specific one first:
    ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` (used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (``/v1/logs`` appended), ``..._HEADERS``, ``..._TIMEOUT`` (milliseconds),
    ``..._COMPRESSION`` and ``..._PROTOCOL`` (``http/protobuf`` or ``http/json``), and
    ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` for the resource. The default
    endpoint is ``http://localhost:4318/v1/logs``.

    Delivery follows the OTLP specification, through the retrying outbox: an answer of
    429, 502, 503 or 504, a timeout or a connection error keeps the records in the
    outbox (``buffer_size`` records; the oldest are dropped first, counted) and retries
    them, in order, after a back-off (``backoff``; 1 s doubling up to 30 s) or after the
    server's ``Retry-After`` when that is later. Any other error answer (400 included)
    is not retried: its records go to :meth:`handleError`, counted. A
    ``partial_success`` with rejected log records counts that many records as lost,
    with the collector's message. An outage is reported by :meth:`report_outage` as a
    few notices (down, still down with counts, back), never one per record.
    :meth:`aclose` makes one last attempt within ``close_timeout`` seconds; what is
    left is counted as lost. Counts are in ``stats()`` and ``outbox.statistics()``.

    ``linger`` (seconds, default 0.05) is how long the sink waits after an export
    before the next one, so that a busy service exports a few large requests a second
    (the SDK's batch processor waits 1 s); ``flush()`` and ``aclose()`` do not wait
    for it (see :attr:`Sink.linger`). ``linger=0`` exports as soon as the last
    request returned.
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
        linger: float = 0.05,
    ) -> None:
        super().__init__(level)
        environ = os.environ
        if endpoint is None:
            endpoint = environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip() or None
        if endpoint is None:
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            endpoint = base.rstrip("/") + "/v1/logs" if base else DEFAULT_ENDPOINT
        if not isinstance(endpoint, str):
            raise ArgumentTypeError("endpoint", f"expected a URL str, got {endpoint!r}")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ArgumentValueError("endpoint", f"expected an http(s) URL, got {endpoint!r}")
        # the request line's target: the path (``/`` when there is none) and query
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        problem = check_target(target)
        if problem is not None:
            raise ArgumentValueError("endpoint", f"its path {problem}")
        if encoding is None:
            protocol = _env(environ, "PROTOCOL")
            if protocol is not None:
                if protocol not in _PROTOCOLS:
                    raise ValueError(
                        f"OTEL_EXPORTER_OTLP_PROTOCOL: expected http/protobuf or http/json, "
                        f"got {protocol!r} (OTLPSink speaks OTLP/HTTP)"
                    )
                encoding = _PROTOCOLS[protocol]
            else:
                encoding = "protobuf"
        if encoding not in _CONTENT_TYPES:
            raise ArgumentValueError("encoding", f"expected 'protobuf' or 'json', got {encoding!r}")
        if compression is None:
            compression = _env(environ, "COMPRESSION") or "gzip"
        if compression not in ("gzip", "none"):
            raise ArgumentValueError(
                "compression", f"expected 'gzip' or 'none', got {compression!r}"
            )
        if timeout is None:
            env_timeout = _env(environ, "TIMEOUT")
            try:
                timeout = float(env_timeout) / 1000 if env_timeout else 10.0
            except ValueError:
                timeout = math.nan
            if not 0 < timeout < math.inf:
                raise ArgumentValueError(
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                    f"expected a positive number of milliseconds, got {env_timeout!r}",
                )
        for name, value in (("timeout", timeout), ("close_timeout", close_timeout)):
            # (NaN fails the comparison: a request with a NaN timeout never times out)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ArgumentValueError(name, f"expected a positive number, got {value!r}")
            if not 0 < value < math.inf:
                raise ArgumentValueError(name, f"expected a positive number, got {value!r}")
        for name, count in (
            ("max_batch_records", max_batch_records),
            ("max_batch_bytes", max_batch_bytes),
            ("buffer_size", buffer_size),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ArgumentValueError(name, f"expected an int >= 1, got {count!r}")
        if headers is not None and not isinstance(headers, Mapping):
            raise ArgumentTypeError(
                "headers", f"expected a mapping of str to str, got {type(headers)}"
            )
        if resource is not None and not isinstance(resource, Mapping):
            raise ArgumentTypeError("resource", f"expected a mapping, got {type(resource)}")
        for key in resource or ():
            if not isinstance(key, str):
                raise ArgumentTypeError("resource", f"expected str keys, got {key!r}")
        env_headers = _env(environ, "HEADERS")
        self.headers: dict[str, str] = _parse_headers(env_headers) if env_headers else {}
        for header, text in (headers or {}).items():
            if not (isinstance(header, str) and isinstance(text, str)):
                raise ArgumentTypeError(
                    "headers", f"expected a mapping of str to str, got {header!r}: {text!r}"
                )
            self.headers[header] = text
        self.endpoint = endpoint
        self.encoding = encoding
        self.compression = compression
        self.timeout = float(timeout)
        self.close_timeout = float(close_timeout)
        self.max_batch_records = max_batch_records
        #: seconds between two exports of a busy sink (see :attr:`Sink.linger`)
        self.linger: float = check_number("linger", linger)
        self.max_batch_bytes = max_batch_bytes
        self.buffer_size = buffer_size
        self.resource = _otlp_map.resource_attributes(resource)
        self.backoff = backoff if backoff is not None else Backoff()
        for header, text in self.headers.items():
            problem = check_header(header, text)
            if problem is not None:
                raise ArgumentValueError("headers", f"{header!r}: {problem}")
        if parts.username is not None:
            # user:password@ in the endpoint is Basic authentication (as curl does)
            self.headers.setdefault(
                "Authorization",
                _wire.basic_auth(
                    (
                        urllib.parse.unquote(parts.username),
                        urllib.parse.unquote(parts.password or ""),
                    )
                ),
            )
        self._target = target
        try:
            self._session: HTTPClient | None = HTTPClient(
                parts.scheme,
                parts.netloc.rpartition("@")[2],
                timeout=self.timeout,
            )
        except ValueError as exc:
            raise ArgumentValueError("endpoint", str(exc)) from None
        #: the retrying outbox: records wait here, in order, while the collector is away
        self.outbox: Outbox[_Item] = Outbox(
            self._send,
            name=repr(self),
            buffer_size=buffer_size,
            chunk_size=max_batch_records,
            backoff=self.backoff,
            classify=_classify,
            on_lost=self._count_lost,
            on_failed=self._count_refused,
            notify=self.report_outage,
        )
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

    def _items(self, records: Sequence[logging.LogRecord]) -> list[_Item]:
        """Map and encode each record once (retries re-send the same bytes).

        A record that cannot be mapped or encoded goes to handleError alone; so does
        one that alone exceeds ``max_batch_bytes`` (the collector would refuse it).
        """
        observed = time.time_ns()
        pid = self.resource.get("process.pid")
        # a dispatcher's batch, frozen records encoded as they travelled (the same bytes)
        # (as they travelled, a frozen record also carries the exception it captured)
        travelled = _travelled(records)
        frozen = type(travelled) is list and self.formatter is None and self.encoding == "protobuf"
        if travelled is None:
            travelled = list(records)
        observed_field = _otlp_map.observed_field(observed)
        room = self._room()
        items: list[_Item] = []
        i, n = 0, len(travelled)
        while i < n:
            if frozen:
                # the common records in C; the loop below takes each one it stops at
                i, done = _otlp_map.protobuf_run(travelled, i, observed, pid, room)
                items += done
                if i == n:
                    break
            item = travelled[i]
            i += 1
            try:
                fast = (
                    _otlp_map.protobuf_frozen(item, observed_field, pid)
                    if frozen and type(item) is tuple
                    else None
                )
                if fast is None:
                    record = as_record(item)
                    captured = _otlp_map.captured_exception(item)
                    log = _otlp_map.map_record(record, self.body(record), observed, pid, captured)
                    scope, encoded = log.scope, self._encode_log(log)
                else:
                    scope, encoded = fast
                if len(encoded) + _scope_cost(scope) > room:
                    raise SinkDeliveryError(
                        f"{self!r}: a record of {len(encoded)} bytes exceeds "
                        f"max_batch_bytes={self.max_batch_bytes}"
                    )
            except Exception:  # noqa: BLE001 - per-record boundary: the batch goes on
                self.report_error(item)
                continue
            items.append((item, scope, encoded))
        return items

    def _body(self, chunk: Sequence[_Item]) -> tuple[bytes, int]:
        """The request body (not compressed yet) for the longest front of ``chunk`` within
        ``max_batch_bytes``, and how many items it holds."""
        room = self._room()
        grouped = _otlp_group(chunk, room) if _otlp_group is not None else None
        if grouped is not None:  # the loop below, in C
            return self._encode_request(self.resource, list(grouped[0].items())), grouped[1]
        groups: dict[str, list[bytes]] = {}
        size = 0
        n = 0
        overhead = _otlp_map.framing_overhead
        for _, scope, encoded in chunk:
            length = len(encoded)
            cost = length + (2 if length < 0x80 else 3 if length < 0x4000 else overhead(length))
            logs = groups.get(scope)
            if logs is None:
                cost += _scope_cost(scope)
            if n and size + cost > room:
                break
            if logs is None:
                logs = groups[scope] = []
            logs.append(encoded)
            size += cost
            n += 1
        return self._encode_request(self.resource, list(groups.items())), n

    def _room(self) -> int:
        """What the records and their scopes may take of ``max_batch_bytes``: the rest
        of a request (the resource above all) is the same in every one."""
        return self.max_batch_bytes - len(self._encode_request(self.resource, []))

    # -- delivery ---------------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Export one record (a batch of one)."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Export the records; returns when the collector answered, or they wait in the
        outbox (during an outage), or they went to :meth:`handleError`."""
        if records:
            items = self._items(records)
            if items:
                self._take_over(len(records))  # the outbox delivers or counts each now
                await self.outbox.put(items)

    async def flush(self) -> None:
        """Try once more to deliver what waits in the outbox (if the back-off allows)."""
        await self.outbox.flush()

    async def aclose(self, timeout: float | None = None) -> None:
        """Close: one last attempt at the outbox within ``timeout`` seconds (default
        ``close_timeout``), then what is left is counted as lost; idempotent."""
        if timeout is not None:
            self.close_timeout = timeout
        await super().aclose()

    async def _aclose(self) -> None:
        await close_outbox_and_session(self)

    async def _send(self, chunk: list[_Item]) -> int:
        """POST one export request from the front of ``chunk``; return how many items
        it carried. Raises by the OTLP rules; counts a partial success."""
        body, n = self._body(chunk)
        headers = {**self.headers, "Content-Type": _CONTENT_TYPES[self.encoding]}
        if self.compression == "gzip":
            body = await gzip_off_loop(body)
            headers["Content-Encoding"] = "gzip"
        client = self._session
        if client is None:
            raise SinkConnectError(f"{self!r}: closed")
        client.timeout = self.timeout  # an attribute the user may have changed
        try:
            # a 3xx is answered below, not followed: a 301/302 followed would turn the
            # POST into a GET without the records
            response = await client.request("POST", self._target, headers, body)
        except (asyncio.TimeoutError, OSError) as exc:
            raise SinkConnectError(f"{self!r}: cannot reach the collector: {exc}") from exc
        status, reply = response.status, response.body
        try:
            reply = decode_body(reply, response.headers.get("content-encoding", ""))
        except ProtocolError:
            # an answer whose body does not decode still has its status (a 2xx one
            # accepted the records, which must not be sent again)
            reply = b""
        content_type = response.headers.get("content-type", "")
        retry_after = response.headers.get("retry-after")
        if status in RETRYABLE:
            raise RetryableError(
                f"{self!r}: the collector answered {status}", retry_after=_retry_after(retry_after)
            )
        if status >= 300:
            message = reply[:200].decode("utf-8", "replace")
            raise SinkDeliveryError(f"{self!r}: the collector answered {status}: {message}")
        try:
            rejected, message = _otlp_map.parse_partial_success(reply, content_type)
        except Exception:  # noqa: BLE001 - an unreadable 2xx body: the records were accepted
            rejected, message = 0, ""
        if rejected > 0:
            rejected = min(rejected, n)
            try:
                raise SinkDeliveryError(
                    f"{self!r}: the collector rejected {rejected} of {n} "
                    f"log records: {message or '(no message)'}"
                )
            except SinkDeliveryError:
                # which records were rejected is not said: count them, report one
                self.error_count += rejected - 1
                self.report_error(chunk[0][0])
        return n

    # -- accounting ---------------------------------------------------------------------------

    def _count_refused(self, items: Sequence[_Item], exc: BaseException) -> None:
        # called inside the except block: one traceback per refused request, every
        # record counted
        self.report_batch_error([item[0] for item in items])

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        parts = urllib.parse.urlsplit(self.endpoint)
        # scheme, host and path only: a query or the user part may carry a token
        host = parts.netloc.rpartition("@")[2]
        return f"<{type(self).__name__} {parts.scheme}://{host}{parts.path} ({level})>"


#: what a new scope adds to a request besides its name (its framing in either encoding;
#: the compiled loops' SCOPE_FRAMING)
_SCOPE_FRAMING = 40


def _scope_cost(scope: str) -> int:
    if scope.isascii():
        return len(scope) + _SCOPE_FRAMING
    try:
        return len(scope.encode()) + _SCOPE_FRAMING
    except UnicodeEncodeError:  # the encoding reports such a name; count the most
        return 4 * len(scope) + _SCOPE_FRAMING
