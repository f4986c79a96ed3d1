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
    """Gives records times that cross milliseconds and seconds (and one before 1970)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def filter(self, record: logging.LogRecord) -> bool:
        # existing attributes only: the record stays a plain, frozen one
        self.n += 1
        record.created = -0.25 if self.n == 3 else 1_700_000_000.9985 + self.n * 0.00031
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
