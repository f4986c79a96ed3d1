"""The package's import graph: the layers DESIGN.md and STYLE.md describe, checked.

Edges are the package-internal imports made at module level (``TYPE_CHECKING`` blocks
included: a cycle there is still a cycle in the design). Imports inside functions are
deliberate deferrals (optional dependencies, the background loop) and are checked only
by the rules that name them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiologsinks"
NAME = "aiologsinks"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(current: str, node: ast.ImportFrom) -> list[str]:
    """Package modules named by a ``from ... import ...`` in module ``current``."""
    if node.level:
        is_package = MODULES[current].name == "__init__.py"
        base = current.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    if target != NAME and not target.startswith(NAME + "."):
        return []
    found, names_from_target = [], False
    for alias in node.names:  # `from . import config` names a module, not the face
        sub = f"{target}.{alias.name}"
        if sub in MODULES:
            found.append(sub)
        else:
            names_from_target = True
    if names_from_target and target in MODULES:
        found.append(target)
    return found


def imports(name: str, *, nested: bool) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in ``name``: module level only, or all."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if nested else _module_level(tree.body)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            for target in resolve(name, node):
                yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):  # TYPE_CHECKING, optional imports
            yield from _module_level(node.body)
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)
            yield from _module_level(node.orelse)


def graph() -> dict[str, set[str]]:
    return {
        name: {t for t, _ in imports(name, nested=False) if t in MODULES and t != name}
        for name in MODULES
    }


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    # the package face imports everything; everything else must form a DAG without it
    edges.pop(NAME, None)
    for targets in edges.values():
        targets.discard(NAME)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_sinks_know_nothing_of_the_pipeline() -> None:
    """A sink does not know the pipeline exists (STYLE.md): no dispatcher, shim or lane."""
    pipeline = {f"{NAME}._dispatcher", f"{NAME}._shim", f"{NAME}._lane", *DISPATCHER_PARTS}
    offenders = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        if name.startswith(f"{NAME}.sinks.")
        for target, line in imports(name, nested=True)
        if target in pipeline
    ]
    assert offenders == []


IO_MODULES = {
    "asyncio", "aiohttp", "aiofiles", "aiosmtplib", "aiokafka", "ssl", "selectors",
    "threading", "subprocess",
}  # fmt: skip


PURE = {f"{NAME}._wire", f"{NAME}._exceptions", f"{NAME}._record", f"{NAME}._validate"}


def test_the_wire_encoders_do_no_io() -> None:
    """``_wire`` is pure encoders: it imports no I/O library and no I/O module of ours."""
    offenders = [
        f"line {line}: {target}"
        for target, line in imports(f"{NAME}._wire", nested=True)
        if target.split(".")[0] in IO_MODULES
        or (target.startswith(NAME + ".") and target not in PURE)
    ]
    assert offenders == []


def test_the_collector_framing_does_no_io() -> None:
    """``_collector._frames`` is pure splitting, shared by the collector and every peer."""
    offenders = [
        f"line {line}: {target}"
        for target, line in imports(f"{NAME}._collector._frames", nested=True)
        if target.split(".")[0] in IO_MODULES or target.startswith(NAME)
    ]
    assert offenders == []


#: the parts Dispatcher is assembled from, each building on the ones before it
DISPATCHER_PARTS = [
    f"{NAME}._dispatch_state",
    f"{NAME}._pump",
    f"{NAME}._loop_binding",
    f"{NAME}._closing",
]


def test_the_dispatcher_parts_build_on_each_other_in_one_order() -> None:
    """A part imports only the parts before it; only the dispatcher and its parts
    import them (they are the dispatcher's private seams, not a shared layer)."""
    order = [*DISPATCHER_PARTS, f"{NAME}._dispatcher"]
    offenders = []
    for i, name in enumerate(order):
        later = set(order[i + 1 :])
        offenders += [
            f"{name}:{line} imports the later part {target}"
            for target, line in imports(name, nested=True)
            if target in later
        ]
    offenders += [
        f"{name}:{line} imports the dispatcher part {target}"
        for name in MODULES
        if name not in order
        for target, line in imports(name, nested=True)
        if target in DISPATCHER_PARTS
    ]
    assert offenders == []


def test_config_does_not_import_the_package_face() -> None:
    offenders = [
        f"line {line}" for target, line in imports(f"{NAME}.config", nested=True) if target == NAME
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_module_imports_on_its_own(name: str) -> None:
    """Imported first, in a fresh interpreter, each module loads: no hidden order
    (``__main__`` runs the command line; its test is the CLI's own)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PACKAGE.parent,
    )
    assert done.returncode == 0, done.stderr
