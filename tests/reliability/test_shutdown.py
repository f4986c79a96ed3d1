"""Shutdown under pressure: timeouts, cancellation, and a loop that ends without aclose().

Figures: each scenario logs 5,000-20,000 records into a FileSink and checks every one
is in the file (0 lost), or is counted as undelivered and written to the fallback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted
from aiologsinks._supervise import interrupt_deferred

from ..helpers import ListSink, fresh_logger, started, wait_until
from ..peers.records import StdlibReceiver

ROOT = Path(__file__).resolve().parents[2]
BOUND = 10.0  # what every wait here is bounded by


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def count_lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


async def test_cancelling_the_task_awaiting_aclose_still_flushes_and_closes(
    tmp_path: Path,
) -> None:
    """20,000 records; the closer is cancelled at once; 0 lost, file closed."""
    path = tmp_path / "cancel.log"
    sink = als.FileSink(path)
    log = fresh_logger("t.cancelclose")
    dispatcher = started(log, sink)
    for i in range(20_000):
        log.info("c %d", i)
    closer = asyncio.ensure_future(dispatcher.aclose())
    await asyncio.sleep(0)
    closer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closer
    stats = await dispatcher.aclose()  # waits for the close the dispatcher owns
    log.removeHandler(dispatcher.handler)
    assert sink.closed
    assert count_lines(path) == 20_000
    assert stats.lost == 0


#: logs argv[2] records into a FileSink; argv[3] == "closing" returns mid-aclose()
LOOP_ENDS_SCRIPT = """
import asyncio, logging, sys
import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted

async def main():
    sink = als.FileSink(sys.argv[1])
    d = als.Dispatcher(sink)
    d.start()
    log = logging.getLogger("x"); log.propagate = False; log.addHandler(d.handler)
    for i in range(int(sys.argv[2])):
        log.warning("r %d", i)
    main.sink = sink
    if sys.argv[3] == "closing":
        main.closer = asyncio.ensure_future(d.aclose())
        await asyncio.sleep(0)  # returns with aclose() still running

asyncio.run(main())
print("closed", main.sink.closed)
"""


def test_asyncio_run_cancelling_an_unfinished_aclose_still_closes_the_file(
    tmp_path: Path,
) -> None:
    """10,000 records; asyncio.run() ends while aclose() runs; 0 lost."""
    path = tmp_path / "run.log"
    proc = run_script(LOOP_ENDS_SCRIPT, str(path), "10000", "closing")
    assert proc.returncode == 0, proc.stderr
    assert "closed True" in proc.stdout
    assert count_lines(path) == 10_000


def test_asyncio_run_ending_without_aclose_delivers_and_warns(tmp_path: Path) -> None:
    """5,000 records handed to a FileSink; the loop ends without aclose(); 0 lost.

    Documented behaviour: the dispatcher delivers what it holds while the loop's tasks
    are cancelled (within a grace period), closes the sinks, and says so with a
    ResourceWarning.
    """
    path = tmp_path / "noclose.log"
    proc = run_script(LOOP_ENDS_SCRIPT, str(path), "5000", "open")
    assert proc.returncode == 0, proc.stderr
    assert count_lines(path) == 5_000
    assert "closed True" in proc.stdout
    assert "ResourceWarning" in proc.stderr and "was not closed" in proc.stderr


#: logs argv[2] records into a FileSink on a loop that then stops without being
#: closed, the way argv[3] says; the script ends without aclose() or loop.close()
STOPPED_LOOP_SCRIPT = """
import asyncio, logging, sys

import aiologsinks as als

sink = als.FileSink(sys.argv[1])
d = als.Dispatcher(sink)
log = logging.getLogger("x"); log.propagate = False; log.addHandler(d.handler)
loop = asyncio.new_event_loop()
how = sys.argv[3]

async def stopper():
    # an application task still pending at exit that stops its loop at every turn
    while True:
        loop.stop()
        await asyncio.sleep(0)

async def exits():
    # an application task that ends the program when it next runs (at exit, then)
    raise SystemExit("from a task")

async def main():
    d.start()
    for i in range(int(sys.argv[2])):
        log.warning("r %d", i)
    if how == "run_forever":
        loop.call_soon(loop.stop)  # what a signal handler does
    elif how == "stopper":
        loop.create_task(stopper())

if how == "run_forever":
    loop.create_task(main())
    loop.run_forever()
else:
    loop.run_until_complete(main())
if how == "exits":
    loop.create_task(exits())  # first run by the exit's own run of the loop
"""


@pytest.mark.parametrize("how", ["run_until_complete", "run_forever", "stopper", "exits"])
def test_a_loop_stopped_without_close_is_run_at_exit_to_deliver(tmp_path: Path, how: str) -> None:
    """5,000 records; the script's loop stops (not closed, no aclose()) and the script
    ends: every record is in the file. The exit used to send them all to stderr ("its
    event loop ended without aclose()"), though the loop could still run. An
    application task raising SystemExit as the exit runs the loop used to leave them
    neither delivered nor counted."""
    path = tmp_path / "stopped.log"
    proc = run_script(STOPPED_LOOP_SCRIPT, str(path), "5000", how)
    assert proc.returncode == 0, proc.stderr
    assert "fallback" not in proc.stderr, proc.stderr[-2000:]
    assert count_lines(path) == 5_000


EXIT_BEFORE_AWAIT_SCRIPT = """
import asyncio, gc, logging, os, sys

import aiologsinks as als

if os.environ.get("AIOLOGSINKS_TEST_LOOP") == "uvloop":
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

class Count(logging.Handler):
    n = 0
    def emit(self, record):
        if record.name != "aiologsinks":
            Count.n += 1

class ExitsAt50(logging.Filter):
    calls = 0
    def filter(self, record):
        ExitsAt50.calls += 1
        if ExitsAt50.calls == 50:
            raise SystemExit("from a filter")
        return True

target, kind, n, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kind == "file":
    sinks = [als.FileSink(target)]
elif kind == "tcp":  # a TCP peer: its connection too is first made by the shutdown's delivery
    sinks = [als.SocketSink("127.0.0.1", int(target))]
else:  # "exiting filter": a sink whose filter raises SystemExit during that delivery
    first = als.FileSink(target + ".a")
    first.addFilter(ExitsAt50())
    sinks = [first, als.FileSink(target)]
d = als.Dispatcher(*sinks, fallback=Count())
log = logging.getLogger("x"); log.propagate = False; log.addHandler(d.handler)
keep = []

async def cleanup(what):
    # an application's own task whose cleanup, as asyncio.run() cancels it, reads the
    # stats or closes the dispatcher
    try:
        await asyncio.Event().wait()
    finally:
        if what == "stats":
            d.stats()
        elif what == "flush":
            try:
                await d.flush(timeout=0.01)  # bounded: the delivery goes on without it
            except (TimeoutError, als.DispatcherStateError):
                pass
        else:
            await d.aclose()

async def main():
    if how.startswith("cleanup "):
        keep.append(asyncio.ensure_future(cleanup(how.split()[1])))
        await asyncio.sleep(0)
    d.start()
    for i in range(n):
        log.warning("r %d", i)
    # before the first await: the pump and the lanes never ran a step
    if how == "interrupt":
        raise KeyboardInterrupt
    sys.exit(0)

try:
    asyncio.run(main())
except (SystemExit, KeyboardInterrupt) as exc:
    print("ended by", type(exc).__name__)
gc.collect()  # a task of the delivery left pending must not count as the sink's error
s = d.stats()
st = list(s.sinks.values())[-1]
print("delivered", st.delivered, "lost", st.undelivered + st.errors, "failed",
      st.failed_operations, "fallback", Count.n)
"""


@pytest.mark.parametrize(
    ("kind", "how"),
    [
        ("file", "exit"),
        ("file", "interrupt"),
        ("tcp", "exit"),
        ("tcp", "interrupt"),
        ("file", "cleanup stats"),
        ("file", "cleanup aclose"),
        ("file", "cleanup flush"),
    ],
)
def test_asyncio_run_ended_before_the_first_await_delivers(
    tmp_path: Path, kind: str, how: str
) -> None:
    """``sys.exit()`` (or ``KeyboardInterrupt``) in the coroutine that started the
    dispatcher, before its first await: asyncio.run() cancels the pump and the lanes
    before their first step, so their own rescue never runs. The loop's shutdown of
    its async generators delivers what they hold: 2,000 records, all at the
    destination. Every one used to go to the fallback, counted ("its event loop
    ended without aclose()"), the file left empty; also when the application's own
    cleanup read ``stats()`` or awaited ``aclose()`` or a bounded ``flush()`` first,
    as the loop ended."""
    n = 2_000
    path = tmp_path / "exit.log"
    with contextlib.ExitStack() as stack:
        if kind == "file":
            target = str(path)
        else:
            receiver = stack.enter_context(StdlibReceiver("tcp"))
            target = str(receiver.address[1])
        proc = run_script(EXIT_BEFORE_AWAIT_SCRIPT, target, kind, str(n), how)
        assert proc.returncode == 0, proc.stderr
        ended = "KeyboardInterrupt" if how == "interrupt" else "SystemExit"
        assert f"ended by {ended}" in proc.stdout, proc.stdout
        words = proc.stdout.split()
        counts = tuple(int(words[i]) for i in (4, 6, 8, 10))
        assert counts == (n, 0, 0, 0), proc.stdout + proc.stderr[-2000:]
        if kind == "file":
            assert count_lines(path) == n
        else:
            records = asyncio.run(receiver.wait_for(n))
            assert [r.getMessage() for r in records] == [f"r {i}" for i in range(n)]


def test_a_filter_ending_that_delivery_leaves_the_other_sink_uncharged(tmp_path: Path) -> None:
    """A sink's filter raising SystemExit during the shutdown's delivery ends the
    loop under the other sink's delivery: that sink's records are counted (in the
    file, or undelivered), and its pending task, collected, is not charged to it as
    a failed operation (it took the GeneratorExit for an error of its own)."""
    path = tmp_path / "b.log"
    proc = run_script(EXIT_BEFORE_AWAIT_SCRIPT, str(path), "exiting filter", "2000", "exit")
    assert proc.returncode == 0, proc.stderr
    assert "ended by SystemExit" in proc.stdout, proc.stdout
    words = proc.stdout.split()
    delivered, lost, failed = (int(words[i]) for i in (4, 6, 8))
    assert failed == 0, proc.stdout + proc.stderr[-2000:]
    assert delivered + lost == 2_000
    assert "Logging error" not in proc.stderr, proc.stderr[-2000:]


def test_aclose_from_another_thread_during_that_shutdown_returns_at_once(tmp_path: Path) -> None:
    """The dispatcher's loop, on a thread, is in asyncio.run()'s shutdown with its
    tasks never run; another thread's aclose() (and close()) must not wait for that
    loop: it returned at once, with the records counted, before the late delivery
    existed, and then waited for ever for a task the loop never ran."""
    path = tmp_path / "cross.log"
    sink = als.FileSink(str(path))
    seen: list[logging.LogRecord] = []
    fallback = logging.Handler()
    fallback.emit = seen.append  # type: ignore[method-assign]
    dispatcher = als.Dispatcher(sink, fallback=fallback)
    logger = fresh_logger("shutdown.cross")
    logger.addHandler(dispatcher.handler)
    in_cleanup = threading.Event()
    release: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:  # holds the loop's shutdown open until the other thread is done
            in_cleanup.set()
            await asyncio.wait_for(asyncio.wrap_future(release), BOUND)

    tasks: list[asyncio.Task[None]] = []

    async def main() -> None:
        tasks.append(asyncio.ensure_future(cleanup()))
        await asyncio.sleep(0)
        dispatcher.start()
        for i in range(500):
            logger.warning("r %d", i)
        raise SystemExit(0)

    def run() -> None:
        with contextlib.suppress(SystemExit):
            asyncio.run(main())

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert in_cleanup.wait(BOUND)

        async def close_here() -> als.DispatcherStats:
            return await asyncio.wait_for(dispatcher.aclose(), BOUND)

        stats = asyncio.run(close_here())
        assert dispatcher.close(timeout=None).lost == stats.lost
    finally:
        release.set_result(None)
        thread.join(BOUND)
        logger.removeHandler(dispatcher.handler)
    assert not thread.is_alive()
    (sink_stats,) = dispatcher.stats().sinks.values()
    assert sink_stats.delivered + dispatcher.stats().lost == 500
    assert count_lines(path) == sink_stats.delivered if path.exists() else sink_stats.delivered == 0


async def test_stats_on_a_loop_that_cancelled_the_tasks_and_runs_on_delivers() -> None:
    """Every task cancelled (the dispatcher's before their first step) and the loop
    runs on: a stats() poller on that loop begins the delivery the loop's end would
    have run; records logged after it go to the fallback, counted. It used to hold
    them running, unbounded past queue_size, until something closed the loop."""
    seen: list[logging.LogRecord] = []
    fallback = logging.Handler()
    fallback.emit = seen.append  # type: ignore[method-assign]
    sink = ListSink()
    dispatcher = als.Dispatcher(sink, queue_size=100, fallback=fallback)
    logger = fresh_logger("shutdown.runs-on")
    logger.addHandler(dispatcher.handler)
    try:
        dispatcher.start()
        for i in range(100):
            logger.warning("r %d", i)
        assert dispatcher._pump_task is not None
        for task in (dispatcher._pump_task, *(lane._task for lane in dispatcher._lanes)):
            assert task is not None
            task.cancel()
        await asyncio.sleep(0)  # they end, never having run
        with pytest.warns(ResourceWarning, match="delivering 100 pending"):
            dispatcher.stats()
        assert dispatcher._late_delivery is not None
        await asyncio.wait_for(dispatcher._late_delivery, BOUND)
        for i in range(500):
            logger.warning("later %d", i)
        stats = dispatcher.stats()
    finally:
        logger.removeHandler(dispatcher.handler)
    assert [r.getMessage() for r in sink.records] == [f"r {i}" for i in range(100)]
    assert stats.after_close == 500
    await wait_until(lambda: sum(r.name != "aiologsinks" for r in seen) == 500, BOUND)


EXIT_DURING_LATE_DELIVERY_SCRIPT = """
import asyncio, logging, sys, threading

import aiologsinks as als

class SlowFile(als.FileSink):
    async def emit_batch(self, records):
        await asyncio.sleep(0.05)  # a slow destination: 20 batches take 1 s
        await super().emit_batch(records)

d = als.Dispatcher(SlowFile(sys.argv[1]), batch_size=50, fallback=logging.FileHandler(sys.argv[2]))
log = logging.getLogger("x"); log.propagate = False; log.addHandler(d.handler)
logged = threading.Event()

async def main():
    d.start()
    if sys.argv[3] == "ran":
        await asyncio.sleep(0)
    for i in range(1000):
        log.warning("r %d", i)
    logged.set()
    sys.exit(0)

def run():
    try:
        asyncio.run(main())
    except SystemExit:
        pass

threading.Thread(target=run, daemon=True).start()
logged.wait(10)
# the interpreter exits now, the daemon thread's loop delivering
"""


@pytest.mark.parametrize("how", ["unstarted", "ran"])
def test_the_exit_waits_for_a_delivery_on_a_daemon_threads_loop(tmp_path: Path, how: str) -> None:
    """The interpreter exits while a daemon thread's loop delivers what its dispatcher
    held (its asyncio.run() ended by SystemExit, before or after the tasks ran) to a
    slow sink: the exit waits for it, within its bound, and every record is in the
    file. The exit used to find the dispatcher closed and go: what was left was
    neither delivered nor counted (100 of 1,000 in the file, none in the fallback)."""
    path, fallback = tmp_path / "slow.log", tmp_path / "fallback.log"
    proc = run_script(EXIT_DURING_LATE_DELIVERY_SCRIPT, str(path), str(fallback), how)
    assert proc.returncode == 0, proc.stderr
    in_fallback = count_lines(fallback) if fallback.exists() else 0
    assert (count_lines(path), in_fallback) == (1000, 0), proc.stderr[-2000:]


def test_a_sigint_in_a_deferred_block_is_raised_when_it_ends() -> None:
    """interrupt_deferred(): a Ctrl-C arriving while the shutdown moves records
    between two places is raised after the move, by the handler it replaced."""
    reached = []
    # Python's own handler, whatever this process inherited (a shell's background
    # job starts with SIGINT ignored, and Python keeps it so)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupt_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # Python runs the signal's handler at the next check
                    reached.append(1)
                reached.append("end")
        assert reached[-1] == "end"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_deferred_block_leaves_the_applications_sigint_handling_whole() -> None:
    """Each SIGINT held is given to the application's handler (a "press again to
    force quit" counts both); a handler the application installs during the block
    (from another signal's handler) stays; a copy of the block's own handler that
    someone saved and put back passes signals on. The handler saved at entry used to
    be put back over the application's, and a saved copy swallowed Ctrl-C for good."""
    calls: list[str] = []
    first = signal.signal(signal.SIGINT, lambda signum, frame: calls.append("first"))
    try:
        with interrupt_deferred():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        assert calls == ["first", "first"]
        with interrupt_deferred():
            kept = signal.signal(signal.SIGINT, lambda signum, frame: calls.append("second"))
        assert calls == ["first", "first"]
        signal.raise_signal(signal.SIGINT)
        assert calls[-1] == "second"
        signal.signal(signal.SIGINT, kept)  # a save/restore recipe that ran in a block
        signal.raise_signal(signal.SIGINT)
        assert calls[-1] == "first"
    finally:
        signal.signal(signal.SIGINT, first)


WARNING_AS_ERROR_SCRIPT = """
import asyncio, logging, os, sys

import aiologsinks as als

uvloop = None
if sys.argv[2] == "uvloop":
    import uvloop

d = als.Dispatcher(als.FileSink(sys.argv[1]))
log = logging.getLogger("x"); log.propagate = False; log.addHandler(d.handler)

async def lifespan():
    try:
        yield
    finally:
        # started by the loop's shutdown of its async generators
        d.start()
        log.warning("late")
        await d.aclose()

async def main():
    if sys.argv[3] == "late start":
        agen = lifespan()
        await agen.__anext__()
        main.agen = agen
        return
    d.start()
    for i in range(2000):
        log.warning("r %d", i)
    sys.exit(0)

try:
    if uvloop is None:
        asyncio.run(main())
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(main())
except SystemExit:
    pass
(st,) = d.stats().sinks.values()
print("delivered", st.delivered, "lost", d.stats().lost)
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(("how", "n"), [("exit", 2000), ("late start", 1)])
def test_resource_warnings_as_errors_do_not_stop_the_delivery(
    tmp_path: Path, loop: str, how: str, n: int
) -> None:
    """Under ``-W error::ResourceWarning``: the shutdown's delivery warns (not closed
    before the loop ended) only once it delivered, and a dispatcher started by the
    loop's shutdown of its async generators (uvloop does not say whether that began,
    and warns of a generator started then) starts and delivers all the same."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    path = tmp_path / "w.log"
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::ResourceWarning",
            "-c",
            textwrap.dedent(WARNING_AS_ERROR_SCRIPT),
            str(path),
            loop,
            how,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["delivered", str(n), "lost", "0"], (
        proc.stdout + proc.stderr[-2000:]
    )
    assert count_lines(path) == n


def test_an_interrupted_hand_over_leaves_the_records_counted(tmp_path: Path) -> None:
    """KeyboardInterrupt (a second Ctrl-C) while the shutdown hands the shared queue's
    records to the lanes: they had left the queue, and the lanes not reached yet held
    them nowhere (50,000 of 50,000 neither delivered nor counted). Those lanes now
    count them undelivered, to the fallback; the lane reached delivers them."""
    fallback = logging.Handler()
    seen: list[logging.LogRecord] = []
    fallback.emit = seen.append  # type: ignore[method-assign]
    sinks = [als.FileSink(str(tmp_path / f"{i}.log")) for i in range(3)]
    dispatcher = als.Dispatcher(*sinks, fallback=fallback)
    second = dispatcher._lanes[1]

    def interrupted(records: list[object]) -> None:
        raise KeyboardInterrupt

    second.force = interrupted  # type: ignore[method-assign]
    records = [
        logging.LogRecord("x", logging.WARNING, "p", 1, "r %d", (i,), None) for i in range(10)
    ]
    with pytest.raises(KeyboardInterrupt):
        dispatcher._hand_over(records)
    first, _, third = (lane.stats() for lane in dispatcher._lanes)
    assert first.received == 10 and dispatcher._lanes[0].queue.depth == 10
    assert (second.stats().received, second.stats().undelivered) == (10, 10)
    assert (third.received, third.undelivered) == (10, 10)
    dispatcher.close()


def test_close_runs_the_stopped_loop_its_dispatcher_is_on(tmp_path: Path) -> None:
    """close() after run_until_complete() returned: the loop is run to deliver, 0 lost.
    It used to settle every record as undelivered ("its event loop is not running")."""
    path = tmp_path / "close.log"
    sink = als.FileSink(str(path))
    dispatcher = als.Dispatcher(sink)
    logger = fresh_logger("stopped.close")
    logger.addHandler(dispatcher.handler)

    async def main() -> None:
        dispatcher.start()
        for i in range(5_000):
            logger.info("r %d", i)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        stats = dispatcher.close()
    finally:
        logger.removeHandler(dispatcher.handler)
        loop.close()
    assert sink.closed
    assert stats.lost == 0, stats
    assert count_lines(path) == 5_000


def test_close_runs_the_stopped_loop_of_a_thread_that_ended(tmp_path: Path) -> None:
    """The dispatcher ran on a loop of a thread that ended without closing it: close()
    on the main thread runs that loop and delivers, 0 lost."""
    path = tmp_path / "thread.log"
    sink = als.FileSink(str(path))
    dispatcher = als.Dispatcher(sink)
    logger = fresh_logger("stopped.thread")
    logger.addHandler(dispatcher.handler)
    loop = asyncio.new_event_loop()

    async def main() -> None:
        dispatcher.start()
        for i in range(5_000):
            logger.info("r %d", i)

    worker = threading.Thread(target=loop.run_until_complete, args=(main(),))
    worker.start()
    worker.join(30)
    try:
        assert not worker.is_alive()
        stats = dispatcher.close()
    finally:
        logger.removeHandler(dispatcher.handler)
        loop.close()
    assert stats.lost == 0, stats
    assert count_lines(path) == 5_000


def _stopped_dispatcher(
    path: Path, name: str
) -> tuple[als.Dispatcher, logging.Logger, asyncio.AbstractEventLoop]:
    """A started dispatcher (queue_size=100) whose loop then stopped, not closed."""
    dispatcher = als.Dispatcher(als.FileSink(str(path)), queue_size=100)
    logger = fresh_logger(name)
    logger.addHandler(dispatcher.handler)

    async def start() -> None:
        dispatcher.start()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start())
    return dispatcher, logger, loop


@pytest.mark.parametrize("thread", ["the loop's", "another"])
def test_records_logged_while_the_loop_is_stopped_stay_bounded(tmp_path: Path, thread: str) -> None:
    """The loop stopped (run_until_complete() returned) and 3,000 records are logged
    with queue_size=100: nothing drains the queue, so past twice its size records are
    dropped, counted. The loop's own thread used to queue them all (an unbounded
    backlog), another thread to wait for room for ever (joined: a hang)."""
    path = tmp_path / "stopped.log"
    dispatcher, logger, loop = _stopped_dispatcher(path, f"stopped.bounded.{thread[:3]}")

    def burst() -> None:
        for i in range(3_000):
            logger.warning("r %d", i)

    try:
        if thread == "another":
            worker = threading.Thread(target=burst, daemon=True)
            worker.start()
            worker.join(30)
            assert not worker.is_alive(), "the thread waited for room the stopped loop never makes"
        else:
            burst()
        held = dispatcher.stats()
        stats = dispatcher.close()
    finally:
        logger.removeHandler(dispatcher.handler)
        loop.close()
    assert held.queued <= 2 * 100 and held.dropped >= 2_800, held
    (share,) = stats.sinks.values()
    assert share.lost == 0 and share.received + stats.dropped == 3_000, stats
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:-1] == [f"r {i}" for i in range(share.received)]
    assert lines[-1].endswith(
        f"{stats.dropped} record(s) dropped: the dispatcher queue was full (overflow=block)"
    )


def test_aclose_again_after_its_loop_ended_returns_the_final_stats(tmp_path: Path) -> None:
    """Closed on one loop, which then ended: a second aclose() from another loop (an
    exit hook, a later asyncio.run) has nothing to wait for and returns the stats; it
    used to raise, the loop that closed it not running any more."""
    path = tmp_path / "twice.log"
    dispatcher = als.Dispatcher(als.FileSink(str(path)))
    logger = fresh_logger("twice")
    logger.addHandler(dispatcher.handler)

    async def first() -> als.DispatcherStats:
        dispatcher.start()
        logger.warning("one")
        return await dispatcher.aclose()

    async def again() -> als.DispatcherStats:
        return await dispatcher.aclose()

    try:
        closed = asyncio.run(first())
        assert asyncio.run(again()) == closed
    finally:
        logger.removeHandler(dispatcher.handler)
    assert closed.lost == 0
    assert path.read_text() == "one\n"


def test_a_stalled_sink_at_loop_end_does_not_hang_the_program(tmp_path: Path) -> None:
    """A sink that never returns: the program still exits, records go to stderr."""
    proc = run_script(
        """
        import asyncio, logging
        import aiologsinks as als

        class Stuck(als.Sink):
            async def emit_batch(self, records):
                await asyncio.Event().wait()

        async def main():
            d = als.Dispatcher(Stuck())
            d._lanes[0].grace = 0.2
            d.start()
            log = logging.getLogger("x"); log.propagate = False; log.addHandler(d.handler)
            for i in range(3):
                log.warning("stuck %d", i)
            await asyncio.sleep(0.05)

        asyncio.run(main())
        print("exited")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "exited" in proc.stdout
    for i in range(3):
        assert f"stuck {i}" in proc.stderr


@pytest.mark.parametrize("steps", range(8))
async def test_cancelling_the_closer_at_any_await_of_shutdown_loses_nothing(
    steps: int, tmp_path: Path
) -> None:
    """The task awaiting aclose() is cancelled after ``steps`` loop iterations (so at
    each await of the shutdown path in turn); a second aclose() returns the final
    stats: every record in the file, the sink closed, the accounting exact."""
    path = tmp_path / "steps.log"
    sink = als.FileSink(path)
    log = fresh_logger("t.cancelsteps")
    dispatcher = started(log, sink, batch_size=100)
    for i in range(1000):
        log.info("c %d", i)
    closer = asyncio.ensure_future(dispatcher.aclose(timeout=5))
    for _ in range(steps):
        await asyncio.sleep(0)
    closer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closer
    # cancelled before it ran at all (steps=0), aclose() never began: "late" is an
    # ordinary record; otherwise it arrives after close: to the fallback, counted
    began = dispatcher.state is not als._dispatcher.DispatcherState.RUNNING
    log.info("late")
    stats = await asyncio.wait_for(dispatcher.aclose(), 10)
    log.removeHandler(dispatcher.handler)
    assert sink.closed
    assert count_lines(path) == 1000 + (not began)
    assert stats.after_close == began
    assert began == (steps > 0)
    assert_accounted(stats, logged=1001)


#: the loop ends (asyncio.run() returns) after argv[2] iterations of aclose()
LOOP_ENDS_MID_CLOSE = """
import asyncio, logging, sys
import pytest

import aiologsinks as als
from aiologsinks._stats import assert_accounted

class Count(logging.Handler):
    n = 0
    def emit(self, record):
        if record.name != "aiologsinks":
            Count.n += 1

d = als.Dispatcher(als.FileSink(sys.argv[1]), batch_size=100, fallback=Count())

async def main():
    d.start()
    log = logging.getLogger("x"); log.propagate = False; log.addHandler(d.handler)
    for i in range(2000):
        log.warning("r %d", i)
    asyncio.ensure_future(d.aclose())
    for _ in range(int(sys.argv[2])):
        await asyncio.sleep(0)

asyncio.run(main())
s = d.stats()
print("file", len(open(sys.argv[1]).read().splitlines()), "lost", s.lost, "fallback", Count.n)
"""


@pytest.mark.parametrize("steps", [0, 1, 3, 6])
def test_the_loop_ending_at_any_await_of_aclose_loses_nothing_uncounted(
    steps: int, tmp_path: Path
) -> None:
    path = tmp_path / "mid.log"
    proc = run_script(LOOP_ENDS_MID_CLOSE, str(path), str(steps))
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    in_file, lost, fallback = (int(words[i]) for i in (1, 3, 5))
    # nothing uncounted; at most the one batch (100) a sink was writing when the
    # loop cancelled every task may be both in the file and counted as undelivered
    # (the write went on in the sink's worker thread: see README, Known limits)
    assert 2000 <= in_file + lost <= 2000 + 100
    assert fallback == lost
