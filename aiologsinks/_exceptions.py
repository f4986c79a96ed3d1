"""Errors raised by aiologsinks.

The tree is shallow; each library error also inherits the builtin that callers
already catch, so ``except ConnectionError`` keeps working::

    AiologsinksError
    ├── DispatcherStateError (RuntimeError)   start/flush on a closed or unstarted pipeline
    ├── SinkConnectError (ConnectionError)    a network sink could not reach its peer
    ├── SinkDeliveryError (OSError)           a peer refused or failed a delivery
    └── RecordTooLargeError (ValueError)      a record does not fit the transport's unit

Constructor validation raises plain ``ValueError``/``TypeError`` naming the parameter,
as the stdlib does. Messages name the sink and the peer and never contain credentials.
"""

from __future__ import annotations

__all__ = [
    "AiologsinksError",
    "DispatcherStateError",
    "RecordTooLargeError",
    "SinkConnectError",
    "SinkDeliveryError",
]


class AiologsinksError(Exception):
    """Base class of every error aiologsinks raises itself."""


class DispatcherStateError(AiologsinksError, RuntimeError):
    """A dispatcher was used in a state that does not allow the operation."""


class SinkConnectError(AiologsinksError, ConnectionError):
    """A network sink could not connect to its peer.

    The sinks that buffer (sockets, syslog over TCP, HTTP, OTLP, Kafka) keep the records
    and try again with back-off; ``SMTPSink``, as ``SMTPHandler``, reports the records
    of the mail it could not send to ``handleError``.
    """


class SinkDeliveryError(AiologsinksError, OSError):
    """A peer accepted the connection but refused or failed the delivery."""


class RecordTooLargeError(AiologsinksError, ValueError):
    """A formatted record does not fit the transport's unit (e.g. one UDP datagram)."""
