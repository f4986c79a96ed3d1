"""SMTPSink against a real aiosmtpd server on 127.0.0.1, side by side with SMTPHandler."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import ssl
import sys
import textwrap
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks.sinks.smtp import SMTPSink
from tests.conftest import RecordingSinkMixin
from tests.peers.smtp import Mail, TLSMaterial, make_tls, smtp_peer


class RecordingSMTPSink(RecordingSinkMixin, SMTPSink):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors = []


def make_record(
    msg: str = "disk %s is full", *args: Any, level: int = logging.ERROR
) -> logging.LogRecord:
    if not args and msg == "disk %s is full":
        args = ("sda1",)
    return logging.LogRecord("app.db", level, "/srv/app.py", 42, msg, args, None)


@pytest.fixture(scope="module")
def tls() -> TLSMaterial:
    return make_tls()


def comparable(mail: Mail) -> dict[str, Any]:
    """Everything of a mail except the Date header (it is the send time)."""
    headers = [(k, v) for k, v in mail.message.items() if k.lower() != "date"]
    return {
        "mail_from": mail.mail_from,
        "rcpt_tos": mail.rcpt_tos,
        "headers": headers,
        "body": mail.body,
    }


async def test_same_mail_as_stdlib_smtphandler() -> None:
    async with smtp_peer() as peer:
        args = (
            ("127.0.0.1", peer.port),
            "app@example.com",
            ["ops@example.com", "dev@example.com"],
            "Trouble",
        )
        record = make_record()
        stdlib = logging.handlers.SMTPHandler(*args)
        stdlib.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        await asyncio.to_thread(stdlib.handle, record)
        async with SMTPSink(*args) as sink:
            sink.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            await sink.handle(record)
        theirs, ours = await peer.wait_for(2)
    assert comparable(ours) == comparable(theirs)
    assert ours.message["Subject"] == "Trouble"
    assert b"\r\nTo: ops@example.com,dev@example.com\r\n" in ours.content
    assert ours.body == "ERROR app.db: disk sda1 is full\n"
    assert ours.message["Date"]


async def test_a_line_starting_with_from_is_sent_as_smtplib_sends_it() -> None:
    # smtplib's generator writes ">From " (mbox readers would take "From " for the
    # start of a new mail); the bytes on the wire are the same, but for the Date
    async with smtp_peer() as peer:
        args = (("127.0.0.1", peer.port), "app@example.com", ["ops@example.com"], "Trouble")
        record = make_record("From the start\nFrom here\nnot From here", level=logging.ERROR)
        stdlib = logging.handlers.SMTPHandler(*args)
        await asyncio.to_thread(stdlib.handle, record)
        async with SMTPSink(*args) as sink:
            await sink.handle(record)
        theirs, ours = await peer.wait_for(2)

    def without_date(content: bytes) -> list[bytes]:
        return [line for line in content.split(b"\r\n") if not line.startswith(b"Date:")]

    assert without_date(ours.content) == without_date(theirs.content)
    assert b"\r\n>From the start\r\n>From here\r\nnot From here" in ours.content


async def test_plain_string_toaddrs_is_one_address() -> None:
    async with smtp_peer() as peer:
        async with SMTPSink(
            ("127.0.0.1", peer.port), "a@example.com", "ops@example.com", "s"
        ) as sink:
            assert sink.toaddrs == ["ops@example.com"]
            await sink.emit(make_record())
        (mail,) = await peer.wait_for(1)
    assert mail.rcpt_tos == ["ops@example.com"]


async def test_starttls_and_auth_deliver(tls: TLSMaterial) -> None:
    async with smtp_peer(tls_context=tls.server, accepted={("alice", "s3cret")}) as peer:
        host = ("127.0.0.1", peer.port)
        sink = RecordingSMTPSink(
            host,
            "a@example.com",
            ["b@example.com"],
            "s",
            credentials=("alice", "s3cret"),
            secure=(),
            context=tls.client,
        )
        async with sink:
            await sink.emit(make_record())
        (mail,) = await peer.wait_for(1)
    assert sink.errors == []
    assert peer.auth_attempts == [("alice", True)]
    assert mail.body.startswith("disk sda1 is full")


async def test_starttls_matches_stdlib(tls: TLSMaterial) -> None:
    async with smtp_peer(tls_context=tls.server, accepted={("alice", "s3cret")}) as peer:
        args = (("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "TLS")
        record = make_record()
        stdlib = logging.handlers.SMTPHandler(*args, credentials=("alice", "s3cret"), secure=())
        await asyncio.to_thread(stdlib.handle, record)
        async with SMTPSink(
            *args, credentials=("alice", "s3cret"), secure=(), context=tls.client
        ) as sink:
            await sink.emit(record)
        theirs, ours = await peer.wait_for(2)
    assert comparable(ours) == comparable(theirs)
    assert peer.auth_attempts == [("alice", True), ("alice", True)]


async def test_starttls_verifies_the_certificate_by_default(tls: TLSMaterial) -> None:
    async with smtp_peer(tls_context=tls.server, accepted={("alice", "s3cret")}) as peer:
        sink = RecordingSMTPSink(
            ("127.0.0.1", peer.port),
            "a@example.com",
            ["b@example.com"],
            "s",
            credentials=("alice", "s3cret"),
            secure=(),
        )
        async with sink:
            await sink.emit(make_record())
    assert len(sink.errors) == 1
    assert peer.mails == []


async def test_implicit_tls(tls: TLSMaterial) -> None:
    async with smtp_peer(tls_context=tls.server, implicit_tls=True) as peer:
        sink = RecordingSMTPSink(
            ("127.0.0.1", peer.port),
            "a@example.com",
            ["b@example.com"],
            "s",
            use_tls=True,
            context=tls.client,
        )
        async with sink:
            await sink.emit(make_record())
        (mail,) = await peer.wait_for(1)
    assert sink.errors == []
    assert mail.rcpt_tos == ["b@example.com"]


async def test_wrong_credentials_go_to_handle_error_then_recover(tls: TLSMaterial) -> None:
    async with smtp_peer(tls_context=tls.server, accepted={("alice", "right")}) as peer:
        sink = RecordingSMTPSink(
            ("127.0.0.1", peer.port),
            "a@example.com",
            ["b@example.com"],
            "s",
            credentials=("alice", "wrong"),
            secure=(),
            context=tls.client,
        )
        async with sink:
            await sink.emit_batch([make_record("first"), make_record("second")])
            assert [r.msg for r in sink.errors] == ["first", "second"]
            assert sink.error_count == 2
            peer.accepted.add(("alice", "wrong"))  # the server is fixed
            await sink.emit(make_record("third %s", "ok"))
        (mail,) = await peer.wait_for(1)
    assert mail.body == "third ok\n"
    assert "wrong" not in repr(sink)


async def test_unreachable_server_goes_to_handle_error() -> None:
    async with smtp_peer() as peer:
        port = peer.port
    sink = RecordingSMTPSink(("127.0.0.1", port), "a@example.com", ["b@example.com"], "s")
    async with sink:
        await sink.emit(make_record())
    assert len(sink.errors) == 1


async def test_crlf_in_subject_never_adds_a_header() -> None:
    class RecordSubject(SMTPSink):
        def getSubject(self, record: logging.LogRecord) -> str:
            return record.getMessage()

    async with smtp_peer() as peer:
        async with RecordSubject(
            ("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "s"
        ) as sink:
            await sink.emit(make_record("boom\r\nBcc: evil@example.com\nX-Evil: 1"))
            await sink.emit(make_record("next"))
        first, second = await peer.wait_for(2)
    assert first.message["Subject"] == "boom Bcc: evil@example.com X-Evil: 1"
    assert first.message["Bcc"] is None and first.message["X-Evil"] is None
    assert first.rcpt_tos == ["b@example.com"]
    assert second.body == "next\n"


async def test_crlf_in_address_is_refused_and_the_pipeline_goes_on() -> None:
    with pytest.raises(ValueError, match="toaddrs"):
        SMTPSink("localhost", "a@example.com", ["b@example.com\r\nBcc: evil@example.com"], "s")
    with pytest.raises(ValueError, match="fromaddr"):
        SMTPSink("localhost", "a@example.com\n", ["b@example.com"], "s")
    with pytest.raises(ValueError, match="subject"):
        SMTPSink("localhost", "a@example.com", ["b@example.com"], "s\r\nBcc: x")
    async with smtp_peer() as peer:
        sink = RecordingSMTPSink(("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "s")
        async with sink:
            sink.toaddrs = ["b@example.com\nBcc: evil@example.com"]
            await sink.emit(make_record("lost"))
            sink.toaddrs = ["b@example.com"]
            await sink.emit(make_record("kept"))
        (mail,) = await peer.wait_for(1)
    assert [r.msg for r in sink.errors] == ["lost"]
    assert mail.body == "kept\n"


def test_lists_from_a_json_dictconfig_are_taken_as_smtphandler_takes_them() -> None:
    # JSON and YAML write no tuple: dictConfig makes one of mailhost only (for
    # SMTPHandler's subclasses); SMTPHandler takes credentials and secure as lists too
    import logging.config

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "mail": {
                    "class": "aiologsinks.SMTPSink",
                    "mailhost": ["127.0.0.1", 2525],
                    "fromaddr": "a@example.com",
                    "toaddrs": ["b@example.com"],
                    "subject": "s",
                    "credentials": ["alice", "s3cret"],
                    "secure": [],
                }
            },
        }
    )
    sink = logging._handlers["mail"]  # type: ignore[attr-defined]
    try:
        assert (sink.mailhost, sink.mailport) == ("127.0.0.1", 2525)
        assert (sink.username, sink.secure) == ("alice", ())
    finally:
        sink.close()


@pytest.mark.parametrize("brk", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_every_line_break_the_email_package_splits_at_is_refused_in_an_address(
    brk: str,
) -> None:
    # accepted, each made every mail fail at delivery (a header may not hold one)
    with pytest.raises(ValueError, match=r"^toaddrs: "):
        SMTPSink("localhost", "a@example.com", [f"b{brk}@example.com"], "s")
    with pytest.raises(ValueError, match=r"^fromaddr: "):
        SMTPSink("localhost", f"a@example.com{brk}", ["b@example.com"], "s")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mailhost": ("h",)}, "mailhost"),
        ({"toaddrs": []}, "toaddrs"),
        ({"credentials": ("only-user",)}, "credentials"),
        ({"secure": ("k", "c", "x")}, "secure"),
        ({"timeout": 0}, "timeout"),
        ({"digest_interval": -1}, "digest_interval"),
        ({"digest_max": 0}, "digest_max"),
        ({"secure": ("key.pem",), "context": ssl.create_default_context()}, "secure"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs: dict[str, Any], match: str) -> None:
    # ValueError for a value of the right type, TypeError for a wrong type
    base: dict[str, Any] = {
        "mailhost": "localhost",
        "fromaddr": "a@example.com",
        "toaddrs": ["b@example.com"],
        "subject": "s",
    }
    with pytest.raises(ValueError, match=match):
        SMTPSink(**{**base, **kwargs})


async def test_digest_bounds_an_error_storm() -> None:
    async with smtp_peer() as peer:
        async with SMTPSink(
            ("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "Storm", digest_max=100
        ) as sink:
            for start in range(0, 1000, 50):  # batches as the dispatcher would hand them
                await sink.emit_batch(
                    [make_record("error %d", i) for i in range(start, start + 50)]
                )
        mails = await peer.wait_for(10)
    assert len(mails) == 10
    lines = [line for mail in mails for line in mail.body.splitlines()]
    assert lines == [f"error {i}" for i in range(1000)]
    assert mails[0].message["Subject"] == "Storm (100 records)"


async def test_a_digest_of_one_record_says_so_in_its_subject() -> None:
    # the same subject shape as every other digest, in the singular
    async with smtp_peer() as peer:
        async with SMTPSink(
            ("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "Storm", digest_max=2
        ) as sink:
            await sink.emit_batch([make_record("error %d", 0), make_record("error %d", 1)])
            await sink.emit_batch([make_record("error %d", 2)])
        first, second = await peer.wait_for(2)
    assert first.message["Subject"] == "Storm (2 records)"
    assert second.message["Subject"] == "Storm (1 record)"
    assert second.body.splitlines() == ["error 2"]


async def test_digest_window_sends_one_mail_after_the_window() -> None:
    async with smtp_peer() as peer:
        async with SMTPSink(
            ("127.0.0.1", peer.port),
            "a@example.com",
            ["b@example.com"],
            "Storm",
            digest_interval=0.2,
        ) as sink:
            for start in range(0, 1000, 100):
                await sink.emit_batch(
                    [make_record("error %d", i) for i in range(start, start + 100)]
                )
            assert peer.mails == []  # still inside the window
            (mail,) = await peer.wait_for(1)  # the timer sends it, no flush needed
        assert len(peer.mails) == 1
    assert mail.body.splitlines() == [f"error {i}" for i in range(1000)]


async def test_digest_flush_and_close_send_what_is_pending() -> None:
    async with smtp_peer() as peer:
        sink = SMTPSink(
            ("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "s", digest_interval=60
        )
        async with sink:
            await sink.emit(make_record("one"))
            await sink.flush()
            assert len(peer.mails) == 1
            await sink.emit(make_record("two"))
        mails = await peer.wait_for(2)
    assert [m.body for m in mails] == ["one\n", "two\n"]


async def test_end_to_end_through_install() -> None:
    async with smtp_peer() as peer:
        sink = SMTPSink(
            ("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "s", digest_max=500
        )
        logger = logging.getLogger("test.smtp.e2e")
        logger.propagate = False
        async with als.install(sink, logger=logger, level=logging.INFO) as dispatcher:
            for i in range(20):
                logger.error("failure %d", i)
            await dispatcher.flush()
            assert sum(len(m.body.splitlines()) for m in peer.mails) == 20
        logger.propagate = True
    assert [line for m in peer.mails for line in m.body.splitlines()] == [
        f"failure {i}" for i in range(20)
    ]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"toaddrs": None}, "toaddrs"),
        ({"toaddrs": [None]}, "toaddrs"),
        ({"fromaddr": None}, "fromaddr"),
        ({"subject": None}, "subject"),
        ({"mailhost": None}, "mailhost"),
        ({"mailhost": ("h", "25")}, "mailhost"),
        ({"timeout": "1"}, "timeout"),
        ({"credentials": "user:pw"}, "credentials"),
        ({"context": "ca.pem"}, "context"),
        ({"digest_max": 1.5}, "digest_max"),
    ],
)
def test_wrong_types_are_type_errors_naming_the_parameter(
    kwargs: dict[str, Any], param: str
) -> None:
    base: dict[str, Any] = {
        "mailhost": "localhost",
        "fromaddr": "a@example.com",
        "toaddrs": ["b@example.com"],
        "subject": "s",
    }
    with pytest.raises(TypeError, match=f"^{param}: ") as info:
        SMTPSink(**{**base, **kwargs})
    assert info.value.param == param  # type: ignore[attr-defined]
    assert "pw" not in str(info.value)


async def test_a_digest_cut_off_by_aclose_timeout_is_counted_once() -> None:
    # a server that accepts and never greets: the digest's send hangs; when the close
    # gives up on it, the records it held are lost, counted once, never silently
    from aiologsinks._stats import assert_accounted

    from ..helpers import attached, fresh_logger
    from ..peers.faulty import blackhole

    async with blackhole() as (host, port):
        sink = RecordingSMTPSink(
            (host, port), "a@example.com", ["b@example.com"], "s", timeout=30, digest_max=100
        )
        log = fresh_logger("t.smtp.digest.abandoned")
        with attached(log, sink) as dispatcher:
            for i in range(3):
                log.error("r%d", i)
            await dispatcher.aclose(timeout=0.3)
    stats = dispatcher.stats()
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors, share.undelivered) == (0, 3, 0)
    assert [r.getMessage() for r in sink.errors] == ["r0"]  # one report for the digest
    assert_accounted(stats, 3)


def gate_data(peer: Any, release: asyncio.Event) -> asyncio.Event:
    """Make ``peer`` hold each DATA until ``release`` is set; returns the event set
    when a DATA arrives."""
    entered = asyncio.Event()
    accept = peer.handle_DATA

    async def gated(server: Any, session: Any, envelope: Any) -> str:
        entered.set()
        await release.wait()
        return str(await accept(server, session, envelope))

    peer.handle_DATA = gated
    return entered


async def test_flush_waits_for_the_digest_the_timer_is_sending() -> None:
    # it returned at once: the timer had taken the records, so none were pending
    async with smtp_peer() as peer:
        release = asyncio.Event()
        entered = gate_data(peer, release)
        async with SMTPSink(
            ("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "s", digest_interval=0.01
        ) as sink:
            await sink.emit(make_record("one"))
            await asyncio.wait_for(entered.wait(), 5)  # the timer's digest is in DATA
            flush = asyncio.create_task(sink.flush())
            done, _ = await asyncio.wait({flush}, timeout=0.5)
            assert not done, "flush returned before the server accepted the digest"
            release.set()
            await asyncio.wait_for(flush, 5)
            assert [m.body for m in peer.mails] == ["one\n"]


def held_digests(peer: Any, **options: Any) -> tuple[asyncio.Event, RecordingSMTPSink]:
    """A digest sink (a window of 10 ms) whose server holds every DATA for good, and
    the event set when one arrives."""
    entered = gate_data(peer, asyncio.Event())  # never released
    sink = RecordingSMTPSink(
        ("127.0.0.1", peer.port),
        "a@example.com",
        ["b@example.com"],
        "s",
        timeout=30,
        digest_interval=0.01,
        **options,
    )
    return entered, sink


async def test_a_close_given_up_counts_the_digest_in_flight_when_it_returns() -> None:
    # the timer's digest hangs in DATA; aclose(timeout=...) gives up on it: its records
    # and the pending one are counted by the time aclose returns (they were counted
    # delivered, and lost only when the SMTP timeout fired, after the close)
    from aiologsinks._stats import assert_accounted

    from ..helpers import attached, fresh_logger

    async with smtp_peer() as peer:
        entered, sink = held_digests(peer)
        log = fresh_logger("t.smtp.digest.in_flight")
        with attached(log, sink) as dispatcher:
            log.error("one")
            log.error("two")
            await asyncio.wait_for(entered.wait(), 5)
            log.error("three")
            await dispatcher.aclose(timeout=0.3)
            stats = dispatcher.stats()
        assert peer.mails == []
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors, share.undelivered) == (0, 3, 0)
    assert_accounted(stats, 3)


async def test_a_close_given_up_counts_both_digests_when_a_second_waits_for_the_first() -> None:
    # the timer's digest hangs in DATA while the lane's, full at digest_max, waits for
    # the session: the second took the first's place as "the digest being sent", so
    # the close counted only the second, and the first was counted delivered
    from aiologsinks._stats import assert_accounted

    from ..helpers import attached, fresh_logger, wait_until

    async with smtp_peer() as peer:
        entered, sink = held_digests(peer, digest_max=3)
        log = fresh_logger("t.smtp.digest.two_in_flight")
        with attached(log, sink) as dispatcher:
            log.error("a0")
            await asyncio.wait_for(entered.wait(), 5)
            for i in range(3):
                log.error("b%d", i)
            # the lane took the second digest (it waits for the session)
            await wait_until(
                lambda: (
                    dispatcher.stats().sinks["RecordingSMTPSink#0"].received == 4
                    and not sink._pending
                )
            )
            await dispatcher.aclose(timeout=0.3)
            stats = dispatcher.stats()
        assert peer.mails == []
    (share,) = stats.sinks.values()
    assert (share.delivered, share.errors, share.undelivered) == (0, 4, 0)
    assert_accounted(stats, 4)


async def test_a_digests_count_is_of_the_records_in_its_body() -> None:
    # a record that cannot be formatted goes to handleError and is left out of the body
    async with smtp_peer() as peer:
        async with SMTPSink(
            ("127.0.0.1", peer.port), "a@example.com", ["b@example.com"], "Storm", digest_max=3
        ) as sink:
            sink.handleError = lambda record: None  # type: ignore[method-assign]
            await sink.emit_batch(
                [make_record("error %d", 0), make_record("bad %d", "x"), make_record("error %d", 2)]
            )
        (mail,) = await peer.wait_for(1)
    assert mail.body.splitlines() == ["error 0", "error 2"]
    assert mail.message["Subject"] == "Storm (2 records)"


EXITING_SCRIPT = """
import logging, sys
import aiologsinks as als

log = logging.getLogger("exiting")
log.propagate = False
mailhost = ("localhost", int(sys.argv[1]))
log.addHandler(als.SMTPSink(mailhost, "app@example.com", "ops@example.com", "Exit"))
for i in range(3):
    log.error("exiting %d", i)
"""


async def test_a_script_that_exits_at_once_mails_what_it_logged() -> None:
    """Mailed at exit, by the exit hook's close, to a host name: on Python
    3.12.0-3.12.2 its lookup needed a thread no one could start then, and every mail
    went to the fallback instead."""
    async with smtp_peer() as peer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(EXITING_SCRIPT),
            str(peer.port),
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()
        assert stderr == b""
        mails = await peer.wait_for(3)
    assert sorted(mail.body for mail in mails) == [f"exiting {i}\n" for i in range(3)]
