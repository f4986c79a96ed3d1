"""One trial of one contender, run in its own process.

``python -m benchmarks._scenarios '{"contender": ..., "n": ..., ...}'`` prints one JSON
object: the trial's measurements. The parent (``benchmarks._harness``) runs trials
interleaved and aggregates them.

Method (issue 8): ``n`` logging calls in bursts of ``burst`` calls, each burst timed
with ``perf_counter`` and followed by ``await asyncio.sleep(0)`` (on the loop) or
``time.sleep(0)`` (from a foreign thread); a ticker coroutine sleeping 1 ms records
how late it wakes (loop lag) from the first call until delivery is complete; the
contender's own way to wait for delivery ends the trial; then what arrived is counted
(lines in the files, records at the loopback peer) and peak RSS is read from
``getrusage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import json
import logging
import logging.handlers
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks._peers import Peer

FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MSG = "request %d handled in %.3f ms"
LOGURU_FMT = "{time:YYYY-MM-DD HH:mm:ss,SSS} {level} {name}: {message}"
LOGURU_MSG = "request {} handled in {:.3f} ms"
ROTATE_BYTES = 1 << 20


class Contender:
    """Set up a logging option, give the call to time, wait for delivery, count."""

    #: counted at the destination; False for the NullHandler floor
    counts = True
    peer_kind: str | None = None

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.path = os.path.join(tmp, "bench.log")
        self.peer: Peer | None = Peer(self.peer_kind) if self.peer_kind else None
        self.log: Callable[..., Any] = print
        self.msg = MSG

    async def setup(self) -> None:
        raise NotImplementedError

    async def finish(self) -> None:
        """Return once every record is delivered (the option's own way)."""

    def delivered(self, expected: int) -> int:
        if self.peer is not None:
            return self.peer.settle(expected)
        total = 0
        for name in glob.glob(self.path + "*"):
            with open(name, "rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return total

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()


def _stdlib_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger("bench")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FMT))
    logger.addHandler(handler)
    return logger


class StdlibHandler(Contender):
    """A stdlib handler called on the loop thread (blocking I/O included)."""

    def make(self) -> logging.Handler:
        raise NotImplementedError

    async def setup(self) -> None:
        self.handler = self.make()
        self.log = _stdlib_logger(self.handler).info

    async def finish(self) -> None:
        self.handler.flush()
        self.handler.close()


class Null(StdlibHandler):
    counts = False

    def make(self) -> logging.Handler:
        return logging.NullHandler()


class StdFile(StdlibHandler):
    def make(self) -> logging.Handler:
        return logging.FileHandler(self.path)


class StdRotating(StdlibHandler):
    def make(self) -> logging.Handler:
        return logging.handlers.RotatingFileHandler(
            self.path, maxBytes=ROTATE_BYTES, backupCount=1000
        )


class StdSocket(StdlibHandler):
    peer_kind = "tcp"

    def make(self) -> logging.Handler:
        assert self.peer is not None
        return logging.handlers.SocketHandler("127.0.0.1", self.peer.port)


class StdSyslog(StdlibHandler):
    peer_kind = "udp"

    def make(self) -> logging.Handler:
        assert self.peer is not None
        return logging.handlers.SysLogHandler(address=("127.0.0.1", self.peer.port))


class StdHTTP(StdlibHandler):
    peer_kind = "http"

    def make(self) -> logging.Handler:
        assert self.peer is not None
        return logging.handlers.HTTPHandler(f"127.0.0.1:{self.peer.port}", "/log", "POST")


class StdQueue(Contender):
    """QueueHandler + QueueListener thread -> FileHandler."""

    async def setup(self) -> None:
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        target = logging.FileHandler(self.path)
        target.setFormatter(logging.Formatter(FMT))
        self.target = target
        self.listener = logging.handlers.QueueListener(q, target)
        self.listener.start()
        self.log = _stdlib_logger(logging.handlers.QueueHandler(q)).info

    async def finish(self) -> None:
        self.listener.stop()  # joins the thread: blocks the loop, as users would
        self.target.close()


class Loguru(Contender):
    async def setup(self) -> None:
        from loguru import logger

        logger.remove()
        logger.add(self.path, enqueue=True, format=LOGURU_FMT)
        self.logger = logger
        self.msg = LOGURU_MSG
        self.log = logger.info

    async def finish(self) -> None:
        await self.logger.complete()
        self.logger.remove()


class Aiologger(Contender):
    async def setup(self) -> None:
        from aiologger import Logger
        from aiologger.formatters.base import Formatter
        from aiologger.handlers.files import AsyncFileHandler
        from aiologger.levels import LogLevel

        self.logger = Logger(name="bench", level=LogLevel.INFO)
        handler = AsyncFileHandler(self.path)
        handler.formatter = Formatter(FMT)
        self.logger.add_handler(handler)
        info = self.logger.info  # returns a task: fire and forget

        def log(msg: str, i: int, ms: float) -> Any:
            # aiologger takes only a mapping as args
            return info("request %(i)d handled in %(ms).3f ms", {"i": i, "ms": ms})

        self.log = log

    async def finish(self) -> None:
        await self.logger.shutdown()


class Ours(Contender):
    """aiologsinks: the QueueHandler shim -> Dispatcher -> one sink."""

    sink_name = "FileSink"
    options: dict[str, Any] = {}

    def make(self) -> Any:
        import aiologsinks as als

        return als.FileSink(self.path)

    async def setup(self) -> None:
        import aiologsinks as als

        sink = self.make()
        if getattr(sink, "_uses_formatter", True):
            sink.setFormatter(logging.Formatter(FMT))
        self.dispatcher = als.Dispatcher(sink, **self.options)
        self.dispatcher.start()
        logger = logging.getLogger("bench")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(self.dispatcher.handler)
        self.log = logger.info

    async def finish(self) -> None:
        stats = await self.dispatcher.aclose()
        self.lost_in_stats = stats.lost


class OursDevNull(Ours):
    """The FileSink row without the disk: what the pipeline itself costs the loop."""

    counts = False

    def make(self) -> Any:
        import aiologsinks as als

        return als.FileSink(os.devnull)


class OursRotating(Ours):
    sink_name = "RotatingFileSink"

    def make(self) -> Any:
        import aiologsinks as als

        return als.RotatingFileSink(self.path, maxBytes=ROTATE_BYTES, backupCount=1000)


class OursSocket(Ours):
    sink_name = "SocketSink"
    peer_kind = "tcp"

    def make(self) -> Any:
        import aiologsinks as als

        assert self.peer is not None
        return als.SocketSink("127.0.0.1", self.peer.port)


class OursSyslog(Ours):
    sink_name = "SysLogSink"
    peer_kind = "udp"

    def make(self) -> Any:
        import aiologsinks as als

        assert self.peer is not None
        return als.SysLogSink(address=("127.0.0.1", self.peer.port))


class OursHTTP(Ours):
    sink_name = "HTTPSink"
    peer_kind = "http"

    def make(self) -> Any:
        import aiologsinks as als

        assert self.peer is not None
        return als.HTTPSink(f"127.0.0.1:{self.peer.port}", "/log", method="POST")


class OursHTTPBatch(OursHTTP):
    def make(self) -> Any:
        import aiologsinks as als

        assert self.peer is not None
        return als.HTTPSink(f"127.0.0.1:{self.peer.port}", "/log", method="POST", json_batch=True)


#: name -> (class, label, group, module it needs, aiologsinks name it needs)
CONTENDERS: dict[str, tuple[type[Contender], str, str, str | None]] = {
    "null": (Null, "stdlib logging + NullHandler (floor)", "file", None),
    "stdlib-file": (StdFile, "stdlib FileHandler on the loop", "file", None),
    "stdlib-queue": (StdQueue, "stdlib QueueHandler + QueueListener -> FileHandler", "file", None),
    "loguru": (Loguru, "loguru, file sink, enqueue=True", "file", "loguru"),
    "aiologger": (Aiologger, "aiologger AsyncFileHandler", "file", "aiologger"),
    "aiologsinks": (Ours, "aiologsinks FileSink", "file", None),
    "aiologsinks-devnull": (OursDevNull, "aiologsinks FileSink to /dev/null", "file", None),
    "stdlib-rotating": (StdRotating, "stdlib RotatingFileHandler on the loop", "rotating", None),
    "aiologsinks-rotating": (OursRotating, "aiologsinks RotatingFileSink", "rotating", None),
    "stdlib-socket": (StdSocket, "stdlib SocketHandler (TCP) on the loop", "tcp", None),
    "aiologsinks-socket": (OursSocket, "aiologsinks SocketSink (TCP)", "tcp", None),
    "stdlib-syslog": (StdSyslog, "stdlib SysLogHandler (UDP) on the loop", "syslog", None),
    "aiologsinks-syslog": (OursSyslog, "aiologsinks SysLogSink (UDP)", "syslog", None),
    "stdlib-http": (StdHTTP, "stdlib HTTPHandler (2 ms server) on the loop", "http", None),
    "aiologsinks-http": (OursHTTP, "aiologsinks HTTPSink (2 ms server)", "http", None),
    "aiologsinks-http-batch": (
        OursHTTPBatch,
        "aiologsinks HTTPSink json_batch=True (2 ms server)",
        "http",
        None,
    ),
}


def unavailable(name: str) -> str | None:
    """Why ``name`` cannot run here (a note), or None when it can."""
    cls, _label, _group, module = CONTENDERS[name]
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install -e '.[bench]')"
    if issubclass(cls, Ours) and cls.sink_name != "FileSink":
        import aiologsinks

        if not hasattr(aiologsinks, cls.sink_name):
            return f"aiologsinks.{cls.sink_name} has not landed yet"
    return None


def _rss_mb() -> float:
    """Peak RSS of this process since exec (ru_maxrss would include the parent's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


async def trial(
    name: str, n: int, burst: int, thread: bool, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    cls = CONTENDERS[name][0]
    with tempfile.TemporaryDirectory(prefix="aiologsinks-bench-") as tmp:
        c = cls(tmp)
        if options and isinstance(c, Ours):
            c.options = options
        try:
            await c.setup()
            return await _measure(c, n, burst, thread)
        finally:
            c.close()


async def _measure(c: Contender, n: int, burst: int, thread: bool) -> dict[str, Any]:
    log, msg = c.log, c.msg
    lags: list[float] = []
    ticking = True

    async def ticker() -> None:
        perf = time.perf_counter
        while ticking:
            t = perf()
            await asyncio.sleep(0.001)
            lags.append(perf() - t - 0.001)

    def produce(yield_: Callable[[], Any] | None) -> float:
        perf = time.perf_counter
        spent = 0.0
        for start in range(0, n, burst):
            t0 = perf()
            for i in range(start, min(start + burst, n)):
                log(msg, i, 1.5)
            spent += perf() - t0
            if yield_ is not None:
                yield_()
        return spent

    base_rss = _current_rss_mb()
    tick = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0.01)
    t_start = time.perf_counter()
    spent_cpu: float | None = None
    if thread:
        spent = await _in_thread(lambda: produce(lambda: time.sleep(0)))
    else:
        perf, cpu = time.perf_counter, time.thread_time
        spent = spent_cpu = 0.0
        for start in range(0, n, burst):
            t0, c0 = perf(), cpu()
            for i in range(start, min(start + burst, n)):
                log(msg, i, 1.5)
            spent += perf() - t0
            spent_cpu += cpu() - c0
            await asyncio.sleep(0)
    t_calls = time.perf_counter()
    await c.finish()
    t_end = time.perf_counter()
    ticking = False
    await tick
    peak = _rss_mb()
    delivered = c.delivered(n) if c.counts else None
    lags.sort()
    return {
        "call_us": spent / n * 1e6,
        # the loop thread's CPU time inside the bursts: without descheduled time
        "call_cpu_us": None if spent_cpu is None else spent_cpu / n * 1e6,
        "calls_s": t_calls - t_start,
        "e2e_s": t_end - t_start,
        "e2e_rps": n / (t_end - t_start),
        "delivered": delivered,
        # counted at the destination; where there is none (/dev/null), by the pipeline
        "lost": getattr(c, "lost_in_stats", None) if delivered is None else max(n - delivered, 0),
        "lost_in_stats": getattr(c, "lost_in_stats", None),
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1e3 if lags else 0.0,
        "lag_max_ms": lags[-1] * 1e3 if lags else 0.0,
        "ticks": len(lags),
        "rss_base_mb": base_rss,
        "rss_peak_mb": peak,
    }


async def _in_thread(fn: Callable[[], float]) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the loop
            loop.call_soon_threadsafe(done.set_exception, exc)
        else:
            loop.call_soon_threadsafe(done.set_result, result)

    t = threading.Thread(target=run, name="bench-producer")
    t.start()
    try:
        return await done
    finally:
        t.join()


def main() -> None:
    spec = json.loads(sys.argv[1])
    with contextlib.redirect_stdout(sys.stderr):
        result = asyncio.run(
            trial(
                spec["contender"],
                spec["n"],
                spec.get("burst", 1000),
                spec.get("thread", False),
                spec.get("options"),
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
