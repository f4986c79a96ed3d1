"""A FastAPI app whose records go to a file through aiologsinks.

Run it (loopback only)::

    AIOLOGSINKS_LOG_FILE=app.log uvicorn --app-dir examples fastapi_app:app --host 127.0.0.1

``install()`` in the lifespan attaches the shim to the root logger; a request's
logging call is an O(1) append, the write happens on the sink's worker thread. When
uvicorn stops (Ctrl-C, SIGTERM) the lifespan exit awaits delivery: every record
logged before is in the file when the process ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import aiologsinks as als

log = logging.getLogger("example.fastapi")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    sink = als.FileSink(os.environ.get("AIOLOGSINKS_LOG_FILE", "fastapi_app.log"))
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    async with als.install(sink, level=logging.INFO):
        log.info("app started")
        yield
        log.info("app stopping")


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def index() -> dict[str, bool]:
    return {"ok": True}


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    log.info("request for item %d", item_id)
    return {"item_id": item_id}
