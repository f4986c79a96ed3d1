"""aiologsinks: asyncio-native logging sinks.

A synchronous :class:`QueueHandler` shim puts records from any thread on a queue; a
:class:`Dispatcher` on the event loop fans them out to async sinks, each in its own
bounded lane. ``await dispatcher.flush()`` returns when everything logged before it
was delivered; :func:`install` wires it all to a logger for the life of an app.
"""

from __future__ import annotations

from . import _handler_entry as _handler_entry  # sinks used as logging.Handlers
from . import config as config  # als.config.install_config(...), as the README shows
from ._backoff import Backoff
from ._context import context
from ._dispatcher import Dispatcher, DispatcherState, DispatcherStats, Overflow, SinkStats
from ._exceptions import (
    AiologsinksError,
    DispatcherStateError,
    RecordTooLargeError,
    SinkConnectError,
    SinkDeliveryError,
)
from ._handler_sink import HandlerSink
from ._install import install
from ._json import JSONFormatter
from ._shim import QueueHandler
from ._sink import Sink, SinkState
from .config import ConfigError
from .sinks.file import FileSink, WatchedFileSink
from .sinks.http import HTTPSink, InsecureCredentialsWarning
from .sinks.kafka import KafkaSink
from .sinks.memory import BufferingSink, MemorySink
from .sinks.nteventlog import NTEventLogSink
from .sinks.otlp import OTLPSink
from .sinks.rotating import (
    BaseRotatingSink,
    RotatingFileSink,
    TimedRotatingFileSink,
    gzip_namer,
    gzip_rotator,
)
from .sinks.smtp import SMTPSink
from .sinks.socket import DatagramSink, SocketSink
from .sinks.stream import NullSink, StreamSink
from .sinks.syslog import RFC5424Formatter, SysLogSink

__version__ = "0.1.0"

# a type alias has no docstring of its own; it is public, so it gets one here
Overflow.__doc__ = (
    "What a full queue or lane does: 'block' (wait for room; the loop itself never "
    "waits), 'drop_oldest' or 'drop_newest' (drop and count)."
)

__all__ = [
    "AiologsinksError",
    "Backoff",
    "BaseRotatingSink",
    "BufferingSink",
    "ConfigError",
    "DatagramSink",
    "Dispatcher",
    "DispatcherState",
    "DispatcherStateError",
    "DispatcherStats",
    "FileSink",
    "HTTPSink",
    "HandlerSink",
    "InsecureCredentialsWarning",
    "JSONFormatter",
    "KafkaSink",
    "MemorySink",
    "NTEventLogSink",
    "NullSink",
    "OTLPSink",
    "Overflow",
    "QueueHandler",
    "RFC5424Formatter",
    "RecordTooLargeError",
    "RotatingFileSink",
    "SMTPSink",
    "Sink",
    "SinkConnectError",
    "SinkDeliveryError",
    "SinkState",
    "SinkStats",
    "SocketSink",
    "StreamSink",
    "SysLogSink",
    "TimedRotatingFileSink",
    "WatchedFileSink",
    "context",
    "gzip_namer",
    "gzip_rotator",
    "install",
]
