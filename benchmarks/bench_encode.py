"""Encoding a dispatcher's frozen records: each sink's batch path against the one it
replaced, for the sinks that encode every record themselves:

* ``HTTPSink(json_batch=True)``: ``json_run`` in C against thawing each record and
  ``json.dumps`` of its ``__dict__``;
* ``OTLPSink`` (protobuf): ``otlp_run`` in C against the Python writer of the same
  bytes, each with the request framing (``_items`` and ``_body``, what the sink does on
  the loop per record);
* ``SysLogSink`` over TCP: the batch framed with one ``<PRI>ident`` head per level
  name against the per-record ``_encode_message`` (the priority hooks asked for each
  record), both after the same compiled formatting;
* the gzip of ``OTLPSink``'s request bodies (level 1): ISA-L's deflate (``isal``, the
  ``otlp`` extra) against zlib's, the bodies encoded beforehand (when ``isal`` is
  installed).

The records are the service benchmark's three per request (arguments, ``extra=``
fields, arguments), frozen as the shim freezes them; each contender encodes pieces of
100 and reports microseconds per record, the best of ``--rounds`` interleaved rounds,
and the ratio. Both paths give the same bytes (checked before timing).

    python -m benchmarks.bench_encode            # 20,000 records per round
    python -m benchmarks.bench_encode --n 5000
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import aiologsinks as als  # noqa: E402
from aiologsinks import _otlp_map, _transport  # noqa: E402
from aiologsinks._fastformat import format_batch  # noqa: E402
from aiologsinks._record import RecordBatch, freeze  # noqa: E402
from aiologsinks.sinks import http as http_module  # noqa: E402

PIECE = 100


def frozen_records(n: int) -> list[Any]:
    """``n`` frozen records, the service benchmark's three kinds in turn."""
    out = []
    for i in range(n):
        if i % 3 == 0:
            args: tuple[Any, ...] = ("GET", "/work", "127.0.0.1:5555")
            r = logging.LogRecord(
                "svc.app", logging.INFO, __file__, 1, "request started: %s %s client=%s", args, None
            )
        elif i % 3 == 1:
            r = logging.LogRecord(
                "svc.app", logging.INFO, __file__, 2, "loaded user profile", (), None
            )
            r.user_id, r.tenant = i % 1000, "acme"
        else:
            args = (200, 0.123)
            msg = "request finished: status=%d in %.3f ms"
            r = logging.LogRecord("svc.app", logging.INFO, __file__, 3, msg, args, None)
        out.append(freeze(r))
    return out


def timed(encode: Callable[[list[Any]], bytes], items: list[Any]) -> float:
    """Seconds per record to encode ``items`` piece by piece."""
    pieces = [items[i : i + PIECE] for i in range(0, len(items), PIECE)]
    start = time.perf_counter()
    for piece in pieces:
        encode(piece)
    return (time.perf_counter() - start) / len(items)


def main(argv: list[str] | None = None) -> int:
    """Time both paths of each sink and print microseconds per record and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args(argv)
    if http_module._json_run is None or _otlp_map._otlp_run is None:
        print("the compiled accelerator is not in use: nothing to compare")
        return 0
    items = frozen_records(opts.n)
    sections = [
        ("HTTPSink JSON batch", _http()),
        ("OTLPSink protobuf", _otlp()),
        ("SysLogSink TCP octet-counted", _syslog()),
    ]
    if _transport._isal_zlib is not None:
        sections.append(("OTLPSink request body (100 records), gzip", _gzip()))
    else:
        print("isal is not installed: the gzip section is left out")
    for title, contenders in sections:
        best = dict.fromkeys(contenders, float("inf"))
        for _ in range(opts.rounds):
            for name, encode in contenders.items():
                best[name] = min(best[name], timed(encode, items))
        new, old = best.values()
        print(f"{title} encoding, {opts.n:,} records, best of {opts.rounds} rounds")
        for name, seconds in best.items():
            print(f"  {name:44} {seconds * 1e6:6.2f} µs/record")
        print(f"  first / second: {new / old:.2f}x")
    return 0


def _http() -> dict[str, Callable[[list[Any]], bytes]]:
    sink = als.HTTPSink("127.0.0.1:9", "/log", "POST", json_batch=True)
    sample = frozen_records(PIECE)
    if sink._json_piece(sample) != sink._json_mapped(sample):
        raise SystemExit("the two JSON paths disagree")
    return {
        "compiled (frozen records)": sink._json_piece,
        "Python (thaw + json.dumps of __dict__)": sink._json_mapped,
    }


def _otlp() -> dict[str, Callable[[list[Any]], bytes]]:
    sink = als.OTLPSink("http://127.0.0.1:9/v1/logs")
    observed = time.time_ns()

    def request(items: list[Any]) -> bytes:
        with_time = time.time_ns
        time.time_ns = lambda: observed  # one observed time: comparable bytes
        try:
            return sink._body(sink._items(RecordBatch(items)))[0]
        finally:
            time.time_ns = with_time

    def python(items: list[Any]) -> bytes:
        run, _otlp_map._otlp_run = _otlp_map._otlp_run, None
        try:
            return request(items)
        finally:
            _otlp_map._otlp_run = run

    sample = frozen_records(PIECE)
    if request(sample) != python(sample):
        raise SystemExit("the two OTLP paths disagree")
    return {"compiled (frozen records)": request, "Python (same bytes)": python}


def _gzip() -> dict[str, Callable[[list[Any]], bytes]]:
    encode = _otlp()["compiled (frozen records)"]
    bodies: dict[tuple[int, int], bytes] = {}

    def body(items: list[Any]) -> bytes:
        key = (id(items[0]), len(items))  # the same records each round: encoded once
        if key not in bodies:
            bodies[key] = encode(items)
        return bodies[key]

    def packer(lib: Any) -> Callable[[list[Any]], bytes]:
        def pack(items: list[Any]) -> bytes:
            gz = lib.compressobj(1, lib.DEFLATED, 31)
            return bytes(gz.compress(body(items)) + gz.flush())

        return pack

    isal, plain = packer(_transport._isal_zlib), packer(zlib)
    sample = frozen_records(PIECE)
    if zlib.decompress(isal(sample), 31) != zlib.decompress(plain(sample), 31):
        raise SystemExit("the two gzip paths disagree")
    return {"ISA-L deflate, level 1 (isal)": isal, "zlib, level 1": plain}


def _syslog() -> dict[str, Callable[[list[Any]], bytes]]:
    sink = als.SysLogSink(("127.0.0.1", 9), socktype=socket.SOCK_STREAM)
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def batch(items: list[Any]) -> bytes:
        return b"".join(sink._messages(RecordBatch(items))[1])

    def per_record(items: list[Any]) -> bytes:
        fast = format_batch(sink, RecordBatch(items), "")
        assert fast is not None
        texts, kept = fast
        encode = sink._encode_message
        return b"".join(encode(t, kept.level_name(i)) for i, t in enumerate(texts))

    sample = frozen_records(PIECE)
    if batch(sample) != per_record(sample):
        raise SystemExit("the two syslog paths disagree")
    return {"one head per level name (the batch path)": batch, "per record": per_record}


if __name__ == "__main__":
    raise SystemExit(main())
