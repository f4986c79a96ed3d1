"""The private background loop: the pipeline's home when no event loop runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from aiologsinks import _background

from .conftest import require

ROOT = Path(__file__).resolve().parents[1]


def test_run_returns_the_result_from_a_thread_named_as_the_pipeline() -> None:
    async def where() -> tuple[str, bool]:
        return threading.current_thread().name, _background.is_pipeline_thread()

    name, owned = _background.run(where(), timeout=5)
    assert name.startswith("aiologsinks-")
    assert owned
    assert not _background.is_pipeline_thread()


def test_run_times_out_and_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match=r"0\.05s"):
        _background.run(forever(), timeout=0.05)
    assert cancelled.wait(5)


def test_run_on_the_loop_thread_itself_fails_at_once() -> None:
    async def nested() -> None:
        _background.run(asyncio.sleep(0), timeout=1)

    with pytest.raises(RuntimeError, match="own thread"):
        _background.run(nested(), timeout=5)


def test_exit_hooks_run_at_exit_with_the_background_loop_still_serving(tmp_path: Path) -> None:
    """A hook registered twice runs once, at exit, and can still run coroutines on the
    background loop started before exit."""
    path = tmp_path / "exit.txt"
    script = f"""
        from aiologsinks import _background

        async def answer():
            return 42

        _background.get_loop()

        def hook():
            with open({str(path)!r}, "a", encoding="utf-8") as f:
                f.write(str(_background.run(answer(), timeout=10)))

        _background.on_exit(hook)
        _background.on_exit(hook)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert path.read_text(encoding="utf-8") == "42"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads, 3.12+
def test_a_forked_child_gets_a_fresh_background_loop() -> None:
    require(hasattr(os, "fork"), "os.fork")

    async def pid() -> int:
        return os.getpid()

    assert _background.run(pid(), timeout=5) == os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            ok = _background.run(pid(), timeout=5) == os.getpid()
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_application_loop_never_waits_for_room_in_a_background_dispatcher() -> None:
    # records logged before any loop ran started the dispatcher on the background
    # loop; the application's loop then logs into a full queue (overflow="block"): it
    # must not wait for the background loop's sink, it is accepted past the bound
    import logging

    import aiologsinks as als

    entered, gate, app_done = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    class Stuck(als.Sink):
        async def emit_batch(self, records: object) -> None:
            if not seen:
                entered.set()
                await asyncio.to_thread(gate.wait, 10)
                seen.append(app_done.is_set())

    dispatcher = als.Dispatcher(Stuck(), queue_size=20, lane_size=20, batch_size=10)
    log = logging.getLogger("t.background.app_loop_never_waits")
    log.propagate = False
    log.addHandler(dispatcher.handler)
    try:
        for i in range(5):
            log.warning("before any loop %d", i)
        assert entered.wait(10)  # the background loop runs it, its sink is stuck

        async def app() -> None:
            for i in range(200):  # ten times the queue
                log.warning("from the application's loop %d", i)
            app_done.set()

        asyncio.run(app())
    finally:
        gate.set()
        log.removeHandler(dispatcher.handler)
        dispatcher.close(10)
    assert seen == [True]  # the application logged everything while the sink was stuck
    stats = dispatcher.stats()
    # past twice queue_size, the application loop's records were dropped, counted:
    # its awaits never drain the background loop's queue, so it holds no more
    (share,) = stats.sinks.values()
    assert stats.dropped > 0 and share.received + stats.dropped == 205
    # what got past: twice the queue, a lane, the batch the sink holds (not all 200)
    assert share.received <= 5 + 2 * 20 + 20 + 10
    assert share.lost == 0


def test_the_exit_safe_executor_runs_a_call_here_when_no_worker_can_take_it() -> None:
    """As the interpreter exits the pool takes no job (and Python 3.12.0-3.12.2 start
    no thread): a call then runs in the submitting thread, its outcome in the future,
    where the stock pool raised and the lookup or compression it carried was lost."""
    executor = _background.ExitSafeExecutor(thread_name_prefix="test-exit-safe")
    assert executor.submit(threading.get_ident).result(5) != threading.get_ident()
    executor.shutdown()  # what the pool says at exit too: no new futures after shutdown
    assert executor.submit(threading.get_ident).result(0) == threading.get_ident()
    failed = executor.submit(int, "not a number")
    assert isinstance(failed.exception(0), ValueError)


def test_the_background_loop_runs_its_executor_calls_on_the_exit_safe_pool() -> None:
    name = _background.run(_executor_thread_name(), timeout=5)
    assert name.startswith("aiologsinks-executor")


async def _executor_thread_name() -> str:
    def name() -> str:
        return threading.current_thread().name

    return await asyncio.get_running_loop().run_in_executor(None, name)
