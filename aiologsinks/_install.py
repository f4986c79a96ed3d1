"""install(): run a Dispatcher for the life of an app, attached to a logger."""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from ._dispatcher import Dispatcher
from ._sink import Sink, _check_level
from ._validate import ArgumentTypeError, ArgumentValueError

__all__ = ["install"]

#: per logger, the levels install() contexts set, innermost last, and the level the
#: logger had before the first of them: exits in any order restore what was changed
_level_stack: weakref.WeakKeyDictionary[logging.Logger, tuple[int, list[tuple[object, int]]]] = (
    weakref.WeakKeyDictionary()
)


def _push_level(logger: logging.Logger, token: object, level: int) -> None:
    original, stack = _level_stack.get(logger, (logger.level, []))
    stack.append((token, level))
    _level_stack[logger] = (original, stack)
    logger.setLevel(level)


def _pop_level(logger: logging.Logger, token: object) -> None:
    original, stack = _level_stack.get(logger, (logger.level, []))
    expected = stack[-1][1] if stack else logger.level
    stack[:] = [entry for entry in stack if entry[0] is not token]
    now = stack[-1][1] if stack else original
    if not stack:
        _level_stack.pop(logger, None)
    if logger.level == expected:  # not changed meanwhile by someone else
        logger.setLevel(now)


@contextlib.asynccontextmanager
async def install(
    *sinks: Sink | logging.Handler,
    logger: logging.Logger | str | None = None,
    level: int | str | None = None,
    **dispatcher_options: Any,
) -> AsyncIterator[Dispatcher]:
    """Run a :class:`Dispatcher` for ``sinks`` and attach its handler to ``logger``.

    ``logger`` is a Logger, a logger name, or ``None`` for the root logger; when
    ``level`` is given the logger's level is set for the duration and restored
    afterwards (nested or overlapping installs restore correctly in any exit order).
    Yields the started Dispatcher. On exit the handler is detached and
    ``await dispatcher.aclose()`` delivers everything logged before, flushes and
    closes the sinks. Invalid arguments (no sink at all among them) raise before
    anything starts. Use it in a FastAPI lifespan, an aiohttp cleanup context, or
    around ``asyncio.run(main())``'s body.
    """
    if not sinks:
        # a shim with nowhere to deliver would take every record and write none
        raise ArgumentValueError("sinks", "install() needs at least one sink or handler")
    if logger is not None and not isinstance(logger, (logging.Logger, str)):
        raise ArgumentTypeError(
            "logger", f"expected a Logger, a logger name or None, got {logger!r}"
        )
    checked = None if level is None else _check_level(level)
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    dispatcher = Dispatcher(*sinks, **dispatcher_options)
    dispatcher.start()
    token = object()
    if checked is not None:
        _push_level(target, token, checked)
    target.addHandler(dispatcher.handler)
    try:
        yield dispatcher
    finally:
        target.removeHandler(dispatcher.handler)
        if checked is not None:
            _pop_level(target, token)
        await dispatcher.aclose()
