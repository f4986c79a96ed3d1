"""HTTPSink: the async counterpart of ``logging.handlers.HTTPHandler`` over aiohttp."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import _wire
from .._backoff import Backoff, OutageBuffer
from .._exceptions import SinkConnectError, SinkDeliveryError
from .._sink import Sink

if TYPE_CHECKING:
    import aiohttp

__all__ = ["HTTPSink", "InsecureCredentialsWarning"]

_FORM = "application/x-www-form-urlencoded"
#: records encoded between two yields to the loop in JSON batch mode (~1 ms of work)
_JSON_PIECE = 100


class InsecureCredentialsWarning(UserWarning):
    """Credentials were given to a sink that sends them in clear text (plain HTTP)."""


class _ServerError(SinkDeliveryError):
    """A 5xx answer: the server may succeed later, so retry mode keeps the records."""


class HTTPSink(Sink):
    """Send each record to a web server, as ``HTTPHandler`` does, on one reused session.

    ``host`` (``"host"`` or ``"host:port"``), ``url``, ``method`` (``GET`` or
    ``POST``; anything else raises ``ValueError``), ``secure`` (HTTPS),
    ``credentials`` (``(userid, password)`` for Basic auth) and ``context`` (the
    ``ssl.SSLContext`` for HTTPS; only with ``secure=True``) mean what they mean for
    ``HTTPHandler``, and the request is the same: :meth:`mapLogRecord` url-encoded
    into the query (GET, appended with ``?`` or ``&``) or into an
    ``application/x-www-form-urlencoded`` body (POST), with the same
    ``Authorization`` header. As in the stdlib, :meth:`setFormatter` has no effect.
    Credentials over plain HTTP emit :class:`InsecureCredentialsWarning` once, when
    the sink is made; they never appear in ``repr`` or error messages.

    All requests go through one ``aiohttp.ClientSession``, made lazily on the running
    loop and closed by :meth:`aclose`, so connections are kept alive and reused.

    Differences from the stdlib:

    * A response with status 400 or above goes to :meth:`handleError` (the stdlib
      ignores the response, which loses records silently).
    * Keyword-only options, off by default: ``json_batch=True`` sends one POST per
      batch whose body is a JSON array of :meth:`mapLogRecord` dicts
      (``application/json``; values JSON cannot hold become strings), and
      ``gzip=True`` compresses it (``Content-Encoding: gzip``). ``retry=True``
      keeps records that failed with a connection error or a 5xx answer in a
      buffer of ``buffer_size`` records (the oldest are dropped first, counted)
      and delivers them in order after a back-off (``backoff``, a
      :class:`~aiologsinks._backoff.Backoff`; 1 s doubling up to 30 s by default).
      ``timeout`` bounds each request, in seconds (the stdlib waits forever).
    """

    _uses_formatter = False

    def __init__(
        self,
        host: str,
        url: str,
        method: str = "GET",
        secure: bool = False,
        credentials: tuple[str, str] | None = None,
        context: ssl.SSLContext | None = None,
        *,
        json_batch: bool = False,
        gzip: bool = False,
        retry: bool = False,
        buffer_size: int = 1000,
        backoff: Backoff | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        # aiohttp is loaded by the first HTTPSink, not by `import aiologsinks` (it is
        # most of the package's import time and heap), and not later on the loop
        import aiohttp  # noqa: F401

        if not isinstance(host, str) or not host:
            raise ValueError(f"host: expected 'host' or 'host:port', got {host!r}")
        if not isinstance(url, str):
            raise TypeError(f"url: expected a str, got {url!r}")
        if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
            raise ValueError(f"method: must be GET or POST, got {method!r}")
        if not secure and context is not None:
            raise ValueError("context: only makes sense with secure=True")
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise TypeError("context: expected an ssl.SSLContext or None")
        if credentials is not None and (
            not isinstance(credentials, (tuple, list)) or len(credentials) != 2
        ):
            raise ValueError("credentials: expected a (userid, password) pair")
        if gzip and not json_batch:
            raise ValueError("gzip: only applies with json_batch=True")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise ValueError(f"timeout: expected a positive number or None, got {timeout!r}")
        self.host = host
        self.url = url
        self.method = method.upper()
        self.secure = bool(secure)
        self.credentials: tuple[str, str] | None = (
            (credentials[0], credentials[1]) if credentials else None
        )
        self.context = context
        self.json_batch = bool(json_batch)
        self.gzip = bool(gzip)
        self.retry = bool(retry)
        self.timeout = timeout
        self.backoff = backoff if backoff is not None else Backoff()
        #: records waiting for the server in retry mode (bounded; drops are counted)
        self.buffer: OutageBuffer[logging.LogRecord] = OutageBuffer(buffer_size)
        self._session: aiohttp.ClientSession | None = None
        self._retry_task: asyncio.Task[None] | None = None
        # The lane worker and the retry task both send; one request at a time keeps order.
        self._send_lock: asyncio.Lock | None = None
        if self.credentials and not self.secure:
            warnings.warn(
                InsecureCredentialsWarning(
                    f"{self!r}: credentials will be sent in clear text; use secure=True"
                ),
                stacklevel=2,
            )

    # -- hooks ---------------------------------------------------------------------------

    def mapLogRecord(self, record: logging.LogRecord) -> Mapping[str, Any]:
        """Return the dict that is url-encoded and sent: ``record.__dict__`` by default."""
        return record.__dict__

    # -- delivery ------------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Send one record (a batch of one)."""
        await self.emit_batch((record,))

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Send the records: one request each, or one JSON POST for them all.

        Returns when the server answered every request or the record went to
        :meth:`handleError`. In retry mode, records that met a connection error or a
        5xx answer wait in :attr:`buffer` instead, and a retry is scheduled.
        """
        if not records:
            return
        async with self._lock():
            if self.retry:
                self._buffer(records)
                await self._drain()
            else:
                await self._deliver(records)

    async def flush(self) -> None:
        """In retry mode, try once more to deliver what waits (if the back-off allows)."""
        if self.retry and self.buffer:
            async with self._lock():
                await self._drain()

    async def _aclose(self) -> None:
        try:
            task, self._retry_task = self._retry_task, None
            if task is not None:
                # Under the lock the task is asleep or queued for the lock, never in the
                # middle of a request, so cancelling it cannot lose the chunk it holds.
                async with self._lock():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if self.buffer:
                # A last attempt, whatever the back-off says; what is left is lost.
                self.backoff.retryTime = None
                await self._drain()
                self._lose(self.buffer.take(), "undelivered when the sink closed")
        finally:
            session, self._session = self._session, None
            if session is not None:
                await session.close()

    def _lock(self) -> asyncio.Lock:
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        return self._send_lock

    def _buffer(self, records: Sequence[logging.LogRecord]) -> None:
        dropped = self.buffer.extend(records)
        if dropped:
            self._lose(dropped, f"dropped: retry buffer full ({self.buffer.maxlen} records)")

    async def _drain(self) -> None:
        """Deliver buffered records in order until the buffer is empty or a retry is due."""
        while self.buffer and self.backoff.ready():
            chunk = self.buffer.take(None if self.json_batch else 1)
            try:
                await self._send(chunk)
            except (SinkConnectError, _ServerError):
                self.buffer.appendleft_all(chunk)
                self.backoff.failed()
                self._schedule_retry()
                return
            except Exception:  # noqa: BLE001 - per-request boundary: next records go on
                self._fail_all(chunk)
            self.backoff.succeeded()

    def _schedule_retry(self) -> None:
        if self.closed:
            return  # aclose() makes the last attempt itself
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(
                self._retry_loop(), name=f"{type(self).__name__} retry"
            )

    async def _retry_loop(self) -> None:
        while self.buffer and not self.closed:
            await asyncio.sleep(self.backoff.delay())
            async with self._lock():
                await self._drain()

    async def _deliver(self, records: Sequence[logging.LogRecord]) -> None:
        """Send without retry mode: each failure goes to ``handleError``."""
        chunks = [records] if self.json_batch else [(r,) for r in records]
        for chunk in chunks:
            try:
                await self._send(chunk)
            except Exception:  # noqa: BLE001 - per-request boundary: next records go on
                self._fail_all(chunk)

    async def _send(self, records: Sequence[logging.LogRecord]) -> None:
        """One request for ``records`` (one record unless in JSON batch mode)."""
        headers: dict[str, str] = {}
        if self.json_batch:
            items = []
            for record in records:
                try:
                    items.append((record, self.mapLogRecord(record)))
                except Exception:  # noqa: BLE001 - per-record boundary: the batch goes on
                    self._fail(record)
            method, url = "POST", self.url
            pieces = []
            for start in range(0, len(items), _JSON_PIECE):
                pieces.append(self._json_piece(items[start : start + _JSON_PIECE]))
                # Encoding 1,000 records takes ~10 ms: let the loop run between pieces.
                await asyncio.sleep(0)
            if not any(pieces):
                return
            body: bytes | None = _wire.json_array(pieces, compress=self.gzip)
            headers["Content-Type"] = "application/json"
            if self.gzip:
                headers["Content-Encoding"] = "gzip"
        else:
            (record,) = records
            data = _wire.http_form(self.mapLogRecord(record))
            method, url, body = self.method, self.url, None
            if method == "GET":
                url = _wire.http_get_url(url, data)
            else:
                # Header name spelled as HTTPHandler spells it; the value is what matters.
                headers["Content-type"] = _FORM
                body = data.encode("utf-8")
        if self.credentials:
            headers["Authorization"] = _wire.basic_auth(self.credentials)
        await self._request(method, url, body, headers)

    def _json_piece(self, items: Sequence[tuple[logging.LogRecord, Mapping[str, Any]]]) -> bytes:
        """Encode ``items``; a record JSON cannot hold goes to handleError alone."""
        try:
            return _wire.json_items(item for _, item in items)
        except Exception:  # noqa: BLE001, S110 - a bad record: encode the piece one by one
            pass
        good = []
        for record, item in items:
            try:
                good.append(_wire.json_items((item,)))
            except Exception:  # noqa: BLE001 - per-record boundary: the batch goes on
                self._fail(record)
        return b",".join(good)

    async def _request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> None:
        """Send one request; map transport errors once, here, without credentials."""
        import aiohttp
        from yarl import URL

        scheme = "https" if self.secure else "http"
        # encoded=True: the query is already url-encoded and must go out byte for byte.
        target = URL(f"{scheme}://{self.host}{url}", encoded=True)
        # Like http.client: identity encoding, no User-Agent or Accept of our own.
        headers = {"Accept-Encoding": "identity", **headers}
        session = self._get_session()
        for attempt in (1, 2):
            try:
                async with session.request(method, target, data=body, headers=headers) as resp:
                    await resp.read()  # drained, so the connection goes back to the pool
                    status = resp.status
                break
            except aiohttp.ServerDisconnectedError as exc:
                # A kept-alive connection the server had closed: one fresh attempt.
                if attempt == 2:
                    raise SinkConnectError(f"{self!r}: {self.host} disconnected") from exc
            except aiohttp.ClientSSLError as exc:
                # Not retryable: a certificate problem does not heal by waiting.
                raise SinkDeliveryError(f"{self!r}: TLS failure with {self.host}") from exc
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
                raise SinkConnectError(f"{self!r}: cannot reach {self.host}: {exc}") from exc
        if status >= 500:
            raise _ServerError(f"{self!r}: {self.host} answered {status}")
        if status >= 400:
            raise SinkDeliveryError(f"{self!r}: {self.host} answered {status}")

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            ssl_arg: ssl.SSLContext | bool = self.context if self.context is not None else True
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_arg),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                auto_decompress=False,
            )
        return self._session

    def _fail_all(self, records: Sequence[logging.LogRecord]) -> None:
        # One traceback per failed request, but every record is counted as lost.
        self.error_count += len(records) - 1
        self._fail(records[0])

    def _lose(self, records: Sequence[logging.LogRecord], why: str) -> None:
        if not records:
            return
        try:
            raise SinkDeliveryError(f"{self!r}: {len(records)} records {why}")
        except SinkDeliveryError:
            self._fail_all(records)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        scheme = "https" if self.secure else "http"
        method = "POST" if self.json_batch else self.method
        # The path only: a query string may carry a token.
        path = self.url.split("?", 1)[0]
        return f"<{type(self).__name__} {method} {scheme}://{self.host}{path} ({level})>"
