"""The dispatcher's counters: snapshot types and the accounting invariant.

Every record a sink was sent ends in exactly one place, so for every sink::

    received == delivered + filtered + dropped + errors + undelivered + depth

and for the dispatcher, per sink that accepts every level::

    logged == received + queue drops + after_close + queue undelivered + queued

The library's own notices (drop announcements, outage notices) are not records here:
they are neither sent nor lost. :func:`assert_accounted` checks both equations.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DispatcherStats", "SinkStats", "assert_accounted"]


@dataclass(frozen=True)
class SinkStats:
    """Counters of one sink's lane (a snapshot)."""

    name: str
    #: records offered to the lane (after the sink's level)
    received: int
    #: records the sink accepted (a network sink may still give up on one later:
    #: then it is counted in ``errors`` and not in ``delivered``)
    emitted: int
    #: records the sink's filters rejected
    filtered: int
    #: records dropped because the lane was full
    dropped: int
    #: records that went to the sink's handleError (a failed delivery, a raising
    #: filter or formatter), whenever that happened; each record once
    errors: int
    #: records waiting in the lane now, or being delivered
    depth: int
    #: records the lane could not deliver at close (timeout, a hung sink, the loop
    #: ending), written to the fallback
    undelivered: int
    #: records delivered: ``emitted`` minus what the sink gave up on later
    delivered: int = 0
    #: operations of the sink (open, flush, close) that failed or were abandoned;
    #: not records, so not part of the accounting
    failed_operations: int = 0

    @property
    def lost(self) -> int:
        """Records of this sink that were not delivered (each counted once)."""
        return self.dropped + self.errors + self.undelivered


@dataclass(frozen=True)
class DispatcherStats:
    """A snapshot of a dispatcher's counters; ``sinks`` is keyed by sink name."""

    #: records waiting in the shared queue now
    queued: int
    #: records dropped because the shared queue was full
    dropped: int
    #: records that arrived after close (or after the loop was gone): sent to the fallback
    after_close: int
    sinks: dict[str, SinkStats]
    #: records still in the shared queue when close gave up: sent to the fallback
    undelivered: int = 0
    #: records the shim could not take (a malformed ``exc_info``, a record that cannot
    #: be copied): each went to the shim's ``handleError``, as QueueHandler's do
    rejected: int = 0

    @property
    def lost(self) -> int:
        """Every record that did not reach a sink it was meant for."""
        return (
            self.dropped
            + self.after_close
            + self.undelivered
            + self.rejected
            + sum(s.lost for s in self.sinks.values())
        )


def assert_accounted(stats: DispatcherStats, logged: int | None = None) -> None:
    """Assert the accounting invariant of ``stats`` (see the module docstring).

    With ``logged`` (records handed to the dispatcher's shim), also check that each
    sink's share adds up to it; pass it only when every sink accepts every level
    logged. Raises AssertionError naming the sink and the counters.
    """
    for name, s in stats.sinks.items():
        ended = s.delivered + s.filtered + s.dropped + s.errors + s.undelivered + s.depth
        if s.received != ended:
            raise AssertionError(
                f"sink {name}: received {s.received} != delivered {s.delivered} + filtered "
                f"{s.filtered} + dropped {s.dropped} + errors {s.errors} + undelivered "
                f"{s.undelivered} + depth {s.depth} (= {ended})"
            )
        if logged is not None:
            before = (
                stats.dropped
                + stats.after_close
                + stats.undelivered
                + stats.queued
                + stats.rejected
            )
            if logged != s.received + before:
                raise AssertionError(
                    f"sink {name}: logged {logged} != received {s.received} + queue drops "
                    f"{stats.dropped} + after close {stats.after_close} + queue undelivered "
                    f"{stats.undelivered} + queued {stats.queued} + rejected {stats.rejected} "
                    f"(= {s.received + before})"
                )
