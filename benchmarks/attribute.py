"""Where the server's clock goes: sampled by ``perf``, attributed by Python function.

``python -m benchmarks.attribute`` drives the service of ``benchmarks/service.py``
(the same app, logging options and peers) at saturation, the floor's server and the
option's taking turns, with ``perf record`` sampling the server's CPU (every thread)
at a fixed rate. The servers run with Python's perf trampolines (``PYTHONPERFSUPPORT=1``,
Python 3.12+), so each sample's stack names the Python functions it ran in. A sample is
charged to the innermost Python function's module, or to aiologsinks when a compiled
aiologsinks function is on the stack first, or to the cyclic GC when a collection is;
one in the kernel is counted apart too.
Per category: microseconds a request (samples / rate / requests), the floor's and the
option's, and the difference.

The instruction counts (``benchmarks/instructions.py``) say what the logging executes;
this says what it costs on the clock, including what it does to the rest of the server
(the app's own code runs slower beside it when caches are shared) and the event loop's
work for its tasks, which no count attributes.

Needs ``perf`` (software event ``cpu-clock``: no hardware counters needed), Python 3.12+
with its perf trampolines, and permission to attach (root, or ``perf_event_paranoid``
<= 1); it says which is missing.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator

from benchmarks import service

#: the innermost Python function's module -> category (first match, by path fragment)
MODULES = (
    ("/aiologsinks/", "aiologsinks"),
    ("/logging/", "logging (stdlib)"),
    ("/asyncio/", "asyncio"),
    ("/traceback.py", "traceback, linecache"),
    ("/linecache.py", "traceback, linecache"),
    # the aiohttp app's framework, and HTTPSink's and OTLPSink's client
    ("/aiohttp/", "aiohttp"),
    ("/multidict/", "aiohttp"),
    ("/yarl/", "aiohttp"),
    ("/starlette/", "FastAPI, Starlette, uvicorn, h11"),
    ("/fastapi/", "FastAPI, Starlette, uvicorn, h11"),
    ("/uvicorn/", "FastAPI, Starlette, uvicorn, h11"),
    ("/h11/", "FastAPI, Starlette, uvicorn, h11"),
    ("/benchmarks/", "the app's handler"),
)
COMPILED = "_speedups"  # aiologsinks' compiled accelerator (a shared object)
#: the cyclic GC's collection in libpython: charged to the GC, not to the Python
#: function whose allocation started it
GC_SYMBOLS = (" gc_collect_main ", " gc_collect_with_callback ", " _PyGC_Collect ")


def samples(script_output: str) -> Iterator[list[str]]:
    """The samples of ``perf script -F comm,tid,ip,sym,dso`` output: each a list of its
    frames (``"<ip> <symbol> (<dso>)"``), innermost first, after its header line."""
    frames: list[str] = []
    for line in script_output.splitlines():
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line[0] in " \t":
            frames.append(line.strip())
        else:
            if frames:
                yield frames
            frames = []
    if frames:
        yield frames


def charge(frames: list[str]) -> tuple[str, str]:
    """``(category, function)`` of one sample: the category is the module of its
    innermost Python function, or aiologsinks when its compiled accelerator comes
    first, or the cyclic GC when a collection does; the function is the innermost
    Python function's qualified name, or the compiled function's."""
    for frame in frames:
        if COMPILED in frame and "aiologsinks" in frame:
            return "aiologsinks", _symbol(frame) + " (compiled)"
        if any(symbol in frame for symbol in GC_SYMBOLS):
            return "cyclic GC", "collection"
        if "py::" in frame:
            name, _, path = frame.split("py::", 1)[1].partition(":")
            for fragment, group in MODULES:
                if fragment in path:
                    return group, name
            return "other Python", name
    return "no Python frame", _symbol(frames[0]) if frames else "?"


def _symbol(frame: str) -> str:
    parts = frame.split(None, 2)  # "<ip> <symbol> (<dso>)"
    return parts[1] if len(parts) > 1 else frame


def in_kernel(frames: list[str]) -> bool:
    """The sample was taken in the kernel (a system call, a page fault, an interrupt)."""
    return bool(frames) and "[kernel" in frames[0]


def attribute(stacks: Iterable[list[str]]) -> collections.Counter[str]:
    """Samples per category, and per ``kernel`` for those taken in the kernel; and per
    ``aiologsinks: <function>`` for those charged to aiologsinks."""
    counts: collections.Counter[str] = collections.Counter()
    for frames in stacks:
        group, function = charge(frames)
        counts[group] += 1
        counts["all"] += 1
        if group == "aiologsinks":
            counts[f"aiologsinks: {function}"] += 1
        if in_kernel(frames):
            counts["kernel"] += 1
    return counts


def missing() -> str | None:
    """Why this cannot run here, or None."""
    if sys.version_info < (3, 12):
        return "needs Python 3.12+ (perf trampolines); run it with python3.12 or later"
    if shutil.which("perf") is None:
        return "needs perf on PATH (linux-perf / linux-tools)"
    if shutil.which("wrk") is None:
        return "needs wrk on PATH (the load generator of the service's saturation phase)"
    return None


def measure(
    framework: str, contender: str, dest: str, seconds: float, frequency: int
) -> tuple[collections.Counter[str], int]:
    """One server at saturation for ``seconds`` under ``perf record``: the samples per
    category and the requests answered."""
    kind = service.DESTS[dest][1] if contender != "null" else None
    peer = service.start_peer(kind)
    with tempfile.TemporaryDirectory(prefix="aiologsinks-perf-") as tmp:
        spec = service.server_spec(framework, contender, dest, tmp, peer)
        server = service.start_server(spec)
        data = os.path.join(tmp, "perf.data")
        try:
            service.closed_loop(spec["port"], 2.0, 32, True)  # warm-up, not sampled
            perf = subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-q",
                    "-e",
                    "cpu-clock",
                    "-F",
                    str(frequency),
                    "--call-graph",
                    "dwarf,8192",
                    "-o",
                    data,
                    "-p",
                    str(server.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            result = service.closed_loop(spec["port"], seconds, 32, True)
            perf.send_signal(signal.SIGINT)
            _, err = perf.communicate(timeout=60)
            if perf.returncode not in (0, -signal.SIGINT):
                raise RuntimeError(f"perf record failed: {err.decode(errors='replace')[-300:]}")
        finally:
            service.stop_server(server, 30)
            if peer is not None:
                peer.close()
        script = subprocess.run(
            ["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return attribute(samples(script)), int(result["answered"])


def per_request(
    counts: collections.Counter[str], requests: int, frequency: int
) -> dict[str, float]:
    """µs a request per category: each sample stands for 1/frequency s of CPU."""
    return {k: v / frequency / max(requests, 1) * 1e6 for k, v in counts.items()}


def table(
    floor: dict[str, list[float]],
    option: dict[str, list[float]],
    label: str,
    detail_rows: int = 12,
) -> str:
    """Medians over repeats, µs a request, the floor's, the option's and the difference;
    then the ``detail_rows`` functions that took most of aiologsinks' own share."""

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    detail = {k for k in set(floor) | set(option) if k.startswith("aiologsinks: ")}
    rest = sorted(
        (set(floor) | set(option)) - {"all", "kernel"} - detail,
        key=lambda k: -median(option.get(k, [])) - median(floor.get(k, [])),
    )
    names = ["all", "kernel", *rest]
    lines = [
        f"| server CPU, µs a request | floor | {label} | difference |",
        "|---|---|---|---|",
    ]
    for name in names:
        f, o = median(floor.get(name, [0.0])), median(option.get(name, [0.0]))
        shown = {"all": "**all of it**", "kernel": "of which in the kernel"}.get(name, name)
        lines.append(f"| {shown} | {f:.1f} | {o:.1f} | {o - f:+.1f} |")
    top = sorted(detail, key=lambda k: -median(option.get(k, [])))[:detail_rows]
    if top:
        lines += ["", "| of aiologsinks' own, by function | µs a request |", "|---|---|"]
        lines += [f"| {k.split(': ', 1)[1]} | {median(option.get(k, [])):.2f} |" for k in top]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attribute", description=__doc__)
    parser.add_argument("--framework", choices=("fastapi", "aiohttp"), default="aiohttp")
    parser.add_argument("--dest", default="file", choices=sorted(service.DESTS))
    parser.add_argument("--contender", default="aiologsinks", help="the option (aiologsinks)")
    parser.add_argument("--seconds", type=float, default=6.0, help="sampled seconds (6)")
    parser.add_argument("--repeat", type=int, default=2, help="floor/option pairs (2)")
    parser.add_argument("--frequency", type=int, default=400, help="samples a second (400)")
    parser.add_argument("--detail", type=int, default=12, help="aiologsinks functions shown (12)")
    opts = parser.parse_args(argv)
    why = missing()
    if why is not None:
        print(f"benchmarks.attribute {why}", file=sys.stderr)
        return 2
    os.environ["PYTHONPERFSUPPORT"] = "1"  # the servers inherit it (service._env)
    pinning = service.pin_cpus()
    floor: dict[str, list[float]] = collections.defaultdict(list)
    option: dict[str, list[float]] = collections.defaultdict(list)
    for r in range(opts.repeat):
        for contender, into in (("null", floor), (opts.contender, option)):
            counts, requests = measure(
                opts.framework, contender, opts.dest, opts.seconds, opts.frequency
            )
            for name, value in per_request(counts, requests, opts.frequency).items():
                into[name].append(value)
            print(
                f"  {r + 1}/{opts.repeat} {contender:12} {requests:,} requests, "
                f"{counts['all']:,} samples, {into['all'][-1]:.1f} µs a request",
                file=sys.stderr,
            )
    handler, sink = service.HANDLERS[opts.dest]
    label = service.LABELS[opts.contender].format(handler=handler, sink=sink)
    print(
        f"{opts.framework}, Python {sys.version.split()[0]}, {pinning}; destination "
        f"{opts.dest}; {opts.repeat} pairs of {opts.seconds:g} s at saturation (wrk -t1 "
        f"-c32), perf cpu-clock at {opts.frequency} Hz; medians over the pairs\n"
    )
    print(table(floor, option, label, opts.detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
