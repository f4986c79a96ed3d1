"""HTTPSink: the async counterpart of ``logging.handlers.HTTPHandler``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _wire
from .._backoff import Backoff
from .._exceptions import SinkConnectError, SinkDeliveryError
from .._hooks import own_hook
from .._http import Disconnected, HTTPClient, check_target
from .._outbox import Failure, Outbox, OutboxSinkMixin, RetryableError
from .._record import ACCELERATED, FIELDS, Item, as_record, frozen_dict, travelled
from .._sink import Sink, emit_one
from .._transport import CLOSE_TIMEOUT, check_timeout, close_outbox_and_session, gzip_off_loop
from .._validate import ArgumentTypeError, ArgumentValueError, check_int, check_number

__all__ = ["HTTPSink", "InsecureCredentialsWarning"]

_FORM = "application/x-www-form-urlencoded"
#: records encoded between two yields to the loop in JSON batch mode (~1 ms of work)
_JSON_PIECE = 100
#: the JSON batch mode's default linger: at most ~20 POSTs a second under load
_LINGER = 0.05
#: the JSON batch mode's default bound on a request body, before compression: under
#: the 1 MiB that aiohttp's and nginx's servers accept by default
MAX_BATCH_BYTES = 1_000_000

if ACCELERATED:
    from .. import _speedups

    #: the compiled JSON encoding of common frozen records (see _speedups.c), or None
    _json_run: Any = getattr(_speedups, "json_run", None)
else:
    _json_run = None
#: what json.dumps writes before each standard field's value of a record's __dict__
_JSON_KEYS = tuple(("{" if i == 0 else ",") + json.dumps(k) + ":" for i, k in enumerate(FIELDS))
_encode_ascii = json.encoder.encode_basestring_ascii  # what json.dumps uses by default


class InsecureCredentialsWarning(UserWarning):
    """Credentials were given to a sink that sends them in clear text (plain HTTP)."""


#: seconds one request may take by default (the stdlib waits forever)
REQUEST_TIMEOUT = 10.0


class _ServerError(SinkDeliveryError, RetryableError):
    """A 5xx or 429 answer: the server may succeed later, so retry mode keeps the
    records (after ``Retry-After`` seconds when the answer says so)."""

    def __init__(self, message: str, status: int, *, retry_after: float | None = None) -> None:
        SinkDeliveryError.__init__(self, message)
        self.status = status
        self.retry_after = retry_after


class _TooLarge(SinkDeliveryError):
    """A 413 answer: the body was larger than the server takes."""


#: (records, their JSON objects joined by commas, whether one of them failed and was
#: reported) - a piece of a JSON batch body
_Piece = tuple[int, bytes, bool]

#: answers that say the server (or the one behind it) is down, not the request bad
_UNAVAILABLE = frozenset((429, 502, 503, 504))


def _classify_retrying(exc: BaseException) -> Failure:
    # retryable: the server could not be reached or failed (5xx), or asked to come
    # back later (429); permanent: it refused the request (4xx) or TLS failed
    if isinstance(exc, _ServerError):
        return Failure(True, exc.retry_after)
    return Failure(isinstance(exc, SinkConnectError))


def _classify_once(exc: BaseException) -> Failure:
    # without retry, a 500 is this request's failure (handleError, as a 4xx);
    # an unreachable or unavailable server is an outage (counted and noticed)
    if isinstance(exc, _ServerError):
        return Failure(exc.status in _UNAVAILABLE, exc.retry_after)
    return Failure(isinstance(exc, SinkConnectError))


class HTTPSink(OutboxSinkMixin, Sink):
    """Send each record to a web server, as ``HTTPHandler`` does, on one reused session.

    ``host`` (``"host"`` or ``"host:port"``, ``"[::1]:8080"``; a scheme, user info,
    a path or a query raises ``ValueError``), ``url``, ``method`` (``GET`` or
    ``POST``; anything else raises ``ValueError``), ``secure`` (HTTPS),
    ``credentials`` (``(userid, password)`` for Basic auth) and ``context`` (the
    ``ssl.SSLContext`` for HTTPS; only with ``secure=True``) mean what they mean for
    ``HTTPHandler``, and the request is the same: :meth:`mapLogRecord` url-encoded
    into the query (GET, appended with ``?`` or ``&``) or into an
    ``application/x-www-form-urlencoded`` body (POST), with the same
    ``Authorization`` header. As in the stdlib, :meth:`setFormatter` has no effect.
    Credentials over plain HTTP emit :class:`InsecureCredentialsWarning` once, when
    the sink is made; they never appear in ``repr`` or error messages.

    Requests go over kept-alive connections, reused from one request to the next and
    closed by :meth:`aclose`. As ``http.client`` does, the request carries ``Host``,
    ``Accept-Encoding: identity`` and ``Content-Length`` (with a body) besides its own
    headers, and nothing else.

    Differences from the stdlib:

    * A response with status 400 or above goes to :meth:`handleError` (the stdlib
      ignores the response, which loses records silently).
    * Keyword-only options, off by default: ``json_batch=True`` sends one POST per
      batch whose body is a JSON array of :meth:`mapLogRecord` dicts
      (``application/json``; values JSON cannot hold become strings), and
      ``gzip=True`` compresses it (``Content-Encoding: gzip``, level 1). ``retry=True``
      keeps records that failed with a connection error, a timeout, a 5xx or a 429
      answer in a buffer of ``buffer_size`` records (the oldest are dropped first,
      counted) and delivers them in order after a back-off (``backoff``, a
      :class:`~aiologsinks._backoff.Backoff`; 1 s doubling up to 30 s by default,
      longer when the server sends ``Retry-After``).
    * ``max_batch_bytes`` (``json_batch=True`` only, default 1,000,000) bounds each
      request body before compression: a backlog goes out in several POSTs, in
      order, each under the 1 MiB that aiohttp's and nginx's servers accept by
      default. A server that still answers 413 (Payload Too Large) to a body of more
      than one record gets it again in smaller requests, and the sink keeps the
      smaller bound. A record whose JSON alone exceeds ``max_batch_bytes`` goes to
      :meth:`handleError`.
    * ``linger`` (seconds; ``json_batch=True`` only, default 0.05) is how long the sink
      waits after a POST before the next one, so that a busy service sends a few
      large requests a second instead of one per round trip; ``flush()`` and
      ``aclose()`` do not wait for it (see :attr:`Sink.linger`). ``linger=0`` sends
      the next batch as soon as the last request returned.
    * ``timeout`` bounds each request, in seconds (default 10; the stdlib waits
      forever; None removes the bound). ``close_timeout`` (1 s) bounds what
      :meth:`aclose` spends on a last delivery: a request still running then is
      cancelled and its records are counted.
    * A server that cannot be reached is an outage, not the records' fault: its
      records are counted (``stats().errors``; with ``retry=True`` only what the
      buffer drops or still holds at close) and :meth:`report_outage` says so a
      few times (unreachable with the error, a summary every 30 s, reachable
      again), never once per record. Without ``retry`` each record is tried, but after
      a request that timed out the records logged while the back-off runs are counted
      at once, not tried (as ``SocketHandler`` does), so a server that never answers
      costs one ``timeout`` per back-off step, not one per record. A host name that
      does not resolve is looked up again only when the back-off allows.
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
        timeout: float | None = REQUEST_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
        linger: float | None = None,
        max_batch_bytes: int | None = None,
    ) -> None:
        super().__init__()
        _check_host(host)
        if not isinstance(url, str):
            raise ArgumentTypeError("url", f"expected a str, got {url!r}")
        problem = check_target(url)
        if problem is not None:
            raise ArgumentValueError("url", problem)
        if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
            raise ArgumentValueError("method", f"must be GET or POST, got {method!r}")
        if not secure and context is not None:
            raise ArgumentValueError("context", "only makes sense with secure=True")
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise ArgumentTypeError("context", "expected an ssl.SSLContext or None")
        if credentials is not None and (
            not isinstance(credentials, (tuple, list)) or len(credentials) != 2
        ):
            raise ArgumentValueError("credentials", "expected a (userid, password) pair")
        if gzip and not json_batch:
            raise ArgumentValueError("gzip", "only applies with json_batch=True")
        if linger is None:
            linger = _LINGER if json_batch else 0.0
        elif check_number("linger", linger) and not json_batch:
            raise ArgumentValueError("linger", "only applies with json_batch=True")
        #: seconds between two POSTs of a busy sink (see :attr:`Sink.linger`)
        self.linger = float(linger)
        if max_batch_bytes is None:
            max_batch_bytes = MAX_BATCH_BYTES
        elif not json_batch:
            raise ArgumentValueError("max_batch_bytes", "only applies with json_batch=True")
        #: the largest JSON batch body, in bytes before compression
        self.max_batch_bytes: int = check_int("max_batch_bytes", max_batch_bytes, min=64)
        # the bound in use: lowered when the server answers 413 to a smaller body
        self._body_limit = self.max_batch_bytes
        # encoded pieces of a backlog's front that did not fit in the last request:
        # (the first record they start at, the pieces); sent next, not encoded again
        # (a record that failed to encode must be reported once)
        self._carry: tuple[Item, list[_Piece]] | None = None
        timeout = None if timeout is None else check_timeout("timeout", timeout)
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
        #: seconds aclose() spends on a last delivery
        self.close_timeout = check_timeout("close_timeout", close_timeout)
        self.backoff = backoff if backoff is not None else Backoff()
        #: the retrying outbox: one request at a time, in order (records in retry mode
        #: wait in ``outbox.buffer``, bounded; without retry nothing waits)
        self.outbox: Outbox[Item] = Outbox(
            self._send,
            name=_safe_name(self),
            buffer_size=buffer_size,
            chunk_size=_ALL if self.json_batch else 1,
            backoff=self.backoff,
            retry=self.retry,
            classify=_classify_retrying if self.retry else _classify_once,
            on_lost=self._count_lost,
            on_failed=self._fail_all,
            notify=self._notice,
        )
        try:
            self._session: HTTPClient | None = HTTPClient(
                "https" if self.secure else "http",
                host,
                ssl_context=context,
                timeout=timeout,
            )
        except ValueError as exc:
            raise ArgumentValueError(
                "host", f"expected 'host' or 'host:port', got {_shown(host)!r}: {exc}"
            ) from None
        # a failed name resolution is remembered until the back-off allows a new one
        self._unresolved: SinkConnectError | None = None
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

    @property
    def buffer(self) -> list[logging.LogRecord]:
        """The records waiting for the server in retry mode (bounded; a snapshot)."""
        return [as_record(item) for item in self.outbox.buffer]

    # -- delivery ------------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Send one record (a batch of one)."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Send the records: one request each, or one JSON POST for them all.

        Returns when the server answered every request, or the records were
        counted (refused: through :meth:`handleError`; unreachable: as an outage).
        In retry mode, records that met an outage wait in :attr:`buffer` instead,
        and the retry task delivers them when the back-off allows.
        """
        if records:
            self._take_over(len(records))  # the outbox delivers or counts each from here
            # a dispatcher's frozen records stay frozen: JSON batches encode them as is
            items = travelled(records)
            await self.outbox.put(list(records) if items is None else items)

    async def flush(self) -> None:
        """In retry mode, try once more to deliver what waits (if the back-off allows)."""
        await self.outbox.flush()

    async def _aclose(self) -> None:
        """A last delivery within ``close_timeout`` seconds (a request still running is
        cancelled; what is left is counted), then the session is closed."""
        await close_outbox_and_session(self)

    async def _send(self, records: Sequence[Item]) -> int | None:
        """One request from the front of ``records`` (one record unless in JSON batch
        mode); returns how many it carried (None: all)."""
        if self.json_batch:
            return await self._send_json(records)
        (item,) = records
        headers: dict[str, str] = {}
        # the record's __dict__, as HTTPHandler sends it: msg and args apart
        data = _wire.http_form(self.mapLogRecord(as_record(item)))
        method, url, body = self.method, self.url, None
        if method == "GET":
            url = _wire.http_get_url(url, data)
        else:
            # Header names spelled, and ordered, as HTTPHandler writes them
            body = data.encode("utf-8")
            headers["Content-type"] = _FORM
            headers["Content-length"] = str(len(body))
        if self.credentials:
            headers["Authorization"] = _wire.basic_auth(self.credentials)
        await self._request(method, url, body, headers)
        return None

    async def _send_json(self, records: Sequence[Item]) -> int:
        """One POST of the longest front of ``records`` whose JSON array fits the body
        bound; returns how many records it consumed (sent, or reported as failing)."""
        pieces = await self._json_pieces(records)
        while True:
            n = sum(count for count, _, _ in pieces)
            if not any(piece for _, piece, _ in pieces):
                return n  # every record of the front failed to encode (each reported)
            body = _wire.json_array(piece for _, piece, _ in pieces)
            if n == 1 and len(body) > self.max_batch_bytes:
                try:
                    raise SinkDeliveryError(
                        f"{self!r}: a record of {len(body)} bytes exceeds "
                        f"max_batch_bytes={self.max_batch_bytes}"
                    )
                except SinkDeliveryError:
                    self.report_error(records[0])
                return 1
            try:
                await self._post_json(body)
            except _TooLarge:
                if n == 1:  # the server refuses this record on its own
                    self.report_error(records[0])
                    return 1
                # the server's bound is lower than ours: half this body, from now on
                self._body_limit = max(len(body) // 2, 64)
                pieces = self._fit(records, pieces)
                continue
            except BaseException:
                # not sent: a retry starts at the same record, with these pieces
                rest = self._carry[1] if self._carry is not None else []
                self._carry = (records[0], pieces + rest)
                raise
            return n

    async def _post_json(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        if self.gzip:
            body = await gzip_off_loop(body)
            headers["Content-Encoding"] = "gzip"
        if self.credentials:
            headers["Authorization"] = _wire.basic_auth(self.credentials)
        await self._request("POST", self.url, body, headers)

    async def _json_pieces(self, records: Sequence[Item]) -> list[_Piece]:
        """The encoded front of ``records`` that fits the body bound, in pieces of at
        most ``_JSON_PIECE`` records (the loop runs between two): what the last call
        encoded and could not send first, then records until the bound is reached (the
        piece that crosses it is kept by :meth:`_fit` for the next request)."""
        pieces: list[_Piece] = []
        carry, self._carry = self._carry, None
        if (
            carry is not None
            and records
            and records[0] is carry[0]
            and sum(count for count, _, _ in carry[1]) <= len(records)
        ):
            pieces = carry[1]
        limit = self._body_limit
        i = sum(count for count, _, _ in pieces)
        size = 2 + sum(len(piece) + 1 for _, piece, _ in pieces)
        while i < len(records) and size < limit:
            k = min(_JSON_PIECE, len(records) - i)
            if i:
                # as many as should fit by the size of those so far, with a margin, so
                # that the piece crossing the bound is a small one
                k = max(1, min(k, int(0.9 * (limit - size) * i / (size - 2))))
            errors = self.error_count
            piece = self._json_piece(records[i : i + k])
            pieces.append((k, piece, self.error_count != errors))
            size += len(piece) + 1
            i += k
            if i < len(records):
                # Encoding 1,000 records takes ~10 ms: let the loop run between pieces.
                await asyncio.sleep(0)
        return self._fit(records, pieces)

    def _fit(self, records: Sequence[Item], pieces: list[_Piece]) -> list[_Piece]:
        """The front of ``pieces`` within the body bound (at least one piece; the first
        split while it alone is over the bound and holds more than one record); the
        rest is kept for the next request."""
        limit = self._body_limit
        while pieces:
            count, piece, failed = pieces[0]
            if len(piece) + 2 <= limit or count == 1 or failed:
                # (a piece where a record failed is not encoded again: that record
                # would be reported twice; it goes as it is)
                break
            half = count // 2
            pieces[0:1] = [
                (half, self._json_piece(records[:half]), False),
                (count - half, self._json_piece(records[half:count]), False),
            ]
        size, keep = 2, 0
        for _, piece, _ in pieces:
            if keep and size + len(piece) + 1 > limit:
                break
            size += len(piece) + 1
            keep += 1
        if keep < len(pieces):
            start = sum(count for count, _, _ in pieces[:keep])
            rest = pieces[keep:]
            if self._carry is not None:  # encoded after them: it follows them
                rest += self._carry[1]
            self._carry = (records[start], rest)
        return pieces[:keep]

    def _own_mapping(self) -> bool:
        """Whether :meth:`mapLogRecord` is overridden (on the class or the instance)."""
        return own_hook(self, "mapLogRecord", HTTPSink.mapLogRecord)

    def _json_piece(self, items: Sequence[Item]) -> bytes:
        """Encode ``items`` (objects joined by commas); a record that cannot be mapped
        or encoded goes to handleError alone."""
        fast = _json_run
        if fast is None or self._own_mapping():
            return self._json_mapped(items)
        # the common frozen records in C, the same bytes as json.dumps of the
        # record's __dict__; the Python path takes each record it stops at
        items = list(items)
        out: list[bytes] = []
        i, n = 0, len(items)
        while i < n:
            i, chunk = fast(items, i, _JSON_KEYS, _encode_ascii)
            if chunk:
                out.append(chunk)
            if i < n:
                # the record it stopped at, and the LogRecords after it, in one go
                end = i + 1
                while end < n and type(items[end]) is not tuple:
                    end += 1
                piece = self._json_mapped(items[i:end])
                if piece:
                    out.append(piece)
                i = end
        return b",".join(out)

    def _json_mapped(self, items: Sequence[Item]) -> bytes:
        """Encode ``items`` through :meth:`mapLogRecord`; a record that fails goes to
        handleError alone."""
        mapped: list[tuple[Item, Mapping[str, Any]]] = []
        own = self._own_mapping()
        for item in items:
            try:
                # by default a frozen record is mapped without building a LogRecord
                # (report_error builds one for a record that fails)
                mapped.append(
                    (item, self.mapLogRecord(as_record(item)) if own else _sent_dict(item))
                )
            except Exception:  # noqa: BLE001 - per-record boundary: the batch goes on
                self.report_error(item)
        try:
            return _wire.json_items(mapping for _, mapping in mapped)
        except Exception:  # noqa: BLE001, S110 - a bad record: encode the piece one by one
            pass
        good = []
        for item, mapping in mapped:
            try:
                good.append(_wire.json_items((mapping,)))
            except Exception:  # noqa: BLE001 - per-record boundary: the batch goes on
                self.report_error(item)
        return b",".join(good)

    async def _request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> None:
        """Send one request; map transport errors once, here, without credentials."""
        unresolved = self._unresolved
        if unresolved is not None and not self.backoff.ready():
            raise SinkConnectError(f"{unresolved} (not retried before the back-off)")
        self._unresolved = None
        client = self._session
        if client is None:
            raise SinkConnectError(f"{self!r}: closed")
        client.timeout = self.timeout  # an attribute the user may have changed
        # Like http.client: identity encoding, no User-Agent or Accept of our own.
        headers = {"Accept-Encoding": "identity", **headers}
        try:
            # no redirects, as HTTPHandler: a 3xx answered this body (below), and
            # following it would send the records to a host nobody configured
            response = await client.request(method, url, headers, body)
        except ssl.SSLError as exc:
            # Not retryable: a certificate problem does not heal by waiting.
            raise SinkDeliveryError(f"{self!r}: TLS failure with {self.host}") from exc
        except Disconnected as exc:
            # (a kept-alive connection found closed was already tried again, fresh)
            raise SinkConnectError(f"{self!r}: {self.host} disconnected") from exc
        except (asyncio.TimeoutError, OSError) as exc:
            # refused, reset, timed out, a body cut short: the server is not there
            error = SinkConnectError(f"{self!r}: cannot reach {self.host}: {exc}")
            if _is_dns_failure(exc):
                self._unresolved = error
            raise error from exc
        status = response.status
        retry_after = _retry_after(response.headers.get("retry-after"))
        if status >= 500 or status == 429:
            raise _ServerError(
                f"{self!r}: {self.host} answered {status}", status, retry_after=retry_after
            )
        if status == 413:
            raise _TooLarge(f"{self!r}: {self.host} answered 413 (Payload Too Large)")
        if status >= 400:
            raise SinkDeliveryError(f"{self!r}: {self.host} answered {status}")
        if status >= 300:
            raise SinkDeliveryError(
                f"{self!r}: {self.host} answered {status} (a redirect: not followed;"
                " configure the URL it points to)"
            )

    def _fail_all(self, records: Sequence[Item], exc: BaseException | None = None) -> None:
        # One traceback per refused request, but every record is counted as lost.
        self.report_batch_error([as_record(item) for item in records])

    def _notice(self, message: str) -> None:
        self.report_outage(message)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        scheme = "https" if self.secure else "http"
        method = "POST" if self.json_batch else self.method
        # The path only: a query string may carry a token.
        path = self.url.split("?", 1)[0]
        return f"<{type(self).__name__} {method} {scheme}://{self.host}{path} ({level})>"


def _shown(host: str) -> str:
    # what an error may quote of a bad host: anything before an "@" may be a password
    if "@" not in host:
        return host
    scheme, sep, rest = host.rpartition("://")
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"


def _check_host(host: object) -> None:
    """Raise ArgumentValueError unless ``host`` is ``"host"`` or ``"host:port"``.

    ``HTTPHandler`` takes nothing more: a scheme, user info, a path, a query or a
    fragment would be dropped or misread, so each is refused here with where it
    belongs instead (``secure``, ``credentials``, ``url``); the message never quotes
    what precedes an ``@``.
    """
    if not isinstance(host, str):
        raise ArgumentTypeError("host", f"expected a str 'host' or 'host:port', got {host!r}")
    shown = _shown(host)
    if not host:
        raise ArgumentValueError("host", "expected 'host' or 'host:port', got ''")
    if "://" in host:
        raise ArgumentValueError(
            "host",
            f"expected 'host' or 'host:port', not a URL, got {shown!r}"
            " (secure=True selects https; the path goes in url)",
        )
    if "@" in host:
        raise ArgumentValueError(
            "host",
            f"expected 'host' or 'host:port' without user info, got {shown!r}"
            " (pass credentials=(userid, password) instead)",
        )
    if any(c in host for c in "/?#"):
        raise ArgumentValueError(
            "host",
            f"expected 'host' or 'host:port' without a path, query or fragment, got {shown!r}"
            " (they go in url)",
        )
    if not host.isprintable() or any(c.isspace() for c in host):
        raise ArgumentValueError(
            "host", f"expected 'host' or 'host:port' without spaces or controls, got {shown!r}"
        )
    if host.count(":") > 1 and not host.startswith("["):
        raise ArgumentValueError(
            "host", f"expected an IPv6 address in brackets ('[::1]:8080'), got {shown!r}"
        )
    # after an IPv6 literal's closing bracket, if any
    _, colon, port = host.rpartition("]")[2].rpartition(":")
    if colon and port and (not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536):
        raise ArgumentValueError(
            "host", f"expected a port from 1 to 65535 after the colon, got {shown!r}"
        )


#: the JSON batch mode sends everything that waits in one request
_ALL = 1 << 30


def _safe_name(sink: HTTPSink) -> str:
    # the name the outage notices carry: scheme, host and path, never a query or
    # credentials (a token may be in either)
    scheme = "https" if sink.secure else "http"
    return f"<{type(sink).__name__} {scheme}://{sink.host}{sink.url.split('?', 1)[0]}>"


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header given in seconds (a date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _is_dns_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a failed name resolution."""
    import socket

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sent_dict(item: Item) -> Mapping[str, Any]:
    """A JSON batch's object for ``item`` by default: the record's ``__dict__`` with
    ``msg % args`` merged and ``args`` None, as ``json_run`` writes a frozen record
    (JSON is not HTTPHandler's format: the message a receiver wants; a
    ``mapLogRecord`` override gets the record as the caller made it). Kept unmerged
    when the message does not merge."""
    if type(item) is tuple:
        return frozen_dict(item)
    record: Any = item
    d: dict[str, Any] = record.__dict__
    if d.get("args"):
        with contextlib.suppress(Exception):  # kept unmerged, as frozen_dict keeps it
            d = {**d, "msg": record.getMessage(), "args": None}
    return d
