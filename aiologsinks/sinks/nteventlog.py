"""NTEventLogSink: the async counterpart of ``logging.handlers.NTEventLogHandler``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .._sink import Sink, emit_one
from .._validate import ArgumentValueError

__all__ = ["NTEventLogSink"]

#: ``winerror`` of "access denied": adding an event source needs administrator rights,
#: and a source that already exists works without them (the stdlib ignores it too).
_ERROR_ACCESS_DENIED = 5


class NTEventLogSink(Sink):
    """Write records to the Windows event log through pywin32, off the event loop.

    As ``NTEventLogHandler``: ``appname`` is registered as an event source of
    ``logtype`` (``'Application'``, ``'System'`` or ``'Security'``) with the message
    DLL ``dllname`` (pywin32's ``win32service.pyd`` by default); each record is
    reported with :meth:`getMessageID`, :meth:`getEventCategory`,
    :meth:`getEventType` (through :attr:`typemap`) and the formatted message.

    pywin32 is imported when the sink is made; without it (on any system but
    Windows) construction raises ``ImportError`` saying so. The registry and event
    log calls block, so they run in a worker thread: the source is registered by
    :meth:`aopen` or before the first batch (not in ``__init__``, which may run on
    the loop), and a failure to register goes to :meth:`handleError` per record.
    """

    def __init__(
        self, appname: str, dllname: str | None = None, logtype: str = "Application"
    ) -> None:
        super().__init__()
        if not isinstance(appname, str) or not appname:
            raise ArgumentValueError("appname", f"expected a non-empty str, got {appname!r}")
        try:
            import win32evtlog
            import win32evtlogutil
        except ImportError as exc:
            raise ImportError(
                "NTEventLogSink needs Windows and the pywin32 package "
                "(win32evtlog and win32evtlogutil could not be imported)"
            ) from exc
        self.appname = appname
        self._welu: ModuleType = win32evtlogutil
        if not dllname:
            # The stdlib's default: win32service.pyd next to pywin32's win32 package.
            head = os.path.split(str(self._welu.__file__))[0]
            dllname = os.path.join(os.path.split(head)[0], "win32service.pyd")
        self.dllname = dllname
        self.logtype = logtype
        self.deftype: int = win32evtlog.EVENTLOG_ERROR_TYPE
        self.typemap: dict[int, int] = {
            logging.DEBUG: win32evtlog.EVENTLOG_INFORMATION_TYPE,
            logging.INFO: win32evtlog.EVENTLOG_INFORMATION_TYPE,
            logging.WARNING: win32evtlog.EVENTLOG_WARNING_TYPE,
            logging.ERROR: win32evtlog.EVENTLOG_ERROR_TYPE,
            logging.CRITICAL: win32evtlog.EVENTLOG_ERROR_TYPE,
        }
        self._registered = False

    # -- hooks (as NTEventLogHandler) ---------------------------------------------------

    def getMessageID(self, record: logging.LogRecord) -> int:
        """Return the message ID for ``record``: 1, the base ID in win32service.pyd."""
        return 1

    def getEventCategory(self, record: logging.LogRecord) -> int:
        """Return the event category for ``record``: 0; override for your own."""
        return 0

    def getEventType(self, record: logging.LogRecord) -> int:
        """Return the event type for ``record`` from :attr:`typemap` (else ``deftype``)."""
        return self.typemap.get(record.levelno, self.deftype)

    # -- delivery ------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Register the event source in a worker thread; a failure is retried later."""
        # aopen is never fatal: emit_batch registers again and reports a failure per record.
        with contextlib.suppress(Exception):
            await self._register()

    async def emit(self, record: logging.LogRecord) -> None:
        """Report one record (a batch of one)."""
        await emit_one(self, record)

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        """Report each record to the event log, all in one trip to a worker thread.

        The hooks and the formatter run on the loop; only pywin32 runs in the thread.
        Returns when every record was reported or went to :meth:`handleError`.
        """
        events: list[tuple[logging.LogRecord, int, int, int, str]]
        events, _ = self.contain_each(
            records,
            lambda record: (
                record,
                self.getMessageID(record),
                self.getEventCategory(record),
                self.getEventType(record),
                self.format(record),
            ),
        )
        if not events:
            return
        try:
            await self._register()
        except Exception:  # noqa: BLE001 - per-batch boundary: the next batch retries
            for event in events:
                self.report_error(event[0])
            return
        failures = await asyncio.to_thread(self._report_all, events)
        for record, exc in failures:
            try:
                raise exc
            except Exception:  # noqa: BLE001 - re-raised so handleError sees exc_info
                self.report_error(record)

    async def _register(self) -> None:
        if not self._registered:
            await asyncio.to_thread(self._register_blocking)
            self._registered = True

    def _register_blocking(self) -> None:
        try:
            self._welu.AddSourceToRegistry(self.appname, self.dllname, self.logtype)
        except Exception as exc:
            if getattr(exc, "winerror", None) != _ERROR_ACCESS_DENIED:
                raise

    def _report_all(
        self, events: Sequence[tuple[logging.LogRecord, int, int, int, str]]
    ) -> list[tuple[logging.LogRecord, Exception]]:
        """Worker thread: report each event; return the failures instead of raising."""
        failures: list[tuple[logging.LogRecord, Exception]] = []
        report: Any = self._welu.ReportEvent
        for record, msg_id, category, event_type, text in events:
            try:
                report(self.appname, msg_id, category, event_type, [text])
            except Exception as exc:  # noqa: BLE001 - per-record: handed back to the loop
                failures.append((record, exc))
        return failures

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self.appname} {self.logtype} ({level})>"
