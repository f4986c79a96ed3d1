"""NTEventLogSink's logic on any system, against stand-ins for pywin32's modules.

The stand-ins are placed in ``sys.modules`` only for these tests; the stdlib
``NTEventLogHandler`` imports the same names, so the two can be run side by side and
their ``ReportEvent`` calls compared.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import aiologsinks as als
from aiologsinks.sinks.nteventlog import NTEventLogSink
from tests.conftest import RecordingSinkMixin

EVENTLOG_ERROR_TYPE, EVENTLOG_WARNING_TYPE, EVENTLOG_INFORMATION_TYPE = 1, 2, 4


class WinError(Exception):
    def __init__(self, winerror: int) -> None:
        super().__init__(f"winerror {winerror}")
        self.winerror = winerror


@dataclass
class FakeWin32:
    """What the stand-in pywin32 was asked to do, and on which thread."""

    registered: list[tuple[str, str, str]] = field(default_factory=list)
    events: list[tuple[str, int, int, int, list[str]]] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    register_error: Exception | None = None
    fail_text: str | None = None

    def AddSourceToRegistry(self, appname: str, dllname: str, logtype: str) -> None:
        self.threads.add(threading.get_ident())
        if self.register_error is not None:
            raise self.register_error
        self.registered.append((appname, dllname, logtype))

    def ReportEvent(
        self, appname: str, msg_id: int, cat: int, typ: int, strings: list[str]
    ) -> None:
        self.threads.add(threading.get_ident())
        if self.fail_text is not None and self.fail_text in strings[0]:
            raise WinError(1502)  # the event log file is full
        self.events.append((appname, msg_id, cat, typ, strings))


@pytest.fixture
def win32(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWin32]:
    fake = FakeWin32()
    welu = types.ModuleType("win32evtlogutil")
    welu.__file__ = "/py/site-packages/win32/lib/win32evtlogutil.py"
    welu.AddSourceToRegistry = fake.AddSourceToRegistry  # type: ignore[attr-defined]
    welu.ReportEvent = fake.ReportEvent  # type: ignore[attr-defined]
    evtlog = types.ModuleType("win32evtlog")
    evtlog.EVENTLOG_ERROR_TYPE = EVENTLOG_ERROR_TYPE  # type: ignore[attr-defined]
    evtlog.EVENTLOG_WARNING_TYPE = EVENTLOG_WARNING_TYPE  # type: ignore[attr-defined]
    evtlog.EVENTLOG_INFORMATION_TYPE = EVENTLOG_INFORMATION_TYPE  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "win32evtlogutil", welu)
    monkeypatch.setitem(sys.modules, "win32evtlog", evtlog)
    yield fake


def rec(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("app", level, __file__, 1, msg, None, None)


LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 25, 55]


async def test_same_events_as_the_stdlib_handler(win32: FakeWin32) -> None:
    stdlib = logging.handlers.NTEventLogHandler("MyApp")
    stdlib.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for i, level in enumerate(LEVELS):
        stdlib.handle(rec(f"m{i}", level))
    theirs_registered, theirs_events = list(win32.registered), list(win32.events)
    win32.registered.clear()
    win32.events.clear()
    win32.threads.clear()
    async with NTEventLogSink("MyApp") as sink:
        sink.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        await sink.emit_batch([rec(f"m{i}", level) for i, level in enumerate(LEVELS)])
    assert win32.registered == theirs_registered
    assert win32.registered == [
        ("MyApp", "/py/site-packages/win32/win32service.pyd", "Application")
    ]
    assert win32.events == theirs_events
    assert [e[3] for e in win32.events] == [4, 4, 2, 1, 1, 1, 1]
    assert threading.get_ident() not in win32.threads  # every win32 call ran off the loop


async def test_hooks_and_typemap_can_be_overridden(win32: FakeWin32) -> None:
    class Custom(NTEventLogSink):
        def getMessageID(self, record: logging.LogRecord) -> int:
            return 1000 + record.levelno

        def getEventCategory(self, record: logging.LogRecord) -> int:
            return 7

    sink = Custom("MyApp", dllname=r"C:\app\messages.dll", logtype="System")
    sink.typemap[25] = EVENTLOG_WARNING_TYPE
    await sink.emit(rec("notice", 25))
    await sink.aclose()
    assert win32.registered == [("MyApp", r"C:\app\messages.dll", "System")]
    assert win32.events == [("MyApp", 1025, 7, EVENTLOG_WARNING_TYPE, ["notice"])]


class RecordingNTSink(RecordingSinkMixin, NTEventLogSink):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.errors = []


async def test_access_denied_on_register_is_ignored(win32: FakeWin32) -> None:
    win32.register_error = WinError(5)
    sink = RecordingNTSink("MyApp")
    await sink.emit(rec("hello"))
    assert sink.errors == []
    assert [e[4] for e in win32.events] == [["hello"]]


async def test_other_register_errors_go_to_handle_error_and_are_retried(win32: FakeWin32) -> None:
    win32.register_error = WinError(1314)
    sink = RecordingNTSink("MyApp")
    await sink.aopen()  # never fatal
    await sink.emit_batch([rec("a"), rec("b")])
    assert [r.msg for r in sink.errors] == ["a", "b"]
    win32.register_error = None
    await sink.emit(rec("c"))
    assert [e[4] for e in win32.events] == [["c"]]


async def test_a_failing_report_does_not_stop_the_batch(win32: FakeWin32) -> None:
    win32.fail_text = "bad"
    sink = RecordingNTSink("MyApp")
    await sink.emit_batch([rec("one"), rec("bad one"), rec("three")])
    assert [r.msg for r in sink.errors] == ["bad one"]
    assert [e[4] for e in win32.events] == [["one"], ["three"]]
    assert sink.error_count == 1


async def test_end_to_end_through_install(win32: FakeWin32) -> None:
    logger = logging.getLogger("test.nteventlog.e2e")
    logger.propagate = False
    try:
        async with als.install(NTEventLogSink("MyApp"), logger=logger, level=logging.INFO):
            logger.warning("disk %s low", "C:")
    finally:
        logger.propagate = True
    assert win32.events == [("MyApp", 1, 0, EVENTLOG_WARNING_TYPE, ["disk C: low"])]


def test_without_pywin32_construction_says_what_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "win32evtlogutil", None)
    with pytest.raises(ImportError, match="needs Windows and the pywin32 package"):
        NTEventLogSink("MyApp")


def test_appname_is_checked(win32: FakeWin32) -> None:
    with pytest.raises(ValueError, match="appname"):
        NTEventLogSink("")
