"""An aiohttp app that runs aiologsinks in a cleanup context.

Run it (loopback only)::

    python examples/aiohttp_app.py          # http://127.0.0.1:8080/hello

The cleanup context starts the dispatcher before the app serves and, when the app
shuts down, awaits delivery of everything logged and closes the sinks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

import aiologsinks as als

log = logging.getLogger("example.aiohttp")
DISPATCHER = web.AppKey("dispatcher", als.Dispatcher)


async def logging_ctx(app: web.Application) -> AsyncIterator[None]:
    sink = als.FileSink(os.environ.get("AIOLOGSINKS_LOG_FILE", "aiohttp_app.log"))
    sink.name = "file"  # stats() reports sinks by name
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    async with als.install(sink, als.StreamSink(), level=logging.INFO) as dispatcher:
        app[DISPATCHER] = dispatcher
        yield  # the app serves here; on shutdown: flush, then close the sinks


async def hello(request: web.Request) -> web.Response:
    name = request.query.get("name", "world")
    log.info("hello %s", name)
    return web.json_response({"hello": name})


async def flush(request: web.Request) -> web.Response:
    # e.g. for a health check that must see its own records on disk
    await request.app[DISPATCHER].flush()
    return web.json_response(request.app[DISPATCHER].stats().sinks["file"].emitted)


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(logging_ctx)
    app.router.add_get("/hello", hello)
    app.router.add_post("/flush", flush)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
