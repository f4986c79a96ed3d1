"""Records/s through a log collector: ``aiologsinks receive`` vs the stdlib cookbook.

Four sending processes each stream the same pre-built ``SocketHandler`` frames (one
``makePickle`` per record, built before the clock starts) over their own TCP
connection to a receiver on 127.0.0.1, which writes every record to a
``RotatingFileHandler``-style set of files (10 MB per file, 5 backups, one format):

* ``cookbook``: the stdlib logging cookbook's network receiver — ``socketserver.
  ThreadingTCPServer`` + ``pickle.loads`` + ``logging.makeLogRecord`` +
  ``logger.handle`` into a ``RotatingFileHandler`` (one thread per connection);
* ``collector``: ``python -m aiologsinks receive --config`` with a ``RotatingFileSink``:
  the safe pickle reader (these frames take its fast path: proven flat, then read by
  the C unpickler), rebuilt records, the Dispatcher.

The clock runs from the moment the senders start until the receiver has written the
last record (the cookbook receiver counts its records; the collector reports its
sink's written count with ``--stats-interval``). Each trial runs both receivers, in
alternating order, so a slow spell of a shared machine moves both sides of a pair;
the result is the median of the per-trial ratios with a bootstrap 95% interval, and
a verdict on the goal (at least 2x the cookbook receiver) once 5 or more trials
decide it. Loopback only, bounded (``--records`` per sender).

Run: ``python benchmarks/bench_collector.py [--records N] [--trials N]``
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import multiprocessing
import os
import pickle
import signal
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._stats import Target, paired

ROOT = Path(__file__).resolve().parent.parent
FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
SENDERS = 4
GOAL = Target("collector records/s >= 2x the cookbook receiver's", ">=", 2.0)


def frames(worker: int, n: int) -> bytes:
    """What ``SocketHandler`` sends for ``n`` INFO records of one worker."""
    handler = logging.handlers.SocketHandler("127.0.0.1", 0)
    out = []
    for i in range(n):
        record = logging.LogRecord(
            "app.requests", logging.INFO, "/srv/app/views.py", 42,
            "GET /items/%d 200 in %.1f ms (worker %d)", (i, 3.25, worker), None,
        )  # fmt: skip
        out.append(handler.makePickle(record))
    handler.close()
    return b"".join(out)


def sender(port: int, data: bytes, go: Event) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        go.wait()
        sock.sendall(data)


# -- the stdlib cookbook receiver (in its own process) ----------------------------------


def cookbook_receiver(
    directory: str,
    expected: int,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
    stop: Event,
) -> None:
    handler = logging.handlers.RotatingFileHandler(
        os.path.join(directory, "cookbook.log"), maxBytes=MAX_BYTES, backupCount=BACKUPS
    )
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("app.requests")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    lock = threading.Lock()
    count = [0]

    class LogRecordStreamHandler(socketserver.StreamRequestHandler):
        def handle(self) -> None:  # the cookbook's handler, plus a count
            while True:
                chunk = self.connection.recv(4)
                while chunk and len(chunk) < 4:  # (the cookbook assumes a whole prefix)
                    more = self.connection.recv(4 - len(chunk))
                    if not more:
                        break
                    chunk += more
                if len(chunk) < 4:
                    break
                slen = struct.unpack(">L", chunk)[0]
                chunk = self.connection.recv(slen)
                while len(chunk) < slen:
                    chunk = chunk + self.connection.recv(slen - len(chunk))
                record = logging.makeLogRecord(pickle.loads(chunk))
                logging.getLogger(record.name).handle(record)
                with lock:
                    count[0] += 1
                    if count[0] == expected:
                        out.put(time.perf_counter())

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("127.0.0.1", 0), LogRecordStreamHandler) as server:
        out.put(server.server_address[1])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stop.wait()
        server.shutdown()
    handler.close()


def run_cookbook(data: list[bytes], expected: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        stop = multiprocessing.Event()
        q: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        proc = multiprocessing.Process(
            target=cookbook_receiver, args=(directory, expected, q, stop)
        )
        proc.start()
        port = q.get(timeout=30)
        elapsed = _send(port, data, lambda: q.get(timeout=600))
        stop.set()
        proc.join(30)
        _check(Path(directory), "cookbook.log", expected)
    return elapsed


# -- the collector ---------------------------------------------------------------------


def run_collector(data: list[bytes], expected: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "collector.toml"
        log = Path(directory) / "collector.log"
        config.write_text(
            "[collector]\ntcp = 0\nstats_interval = 0.02\n"
            f'[formatters.line]\nformat = "{FORMAT}"\n'
            f'[sinks.file]\ntype = "RotatingFileSink"\nfilename = "{log}"\n'
            f'maxBytes = {MAX_BYTES}\nbackupCount = {BACKUPS}\nformatter = "line"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiologsinks", "receive", "--config", str(config)],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert proc.stderr is not None
        line = proc.stderr.readline()
        port = int(line.rsplit(":", 1)[1])
        target = f"file {expected} written"

        def done() -> float:
            assert proc.stderr is not None
            for text in proc.stderr:
                if target in text:
                    return time.perf_counter()
            raise RuntimeError("the collector ended before writing every record")

        elapsed = _send(port, data, done)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        _check(Path(directory), "collector.log", expected)
    return elapsed


def _send(port: int, data: list[bytes], finished: object) -> float:
    go = multiprocessing.Event()
    senders = [multiprocessing.Process(target=sender, args=(port, d, go)) for d in data]
    for s in senders:
        s.start()
    time.sleep(0.5)  # every sender connected (a benchmark, not a test: no event needed)
    start = time.perf_counter()
    go.set()
    end: float = finished()  # type: ignore[operator]
    for s in senders:
        s.join(60)
    return end - start


def _check(directory: Path, base: str, expected: int) -> None:
    lines = sum(p.read_bytes().count(b"\n") for p in directory.glob(base + "*"))
    kept = min(expected, lines)
    if lines != expected and len(list(directory.glob(base + "*"))) <= BACKUPS:
        raise RuntimeError(f"{base}: {lines} lines, expected {expected}")
    del kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="records per sender (50000)")
    parser.add_argument("--trials", type=int, default=5, help="trials per receiver (5)")
    args = parser.parse_args()
    data = [frames(w, args.records) for w in range(SENDERS)]
    expected = SENDERS * args.records
    runs = (("cookbook", run_cookbook), ("collector", run_collector))
    results: dict[str, dict[int, float]] = {"cookbook": {}, "collector": {}}
    for trial in range(args.trials):
        for name, run in runs if trial % 2 == 0 else runs[::-1]:
            elapsed = run(data, expected)
            results[name][trial] = expected / elapsed
            print(f"trial {trial + 1} {name:9s} {expected / elapsed:10,.0f} records/s", flush=True)
        ratio = results["collector"][trial] / results["cookbook"][trial]
        print(f"trial {trial + 1} ratio     {ratio:10.2f}x", flush=True)
    cook = statistics.median(results["cookbook"].values())
    ours = statistics.median(results["collector"].values())
    est = paired(results["collector"], results["cookbook"])
    print(
        f"\n{SENDERS} senders x {args.records} records into rotating files ({os.cpu_count()} cores)"
    )
    print(f"cookbook receiver   {cook:10,.0f} records/s (median of {args.trials})")
    print(f"aiologsinks receive {ours:10,.0f} records/s (median of {args.trials})")
    print(f"ratio               {est.fmt() if est else '-'} (median of per-trial ratios, 95% CI)")
    print(f"goal: {GOAL.what}: {GOAL.verdict(est)}")


if __name__ == "__main__":
    main()
