"""JSONFormatter against python-json-logger on the same records.

Formats the same records (a plain message, one with ``extra=`` fields, one with
exception text) with each formatter and reports microseconds per record (best of
``--rounds``) and the ratio. Both write timestamp, level, logger and message plus the
extras; python-json-logger is given the equivalent format string and an ISO timestamp.
Ours runs twice: with orjson (when installed) and with the stdlib ``json`` fallback.
Rounds interleave the contenders; each reports its best round.

    python benchmarks/bench_json.py               # 20,000 records per round
    python benchmarks/bench_json.py --n 5000
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aiologsinks as als  # noqa: E402
from aiologsinks import _json  # noqa: E402


def records(n: int) -> list[logging.LogRecord]:
    out = []
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    for i in range(n):
        record = logging.LogRecord(
            "app.http", logging.INFO, "/srv/app/http.py", 10 + i % 50, "request %s done", (i,), None
        )
        if i % 3 == 1:
            record.__dict__.update(
                {"request_id": f"r-{i}", "user": {"id": i, "roles": ["a", "b"]}, "ms": 1.5}
            )
        if i % 50 == 2:
            record.exc_text = logging.Formatter().formatException(exc_info)
        out.append(record)
    return out


def timed(fn: Callable[[logging.LogRecord], object], recs: list[logging.LogRecord]) -> float:
    """Microseconds per record for one pass over ``recs``."""
    t0 = time.perf_counter()
    for r in recs:
        fn(r)
    return (time.perf_counter() - t0) / len(recs) * 1e6


def stdlib_json(formatter: als.JSONFormatter) -> Callable[[logging.LogRecord], str]:
    """``formatter.format`` with the stdlib serialiser, as without orjson."""

    def fmt(record: logging.LogRecord) -> str:
        return _json._dumps_stdlib(formatter.to_dict(record)).decode()

    return fmt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    recs = records(args.n)
    from pythonjsonlogger.json import JsonFormatter

    pjl = JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    fields = ["timestamp", "level", "logger", "message", "exception"]
    ours = als.JSONFormatter(fields)
    name = "JSONFormatter (orjson)" if _json._orjson is not None else "JSONFormatter (json)"
    contenders = {
        "python-json-logger": pjl.format,
        name: ours.format,
        "JSONFormatter (stdlib json)": stdlib_json(ours),
    }
    # rounds interleave the contenders, so a busy moment of the machine hits them all
    runs: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(args.rounds):
        for label, fn in contenders.items():
            runs[label].append(timed(fn, recs))
    results = {label: min(times) for label, times in runs.items()}
    base = results["python-json-logger"]
    version = sys.version.split()[0]
    print(f"{args.n} records, best of {args.rounds} interleaved rounds, Python {version}")
    for label, us in results.items():
        print(f"  {label:30s} {us:6.2f} us/record   {base / us:5.2f}x python-json-logger")


if __name__ == "__main__":
    main()
