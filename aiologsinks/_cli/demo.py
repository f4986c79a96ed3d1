"""``python -m aiologsinks demo``: log through install() and report what arrived."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from .._dispatcher import install
from ..sinks.file import FileSink

__all__ = ["run_demo"]


async def _demo(records: int, workdir: Path) -> dict[str, Any]:
    path = workdir / "demo.log"
    sink = FileSink(path)
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("aiologsinks.demo")
    logger.propagate = False
    worst_stall = 0.0
    started = time.perf_counter()
    async with install(sink, logger=logger, level=logging.INFO) as dispatcher:
        last = time.perf_counter()
        for i in range(records):
            logger.info("demo record %d of %d", i + 1, records)
            if i % 1000 == 999:
                await asyncio.sleep(0)
                now = time.perf_counter()
                worst_stall = max(worst_stall, now - last)
                last = now
        await dispatcher.flush()
        elapsed = time.perf_counter() - started
        stats = dispatcher.stats()
    received = await asyncio.to_thread(_count_lines, path)
    sink_stats = next(iter(stats.sinks.values()))
    return {
        "sinks": [
            {
                "sink": "file",
                "sent": records,
                "received": received,
                "lost": records - received,
                "errors": sink_stats.errors,
                "elapsed_ms": round(elapsed * 1000, 1),
                "worst_stall_ms": round(worst_stall * 1000, 2),
            }
        ],
        "file": str(path),
    }


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for _ in f)


def run_demo(records: int = 10_000, as_json: bool = False) -> int:
    """Run the demo; return 0 when nothing was lost, 1 otherwise."""
    if records < 1:
        raise SystemExit("--records: expected an int >= 1")
    with tempfile.TemporaryDirectory(prefix="aiologsinks-demo-") as tmp:
        result = asyncio.run(_demo(records, Path(tmp)))
    lost = sum(row["lost"] for row in result["sinks"])
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'sink':<10}{'sent':>8}{'received':>10}{'lost':>6}{'ms':>10}{'stall ms':>10}")
        for row in result["sinks"]:
            print(
                f"{row['sink']:<10}{row['sent']:>8}{row['received']:>10}{row['lost']:>6}"
                f"{row['elapsed_ms']:>10}{row['worst_stall_ms']:>10}"
            )
        print("nothing lost" if lost == 0 else f"LOST {lost} record(s)")
    return 0 if lost == 0 else 1
