"""Security properties: header injection, TLS verification, credentials kept secret.

Figures: 22 injection payloads (CR, LF, CRLF, blank line, and every other character
``str.splitlines`` breaks on) in mail subjects and in HTTP record fields (GET, POST,
JSON): 0 injected headers, 0 lost mails or requests. TLS: a self-signed certificate
is refused by default by SMTP (STARTTLS and implicit TLS) and HTTPS (1 of 1 record to
handleError each), accepted when the user's context trusts the CA, refused on a host
name mismatch even then. Credentials: absent from repr, stats, every exception (and
its chain) a sink raised, the stderr of handleError, and every record logged during
the test; plain-HTTP credentials warn exactly once for 50 records.
"""

from __future__ import annotations

import base64
import logging
import ssl
import sys
import traceback
import urllib.parse
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

import aiologsinks as als
from aiologsinks import config
from aiologsinks.sinks.http import InsecureCredentialsWarning

from ..helpers import fresh_logger
from ..peers.http import http_peer
from ..peers.smtp import TLSMaterial, make_tls, smtp_peer

USER, SECRET = "alice", "s3cr3t-Pa55"
SECRETS = (SECRET, base64.b64encode(f"{USER}:{SECRET}".encode()).decode())

#: what a record may carry to try to start a header of its own
BREAKS = ["\r\n", "\n", "\r", "\r\n\r\n", "\n\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
BREAKS += ["\x85", "\u2028", "\u2029"]
PAYLOADS = [f"hello{b}X-Injected: yes" for b in BREAKS]
PAYLOADS += [f"hi{b}Bcc: evil@example.com" for b in ("\r\n", "\n", "\u2028")]
PAYLOADS += ["a\r\n\r\nX-Injected: body-smuggled", "\r\nX-Injected: leading", "trailing\r\n"]
PAYLOADS += ["%0d%0aX-Injected: encoded", "a\r\n X-Injected: folded", "a\x00\r\nX-Injected: nul"]
MAIL_HEADERS = {"from", "to", "subject", "date", "content-type", "content-transfer-encoding"}
MAIL_HEADERS |= {"mime-version"}


@pytest.fixture(scope="module")
def tls() -> TLSMaterial:
    return make_tls()


class Recording:
    """handleError keeps the exception and the record instead of printing them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed: list[tuple[logging.LogRecord, BaseException]] = []

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        assert exc is not None
        self.failed.append((record, exc))


class RecordingSMTPSink(Recording, als.SMTPSink):
    pass


class RecordingHTTPSink(Recording, als.HTTPSink):
    pass


class SubjectFromRecord(RecordingSMTPSink):
    """A subject built from record data, as alerting setups commonly do."""

    def getSubject(self, record: logging.LogRecord) -> str:
        return f"[app] {record.getMessage()}"


def explained(exc: BaseException) -> str:
    """Everything a user could ever see of ``exc``: traceback, chain, notes, args."""
    text = "".join(traceback.format_exception(exc))
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text += repr(exc.args)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return text


def assert_secret_free(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# -- header injection -----------------------------------------------------------------------


async def test_line_breaks_in_a_subject_never_add_a_header_nor_cost_the_mail() -> None:
    """22 subjects with line breaks: 22 mails, each with the same 7 headers, 0 errors."""
    async with smtp_peer() as peer:
        sink = SubjectFromRecord(("127.0.0.1", peer.port), "app@localhost", "ops@localhost", "s")
        log = fresh_logger("t.sec.subject")
        async with als.install(sink, logger=log) as dispatcher:
            for payload in PAYLOADS:
                log.error("%s", payload)
            await dispatcher.flush()
        mails = await peer.wait_for(len(PAYLOADS))
    assert sink.failed == []
    assert len(mails) == len(PAYLOADS)
    for mail, payload in zip(mails, PAYLOADS):
        assert {k.lower() for k in mail.message.keys()} == MAIL_HEADERS
        assert mail.rcpt_tos == ["ops@localhost"]
        subject = str(mail.message["Subject"])
        assert subject.splitlines() == [subject]
        assert subject.startswith("[app] ") and "X-Injected" not in mail.message
        assert b"\nX-Injected" not in mail.content.split(b"\r\n\r\n", 1)[0]
        assert payload.splitlines()[0] in subject or payload.startswith("\r\n")


async def test_line_breaks_in_an_address_never_reach_a_header() -> None:
    """An address set after construction with a line break: the record goes to
    handleError, the envelope is never sent, the next mail is delivered."""
    async with smtp_peer() as peer:
        sink = RecordingSMTPSink(("127.0.0.1", peer.port), "app@localhost", ["ops@localhost"], "s")
        log = fresh_logger("t.sec.addr")
        async with als.install(sink, logger=log) as dispatcher:
            for brk in ("\r\n", "\n", "\u2028"):
                sink.toaddrs = [f"ops@localhost{brk}Bcc: evil@example.com"]
                log.error("bad address")
                await dispatcher.flush()
            sink.toaddrs = ["ops@localhost"]
            log.error("good address")
            await dispatcher.flush()
        mails = await peer.wait_for(1)
    assert len(sink.failed) == 3
    assert [m.rcpt_tos for m in mails] == [["ops@localhost"]]
    assert "evil" not in mails[0].content.decode()


@pytest.mark.parametrize("mode", ["GET", "POST", "json"])
async def test_line_breaks_in_record_fields_never_reach_an_http_header(mode: str) -> None:
    """22 records whose message, an extra's value and an extra's name carry line
    breaks: 22 records arrive intact, 0 requests carry an X-Injected header."""
    async with http_peer() as peer:
        if mode == "json":
            sink = RecordingHTTPSink(peer.netloc, "/log", json_batch=True)
        else:
            sink = RecordingHTTPSink(peer.netloc, "/log", method=mode)
        log = fresh_logger("t.sec.http")
        async with als.install(sink, logger=log) as dispatcher:
            for payload in PAYLOADS:
                log.error(payload, extra={"ctx": payload, f"k{payload}": 1})
            await dispatcher.flush()
    assert sink.failed == []
    assert all("x-injected" not in {k.lower() for k in r.headers} for r in peer.requests)
    if mode == "json":
        import json

        got = [item["msg"] for r in peer.ok for item in json.loads(r.body)]
    else:
        bodies = [r.query if mode == "GET" else r.body.decode() for r in peer.ok]
        got = [urllib.parse.parse_qs(b, keep_blank_values=True)["msg"][0] for b in bodies]
    assert got == PAYLOADS


@pytest.mark.parametrize(
    ("host_suffix", "url"),
    [
        ("", "/log\r\nX-Injected: url"),
        ("\r\nX-Injected: host", "/log"),
        ("", "/log\nX-Injected: u"),
    ],
)
async def test_line_breaks_in_the_configured_url_or_host_never_reach_a_header(
    host_suffix: str, url: str
) -> None:
    """A misconfigured url/host: refused at construction or per record, never sent."""
    async with http_peer() as peer:
        try:
            sink = RecordingHTTPSink(peer.netloc + host_suffix, url, method="POST")
        except ValueError:
            return  # refused at construction: nothing can reach the wire
        log = fresh_logger("t.sec.url")
        async with als.install(sink, logger=log) as dispatcher:
            log.error("one")
            await dispatcher.flush()
            stats = dispatcher.stats()
    assert all("x-injected" not in {k.lower() for k in r.headers} for r in peer.requests)
    assert peer.requests == [] or all("\n" not in r.path for r in peer.requests)
    assert len(sink.failed) + len(peer.ok) == 1
    assert stats.sinks["RecordingHTTPSink#0"].errors == len(sink.failed)


# -- TLS --------------------------------------------------------------------------------------


def localhost_only() -> tuple[trustme.CA, ssl.SSLContext]:
    """A server certificate for ``localhost`` only (the sinks connect to 127.0.0.1)."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    return ca, server


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return client


def is_cert_error(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


async def deliver_one(sink: als.Sink) -> als.DispatcherStats:
    log = fresh_logger("t.sec.tls")
    async with als.install(sink, logger=log) as dispatcher:
        log.error("over tls")
        await dispatcher.flush()
        return dispatcher.stats()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
@pytest.mark.parametrize("trust", ["default", "trusted", "wrong-host"])
async def test_smtp_verifies_the_server_certificate(
    tls: TLSMaterial, implicit: bool, trust: str
) -> None:
    """A self-signed server: 1 record to handleError by default and on a host name
    mismatch, 1 mail when the user's context trusts the CA."""
    server, context = tls.server, None
    if trust == "trusted":
        context = tls.client
    elif trust == "wrong-host":
        ca, server = localhost_only()
        context = trusting(ca)
    async with smtp_peer(
        tls_context=server, implicit_tls=implicit, accepted={(USER, SECRET)}
    ) as peer:
        sink = RecordingSMTPSink(
            ("127.0.0.1", peer.port),
            "app@localhost",
            ["ops@localhost"],
            "s",
            credentials=(USER, SECRET),
            secure=None if implicit else (),
            use_tls=implicit,
            context=context,
        )
        stats = await deliver_one(sink)
    if trust == "trusted":
        assert sink.failed == [] and len(peer.mails) == 1
        return
    assert peer.mails == [] and peer.auth_attempts == []  # the password never left
    (_, exc), *_ = sink.failed
    assert is_cert_error(exc)
    assert stats.sinks["RecordingSMTPSink#0"].errors == 1
    assert_secret_free(explained(exc))


@pytest.mark.parametrize("trust", ["default", "trusted", "wrong-host", "system-only"])
async def test_https_verifies_the_server_certificate(tls: TLSMaterial, trust: str) -> None:
    """A self-signed server: refused by default, by a context that trusts only the
    system CAs, and on a host name mismatch; delivered when the context trusts it."""
    server, context = tls.server, None
    if trust == "trusted":
        context = tls.client
    elif trust == "system-only":
        context = ssl.create_default_context()
    elif trust == "wrong-host":
        ca, server = localhost_only()
        context = trusting(ca)
    async with http_peer(ssl_context=server) as peer:
        sink = RecordingHTTPSink(
            peer.netloc, "/log", "POST", secure=True, credentials=(USER, SECRET), context=context
        )
        stats = await deliver_one(sink)
    if trust == "trusted":
        assert sink.failed == [] and len(peer.ok) == 1
        return
    assert peer.requests == []
    (_, exc), *_ = sink.failed
    assert is_cert_error(exc)
    assert stats.sinks["RecordingHTTPSink#0"].errors == 1
    assert_secret_free(explained(exc))


# -- credentials ------------------------------------------------------------------------------


class KeepAll(logging.Handler):
    """Formats every record logged anywhere during a test (with exception text)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def everything_logged() -> Iterator[KeepAll]:
    root = logging.getLogger()
    keep = KeepAll()
    level = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    try:
        yield keep
    finally:
        root.removeHandler(keep)
        root.setLevel(level)


def assert_sink_secret_free(sink: Any, dispatcher: als.Dispatcher) -> None:
    assert_secret_free(repr(sink), str(sink), repr(dispatcher), repr(dispatcher.stats()))


async def test_smtp_credentials_stay_secret_on_every_failure(
    tls: TLSMaterial, capsys: pytest.CaptureFixture[str], everything_logged: KeepAll
) -> None:
    """Wrong password, server gone, certificate refused: 3 failures, each printed by
    the default handleError; the password appears nowhere."""
    async with smtp_peer(tls_context=tls.server, accepted={(USER, "other")}) as peer:
        port = peer.port
        sinks = [
            als.SMTPSink(  # wrong password
                ("127.0.0.1", port), "a@localhost", ["b@localhost"], "s",
                credentials=(USER, SECRET), secure=(), context=tls.client,
            ),
            als.SMTPSink(  # certificate not trusted
                ("127.0.0.1", port), "a@localhost", ["b@localhost"], "s",
                credentials=(USER, SECRET), secure=(),
            ),
        ]  # fmt: skip
        for sink in sinks:
            sink.setLevel(logging.ERROR)  # the peer's own DEBUG records must not mail
        async with als.install(*sinks, level=logging.DEBUG) as dispatcher:
            logging.getLogger("t.sec.cred").error("alert")
            await dispatcher.flush()
            for sink in sinks:
                assert_sink_secret_free(sink, dispatcher)
            stats = dispatcher.stats()
    gone = als.SMTPSink(
        ("127.0.0.1", port), "a@localhost", ["b@localhost"], "s", credentials=(USER, SECRET)
    )
    gone.setLevel(logging.ERROR)
    async with als.install(gone, level=logging.DEBUG) as dispatcher:
        logging.getLogger("t.sec.cred").error("alert")
        await dispatcher.flush()
        assert_sink_secret_free(gone, dispatcher)
        stats_gone = dispatcher.stats()
    assert sum(s.errors for s in stats.sinks.values()) + stats_gone.lost == 3
    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 3
    assert_secret_free(err, *everything_logged.texts)


async def test_http_credentials_stay_secret_on_every_failure(
    capsys: pytest.CaptureFixture[str], everything_logged: KeepAll
) -> None:
    """401, 500, connection refused and a timeout: 4 failures printed by the default
    handleError; the password and the Authorization value appear nowhere."""
    async with http_peer(statuses=[401, 500], delay=0.0) as peer:
        with pytest.warns(InsecureCredentialsWarning):
            sink = als.HTTPSink(peer.netloc, "/log?token=t0k3n", "GET", credentials=(USER, SECRET))
        sink.setLevel(logging.ERROR)  # the server's access log must not be posted back
        async with als.install(sink, level=logging.DEBUG) as dispatcher:
            log = logging.getLogger("t.sec.cred")
            log.error("unauthorised")
            log.error("server error")
            await dispatcher.flush()
            await peer.stop()
            log.error("refused")
            await dispatcher.flush()
            assert_sink_secret_free(sink, dispatcher)
            assert "t0k3n" not in repr(sink)
            stats = dispatcher.stats()
    assert stats.sinks["HTTPSink#0"].errors == 3
    err = capsys.readouterr().err
    # 401 and 500 are the requests' own failures; refused is an outage: one notice
    assert err.count("--- Logging error ---") == 2
    assert err.count("peer unreachable") == 1
    assert_secret_free(err, *everything_logged.texts)


def test_plain_http_credentials_warn_exactly_once() -> None:
    """One sink, 50 records sent over plain HTTP: 1 warning, at construction."""
    import asyncio

    async def main() -> tuple[list[warnings.WarningMessage], int]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with http_peer() as peer:
                sink = als.HTTPSink(peer.netloc, "/log", "POST", credentials=(USER, SECRET))
                log = fresh_logger("t.sec.warn")
                async with als.install(sink, logger=log) as dispatcher:
                    for i in range(50):
                        log.info("r %d", i)
                    await dispatcher.flush()
                delivered = len(peer.ok)
        return list(caught), delivered

    caught, delivered = asyncio.run(main())
    assert delivered == 50
    assert [w.category for w in caught] == [InsecureCredentialsWarning]
    assert_secret_free(str(caught[0].message))
    # secure=True never warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        als.HTTPSink("127.0.0.1:1", "/log", "POST", secure=True, credentials=(USER, SECRET))


@pytest.mark.parametrize(
    ("sink", "credentials"),
    [
        ("http", [USER, SECRET, "extra"]),
        ("http", {"user": SECRET}),
        ("smtp", SECRET),
        ("smtp", [USER, SECRET, "x"]),
    ],
)
def test_configuration_errors_never_echo_credentials(sink: str, credentials: Any) -> None:
    """A mistyped credentials entry is reported by key path, without its value."""
    params: dict[str, Any] = (
        {"type": "http", "host": "h", "url": "/", "secure": True}
        if sink == "http"
        else {
            "type": "smtp",
            "mailhost": ["127.0.0.1", 25],
            "fromaddr": "a@x",
            "toaddrs": ["b@x"],
            "subject": "s",
        }
    )
    params["credentials"] = credentials
    with pytest.raises(config.ConfigError, match=r"sinks\.a\.credentials") as info:
        config.from_dict({"sinks": {"a": params}})
    assert_secret_free(explained(info.value))
