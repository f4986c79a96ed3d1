"""The file sinks format frozen records themselves: the text is logging.Formatter's.

Through a real Dispatcher the stream and file sinks format the shim's frozen records
without building LogRecords. Each case logs the same records through the pipeline
and compares the file with what ``logging.Formatter.format`` makes of the prepared
records (what every other sink receives), byte for byte, errors included.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiologsinks as als

from ..helpers import fresh_logger

FORMATS = [
    (None, None),
    ("%(asctime)s %(levelname)s %(name)s: %(message)s", None),
    (
        "%(asctime)-30s|%(msecs)03d|%(levelno)d|%(relativeCreated).1f|%(process)d|%(threadName)s",
        None,
    ),
    ("100%% %(message)r %(args)s %(msg)s %(exc_info)s %(lineno)5d %(funcName)s", None),
    ("%(asctime)s [%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S %% %j"),
    ("%(asctime)s %(user)s %(message)s", None),  # an extra= key some records have
    ("%d %(message)s", None),  # a stray conversion: every record fails, in both
    ("%(message)s %(stack_info)s|%(exc_text)s", None),
    ("%(message)*s", None),
]


class Recorder(als.FileSink):
    failures: list[logging.LogRecord]

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures.append(record)


class Clock(logging.Filter):
    """Gives records times that cross milliseconds and seconds (and one before 1970,
    followed by one in 1970's first second)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def filter(self, record: logging.LogRecord) -> bool:
        # existing attributes only: the record stays a plain, frozen one
        self.n += 1
        early = {3: -0.25, 4: 0.3}
        record.created = early.get(self.n, 1_700_000_000.9985 + self.n * 0.00031)
        record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
        return True


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def log_everything(log: logging.Logger) -> None:
    for i in range(30):
        log.info("request %d took %.3f ms", i, 1.5)
    log.warning("größe ✓ %s", "ünïcode")
    log.info("no args, 100%% literal")
    log.info({"not": "a string"})
    log.info("bad %d", "x")
    log.info("bad %d", 7)  # the same template, now with values that fit
    log.info("%s and %s", "one")  # too few arguments
    log.info("%s", "one", "two")  # too many
    log.info("%s", "one")
    log.info("%s %s", "one", "two")  # one template, two argument counts
    log.info("%s %s", "one", "two", "three")
    log.info("width %*d|%-*s|100%%", 5, 42, 4, "ab")
    log.info("%(key)s", "not a mapping")
    log.info("bytes %r %s", b"\x00", None)
    log.info(BadStr())
    log.info("with user", extra={"user": "ann"})
    # as a receiver rebuilds a peer's record: a standard field of another type
    peer = {"name": log.name, "msg": "from a peer", "levelno": 20, "levelname": "INFO"}
    log.handle(logging.makeLogRecord({**peer, "lineno": None}))
    log.info("stack", stack_info=True)
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("failed %s", "job")
    for i in range(10):
        log.error("tail %d", i)


def expected(records: list[logging.LogRecord], formatter: logging.Formatter) -> tuple[str, int]:
    prepare = als.QueueHandler(als.Dispatcher()).prepare
    out, errors = [], 0
    for record in records:
        try:
            out.append(formatter.format(prepare(record)) + "\n")
        except Exception:
            errors += 1
    return "".join(out), errors


@pytest.mark.parametrize(("fmt", "datefmt"), FORMATS)
async def test_file_sink_writes_what_the_formatter_makes(
    tmp_path: Path, fmt: str | None, datefmt: str | None
) -> None:
    path = tmp_path / "app.log"
    sink = Recorder(path)
    sink.failures = []
    sink.setFormatter(logging.Formatter(fmt, datefmt))
    log = fresh_logger("t.frozen")
    log.addFilter(Clock())
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    log.addHandler(Capture())
    async with als.install(sink, logger=log, batch_size=7):
        log_everything(log)
    text, errors = expected(seen, logging.Formatter(fmt, datefmt))
    assert path.read_text(encoding="utf-8") == text
    assert len(sink.failures) == errors


async def test_a_filter_on_the_sink_still_sees_records(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = als.FileSink(path)
    sink.addFilter(lambda r: "keep" in r.getMessage())
    log = fresh_logger("t.frozen.filter")
    async with als.install(sink, logger=log):
        log.info("keep %d", 1)
        log.info("drop %d", 2)
    assert path.read_text() == "keep 1\n"


# each kind of call the compiled loop either formats or leaves to the Python one
CALLS: list[tuple[str, tuple[object, ...], dict[str, object]]] = [
    ("request %d took %.3f ms", (7, 1.5), {}),
    ("request %d took %.3f ms", (8,), {}),  # the same template, too few arguments
    ("user %s", ("ann",), {}),
    ("user %s", ("bob",), {"extra": {"user": "bob"}}),  # deferred arguments and extra=
    ("plain", (), {}),
    ("plain", (), {"extra": {"user": "eve"}}),  # extra= only
    ("bad %d", ("x",), {}),  # the % fails: the real formatter reports it
    ("mutable %s", ([1],), {}),  # merged at the call
    ("100%% %s", (None,), {}),
    ("stack", (), {"stack_info": True}),
]
#: (fmt, datefmt, default_msec_format, whether the milliseconds become a field)
FORMAT_SPECS = [
    ("%(asctime)s %(levelname)s %(name)s: %(message)s", None, "%s,%03d", True),
    ("%(asctime)s %(levelname)s %(message)s", None, "%s.%03d ms", True),
    ("%(asctime)s %(message)s|%(asctime)s", None, "%s,%03d", True),
    ("%(asctime)-26s %(message)s", None, "%s,%03d", False),  # padded: one string
    ("%(asctime)s %(message)s", None, "[%s] %03d", False),
    ("%(message)s|%(msecs)d|%(levelno)s %(relativeCreated)d", None, "%s,%03d", False),
    ("%(asctime)s [%(message)s]", "%H:%M:%S", "%s,%03d", False),
]


def frozen_batch(picks: list[tuple[int, int]]) -> list[object]:
    """Frozen records of ``picks`` (call, time stamp): records that share a time stamp
    share created and msecs, as records logged in one millisecond do."""
    from aiologsinks._record import freeze

    out: list[object] = []
    for call, stamp in picks:
        msg, args, kwargs = CALLS[call]
        record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
        record.created = 1_700_000_000.25 + stamp * 0.4
        record.msecs = float(int((record.created - int(record.created)) * 1000))
        for key, value in dict(kwargs.get("extra", {})).items():  # type: ignore[call-overload]
            setattr(record, key, value)
        if kwargs.get("stack_info"):
            record.stack_info = "Stack (most recent call last):\n  here"
        out.append(freeze(record))
    return out


@pytest.mark.parametrize(("fmt", "datefmt", "mfmt", "split"), FORMAT_SPECS)
@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, len(CALLS) - 1), st.integers(0, 4)), min_size=1, max_size=60
    )
)
def test_the_compiled_loop_formats_what_the_python_loop_does(
    fmt: str, datefmt: str | None, mfmt: str, split: bool, picks: list[tuple[int, int]]
) -> None:
    """Also where the milliseconds of a plain ``%(asctime)s`` are a field of their own
    (the format then changes once a second): records within one second, a few
    milliseconds apart, and across seconds."""
    from aiologsinks import _fastformat
    from aiologsinks._record import as_record

    spec = (fmt, "%(asctime)" in fmt, datefmt, "%Y-%m-%d %H:%M:%S", mfmt)
    formatter = logging.Formatter(fmt, datefmt)
    formatter.default_msec_format = mfmt
    items = frozen_batch(sorted(picks, key=lambda p: p[1]))  # time only goes forward

    def slow(item: object) -> str | None:
        try:
            return formatter.format(as_record(item)) + "\n"  # type: ignore[arg-type]
        except Exception:
            return None

    def lines(compiled: bool) -> list[str | None]:
        fast = _fastformat.FrozenFormat.compile(spec, "\n")
        assert fast is not None, f"{fmt!r} is not compiled"  # each spec here compiles
        assert fast._split is split
        saved = _fastformat._format_run
        assert saved is not None or not _fastformat.ACCELERATED
        if not compiled:
            _fastformat._format_run = None
        try:
            return fast.lines(list(items), slow)  # type: ignore[arg-type]
        finally:
            _fastformat._format_run = saved

    python = lines(compiled=False)
    assert python == [slow(item) for item in items]  # the oracle: logging.Formatter
    assert lines(compiled=True) == python
