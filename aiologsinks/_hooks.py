"""Is a hook overridden? The one question every fast path asks before it runs.

A fast path stands for the default hooks (``format``, ``emit``, ``makePickle``,
``shouldRollover``...). When a subclass or a user puts its own hook there, the fast
path must step aside and the hook must run: :func:`overridden` is the one place that
decides it, for the sinks and for the shim alike.
"""

from __future__ import annotations

import inspect

__all__ = ["is_dual", "overridden"]


def overridden(cls: type, name: str, *defaults: object) -> bool:
    """True when ``cls.<name>`` is none of ``defaults``: a subclass (or a user) put
    its own hook there, so a fast path that stands for the defaults must not run.

    The one place every fast path asks; a dual-entry hook counts as its coroutine.
    """
    attr = inspect.getattr_static(cls, name, None)
    attr = getattr(attr, "__wrapped__", attr) if is_dual(attr) else attr
    return not any(attr is d or attr is getattr(d, "__wrapped__", None) for d in defaults)


def is_dual(method: object) -> bool:
    """True for a ``handle``/``flush`` that has a sink's dual entry (see ``_sink``)."""
    return getattr(method, "__dual__", False) is True
