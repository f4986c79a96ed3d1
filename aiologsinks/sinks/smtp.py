"""SMTPSink: the async counterpart of ``logging.handlers.SMTPHandler`` over aiosmtplib."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING

from .. import _wire
from .._exceptions import SinkConnectError
from .._notices import is_notice
from .._sink import Sink, emit_one
from .._validate import (
    ArgumentTypeError,
    ArgumentValueError,
    check_instance,
    check_int,
    check_number,
    check_str,
    type_error,
    value_error,
)

if TYPE_CHECKING:
    import aiosmtplib

__all__ = ["SMTPSink"]

#: the port of implicit TLS ("submissions", RFC 8314), used when ``use_tls`` is set
SMTPS_PORT = 465


class SMTPSink(Sink):
    """Mail each record, as ``SMTPHandler`` does, without blocking the event loop.

    The parameters mean what they mean for ``SMTPHandler``: ``mailhost`` is a host or
    a ``(host, port)`` pair (port 25 by default); the mail goes from ``fromaddr`` to
    ``toaddrs`` (a list of addresses; a plain string is accepted as *one* address,
    as the newest stdlib does) with the subject :meth:`getSubject` returns, the same
    From, To (comma-joined), Subject and Date headers and the formatted record as the
    body. ``credentials`` is a ``(username, password)`` pair to log in with; when it
    is given and ``secure`` is a tuple — ``()``, ``(keyfile,)`` or
    ``(keyfile, certfile)`` — the connection is upgraded with STARTTLS first, with
    that client certificate. ``timeout`` bounds each SMTP operation, in seconds.

    Differences from the stdlib, all keyword-only and off by default:

    * ``use_tls=True`` speaks implicit TLS from the first byte (port 465 when
      ``mailhost`` names no port) instead of plain SMTP.
    * ``context``: the ``ssl.SSLContext`` for STARTTLS and implicit TLS. Without it,
      a default context is built off the loop, and it *verifies* the server's
      certificate and host name (the stdlib's ``starttls()`` does not verify).
    * Digest mode, so that an error storm does not become a mail storm:
      ``digest_interval`` (seconds) collects the records that arrive during that
      window after the first one into one mail; ``digest_max`` sends the digest as
      soon as it holds that many records. Either one alone enables it. A digest's
      subject is the first record's with the count: ``"App errors (12 records)"``,
      ``"App errors (1 record)"`` (see :meth:`get_digest_subject`).
      :meth:`flush` and :meth:`aclose` send what is pending.

    A record's mail is one connection's work; a batch of records shares one
    connection (one mail per record, or one digest). A CR/LF in ``subject`` or in an
    address is rejected here, at construction (an address changed later: at delivery,
    through :meth:`handleError`); one in a subject an overridden :meth:`getSubject`
    returns is folded into a space (never a new header). Credentials never appear in
    ``repr`` or error messages.
    """

    def __init__(
        self,
        mailhost: str | tuple[str, int],
        fromaddr: str,
        toaddrs: str | Sequence[str],
        subject: str,
        credentials: tuple[str, str] | None = None,
        secure: tuple[()] | tuple[str] | tuple[str, str] | None = None,
        timeout: float = 1.0,
        *,
        use_tls: bool = False,
        context: ssl.SSLContext | None = None,
        digest_interval: float | None = None,
        digest_max: int | None = None,
    ) -> None:
        super().__init__()
        # loaded by the first SMTPSink, not by `import aiologsinks`, nor on the loop
        import aiosmtplib  # noqa: F401

        if isinstance(mailhost, (list, tuple)):
            if len(mailhost) != 2:
                value_error("mailhost", "a host or (host, port)", mailhost)
            self.mailhost: str = check_str("mailhost", mailhost[0], nonempty=True)
            self.mailport: int | None = check_int("mailhost", mailhost[1], min=1, max=65535)
        elif isinstance(mailhost, str):
            self.mailhost, self.mailport = check_str("mailhost", mailhost, nonempty=True), None
        else:
            type_error("mailhost", "a host or (host, port)", mailhost)
        if isinstance(credentials, (list, tuple)):
            if len(credentials) != 2:
                raise ArgumentValueError("credentials", "expected a (username, password) pair")
            self.username: str | None = credentials[0]
            self.password: str | None = credentials[1]
        elif credentials is None:
            self.username = self.password = None
        else:
            # the value itself is never shown: it may hold the password
            raise ArgumentTypeError("credentials", "expected a (username, password) pair or None")
        self.fromaddr = _check_address("fromaddr", fromaddr)
        if isinstance(toaddrs, str):
            # The newest stdlib treats a plain string as one address; joining the
            # characters of "ops@example.com" with commas is never what was meant.
            toaddrs = [toaddrs]
        if not isinstance(toaddrs, (list, tuple)):
            type_error("toaddrs", "an address or a list of addresses", toaddrs)
        if not toaddrs:
            value_error("toaddrs", "a non-empty list of addresses", toaddrs)
        self.toaddrs: list[str] = [_check_address("toaddrs", a) for a in toaddrs]
        check_str("subject", subject)
        if "\r" in subject or "\n" in subject:
            raise ArgumentValueError("subject", "must not contain CR or LF")
        self.subject = subject
        if isinstance(secure, list):
            secure = tuple(secure)  # as a JSON or YAML configuration writes it (dictConfig)
        if secure is not None and (not isinstance(secure, tuple) or len(secure) > 2):
            value_error("secure", "None, (), (keyfile,) or (keyfile, certfile)", secure)
        if secure and context is not None:
            # smtplib.starttls() has the same rule: files or a context, not both.
            raise ArgumentValueError("secure", "key/cert files and context are mutually exclusive")
        self.secure = secure
        self.timeout = check_number("timeout", timeout, positive=True)
        self.use_tls = bool(use_tls)
        if context is not None:
            check_instance("context", context, ssl.SSLContext, "an ssl.SSLContext or None")
        self.context = context
        check_number("digest_interval", digest_interval, positive=True, none=True)
        check_int("digest_max", digest_max, min=1, none=True)
        self.digest_interval = digest_interval
        self.digest_max = digest_max
        self._pending: list[logging.LogRecord] = []
        #: the digests being sent or waiting for the session to send them (their
        #: records), until the server answered: the timer's and the lane's may both be
        self._sending: list[list[logging.LogRecord]] = []
        self._timer: asyncio.Task[None] | None = None
        # True once the digest timer's window is over and it sends: from then on
        # aclose() lets it finish its mail (before, it may cancel it: a timer not
        # started yet, or asleep), and flush() waits for that mail.
        self._timer_sending = False
        # Digest timer and lane worker may both want to send; one SMTP session at a time.
        self._send_lock: asyncio.Lock | None = None
        self._tls_context: ssl.SSLContext | None = None

    # -- hooks ---------------------------------------------------------------------------

    def getSubject(self, record: logging.LogRecord) -> str:
        """Return the subject of the mail for ``record``; override for a per-record one."""
        return self.subject

    def get_digest_subject(self, records: Sequence[logging.LogRecord]) -> str:
        """Return the subject of a digest mail: the first record's :meth:`getSubject`
        and the count, ``"App errors (12 records)"`` (``"(1 record)"`` for one)."""
        first = self.getSubject(records[0])
        count = len(records)
        return f"{first} ({count} record{'' if count == 1 else 's'})"

    def build_message(self, record: logging.LogRecord) -> EmailMessage:
        """Return the mail for ``record`` (the same one ``SMTPHandler`` builds)."""
        return _wire.mail_message(
            self.fromaddr, self.toaddrs, self.getSubject(record), self.format(record)
        )

    def build_digest(self, records: Sequence[logging.LogRecord]) -> EmailMessage:
        """Return one mail whose body is every record formatted, one after another.

        A record that cannot be formatted goes to :meth:`handleError` and is left out.
        """
        parts: list[str] = []
        written: list[logging.LogRecord] = []
        for record in records:
            try:
                parts.append(self.format(record))
            except Exception:  # noqa: BLE001 - per-record boundary: the digest goes on
                self.report_error(record)
            else:
                written.append(record)
        # the count is of the records in the body, the library's notices apart (as
        # stats() counts them)
        counted = [r for r in written if not is_notice(r)] or written or list(records)
        return _wire.mail_message(
            self.fromaddr, self.toaddrs, self.get_digest_subject(counted), "\n".join(parts)
        )

    @property
    def digest(self) -> bool:
        """True when digest mode is on (``digest_interval`` or ``digest_max`` given)."""
        return self.digest_interval is not None or self.digest_max is not None

    # -- delivery ------------------------------------------------------------------------

    async def emit(self, record: logging.LogRecord) -> None:
        """Mail one record (or add it to the pending digest)."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Mail each record over one connection, or add them to the digest.

        Returns when every mail was accepted by the server or its record went to
        :meth:`handleError`. In digest mode, returns once the records are pending
        (and sends the digest first when it reached ``digest_max``).
        """
        if not records:
            return
        if self.digest:
            self._take_over(len(records))  # sent in a digest or counted from here
            self._pending.extend(records)
            if self.digest_max is not None and len(self._pending) >= self.digest_max:
                await self._send_digest()
            elif self.digest_interval is not None:
                self._arm_timer()
            elif self.digest_max is None:  # pragma: no cover - digest implies one of them
                await self._send_digest()
            return
        mails: list[tuple[EmailMessage, Sequence[logging.LogRecord]]] = []
        for record in records:
            try:
                mails.append((self.build_message(record), (record,)))
            except Exception:  # noqa: BLE001 - per-record boundary: next record goes on
                self.report_error(record)
        await self._deliver(mails)

    async def flush(self) -> None:
        """Send the pending digest, if any; returns when the server accepted it (and
        the digest the timer is sending, if it is sending one)."""
        timer = self._timer
        if timer is not None and self._timer_sending:
            # its mail holds records logged before this flush (cancelling the flush
            # does not cancel the timer)
            await asyncio.wait({timer})
        await self._send_digest()

    async def _aclose(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            if not self._timer_sending:
                timer.cancel()
            try:
                # a timer that is already sending finishes its mail: never cut it off,
                # unless this close is given up (aclose(timeout=...))
                await asyncio.wait({timer})
            except asyncio.CancelledError:
                timer.cancel()
                self._give_up()
                raise
        await self._send_digest()

    def _give_up(self, digest: list[logging.LogRecord] | None = None) -> None:
        """Count the digests being sent (or only ``digest``, one whose send was
        cancelled) and the pending records as lost, now: the close was given up, and
        whether the server takes that mail is unknown."""
        if digest is None:
            sending, self._sending = self._sending, []
        else:
            sending = [digest]
            self._sending = [d for d in self._sending if d is not digest]
        records = [r for d in sending for r in d] + self._pending
        self._pending = []
        if records:
            self._report_lost(
                records, f"{self!r}: closed before a digest of {len(records)} record(s) was sent"
            )

    def _arm_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(
                self._digest_after_window(), name=f"{type(self).__name__} digest"
            )

    async def _digest_after_window(self) -> None:
        assert self.digest_interval is not None
        await asyncio.sleep(self.digest_interval)
        self._timer_sending = True
        try:
            await self._send_digest()
        finally:
            self._timer_sending = False

    async def _send_digest(self) -> None:
        while self._pending:
            chunk_size = self.digest_max or len(self._pending)
            records, self._pending = self._pending[:chunk_size], self._pending[chunk_size:]
            try:
                mail = self.build_digest(records)
            except Exception:  # noqa: BLE001 - per-mail boundary: later digests go on
                self.report_batch_error(records)
                continue
            self._sending.append(records)
            try:
                await self._deliver([(mail, records)])
            except asyncio.CancelledError:
                # aclose(timeout=...) gave up on the mail: whether the server took it
                # is unknown; it and the digests after it are counted as lost (unless
                # the close counted them already: see _give_up)
                if _holds(self._sending, records):
                    # its own and the pending ones: another digest in flight (the
                    # timer's, the lane's) is its sender's to count
                    self._give_up(records)
                raise
            finally:
                self._sending = [d for d in self._sending if d is not records]

    async def _deliver(self, mails: list[tuple[EmailMessage, Sequence[logging.LogRecord]]]) -> None:
        """Send ``mails`` over one connection; a failure goes to ``handleError``."""
        import aiosmtplib

        if not mails:
            return
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        async with self._send_lock:
            try:
                smtp = await self._connect()
            except Exception:  # noqa: BLE001 - per-batch boundary: the next batch retries
                for _, records in mails:
                    self.report_batch_error(records)
                return
            given_up = False
            try:
                for index, (mail, records) in enumerate(mails):
                    try:
                        # flattened as smtplib does (">From " lines), not as aiosmtplib would
                        flat, options = _wire.flatten_mail(mail)
                        await smtp.sendmail(self.fromaddr, self.toaddrs, flat, mail_options=options)
                    except aiosmtplib.SMTPServerDisconnected as exc:
                        reason = f"{self!r}: the SMTP server closed the connection"
                        for _, rest in mails[index:]:
                            self._report_lost(rest, reason, exc)
                        return
                    except Exception:  # noqa: BLE001 - per-mail boundary: next mail goes on
                        self.report_batch_error(records)
            except asyncio.CancelledError:
                # given up (a close that timed out): no QUIT to a server that may not
                # answer, which would keep this task past the close
                given_up = True
                smtp.close()
                raise
            finally:
                if not given_up:
                    await self._quit(smtp)

    async def _connect(self) -> aiosmtplib.SMTP:
        """Connect, STARTTLS and log in as ``SMTPHandler`` does; errors are mapped."""
        import aiosmtplib

        context = await self._get_tls_context()
        port = self.mailport or (SMTPS_PORT if self.use_tls else smtplib.SMTP_PORT)
        smtp = aiosmtplib.SMTP(
            hostname=self.mailhost,
            port=port,
            timeout=self.timeout,
            use_tls=self.use_tls,
            # As the stdlib: STARTTLS only when asked for, never opportunistically.
            start_tls=False,
            tls_context=context,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise SinkConnectError(
                f"{self!r}: cannot connect to {self.mailhost}:{port}: {exc}"
            ) from exc
        try:
            if self.username:
                if self.secure is not None and not self.use_tls:
                    await smtp.ehlo()
                    await smtp.starttls(tls_context=context)
                    await smtp.ehlo()
                await smtp.login(self.username, self.password or "")
        except BaseException:
            await self._quit(smtp)
            raise
        return smtp

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        import aiosmtplib

        if not smtp.is_connected:
            return
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            # The mails were handed over already; a failing QUIT loses nothing.
            smtp.close()

    async def _get_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context, built once off the loop (it reads CA and key files)."""
        if not self.use_tls and not (self.username and self.secure is not None):
            return None
        if self.context is not None:
            return self.context
        if self._tls_context is None:
            self._tls_context = await asyncio.to_thread(self._make_tls_context)
        return self._tls_context

    def _make_tls_context(self) -> ssl.SSLContext:
        """A verifying default context with the ``secure`` client certificate, if any."""
        context = ssl.create_default_context()
        if self.secure:
            keyfile = self.secure[0]
            certfile = self.secure[1] if len(self.secure) > 1 else None
            # (keyfile,) alone: the file holds both, as load_cert_chain allows.
            context.load_cert_chain(certfile or keyfile, keyfile)
        return context

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        port = f":{self.mailport}" if self.mailport else ""
        return f"<{type(self).__name__} {self.mailhost}{port} ({level})>"


def _holds(digests: list[list[logging.LogRecord]], records: list[logging.LogRecord]) -> bool:
    return any(d is records for d in digests)


def _check_address(param: str, value: object) -> str:
    # an address is never repaired: a mangled recipient is worse than no mail
    return _wire.check_address(param, check_str(param, value, nonempty=True))
