"""aiologsinks: asyncio-native logging sinks.

A synchronous :class:`QueueHandler` shim puts records from any thread on a queue; a
:class:`Dispatcher` on the event loop fans them out to async sinks, each in its own
bounded lane. ``await dispatcher.flush()`` returns when everything logged before it
was delivered; :func:`install` wires it all to a logger for the life of an app.
"""

from __future__ import annotations

from . import config as config  # als.config.install_config(...), as the README shows
from ._dispatcher import Dispatcher, DispatcherStats, SinkStats, install
from ._exceptions import (
    AiologsinksError,
    DispatcherStateError,
    RecordTooLargeError,
    SinkConnectError,
    SinkDeliveryError,
)
from ._handler_sink import HandlerSink
from ._json import JSONFormatter
from ._shim import QueueHandler
from ._sink import Sink, SinkState
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

__all__ = [
    "AiologsinksError",
    "BaseRotatingSink",
    "BufferingSink",
    "DatagramSink",
    "Dispatcher",
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
    "gzip_namer",
    "gzip_rotator",
    "install",
]
