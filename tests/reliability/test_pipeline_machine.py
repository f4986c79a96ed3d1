"""A state machine over the whole pipeline: the accounting invariant after every step.

Random interleavings of logging (on the loop thread and from foreign threads),
flush, sinks that are healthy, slow, failing or hanging (released later), the three
overflow policies with small bounds, and close (with records logged after it). After
every step, for every sink, ``sent == delivered + every counted loss``
(:func:`~aiologsinks._stats.assert_accounted`), and nothing hangs: each step is
bounded. Examples are few and small, so the whole machine runs in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import aiologsinks as als
from aiologsinks._stats import assert_accounted

from ..helpers import CaptureHandler, ListSink, fresh_logger

#: seconds any one step may take before it counts as a hang
STEP = 10.0


class SlowSink(ListSink):
    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await super().emit_batch(records)


class FailingSink(ListSink):
    """Fails every third batch outright, and every fifth record on its own."""

    calls = 0

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("batch failed")
        for record in records:
            if int(record.getMessage().split()[-1]) % 5 == 0:
                self.report_error(record)
            else:
                self.records.append(record)


class HangingSink(ListSink):
    """Hangs until released (a peer that stopped answering, then came back)."""

    def __init__(self) -> None:
        super().__init__()
        self.resume = threading.Event()  # not `release`: a Sink is a logging.Handler

    async def emit_batch(self, records: Sequence[logging.LogRecord]) -> None:
        while not self.resume.is_set():
            await asyncio.sleep(0.001)  # the fault: a sink that does not progress
        await super().emit_batch(records)


class Pipeline(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.logged = 0
        self.closed = False
        self.dispatcher: als.Dispatcher | None = None
        self.hanging: HangingSink | None = None
        self.log = fresh_logger("t.machine")

    @initialize(
        overflow=st.sampled_from(["block", "drop_oldest", "drop_newest"]),
        queue_size=st.integers(1, 8),
        lane_size=st.integers(1, 8),
        batch_size=st.integers(1, 5),
        with_hanging=st.booleans(),
    )
    def start(
        self, overflow: str, queue_size: int, lane_size: int, batch_size: int, with_hanging: bool
    ) -> None:
        sinks: list[als.Sink] = [ListSink(), SlowSink(), FailingSink()]
        lanes: dict[als.Sink, dict[str, object]] = {}
        if with_hanging:
            self.hanging = HangingSink()
            sinks.append(self.hanging)
            # a hung lane that blocks would (by design) hold the pump: it drops
            lanes[self.hanging] = {"overflow": "drop_oldest"}
        self.dispatcher = als.Dispatcher(
            *sinks,
            overflow=overflow,  # type: ignore[arg-type]
            queue_size=queue_size,
            lane_size=lane_size,
            batch_size=batch_size,
            lanes=lanes,  # type: ignore[arg-type]
            fallback=CaptureHandler(),
        )
        self.log.addHandler(self.dispatcher.handler)

        async def go() -> None:
            assert self.dispatcher is not None
            self.dispatcher.start()

        self.run(go())

    def run(self, coro: object) -> object:
        return self.loop.run_until_complete(asyncio.wait_for(coro, STEP))  # type: ignore[arg-type]

    def emit(self, n: int) -> None:
        for _ in range(n):
            self.log.info("rec %d", self.logged)
            self.logged += 1

    @rule(n=st.integers(1, 20))
    def log_on_the_loop(self, n: int) -> None:
        async def go() -> None:
            self.emit(n)
            await asyncio.sleep(0)

        self.run(go())

    @rule(n=st.integers(1, 20), threads=st.integers(1, 3))
    def log_from_threads(self, n: int, threads: int) -> None:
        lock = threading.Lock()

        def work() -> None:
            for _ in range(n):
                with lock:  # only to number the records; the shim takes no lock
                    i = self.logged
                    self.logged += 1
                self.log.info("rec %d", i)

        async def go() -> None:
            await asyncio.gather(*(asyncio.to_thread(work) for _ in range(threads)))

        self.run(go())

    @rule()
    def flush(self) -> None:
        assert self.dispatcher is not None
        hung = self.hanging is not None and not self.hanging.resume.is_set()

        async def go() -> None:
            assert self.dispatcher is not None
            try:
                await self.dispatcher.flush(timeout=0.05 if hung else None)
            except TimeoutError as exc:
                assert hung and "HangingSink" in str(exc)

        self.run(go())

    @rule()
    def release_the_hung_sink(self) -> None:
        if self.hanging is not None:
            self.hanging.resume.set()

    @rule()
    def close(self) -> None:
        assert self.dispatcher is not None

        async def go() -> None:
            assert self.dispatcher is not None
            await self.dispatcher.aclose(timeout=0.2)

        self.run(go())
        self.closed = True
        for s in self.dispatcher.stats().sinks.values():
            assert s.depth == 0, s

    @invariant()
    def every_record_is_accounted_for(self) -> None:
        if self.dispatcher is not None:
            assert_accounted(self.dispatcher.stats(), logged=self.logged)

    def teardown(self) -> None:
        try:
            if self.hanging is not None:
                self.hanging.resume.set()
            if self.dispatcher is not None:
                self.log.removeHandler(self.dispatcher.handler)
                self.run(self.dispatcher.aclose(timeout=1))
                assert_accounted(self.dispatcher.stats(), logged=self.logged)
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


Pipeline.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPipeline = Pipeline.TestCase
