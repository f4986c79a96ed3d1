"""Waiting for a peer to have seen something: a condition and a timeout, never a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(
    changed: asyncio.Condition, predicate: Callable[[], bool], timeout: float
) -> None:
    """Return once ``predicate()`` holds (re-checked on each notify of ``changed``)."""

    async def arrived() -> None:
        async with changed:
            await changed.wait_for(predicate)

    await asyncio.wait_for(arrived(), timeout)
