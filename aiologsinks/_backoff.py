"""The retry policy and the outage buffer shared by every network sink.

:class:`Backoff` is ``SocketHandler.createSocket``'s exponential back-off, made
reusable: the first failure waits ``retryStart`` seconds, each further failure
multiplies the wait by ``retryFactor`` up to ``retryMax``; a success resets it.

:class:`OutageBuffer` is the deliberate improvement over ``SocketHandler``: while a peer is
unreachable, records wait (bounded, oldest dropped first, every drop counted) and are
delivered in order once it comes back, instead of being dropped silently.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from ._validate import ArgumentValueError

__all__ = ["Backoff", "OutageBuffer", "RetryAttributes"]

T = TypeVar("T")


class Backoff:
    """Exponential back-off between connection attempts (``SocketHandler`` semantics).

    ``clock`` returns seconds (``time.monotonic`` by default); tests pass their own.
    """

    def __init__(
        self,
        retryStart: float = 1.0,
        retryFactor: float = 2.0,
        retryMax: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("retryStart", retryStart),
            ("retryFactor", retryFactor),
            ("retryMax", retryMax),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ArgumentValueError(
                    f"{name}", f"expected a non-negative number, got {value!r}"
                )
        self.retryStart = float(retryStart)
        self.retryFactor = float(retryFactor)
        self.retryMax = float(retryMax)
        self.clock = clock
        #: when the next attempt is allowed (``None``: at once), as ``retryTime``
        self.retryTime: float | None = None
        #: the current wait, as ``retryPeriod``
        self.retryPeriod: float = self.retryStart
        #: the waits chosen so far in this outage, for stats and tests
        self.attempts = 0

    def ready(self) -> bool:
        """True when an attempt may be made now."""
        return self.retryTime is None or self.clock() >= self.retryTime

    def delay(self) -> float:
        """Seconds until an attempt is allowed (0.0 when allowed now)."""
        if self.retryTime is None:
            return 0.0
        return max(0.0, self.retryTime - self.clock())

    def failed(self) -> float:
        """Record a failed attempt; return the wait before the next one."""
        if self.retryTime is None:
            self.retryPeriod = self.retryStart
        else:
            self.retryPeriod = min(self.retryPeriod * self.retryFactor, self.retryMax)
        self.retryTime = self.clock() + self.retryPeriod
        self.attempts += 1
        return self.retryPeriod

    def succeeded(self) -> None:
        """Record a successful attempt: the next failure starts from ``retryStart``."""
        self.retryTime = None
        self.retryPeriod = self.retryStart
        self.attempts = 0

    @property
    def in_outage(self) -> bool:
        """True between a failure and the next success."""
        return self.retryTime is not None


class OutageBuffer(Generic[T]):
    """A bounded FIFO of items waiting for a peer; overflow drops the oldest, counted."""

    def __init__(self, maxlen: int) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0:
            raise ArgumentValueError("buffer_size", f"expected an int >= 0, got {maxlen!r}")
        self.maxlen = maxlen
        self._items: deque[T] = deque()
        #: items dropped because the buffer was full (never reset)
        self.dropped = 0

    def extend(self, items: Iterable[T]) -> list[T]:
        """Append ``items``; return the items that were dropped to make room."""
        dropped: list[T] = []
        self._items.extend(items)
        while len(self._items) > self.maxlen:
            dropped.append(self._items.popleft())
        self.dropped += len(dropped)
        return dropped

    def appendleft_all(self, items: list[T]) -> list[T]:
        """Put ``items`` back at the front (they were taken but not delivered).

        When the buffer would overflow, the newest items are dropped (and returned)
        rather than the ones put back, so what is delivered stays in order.
        """
        self._items.extendleft(reversed(items))
        dropped: list[T] = []
        while len(self._items) > self.maxlen:
            dropped.append(self._items.pop())
        dropped.reverse()
        self.dropped += len(dropped)
        return dropped

    def take(self, n: int | None = None) -> list[T]:
        """Remove and return up to ``n`` items from the front (all when ``None``)."""
        if n is None or n >= len(self._items):
            items = list(self._items)
            self._items.clear()
            return items
        return [self._items.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)


class RetryAttributes:
    """``SocketHandler``'s ``retryStart``/``retryFactor``/``retryMax``/``retryTime``, kept in
    the sink's :class:`~aiologsinks._backoff.Backoff` (``self.backoff``)."""

    backoff: Backoff

    @property
    def retryStart(self) -> float:
        """Seconds to wait after the first failed connection attempt (1.0)."""
        return self.backoff.retryStart

    @retryStart.setter
    def retryStart(self, value: float) -> None:
        self.backoff.retryStart = float(value)

    @property
    def retryFactor(self) -> float:
        """Multiplier of the wait after each further failure (2.0)."""
        return self.backoff.retryFactor

    @retryFactor.setter
    def retryFactor(self, value: float) -> None:
        self.backoff.retryFactor = float(value)

    @property
    def retryMax(self) -> float:
        """Upper bound of the wait between attempts, in seconds (30.0)."""
        return self.backoff.retryMax

    @retryMax.setter
    def retryMax(self, value: float) -> None:
        self.backoff.retryMax = float(value)

    @property
    def retryTime(self) -> float | None:
        """When the next attempt is allowed (``None``: at once), as in ``SocketHandler``."""
        return self.backoff.retryTime
