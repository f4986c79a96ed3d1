"""The public surface: __all__ is honest and every public name is documented."""

from __future__ import annotations

import inspect

import aiologsinks as als
from aiologsinks._sink import is_dual


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    for name in als.__all__:
        assert hasattr(als, name), name
    exported = {
        n for n in dir(als) if not n.startswith("_") and not inspect.ismodule(getattr(als, n))
    } - {"annotations"}
    assert exported <= set(als.__all__), exported - set(als.__all__)


def test_every_public_name_and_method_has_a_docstring() -> None:
    missing: list[str] = []
    for name in als.__all__:
        obj = getattr(als, name)
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member):
                    continue
                if not (inspect.getdoc(member) or "").strip():
                    missing.append(f"{name}.{attr}")
    assert missing == []


def test_io_hooks_are_coroutines_and_computations_are_not() -> None:
    for cls in [c for c in vars(als).values() if inspect.isclass(c) and issubclass(c, als.Sink)]:
        for hook in (
            "emit",
            "emit_batch",
            "handle",
            "flush",
            "aclose",
            "doRollover",
            "rotate",
            "send",
            "createSocket",
        ):
            method = getattr(cls, hook, None)
            if method is not None:
                if hook in ("handle", "flush"):
                    # also logging's synchronous entry: a coroutine when awaited
                    assert is_dual(method), f"{cls.__name__}.{hook}"
                    method = inspect.unwrap(method)
                assert inspect.iscoroutinefunction(method), f"{cls.__name__}.{hook}"
        for hook in (
            "format",
            "shouldFlush",
            "computeRollover",
            "makePickle",
            "encodePriority",
            "mapLogRecord",
            "getSubject",
        ):
            method = getattr(cls, hook, None)
            if method is not None:
                assert not inspect.iscoroutinefunction(method), f"{cls.__name__}.{hook}"
