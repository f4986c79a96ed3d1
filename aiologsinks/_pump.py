"""The pump: the dispatcher's task moving records from the shared queue to the lanes."""

from __future__ import annotations

import asyncio
import warnings
from asyncio.events import _get_running_loop
from typing import Any

from ._dispatch_state import DispatcherFields, DispatcherState
from ._lane import Lane
from ._queue import FlushMarker, Notice, notice
from ._record import Item, passing
from ._supervise import interrupt_deferred, spawn

__all__ = ["Pump"]


class Pump(DispatcherFields):
    """The dispatcher's pump task and the moves it makes (see :meth:`_pump`)."""

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _put_marker(self, marker: FlushMarker) -> None:
        self._queue.put_control(marker)
        self._wake_pending = True
        self._wake()

    async def _pump(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        queue = self._queue
        items = queue.items
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                # clear the flag before draining: a producer that appends after this
                # point sees it False and wakes us again
                self._wake_pending = False
                while items:
                    # take no more than every blocking lane has room for: the pump
                    # never holds records across an await, so each record is always
                    # in exactly one place (the queue or a lane) and counted there
                    room, full = self._room()
                    if full is not None:
                        await full.wait_for_room()
                        full.check_worker()
                        continue
                    n = min(len(items), room)
                    if queue.controls:
                        self._pump_each(n)
                    else:
                        self._pump_bulk(queue.take(n))
                    self._drained += n
                    if self._blocked:
                        with self._room_cv:
                            self._room_cv.notify_all()
                    if queue.unannounced:
                        self._announce_queue_drops()
                    if items:
                        # let the loop breathe between chunks of a long backlog
                        await asyncio.sleep(0)
        except GeneratorExit:
            # collected pending, its loop closed under it: that loop cannot run what
            # _abandoned() schedules (the dispatcher settled its records when it
            # found the loop closed)
            raise
        except BaseException:
            if self.state is DispatcherState.RUNNING:
                # cancelled without aclose() (e.g. asyncio.run() ended)
                self._abandoned()
            raise

    def _room(self) -> tuple[int, Lane | None]:
        """How many records every blocking lane can take now; the first full one."""
        room = self.batch_size
        for lane in self._lanes:
            if lane.overflow == "block" and not lane.dead:
                free = lane.size - lane.queue.depth
                if free <= 0:
                    return 0, lane
                if free < room:
                    room = free
        return room, None

    def _pump_bulk(self, chunk: list[Item]) -> None:
        """Move records (no markers among them) to every lane; blocking lanes have
        room (see _room), drop lanes apply their policy per record."""
        respect = self.respect_handler_level
        for lane in self._lanes:
            items = passing(chunk, lane.sink.level) if respect else chunk
            if not items or lane.put_many(items):
                continue
            for item in items:
                if not lane.put(item):
                    lane.force([item])  # pragma: no cover - _room() made room

    def _pump_each(self, n: int) -> None:
        """Move ``n`` queued items, flush markers among them, to the lanes: the records
        between two markers in bulk, each marker after the records before it."""
        # the shared queue holds no notices: its control items are flush markers
        chunk = self._queue.take(n, count=False)
        marks = [i for i, item in enumerate(chunk) if type(item) is FlushMarker]
        self._queue.controls -= len(marks)
        start = 0
        for pos in [*marks, len(chunk)]:
            if start < pos:
                self._pump_bulk(chunk[start:pos])
            if pos < len(chunk):
                marker = chunk[pos]
                assert type(marker) is FlushMarker
                for lane in self._lanes:
                    lane.put_marker(marker)
            start = pos + 1

    def _hand_over(self, records: list[Any]) -> None:
        """Give records to the lanes past their bounds (the loop is shutting down).

        Taken from the shared queue, the records are in no other place: interrupted
        (a second Ctrl-C as the loop ends), the lanes not reached yet count them as
        undelivered, to the fallback, rather than nobody."""
        lanes = self._lanes
        # a lane has the records once its count moved (it counts them first)
        counts = [lane.queue.received for lane in lanes]
        try:
            for lane in lanes:
                lane.force(self._for_lane(records, lane))
        except BaseException:
            for lane, count in zip(lanes, counts, strict=True):
                if lane.queue.received == count:
                    lane.refuse(self._for_lane(records, lane))
            raise

    def _for_lane(self, records: list[Any], lane: Lane) -> list[Any]:
        return passing(records, lane.sink.level) if self.respect_handler_level else records

    def _pass_markers(self, controls: list[FlushMarker | Notice]) -> None:
        for item in controls:
            if type(item) is FlushMarker:
                for lane in self._lanes:
                    lane.put_marker(item)

    def _announce_queue_drops(self) -> None:
        count, self._queue.unannounced = self._queue.unannounced, 0
        record = notice(
            "aiologsinks: %d record(s) dropped: the dispatcher queue was full (overflow=%s)",
            count,
            self._queue.overflow,
        )
        for lane in self._lanes:
            lane.put_notice(record)

    def _unstarted_at_loop_end(self) -> bool:
        """Running, with its pump ended: cancelled before its first step, which is
        what the loop's shutdown does to tasks created in the step that raised
        ``SystemExit`` or ``KeyboardInterrupt`` out of ``asyncio.run()``."""
        pump = self._pump_task
        return self.state is DispatcherState.RUNNING and pump is not None and pump.done()

    def _unstarted_here(self) -> bool:
        """Unstarted at its loop's end (see above), on that loop's thread, while it runs."""
        return self._unstarted_at_loop_end() and self._loop is _get_running_loop()

    def _begin_unstarted(self) -> None:
        """What the pump's and the lanes' own rescue would have done, had they run: the
        records to the lanes now, each lane's rescue in a task, and the end of them
        in another (``_late_delivery``), which the loop's end awaits (see the watch).
        On the loop's thread, while it runs (its shutdown, as a rule)."""
        pending = self._abandoned(warn=False)
        rescues = [task for lane in self._lanes if (task := lane.rescue_unstarted())]
        self._late_delivery = spawn(self._end_unstarted(rescues), "aiologsinks-late-delivery")
        # last: raised as an error (-W error), it must not stop the delivery begun
        self._warn_abandoned(pending, "delivering")

    async def _end_unstarted(self, rescues: list[asyncio.Task[None]]) -> None:
        if rescues:
            await asyncio.wait(rescues)  # each bounded by its lane's grace
        for lane in self._lanes:
            if lane._task is None or lane._task.done():
                lane.take_all()  # a lane that ran its rescue before the pump handed over

    async def _await_late_delivery(self, timeout: float | None) -> bool:
        """Wait at most ``timeout`` for the late delivery begun on this loop (it goes
        on, within each lane's grace); False when there is none here."""
        late = self._late_delivery
        if late is None or late.get_loop() is not asyncio.get_running_loop():
            return False
        if not late.done():
            await asyncio.wait([late], timeout=timeout)
        return True

    def _abandoned(self, warn: bool = True) -> int:
        """Hand what is queued to the lanes, past their bounds: each lane worker is
        being cancelled too, and on its way out it delivers its lane to its sink
        (within the grace period) and closes it. See Lane._rescue(). Returns how
        many records the lanes hold."""
        with interrupt_deferred():  # taken from the queue, they are nowhere else yet
            with self._lock:
                self._accepting = False
                records, controls = self._queue.drain()
            self.state = DispatcherState.CLOSED
            self._orphaned = "its event loop ended without aclose()"
            try:
                self._hand_over(records)
            finally:  # interrupted anyway (not the main thread): acknowledged all the same
                self._pass_markers(controls)
        pending = sum(lane.depth for lane in self._lanes)
        if warn:
            self._warn_abandoned(pending, "delivering")
        return pending

    def _warn_abandoned(self, pending: int, verb: str) -> None:
        warnings.warn(
            f"aiologsinks: {self!r} was not closed before its event loop stopped; "
            f"{verb} {pending} pending record(s) during shutdown (await aclose() "
            f"or use install() to flush and close deterministically)",
            ResourceWarning,
            stacklevel=1,
        )
