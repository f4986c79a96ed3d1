"""A real SMTP server (aiosmtpd) on the test's own loop, on 127.0.0.1, that keeps every mail.

aiosmtpd's ``Controller`` runs a second loop in a thread; here the ``SMTP`` protocol is
served by ``loop.create_server`` on the test's loop instead, so waiting for a mail is an
``asyncio.Condition`` and nothing crosses threads (the stdlib ``SMTPHandler`` that the
differential tests run in a worker thread talks to it over TCP like any client).

Optional STARTTLS (``tls_context``), implicit TLS (``implicit_tls``) and AUTH against a
mutable set of accepted ``(username, password)`` pairs, so a test can "fix" the server.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, cast

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ._waiting import wait_until


@dataclass
class Mail:
    """One captured mail: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    message: EmailMessage

    @property
    def body(self) -> str:
        # on the wire lines end in CRLF; compare text as Python writes it
        return cast(str, self.message.get_content()).replace("\r\n", "\n")


@dataclass
class SMTPPeer:
    """The running server: ``host``, ``port``, captured ``mails``, ``accepted`` logins."""

    host: str
    port: int
    accepted: set[tuple[str, str]] = field(default_factory=set)
    mails: list[Mail] = field(default_factory=list)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = cast(bytes, envelope.original_content or envelope.content)
        message = cast(EmailMessage, email.message_from_bytes(content, policy=email.policy.default))
        self.mails.append(
            Mail(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], content, message)
        )
        async with self._changed:
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = False
        user = ""
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode()
            ok = (user, auth_data.password.decode()) in self.accepted
        self.auth_attempts.append((user, ok))
        return AuthResult(success=ok, handled=False)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Mail]:
        """Wait until at least ``count`` mails arrived; return them all."""
        await wait_until(self._changed, lambda: len(self.mails) >= count, timeout)
        return self.mails


@dataclass
class TLSMaterial:
    """A throw-away CA with a certificate for 127.0.0.1, and contexts for both ends."""

    ca: trustme.CA
    server: ssl.SSLContext
    client: ssl.SSLContext


def make_tls() -> TLSMaterial:
    """Issue a self-signed CA and a server certificate for 127.0.0.1 / localhost."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TLSMaterial(ca, server, client)


@asynccontextmanager
async def smtp_peer(
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    accepted: set[tuple[str, str]] | None = None,
) -> AsyncIterator[SMTPPeer]:
    """Serve SMTP on 127.0.0.1 (a free port) until the block exits.

    ``tls_context`` enables STARTTLS (or, with ``implicit_tls``, TLS from the first
    byte); ``accepted`` enables AUTH (aiosmtpd only allows it over TLS).
    """
    loop = asyncio.get_running_loop()
    peer = SMTPPeer("127.0.0.1", 0, accepted=set(accepted or ()))

    def factory() -> SMTP:
        return SMTP(
            peer,
            hostname="localhost",
            tls_context=None if implicit_tls else tls_context,
            authenticator=peer.authenticate if accepted is not None else None,
            auth_require_tls=not implicit_tls,
            loop=loop,
        )

    server = await loop.create_server(
        factory, "127.0.0.1", 0, ssl=tls_context if implicit_tls else None
    )
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()
