"""Hostile records into every sink: nothing crashes, bad records are counted, good ones arrive.

Each test draws batches of records with ``hypothesis`` — messages with surrogates, NULs,
CR/LF, Unicode line separators, ``%`` placeholders that do or do not match, strings of
70 kB and 1.1 MB, and arguments/extras that are recursive, 5,000 levels deep,
unpicklable, slow to print, or whose ``__str__``/``__repr__`` raise — logs them through
the standard ``logging`` module into a Dispatcher that feeds one sink and a capture
sink, then logs a sentinel record. The stdlib is the oracle: the same record through
the stdlib handler (or its encoder) either fails or produces the expected output.

Figures per test: 15-25 examples of 1-12 records (up to ~300 records), 0 pipeline
crashes; for every record exactly one of "arrived as the stdlib would send it" or
"went to the sink's handleError", and ``stats()`` counts the same errors.
"""

from __future__ import annotations

import contextlib
import email.message
import email.policy
import io
import itertools
import json
import logging
import logging.handlers
import pickle
import re
import time
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiologsinks as als
from aiologsinks._record import prepared_copy
from aiologsinks.sinks.socket import MAX_UDP_PAYLOAD

from ..helpers import fresh_logger, started
from ..peers.http import HTTPPeer, http_peer
from ..peers.records import AsyncReceiver, StdlibReceiver
from ..peers.smtp import SMTPPeer, smtp_peer

# Reporting a failing example imports libcst, which warns on import; under
# filterwarnings=error that turns the failure into an INTERNALERROR that hides it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    with contextlib.suppress(ImportError):
        import hypothesis.extra._patching  # noqa: F401

# -- hostile objects ---------------------------------------------------------------------


class RaisingStr:
    """Both ``__str__`` and ``__repr__`` raise."""

    def __str__(self) -> str:
        raise ValueError("__str__ refuses")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ refuses")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("RaisingStr()")  # how hypothesis shows a failing example


class SlowStr:
    """Takes ~2 ms of CPU to print (no sleep: nothing blocks, it is just slow)."""

    def __str__(self) -> str:
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        return "slow"

    __repr__ = __str__


class Unpicklable:
    """Prints fine, cannot be pickled (a lock or a socket in an extra is the real case)."""

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle Unpicklable")

    def __str__(self) -> str:
        return "unpicklable"

    __repr__ = __str__


RECURSIVE_LIST: list[Any] = []
RECURSIVE_LIST.append(RECURSIVE_LIST)
RECURSIVE_DICT: dict[str, Any] = {}
RECURSIVE_DICT["self"] = RECURSIVE_DICT


class Deep(list):  # type: ignore[type-arg]
    """50,000 nested lists: printing or pickling it exceeds the recursion limit (3.13
    prints 5,000 levels happily)."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("DEEP")  # how hypothesis shows a failing example


DEEP: list[Any] = []
for _ in range(50_000):
    DEEP = [DEEP]
DEEP = Deep([DEEP])

HOSTILE = [RaisingStr(), SlowStr(), Unpicklable(), RECURSIVE_LIST, RECURSIVE_DICT, DEEP]

SNIPPETS = [
    "\ud800",
    "\udcff",
    "\x00",
    "\r\n",
    "\r",
    "\n",
    "\x85",
    "\u2028",
    "\x0b",
    "%s",
    "%(k)s",
    "%",
    "%d",
    "é",
    "\U0001f4a5",
    "\ufeff",
]

values = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.floats(),
    st.none(),
    st.binary(max_size=8),
    st.sampled_from(HOSTILE),
)


def messages(huge: Sequence[int] = (70_000, 1_100_000)) -> st.SearchStrategy[str]:
    return st.builds(
        lambda parts, n: "".join(parts) + "x" * n,
        st.lists(st.one_of(st.text(max_size=12), st.sampled_from(SNIPPETS)), max_size=6),
        st.sampled_from([0] * 8 + list(huge)),
    )


arguments = st.one_of(
    st.just(()),
    st.tuples(values),
    st.tuples(values, values),
    st.builds(lambda v: ({"k": v},), values),
)
extras = st.dictionaries(st.sampled_from(["x_a", "x_b", "ctx"]), values, max_size=2)


@dataclass
class Spec:
    msg: str
    args: tuple[Any, ...]
    extra: dict[str, Any]
    level: int

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # a failing example is shown with long messages cut short
        cut = self.msg if len(self.msg) <= 60 else f"{self.msg[:40]}...<{len(self.msg)} chars>"
        printer.text(f"Spec({cut!r}, ")
        printer.pretty(self.args)
        printer.text(", ")
        printer.pretty(self.extra)
        printer.text(f", {self.level})")


def batches_of(huge: Sequence[int] = (70_000, 1_100_000)) -> st.SearchStrategy[list[Spec]]:
    levels = st.sampled_from([logging.INFO, logging.ERROR])
    spec = st.builds(Spec, messages(huge), arguments, extras, levels)
    return st.lists(spec, min_size=1, max_size=12)


batches = batches_of()

FUZZ = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
FMT = logging.Formatter()

# -- the harness ----------------------------------------------------------------------------

S = TypeVar("S", bound=als.Sink)


def counting(cls: type[S]) -> type[S]:
    """``cls`` with a handleError that keeps the records instead of printing them."""

    class Counting(cls):  # type: ignore[valid-type,misc]
        def handleError(self, record: logging.LogRecord) -> None:
            self.bad.append(record)

    Counting.__name__ = cls.__name__
    return Counting


class Capture(als.Sink):
    """Keeps the prepared records exactly as the pipeline hands them over (no formatting)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        self.records.extend(records)


SENTINEL = "sentinel: the pipeline still delivers"


def make_records(batch: list[Spec]) -> list[logging.LogRecord]:
    """The records a logger makes for ``batch``, then the sentinel."""
    log = logging.getLogger("fuzz")
    out = []
    for spec in batch:
        # a 1-tuple holding a dict is logging's one-mapping-argument form
        record = log.makeRecord("fuzz", spec.level, "f.py", 1, spec.msg, spec.args, None)
        record.__dict__.update(spec.extra)
        out.append(record)
    out.append(log.makeRecord("fuzz", logging.INFO, "f.py", 1, SENTINEL, (), None))
    return out


async def run_through(sink: als.Sink, records: list[logging.LogRecord]) -> tuple[Any, Capture]:
    """Log ``records`` through the shim into ``sink`` (and a capture sink); close."""
    capture = Capture()
    log = fresh_logger("t.fuzz")
    dispatcher = started(log, sink, capture, batch_size=5)
    try:
        for record in records:
            log.handle(record)
        await dispatcher.flush()
        stats = dispatcher.stats()
    finally:
        log.removeHandler(dispatcher.handler)
        await dispatcher.aclose()
    assert stats.dropped == stats.after_close == 0
    assert len(capture.records) == len(records)  # the shim lost nothing
    return stats, capture


def check_counts(stats: Any, sink: Any, n_records: int, n_bad: int) -> None:
    """The sink saw every record; exactly ``n_bad`` went to handleError and stats()."""
    s = stats.sinks[type(sink).__name__ + "#0"]
    assert len(sink.bad) == n_bad
    assert s.errors == n_bad
    assert s.emitted == n_records - n_bad
    assert s.received == n_records and s.dropped == 0


def stdlib_bytes(handler_factory: Any, records: list[logging.LogRecord]) -> tuple[bytes, int]:
    """What a stdlib stream handler writes for ``records``, and how many failed."""
    buf = io.BytesIO()
    stream = io.TextIOWrapper(buf, encoding="utf-8", write_through=True)
    handler = handler_factory(stream)
    failed = []
    handler.handleError = failed.append
    for record in records:
        try:
            handler.handle(record)
        except RecursionError:  # the stdlib re-raises it (bpo-36272); we count it
            failed.append(record)
    data = buf.getvalue()
    stream.detach()
    return data, len(failed)


def stdlib_file_bytes(records: list[logging.LogRecord]) -> tuple[bytes, int]:
    return stdlib_bytes(logging.StreamHandler, records)


_counter = itertools.count()


# -- files and streams -------------------------------------------------------------------


@FUZZ
@given(batch=batches)
async def test_file_sink_writes_what_file_handler_writes(tmp_path: Path, batch: list[Spec]) -> None:
    records = make_records(batch)
    expected, n_bad = stdlib_file_bytes(records)
    path = tmp_path / f"f{next(_counter)}.log"
    sink = counting(als.FileSink)(path, encoding="utf-8")
    sink.bad = []
    stats, _ = await run_through(sink, records)
    assert path.read_bytes() == expected
    check_counts(stats, sink, len(records), n_bad)


@FUZZ
@given(batch=batches)
async def test_rotating_sink_loses_and_duplicates_nothing(
    tmp_path: Path, batch: list[Spec]
) -> None:
    records = make_records(batch)
    expected, n_bad = stdlib_file_bytes(records)
    folder = tmp_path / f"r{next(_counter)}"
    folder.mkdir()
    path = folder / "app.log"
    sink = counting(als.RotatingFileSink)(path, maxBytes=2000, backupCount=1000, encoding="utf-8")
    sink.bad = []
    stats, _ = await run_through(sink, records)
    backups = sorted(folder.glob("app.log.*"), key=lambda p: -int(p.suffix[1:]))
    assert b"".join(p.read_bytes() for p in [*backups, path]) == expected
    check_counts(stats, sink, len(records), n_bad)


@FUZZ
@given(batch=batches)
async def test_stream_sink_writes_what_stream_handler_writes(batch: list[Spec]) -> None:
    records = make_records(batch)
    expected, n_bad = stdlib_bytes(logging.StreamHandler, records)
    buf = io.BytesIO()
    stream = io.TextIOWrapper(buf, encoding="utf-8", write_through=True)
    sink = counting(als.StreamSink)(stream)
    sink.bad = []
    stats, _ = await run_through(sink, records)
    assert buf.getvalue() == expected
    stream.detach()
    check_counts(stats, sink, len(records), n_bad)


@FUZZ
@given(batch=batches)
async def test_memory_sink_hands_every_record_to_its_target(batch: list[Spec]) -> None:
    records = make_records(batch)
    expected, n_bad = stdlib_file_bytes(records)
    buf = io.BytesIO()
    stream = io.TextIOWrapper(buf, encoding="utf-8", write_through=True)
    target = counting(als.StreamSink)(stream)
    target.bad = []
    sink = counting(als.MemorySink)(3, target=target)
    sink.bad = []
    stats, _ = await run_through(sink, records)
    await target.aclose()
    assert buf.getvalue() == expected
    stream.detach()
    # the target reports its errors (once, to its own handleError); the MemorySink
    # counts them in stats() without reporting them again
    assert len(target.bad) == n_bad and sink.bad == []
    s = stats.sinks["MemorySink#0"]
    assert (s.received, s.errors, s.delivered) == (len(records), n_bad, len(records) - n_bad)


# -- sockets ---------------------------------------------------------------------------------


def stdlib_pickles(records: list[logging.LogRecord], limit: int | None = None) -> list[Any]:
    """The msg of each record ``SocketHandler.makePickle`` can encode (within ``limit``),
    once prepared as the shim prepares it: an unpicklable extra value becomes its repr
    (so, unlike behind a stdlib QueueHandler, such a record is still sent)."""
    handler = logging.handlers.SocketHandler("127.0.0.1", None)
    out: list[Any] = []
    for record in map(prepared_copy, records):
        try:
            frame = handler.makePickle(record)
        except Exception:
            continue
        if limit is None or len(frame) <= limit:
            out.append(pickle.loads(frame[4:])["msg"])
    handler.close()
    return out


@pytest.fixture
async def tcp_receiver() -> AsyncIterator[AsyncReceiver]:
    async with AsyncReceiver() as receiver:
        yield receiver


@FUZZ
@given(batch=batches)
async def test_socket_sink_sends_what_socket_handler_would(
    tcp_receiver: AsyncReceiver, batch: list[Spec]
) -> None:
    records = make_records(batch)
    expected = stdlib_pickles(records)
    tcp_receiver.records.clear()
    sink = counting(als.SocketSink)(*tcp_receiver.address)
    sink.bad = []
    stats, _ = await run_through(sink, records)
    got = await tcp_receiver.wait_for(len(expected))
    assert [r.msg for r in got] == expected
    check_counts(stats, sink, len(records), len(records) - len(expected))


@pytest.fixture
def udp_receiver() -> Any:
    with StdlibReceiver("udp") as receiver:
        yield receiver


@FUZZ
@given(batch=batches)
async def test_datagram_sink_sends_what_datagram_handler_would(
    udp_receiver: StdlibReceiver, batch: list[Spec]
) -> None:
    records = make_records(batch)
    expected = stdlib_pickles(records, limit=MAX_UDP_PAYLOAD)
    with udp_receiver._cond:
        udp_receiver.records.clear()
    sink = counting(als.DatagramSink)(*udp_receiver.address)
    sink.bad = []
    stats, _ = await run_through(sink, records)
    got = await udp_receiver.wait_for(len(expected))
    assert [r.msg for r in got] == expected
    check_counts(stats, sink, len(records), len(records) - len(expected))


# -- HTTP ---------------------------------------------------------------------------------------

#: aiohttp's server refuses bodies of 1 MiB and more (client_max_size) with 413
HTTP_MAX_BODY = 1024**2


def sent_dict(record: logging.LogRecord) -> dict[str, object]:
    """A record as HTTPSink's JSON batch sends it by default: its message merged (a
    capture handler gets the record with ``msg`` and ``args`` as the caller made them,
    and a form sends them so, as HTTPHandler does)."""
    d = dict(record.__dict__)
    if d.get("args"):
        try:
            d["msg"], d["args"] = d["msg"] % d["args"], None
        except Exception:
            pass  # sent unmerged
    return d


def form_oracle(records: list[logging.LogRecord]) -> list[str | None]:
    """Per prepared record: the msg HTTPHandler's POST would carry, None if it fails."""
    out: list[str | None] = []
    for record in (r.__dict__ for r in records):  # as the sink's form sends it
        try:
            body = urllib.parse.urlencode(record).encode("utf-8")
        except Exception:
            out.append(None)
            continue
        out.append(record["msg"] if len(body) < HTTP_MAX_BODY else None)  # type: ignore[arg-type]
    return out


@pytest.fixture
async def http() -> AsyncIterator[HTTPPeer]:
    async with http_peer() as peer:
        yield peer


@FUZZ
@given(batch=batches)
async def test_http_sink_posts_what_http_handler_would(http: HTTPPeer, batch: list[Spec]) -> None:
    records = make_records(batch)
    http.requests.clear()
    sink = counting(als.HTTPSink)(http.netloc, "/log", method="POST")
    sink.bad = []
    stats, capture = await run_through(sink, records)
    expected = [m for m in form_oracle(capture.records) if m is not None]
    got = [
        urllib.parse.parse_qs(r.body.decode(), keep_blank_values=True)["msg"][0] for r in http.ok
    ]
    assert got == expected
    check_counts(stats, sink, len(records), len(records) - len(expected))


def json_oracle(records: list[logging.LogRecord]) -> list[str]:
    out = []
    for record in map(sent_dict, records):
        try:
            json.dumps(record, default=str)
        except Exception:
            continue
        # what a JSON reader gets back: an escaped surrogate pair reads as one character
        out.append(json.loads(json.dumps(record["msg"])))
    return out


@FUZZ
@given(batch=batches_of(huge=(70_000,)))  # a batch of 1 MiB would be refused as a whole
async def test_http_json_batches_lose_only_the_bad_records(
    http: HTTPPeer, batch: list[Spec]
) -> None:
    records = make_records(batch)
    http.requests.clear()
    sink = counting(als.HTTPSink)(http.netloc, "/log", json_batch=True, gzip=True)
    sink.bad = []
    stats, capture = await run_through(sink, records)
    expected = json_oracle(capture.records)
    # the server has already undone the Content-Encoding: gzip
    got = [item["msg"] for r in http.ok for item in json.loads(r.body)]
    assert got == expected
    check_counts(stats, sink, len(records), len(records) - len(expected))


# -- SMTP ---------------------------------------------------------------------------------------


def mail_oracle(records: list[logging.LogRecord]) -> list[str]:
    """The body SMTPHandler would mail for each record it can build a mail for."""
    out = []
    for record in records:
        try:
            text = FMT.format(record)
            msg = email.message.EmailMessage()
            msg.set_content(text)
            msg.as_bytes(policy=email.policy.SMTP)
        except Exception:
            continue
        out.append(text)
    return out


def squash(text: str) -> str:
    # mail transport normalises line endings; compare what is left
    return re.sub(r"\s+", "", text)


@pytest.fixture
async def smtp() -> AsyncIterator[SMTPPeer]:
    async with smtp_peer() as peer:
        yield peer


@settings(FUZZ, max_examples=15)
@given(batch=batches)
async def test_smtp_sink_mails_what_smtp_handler_would(smtp: SMTPPeer, batch: list[Spec]) -> None:
    records = make_records(batch)
    expected = mail_oracle(records)
    smtp.mails.clear()
    sink = counting(als.SMTPSink)((smtp.host, smtp.port), "app@localhost", ["ops@localhost"], "s")
    sink.bad = []
    stats, _ = await run_through(sink, records)
    assert [squash(m.body) for m in smtp.mails] == [squash(t) for t in expected]
    check_counts(stats, sink, len(records), len(records) - len(expected))


def test_hostile_objects_are_hostile() -> None:
    """The fixtures do what they claim (so a passing fuzz run means something)."""
    for obj in (RaisingStr(), DEEP):
        with pytest.raises(Exception):
            str(obj)
    with pytest.raises(TypeError):
        pickle.dumps(Unpicklable())
    with pytest.raises(ValueError):
        json.dumps(RECURSIVE_DICT)
