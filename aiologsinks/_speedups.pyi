import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

class Shim:
    def __init__(
        self,
        handler: logging.Handler,
        dispatcher: Any,
        slow: Any,
        trace_globals: dict[str, Any],
        switch: Any,
        bound: ContextVar[Any],
        record_type: type[logging.LogRecord],
        /,
    ) -> None: ...
    def __call__(self, record: logging.LogRecord, /) -> Any: ...

def float_repr(x: float, /) -> str: ...
def otlp_group(
    chunk: list[tuple[Any, str, bytes]], limit: int, /
) -> tuple[dict[str, list[bytes]], int] | None: ...
def otlp_frames(logs: list[bytes], /) -> bytes | None: ...
def syslog_run(
    texts: list[str],
    items: list[Any],
    start: int,
    heads: dict[str, str],
    at: int,
    framing: int,
    /,
) -> tuple[int, list[bytes]]: ...
def percent_format(fmt: str, values: tuple[Any, ...], /) -> str | None: ...

class Fields:
    def __init__(self, indices: Sequence[int], /) -> None: ...
    def __call__(self, v: Sequence[Any], /) -> tuple[Any, ...]: ...

def configure(names: tuple[str, ...], /) -> None: ...
def freeze_plain(d: dict[str, Any], /) -> tuple[Any, ...] | None: ...
def format_run(
    items: list[Any],
    start: int,
    out: list[str | None],
    fmt: str,
    fields: Any,
    templates: dict[str, Any],
    formats: dict[str | None, str],
    lo: float,
    hi: float,
    ms: float,
    timed: bool,
    /,
) -> int: ...
def json_run(
    items: list[Any], start: int, keys: tuple[str, ...], encode: Any, /
) -> tuple[int, bytes]: ...
def otlp_run(
    items: list[Any],
    start: int,
    observed_ns: int,
    pid: Any,
    max_bytes: int,
    at: tuple[int, ...],
    skip: frozenset[str],
    trace: frozenset[str],
    /,
) -> tuple[int, list[tuple[Any, str, bytes]]]: ...

class FdWriter:
    def __init__(self, fd: int, /) -> None: ...
    def submit(self, data: bytes, /) -> None: ...
    def collect(self) -> list[tuple[int, int]]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def close_wait(self, timeout: float, /) -> bool: ...
