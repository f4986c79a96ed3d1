"""A FastAPI app for ``uvicorn --workers N``: every worker logs each request through a
``SocketSink`` to a collector at ``127.0.0.1:$COLLECTOR_PORT`` (the multi-worker recipe).

Each line says which request it was and its place in the worker's own sequence
(``request <i> seq <n>``), so a test can check that every request's line arrived
exactly once and each worker's lines in order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import aiologsinks as als

log = logging.getLogger("app.requests")
_seq = 0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # a buffer large enough for every record logged while the collector restarts,
    # and a short back-off so the worker reconnects soon after it is back
    sink = als.SocketSink("127.0.0.1", int(os.environ["COLLECTOR_PORT"]), buffer_size=100_000)
    sink.retryStart, sink.retryFactor, sink.retryMax = 0.02, 2.0, 0.2
    async with als.install(sink, logger=log, level=logging.INFO):
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/r/{i}")
async def request(i: int) -> dict[str, int]:
    global _seq
    _seq += 1
    log.info("request %d seq %d", i, _seq)
    return {"pid": os.getpid(), "seq": _seq}
