"""aiologsinks: asyncio-native logging sinks.

A synchronous :class:`QueueHandler` shim puts records from any thread on a queue; a
:class:`Dispatcher` on the event loop fans them out to async sinks, each in its own
bounded lane. ``await dispatcher.flush()`` returns when everything logged before it
was delivered; :func:`install` wires it all to a logger for the life of an app.
"""

from __future__ import annotations

from ._exceptions import (
    AiologsinksError,
    DispatcherStateError,
    RecordTooLargeError,
    SinkConnectError,
    SinkDeliveryError,
)
from ._sink import Sink, SinkState
from .sinks.file import FileSink
from .sinks.stream import NullSink, StreamSink

__version__ = "0.1.0"

__all__ = [
    "AiologsinksError",
    "DispatcherStateError",
    "FileSink",
    "NullSink",
    "RecordTooLargeError",
    "Sink",
    "SinkConnectError",
    "SinkDeliveryError",
    "SinkState",
    "StreamSink",
]
