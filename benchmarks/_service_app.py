"""The service under test: a FastAPI app under uvicorn, or an aiohttp app, that logs.

``python -m benchmarks._service_app '{"framework": ..., "contender": ..., "dest": ...,
"port": ..., "dir": ..., "peer_port": ...}'`` serves on 127.0.0.1:``port`` until SIGTERM or
SIGINT, then shuts down the way the framework does (lifespan exit / cleanup context),
which is where each logging option delivers what it still holds.

Routes: ``GET /work`` is the request under load; it logs what a request handler of a
real service logs: a line with arguments, one with ``extra=`` fields, one more with
arguments at the end, and every 50th request an exception with its traceback (3.02
records per request). ``GET /health`` answers when the logging option is set up;
``GET /stats`` returns the number of records logged so far and the time the cyclic GC
took so far, by generation (see :class:`GCClock`; neither route logs).

``"time_scale": F`` in the spec stretches aiologsinks' batching windows (the
dispatcher's and the sink's ``linger``) F-fold, for a server slowed down F-fold
(``benchmarks/instructions.py``): its batches then hold as many records as at full speed.

Logging options (``contender``), each for each destination (``dest``) where it has one:

* ``null``: stdlib logging with a ``NullHandler`` (the floor: record creation only);
* ``stdlib``: the stdlib handler for the destination, called on the loop;
* ``queue``: stdlib ``QueueHandler`` + ``QueueListener`` (a thread) -> that handler;
* ``loguru``: loguru's own file sink with ``enqueue=True``;
* ``aiologger``: aiologger's ``AsyncFileHandler``;
* ``otel``: the OpenTelemetry SDK's ``LoggingHandler`` + ``BatchLogRecordProcessor`` +
  OTLP/HTTP (protobuf) exporter, default settings (the OTLP destination);
* ``aiologsinks``: the aiologsinks sink for the destination, set up with
  ``aiologsinks.install()`` in the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import json
import logging
import logging.handlers
import os
import queue
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

try:  # at module level: FastAPI resolves the handlers' annotations in these globals
    from fastapi import Request
except ImportError:  # the aiohttp app does not need it
    Request = Any

FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOGURU_FMT = "{time:YYYY-MM-DD HH:mm:ss,SSS} {level} {name}: {message}"
#: an exception is logged by every EXC_EVERY-th request
EXC_EVERY = 50


class GCClock:
    """The cyclic GC's collections and their time, by generation, since the app started.

    A full collection traverses every tracked object of the process, the logging
    option's own (its modules, an HTTP client's) with the app's: this shows on the
    clock of a busy server and is part of what an option costs it.
    """

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0

    def start(self) -> None:
        """Time every collection from now on (in the server process only)."""
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.count[generation] += 1

    def stats(self) -> dict[str, list[float] | list[int]]:
        """``gc_s`` (seconds) and ``gc_n`` (collections) for generations 0, 1, 2."""
        return {"gc_s": list(self.seconds), "gc_n": list(self.count)}


GC_CLOCK = GCClock()


class Log:
    """What the request handler calls; the stdlib logger itself for stdlib-based options."""

    def __init__(self, logger: Any) -> None:
        self.info = logger.info
        self.exception = logger.exception


class LoguruLog:
    """loguru's API: ``{}`` formatting, ``bind()`` for extra fields."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def info(self, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> None:
        target = self._logger.bind(**extra) if extra else self._logger
        target.info(msg.replace("%s", "{}").replace("%d", "{}").replace("%.3f", "{:.3f}"), *args)

    def exception(self, msg: str, *args: Any) -> None:
        # called inside the handler's `except`: the current exception is the one to log
        self._logger.opt(exception=True).error(msg.replace("%d", "{}"), *args)


class AiologgerLog:
    """aiologger's API: each call returns a task; arguments must be a mapping, so the
    message is merged here."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def info(self, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> None:
        self._logger.info(msg % args if args else msg, extra=extra)

    def exception(self, msg: str, *args: Any) -> None:
        self._logger.error(msg % args if args else msg, exc_info=sys.exc_info()[1])


def stdlib_handler(dest: str, spec: dict[str, Any]) -> logging.Handler:
    """The stdlib handler for ``dest``."""
    if dest == "file":
        return logging.FileHandler(os.path.join(spec["dir"], "service.log"))
    if dest == "http":
        return logging.handlers.HTTPHandler(f"127.0.0.1:{spec['peer_port']}", "/log", "POST")
    if dest in ("syslog", "stall"):
        return logging.handlers.SysLogHandler(
            ("127.0.0.1", spec["peer_port"]), socktype=socket.SOCK_STREAM
        )
    if dest == "otlp":
        raise SystemExit("the stdlib has no OTLP handler")
    raise SystemExit(f"unknown destination {dest!r}")


def aiologsinks_sink(dest: str, spec: dict[str, Any]) -> Any:
    """The aiologsinks sink for ``dest``, configured as the README recommends."""
    import aiologsinks as als

    if dest == "file":
        return als.FileSink(os.path.join(spec["dir"], "service.log"))
    if dest == "http":
        return als.HTTPSink(f"127.0.0.1:{spec['peer_port']}", "/log", "POST", json_batch=True)
    if dest in ("syslog", "stall"):
        return als.SysLogSink(("127.0.0.1", spec["peer_port"]), socktype=socket.SOCK_STREAM)
    if dest == "otlp":
        return als.OTLPSink(endpoint=f"http://127.0.0.1:{spec['peer_port']}/v1/logs")
    raise SystemExit(f"unknown destination {dest!r}")


class Logging:
    """Set up and tear down one logging option; counts the records the app logs."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.contender: str = spec["contender"]
        self.dest: str = spec["dest"]
        self.logged = 0
        self.stack = contextlib.AsyncExitStack()
        self.log: Any = None
        self.stats: dict[str, Any] = {}
        #: CPU time of the loop's thread in each request's logging calls (s), apart for
        #: the requests that log an exception: what logging costs a request, without the
        #: noise of a shared machine's scheduling
        self.cpu: list[float] = []
        self.exc_cpu: list[float] = []

    def _stdlib_logger(self) -> logging.Logger:
        logger = logging.getLogger("svc")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        return logger

    async def __aenter__(self) -> Logging:
        c, spec = self.contender, self.spec
        if c == "null":
            logger = self._stdlib_logger()
            logger.addHandler(logging.NullHandler())
            self.log = Log(logging.getLogger("svc.app"))
        elif c == "stdlib":
            logger = self._stdlib_logger()
            handler = stdlib_handler(self.dest, spec)
            handler.setFormatter(logging.Formatter(FMT))
            logger.addHandler(handler)
            self.stack.callback(handler.close)
            self.stack.callback(logger.removeHandler, handler)
            self.log = Log(logging.getLogger("svc.app"))
        elif c == "queue":
            logger = self._stdlib_logger()
            target = stdlib_handler(self.dest, spec)
            target.setFormatter(logging.Formatter(FMT))
            q: queue.SimpleQueue[Any] = queue.SimpleQueue()
            listener = logging.handlers.QueueListener(q, target)
            listener.start()
            handler = logging.handlers.QueueHandler(q)
            logger.addHandler(handler)
            self.stack.callback(target.close)
            # joins the listener's thread: blocks the loop at shutdown, as users do
            self.stack.callback(listener.stop)
            self.stack.callback(logger.removeHandler, handler)
            self.log = Log(logging.getLogger("svc.app"))
        elif c == "loguru":
            from loguru import logger as loguru_logger

            if self.dest != "file":
                raise SystemExit("loguru: only the file destination is benchmarked")
            loguru_logger.remove()
            loguru_logger.add(
                os.path.join(spec["dir"], "service.log"), enqueue=True, format=LOGURU_FMT
            )

            async def complete() -> None:
                await loguru_logger.complete()
                loguru_logger.remove()

            self.stack.push_async_callback(complete)
            self.log = LoguruLog(loguru_logger.bind(name="svc.app"))
        elif c == "aiologger":
            from aiologger import Logger
            from aiologger.formatters.base import Formatter
            from aiologger.handlers.files import AsyncFileHandler
            from aiologger.levels import LogLevel

            if self.dest != "file":
                raise SystemExit("aiologger: only the file destination is benchmarked")
            alogger = Logger(name="svc.app", level=LogLevel.INFO)
            ahandler = AsyncFileHandler(os.path.join(spec["dir"], "service.log"))
            ahandler.formatter = Formatter(FMT)
            alogger.add_handler(ahandler)
            self.stack.push_async_callback(alogger.shutdown)
            self.log = AiologgerLog(alogger)
        elif c == "otel":
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

            if self.dest != "otlp":
                raise SystemExit("otel: only the OTLP destination is benchmarked")
            provider = LoggerProvider()
            endpoint = f"http://127.0.0.1:{spec['peer_port']}/v1/logs"
            provider.add_log_record_processor(
                BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint))
            )
            logger = self._stdlib_logger()
            handler = LoggingHandler(logger_provider=provider)
            logger.addHandler(handler)
            # exports what the processor holds and joins its thread: blocks the loop at
            # shutdown, as the SDK's users do
            self.stack.callback(provider.shutdown)
            self.stack.callback(logger.removeHandler, handler)
            self.log = Log(logging.getLogger("svc.app"))
        elif c == "aiologsinks":
            import aiologsinks as als

            sink = aiologsinks_sink(self.dest, spec)
            # the OTLP body is the message, as the SDK's: no line format there
            if getattr(sink, "_uses_formatter", True) and self.dest != "otlp":
                sink.setFormatter(logging.Formatter(FMT))
            logger = self._stdlib_logger()
            options: dict[str, Any] = {}
            if spec.get("linger_max") is not None:  # benchmarks/service.py --linger-max
                from aiologsinks import _lane

                _lane.LINGER_MAX_RECORDS = int(spec["linger_max"]) or 1 << 30
            if spec.get("linger") is not None:  # benchmarks/service.py --linger
                options["linger"] = float(spec["linger"])
            scale = float(spec.get("time_scale", 1.0))
            if scale != 1.0:
                # run slowed down (benchmarks/instructions.py): the batches' time windows
                # stretched alike keep the batches the size they have at full speed
                default = inspect.signature(als.Dispatcher).parameters["linger"].default
                options["linger"] = default * scale
                sink.linger *= scale
            dispatcher = await self.stack.enter_async_context(
                als.install(sink, logger=logger, **options)
            )
            self.dispatcher = dispatcher
            self.log = Log(logging.getLogger("svc.app"))
        else:
            raise SystemExit(f"unknown contender {c!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()
        d = getattr(self, "dispatcher", None)
        if d is not None:
            s = d.stats()
            from aiologsinks import _lane

            self.stats = {
                "lost_in_stats": s.lost,
                "linger": d.linger,
                "linger_max": _lane.linger_max_records(),
            }

    # -- the request handler's logging, the same for every framework --

    def handle(self, n: int, client: str) -> None:
        log = self.log
        c0 = time.thread_time()
        t0 = time.perf_counter()
        log.info("request started: %s %s client=%s", "GET", "/work", client)
        log.info("loaded user profile", extra={"user_id": n % 1000, "tenant": "acme"})
        count = 3
        if n % EXC_EVERY == 0:
            try:
                raise ValueError(f"upstream refused order {n}")
            except ValueError:
                log.exception("payment check failed for order %d", n)
            count += 1
        log.info("request finished: status=%d in %.3f ms", 200, (time.perf_counter() - t0) * 1e3)
        self.logged += count
        (self.exc_cpu if count > 3 else self.cpu).append(time.thread_time() - c0)

    def cpu_summary(self) -> dict[str, float | None]:
        """Logging CPU per request, µs: p50 and p99 of the plain requests, p50 of those
        that logged an exception."""

        def q(values: list[float], p: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6

        return {
            "log_cpu_p50_us": q(self.cpu, 0.5),
            "log_cpu_p99_us": q(self.cpu, 0.99),
            "exc_log_cpu_p50_us": q(self.exc_cpu, 0.5),
        }


def fastapi_app(spec: dict[str, Any]) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    state: dict[str, Logging] = {}
    counter = itertools.count(1)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Logging(spec) as lg:
            state["logging"] = lg
            yield
        _write_result(spec, lg)

    app = FastAPI(lifespan=lifespan)

    @app.get("/work")
    async def work(request: Request) -> JSONResponse:
        n = next(counter)
        await asyncio.sleep(0)  # stands in for the awaits of a real handler
        state["logging"].handle(n, request.client.host if request.client else "-")
        return JSONResponse({"ok": True, "n": n})

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": "logging" in state}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"logged": state["logging"].logged, **GC_CLOCK.stats()}

    return app


def aiohttp_app(spec: dict[str, Any]) -> Any:
    from aiohttp import web

    state: dict[str, Logging] = {}
    counter = itertools.count(1)

    async def logging_ctx(app: web.Application) -> AsyncIterator[None]:
        async with Logging(spec) as lg:
            state["logging"] = lg
            yield
        _write_result(spec, lg)

    async def work(request: web.Request) -> web.Response:
        n = next(counter)
        await asyncio.sleep(0)
        state["logging"].handle(n, request.remote or "-")
        return web.json_response({"ok": True, "n": n})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": "logging" in state})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"logged": state["logging"].logged, **GC_CLOCK.stats()})

    app = web.Application()
    app.cleanup_ctx.append(logging_ctx)
    app.router.add_get("/work", work)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    return app


def _write_result(spec: dict[str, Any], lg: Logging) -> None:
    with open(spec["result"], "w") as f:
        json.dump({"logged": lg.logged, **lg.stats, **lg.cpu_summary()}, f)


def main() -> None:
    spec = json.loads(sys.argv[1])
    GC_CLOCK.start()
    if spec["framework"] == "fastapi":
        import uvicorn

        config = uvicorn.Config(
            fastapi_app(spec),
            host="127.0.0.1",
            port=spec["port"],
            log_config=None,
            log_level="warning",
            access_log=False,
            loop="asyncio",
            http="h11",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run()
    elif spec["framework"] == "aiohttp":
        from aiohttp import web

        web.run_app(
            aiohttp_app(spec),
            host="127.0.0.1",
            port=spec["port"],
            print=None,
            access_log=None,
            shutdown_timeout=5,
        )
    else:
        raise SystemExit(f"unknown framework {spec['framework']!r}")


if __name__ == "__main__":
    main()
