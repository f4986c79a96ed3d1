"""A plain asyncio service that flushes its logs on SIGTERM and exits cleanly.

Run it, then stop it with Ctrl-C or ``kill -TERM``::

    python examples/asyncio_service.py service.log

Records are delivered while the service works; on SIGTERM/SIGINT it stops taking
work, ``install()``'s exit awaits delivery of every record and closes the sinks, and
the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import aiologsinks as als

log = logging.getLogger("example.service")


async def work(stop: asyncio.Event) -> int:
    jobs = 0
    while not stop.is_set():
        jobs += 1
        log.info("job %d done", jobs)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    return jobs


async def main(path: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sink = als.FileSink(path)
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    async with als.install(sink, level=logging.INFO) as dispatcher:
        log.info("service started")
        print("ready", flush=True)  # tells a supervisor (or a test) that we serve
        jobs = await work(stop)
        log.info("service stopping after %d jobs", jobs)
        await dispatcher.flush()  # every record is in the file from here on
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "service.log")))
