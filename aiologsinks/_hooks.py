"""Is a hook overridden? The one question every fast path asks before it runs.

A fast path stands for the default hooks (``format``, ``emit``, ``makePickle``,
``shouldRollover``...). When a subclass or a user puts its own hook there, the fast
path must step aside and the hook must run: :func:`overridden` is the one place that
decides it, for the sinks and for the shim alike.
"""

from __future__ import annotations

__all__ = ["class_attribute", "is_dual", "overridden", "own_hook"]


def overridden(cls: type, name: str, *defaults: object) -> bool:
    """True when ``cls.<name>`` is none of ``defaults``: a subclass (or a user) put
    its own hook there, so a fast path that stands for the defaults must not run.

    The one place every fast path asks; a dual-entry hook counts as its coroutine.
    """
    attr = class_attribute(cls, name)
    attr = getattr(attr, "__wrapped__", attr) if is_dual(attr) else attr
    return not any(attr is d or attr is getattr(d, "__wrapped__", None) for d in defaults)


def own_hook(obj: object, name: str, *defaults: object) -> bool:
    """:func:`overridden` for ``obj``'s class, or ``name`` set on ``obj`` itself (as
    ``handler.shouldRollover = ...``, which the stdlib's handlers call too)."""
    return name in getattr(obj, "__dict__", ()) or overridden(type(obj), name, *defaults)


def class_attribute(cls: type, name: str) -> object:
    """``cls.<name>`` as the class dicts hold it (no descriptor runs): what
    ``inspect.getattr_static`` finds for a class, at a tenth of its cost (fast paths
    ask once per batch)."""
    for klass in cls.__mro__:
        namespace = klass.__dict__
        if name in namespace:
            return namespace[name]
    return None


def is_dual(method: object) -> bool:
    """True for a ``handle``/``flush`` that has a sink's dual entry (see ``_sink``)."""
    return getattr(method, "__dual__", False) is True
