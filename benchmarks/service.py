"""Service-level benchmark: what logging costs a real async service under load.

    python -m benchmarks.service                # 9 interleaved rounds (about 40 minutes)
    python -m benchmarks.service --quick        # sanity: 2 rounds, 1 s phases, floor + ours
                                                # (no verdicts; service-*-quick.* results)
    python -m benchmarks.service --smoke        # the code runs (a few seconds; CI)
    python -m benchmarks.service --framework aiohttp --rounds 5

A FastAPI app under uvicorn (or an aiohttp app) in its own process logs ~3 records per
request (``benchmarks/_service_app.py``) to a destination: a local file, an HTTP
collector answering after 2 ms, a TCP syslog peer, or a TCP syslog peer that stops
reading for 200 ms every 2 s; each peer is its own process (``benchmarks/_peers.py``).
For each logging option (NullHandler floor, the stdlib handler on the loop, stdlib
QueueHandler + QueueListener, loguru ``enqueue=True`` and aiologger for the file,
aiologsinks via ``install()``), one server process runs two phases:

1. open loop: ``GET /work`` at a fixed rate from ``benchmarks/_loadgen.py`` (latency from
   when each request was due: p50/p99/p99.9);
2. closed loop at saturation: ``wrk`` when installed (one thread), else the Python
   closed-loop generator: requests/s.

A floor (NullHandler) server starts beside each option's server, as fresh as it, and
both phases alternate between the two, ABBA ABBA ...: the open loop in 0.5 s slices,
the closed loop in 1 s slices (:func:`sliced_closed_loop`; BAAB in odd rounds). The option's p99 and
requests/s are then paired with the floor's within seconds, so the machine's drift
over a round does not decide them.

On a machine with two or more CPUs the servers run on the first and everything else
(load generator, ``wrk``, peers) on the others (``--no-pin``: all share every CPU), as
in production, where the destination is another machine: see :func:`pin_cpus`.

Then the server is stopped with SIGTERM (its lifespan exit delivers what the option
still holds, bounded by ``--drain``), and the records that reached the destination are
counted there (file lines, peer counts) against those the app logged: ``lost``.
Peak RSS is the server's ``VmHWM``. Rounds are interleaved; ratios and differences
against the floor are paired per round (``benchmarks/_stats.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._peers import Peer
from benchmarks._stats import (
    MET,
    MISSED,
    QUICK,
    UNDECIDED,
    Estimate,
    Target,
    aa_gate,
    bootstrap,
    paired,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

#: destination -> (label, peer kind or None)
DESTS: dict[str, tuple[str, str | None]] = {
    "file": ("local file", None),
    "http": ("HTTP collector, 2 ms per request", "collector"),
    "syslog": ("syslog over TCP", "syslog"),
    "stall": ("syslog over TCP, peer stalls 200 ms every 2 s", "stall"),
    "otlp": ("OTLP/HTTP collector (rotel)", "otlp"),
}
#: contender -> label (``{dest}`` is filled in)
LABELS = {
    "null": "stdlib logging + NullHandler (floor)",
    "stdlib": "stdlib {handler} on the loop",
    "queue": "stdlib QueueHandler + QueueListener -> {handler}",
    "loguru": "loguru, file sink, enqueue=True",
    "aiologger": "aiologger AsyncFileHandler",
    "otel": "OpenTelemetry SDK LoggingHandler + BatchLogRecordProcessor, OTLP/HTTP exporter",
    "aiologsinks": "aiologsinks {sink} via install()",
}
HANDLERS = {
    "file": ("FileHandler", "FileSink"),
    "http": ("HTTPHandler (POST)", "HTTPSink json_batch=True"),
    "syslog": ("SysLogHandler (TCP)", "SysLogSink (TCP)"),
    "stall": ("SysLogHandler (TCP)", "SysLogSink (TCP)"),
    "otlp": ("—", "OTLPSink (protobuf)"),
}
#: contenders per destination, in table order
PER_DEST = {
    "file": ("stdlib", "queue", "loguru", "aiologger", "aiologsinks"),
    "http": ("stdlib", "queue", "aiologsinks"),
    "syslog": ("stdlib", "queue", "aiologsinks"),
    "stall": ("stdlib", "queue", "aiologsinks"),
    "otlp": ("otel", "aiologsinks"),
}
#: contender -> the modules it needs (omitted, with the reason printed, without them)
OPTIONAL = {
    "loguru": ("loguru",),
    "aiologger": ("aiologger",),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}
RECORD_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.MULTILINE)
TARGETS_NOTE = (
    "aiologsinks, every destination: request p99 (open loop) within 1 ms of the floor, "
    "requests/s (saturation) >= 0.9x the floor, 0 lost"
)


@dataclass
class Cell:
    """One row: a logging option for one destination, with its rounds."""

    contender: str
    dest: str
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: aiologsinks' Dispatcher ``linger`` (seconds) where --linger sets it; None: default
    linger: float | None = None
    #: the records that end a lingering lane where --linger-max sets it (0: no bound;
    #: None: as shipped)
    linger_max: int | None = None

    @property
    def key(self) -> str:
        if self.contender == "null":
            return "null"
        key = f"{self.dest}/{self.contender}"
        if self.linger is not None:
            key = f"{key}@{self.linger * 1e3:g}ms"
        if self.linger_max is not None:
            key = f"{key}@max{self.linger_max}"
        return key

    @property
    def variant(self) -> str:
        """What --linger and --linger-max set for this row, as words ("" if neither)."""
        parts = []
        if self.linger is not None:
            parts.append(f"linger {self.linger * 1e3:g} ms")
        if self.linger_max is not None:
            parts.append(
                f"lanes linger up to {self.linger_max} records"
                if self.linger_max
                else "lanes linger without a record bound"
            )
        return ", ".join(parts)

    @property
    def label(self) -> str:
        handler, sink = HANDLERS[self.dest]
        label = LABELS[self.contender].format(handler=handler, sink=sink)
        return f"{label}, {self.variant}" if self.variant else label

    def per_round(self, metric: str) -> dict[int, float | None]:
        return {r: run.get(metric) for r, run in self.runs.items()}

    def estimate(self, metric: str) -> Estimate | None:
        return bootstrap([v for v in self.per_round(metric).values() if v is not None])

    def lost(self) -> int | None:
        vals = [run["lost"] for run in self.runs.values() if run.get("lost") is not None]
        return sum(vals) if vals else None

    def duplicated(self) -> int | None:
        """Records delivered beyond those logged, summed over its rounds (None: not
        counted, as for the floor)."""
        vals = [
            run["duplicated"] for run in self.runs.values() if run.get("duplicated") is not None
        ]
        return sum(vals) if vals else None

    def failed(self, side: str = "") -> int:
        """Failed requests over its rounds (:func:`failed_requests`); ``side="ref_"``:
        those of the floor's servers beside it."""
        return sum(failed_requests(run, side) for run in self.runs.values())


def unavailable(contender: str, dest: str) -> str | None:
    """Why ``contender`` cannot run for ``dest`` here (a package or peer missing), or None."""
    import importlib.util

    for module in OPTIONAL.get(contender, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            return f"{module} is not installed (pip install -e '.[bench]')"
    if dest == "otlp":
        from benchmarks._otlp_peer import missing

        return missing()
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _get_json(port: int, path: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())


def _vmhwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "status": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes ``pids`` (all their threads), seconds."""
    return sum(sum(cpu_split(pid)) for pid in pids)


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process ``pid``, all its threads; zeros once
    it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    except (OSError, IndexError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(rest[11]) / tick, int(rest[12]) / tick  # utime, stime


@dataclass
class Spent:
    """What a server spent: CPU seconds (all its threads), of which in the kernel, and
    seconds in the cyclic GC (all generations; full collections), from its ``/stats``."""

    cpu: float = 0.0
    kernel: float = 0.0
    gc: float = 0.0
    gc_full: float = 0.0

    def __sub__(self, other: Spent) -> Spent:
        return Spent(
            self.cpu - other.cpu,
            self.kernel - other.kernel,
            self.gc - other.gc,
            self.gc_full - other.gc_full,
        )

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.cpu + other.cpu,
            self.kernel + other.kernel,
            self.gc + other.gc,
            self.gc_full + other.gc_full,
        )

    def per_kreq(self, answered: float) -> dict[str, float]:
        """The result's ``closed_server_*_ms_per_kreq`` entries for ``answered`` requests."""
        kreq = max(answered, 1.0) / 1e3
        return {
            f"closed_server_{name}_ms_per_kreq": value * 1e3 / kreq
            for name, value in (
                ("cpu", self.cpu),
                ("kernel", self.kernel),
                ("gc", self.gc),
                ("gc_full", self.gc_full),
            )
        }


def server_spent(pid: int, port: int, before: bool) -> Spent:
    """A snapshot of what the server ``pid`` has spent. Its ``/stats`` request is made
    outside the CPU window (first when ``before``, last otherwise), so that the
    snapshot's own request is not counted."""

    def gc_seconds() -> tuple[float, float]:
        seconds = _get_json(port, "/stats", timeout=30).get("gc_s") or [0.0, 0.0, 0.0]
        return float(sum(seconds)), float(seconds[2])

    if before:
        gc_s, full = gc_seconds()
        user, kernel = cpu_split(pid)
    else:
        user, kernel = cpu_split(pid)
        gc_s, full = gc_seconds()
    return Spent(user + kernel, kernel, gc_s, full)


def closed_loop(port: int, seconds: float, connections: int, use_wrk: bool) -> dict[str, Any]:
    if use_wrk:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(WRK_LUA)
        try:
            proc = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{max(1, round(seconds))}s",
                    "--timeout",
                    "5s",
                    "-s",
                    f.name,
                    f"http://127.0.0.1:{port}/work",
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 30,
            )
        finally:
            os.unlink(f.name)
        line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
        return wrk_result(json.loads(line))
    return _loadgen("closed", port, connections, seconds)


def wrk_result(w: dict[str, Any]) -> dict[str, Any]:
    """A closed-loop result from what ``WRK_LUA`` prints: requests/s of the successful
    responses only. wrk's request count includes the responses with a status of 400 or
    more (``status``); its latencies do too (its summary cannot separate them), so a
    run with any failure is judged missed by :func:`verdicts`, not by its percentiles."""
    seconds = w["duration_us"] / 1e6
    ok = max(int(w["requests"]) - int(w.get("status", 0)), 0)
    return {
        "rps": ok / seconds if seconds else 0.0,
        "answered": ok,
        "seconds": seconds,
        "errors": w["errors"],
        "timed_out": w["timeouts"],
        "p50_ms": w["p50_us"] / 1e3,
        "p99_ms": w["p99_us"] / 1e3,
        "p999_ms": w["p999_us"] / 1e3,
        "max_ms": w["max_us"] / 1e3,
    }


def failed_requests(run: dict[str, Any], side: str = "") -> int:
    """Requests of a round's measured phases that failed: answered with another status
    than 200 or lost to a socket error (``errors``), or, at saturation, never answered
    (``timed_out``; the open loop's unanswered requests are in its percentiles, censored).
    ``side="ref_"``: those of the floor's server beside the option."""
    keys = (f"open_{side}errors", f"closed_{side}errors", f"closed_{side}timed_out")
    return sum(int(run.get(k) or 0) for k in keys)


def _loadgen(mode: str, port: int | str, *args: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._loadgen", mode, str(port), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=sum(args[1:]) + 60,
        cwd=ROOT,
        env=_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


#: the CPUs the servers run on, when the benchmark pins them (see :func:`pin_cpus`)
SERVER_CPUS: set[int] | None = None


def pin_cpus() -> str:
    """Give the servers the first CPU and everything else (this process, hence the load
    generator, ``wrk`` and the peers it starts) the others.

    In production the destination runs on another machine and the load comes from the
    network; on one small machine they share the server's cores, and a peer's CPU
    (a collector parsing what it receives) would be charged to the logging option
    whose records it parses, while the floor's peer-less slices run alone. A server of
    its own core also keeps the scheduler from moving it between the paired slices.
    Everything the service itself starts (the sinks' threads) stays on its core.
    Returns what was done, for the report's header.
    """
    global SERVER_CPUS
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    SERVER_CPUS = {cpus[0]}
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"server pinned to CPU {cpus[0]}, load generator and peers to the other {len(cpus) - 1}"


def start_server(
    spec: dict[str, Any], prefix: tuple[str, ...] = (), ready_limit: float = 30.0
) -> subprocess.Popen[bytes]:
    """The service in its own process, serving once its logging option is set up;
    ``prefix`` runs it under another program (``benchmarks/instructions.py``)."""
    server = subprocess.Popen(
        [*prefix, sys.executable, "-m", "benchmarks._service_app", json.dumps(spec)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(spec["dir"], "server.err"), "wb"),  # noqa: SIM115
    )
    if SERVER_CPUS is not None:
        # before the interpreter is up, so every thread it starts inherits the CPU
        os.sched_setaffinity(server.pid, SERVER_CPUS)
    try:
        _wait_ready(server, spec["port"], ready_limit)
    except BaseException:
        server.kill()
        server.wait()
        raise
    return server


@dataclass
class Reference:
    """The floor's server, started afresh beside each cell: the saturation phase
    alternates between it and the cell's server (see :func:`sliced_closed_loop`)."""

    port: int
    server: subprocess.Popen[bytes]


def server_spec(
    framework: str, contender: str, dest: str, tmp: str, peer: Any = None
) -> dict[str, Any]:
    """What ``benchmarks._service_app`` is started with: a free port, files in ``tmp``."""
    return {
        "framework": framework,
        "contender": contender,
        "dest": dest,
        "port": free_port(),
        "dir": tmp,
        "peer_port": peer.port if peer else None,
        "result": os.path.join(tmp, "result.json"),
    }


def start_peer(kind: str | None, *stall: float) -> Any:
    """The destination's peer process (``DESTS``' kind; None: no peer, as for a file)."""
    if kind == "otlp":
        from benchmarks._otlp_peer import OTLPPeer

        return OTLPPeer()
    return Peer(kind, *stall) if kind else None


@contextlib.contextmanager
def reference_server(framework: str) -> Iterator[Reference]:
    """A floor (NullHandler) server for one cell of a round."""
    with tempfile.TemporaryDirectory(prefix="aiologsinks-ref-") as tmp:
        spec = server_spec(framework, "null", "file", tmp)
        port = spec["port"]
        server = start_server(spec)
        try:
            yield Reference(port, server)
        finally:
            stop_server(server, 10)


def stop_server(server: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM (the service delivers what it holds), then SIGKILL after ``grace`` s."""
    server.terminate()
    try:
        server.wait(grace)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def quiesce(pids: list[int], limit: float = 1.0) -> None:
    """Wait (at most ``limit`` s) until ``pids`` spend less than 10% of a core: work a
    contender deferred past its slice (a listener's backlog, a peer still reading) is
    then not done during the floor's slice, where it would slow the floor."""
    deadline = time.monotonic() + limit
    before = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_seconds(pids)
        if now - before <= 0.01:
            return
        before = now


def sliced_closed_loop(
    port: int,
    reference: Reference,
    server_pid: int,
    peer_pids: list[int],
    opts: argparse.Namespace,
    flip: bool = False,
) -> tuple[dict[str, Any], Spent, float]:
    """The saturation phase in slices alternating with the floor's server.

    A shared machine's speed drifts by tens of percent over seconds to minutes, more
    than the differences measured here. The cell's server and the floor's take turns
    in 1 s slices (wrk's smallest), ordered ABBA ABBA ... so that a drift that is
    linear over a few seconds cancels; each cell's ratio to the floor is then paired
    within seconds rather than across a round; ``flip`` starts with the floor (see
    :func:`slice_order`). Returns the cell's closed-loop result
    (with ``ref_rps``, the floor's requests/s over its slices, and ``ratio``), what its
    server spent during its own slices, and the CPU seconds its peer spent then.
    """
    n = max(1, round(opts.seconds)) if opts.wrk else max(1, round(opts.seconds / 0.5))
    length = opts.seconds / n
    ours: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    spent = Spent()
    peer_cpu = 0.0
    everyone = [server_pid, reference.server.pid, *peer_pids]
    for mine in slice_order(n, flip):
        if reference.server.poll() is not None:
            raise RuntimeError(f"the floor's server exited with {reference.server.returncode}")
        if mine:
            s0 = server_spent(server_pid, port, before=True)
            p0 = cpu_seconds(peer_pids)
            ours.append(closed_loop(port, length, opts.connections, opts.wrk))
            peer_cpu += cpu_seconds(peer_pids) - p0
            spent += server_spent(server_pid, port, before=False) - s0
        else:
            floors.append(closed_loop(reference.port, length, opts.connections, opts.wrk))
        # after every slice, either side's: waiting after the option's alone delayed
        # its slices only, moving them later in the drift than the floor's
        quiesce(everyone)
    out = merge_slices(ours)
    ref = merge_slices(floors)
    out["ref_rps"] = ref["rps"]
    out["ref_errors"] = ref["errors"]
    out["ref_timed_out"] = ref["timed_out"]
    out["ratio"] = out["rps"] / ref["rps"] if ref["rps"] else None
    out["slices"] = [round(x["rps"]) for x in ours]
    out["ref_slices"] = [round(x["rps"]) for x in floors]
    return out, spent, peer_cpu


def slice_order(n: int, flip: bool = False) -> list[bool]:
    """``n`` slices for the cell (True) and ``n`` for the floor, ABBA ABBA ... (``flip``:
    BAAB BAAB ...): over each four, a drift linear in time moves both sides alike.

    With ``n`` odd the last pair is AB, which puts the cell earlier on average (by a
    third of a slice at ``n=3``, a whole one at ``n=1``); no order of an odd count can
    balance it. So rounds alternate ``flip``, and each pair of rounds is balanced."""
    return [(i % 4 in (0, 3)) != flip for i in range(2 * n)]


def merge_slices(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """One closed-loop result from several slices: counts summed, requests/s over the
    slices' total time, latency percentiles the slices' medians (wrk reports no
    histogram to merge)."""
    answered = sum(int(x.get("answered") or 0) for x in slices)
    # a slice that answered nothing still took its time (results saved before slices
    # kept their seconds: the time from their rate)
    seconds = sum(
        float(x["seconds"]) if x.get("seconds") else int(x.get("answered") or 0) / x["rps"]
        for x in slices
        if x.get("seconds") or x.get("rps")
    )
    out: dict[str, Any] = {
        "rps": answered / seconds if seconds else 0.0,
        "answered": answered,
    }
    for key in ("errors", "timed_out"):
        out[key] = sum(int(x.get(key) or 0) for x in slices)
    for key in ("p50_ms", "p99_ms", "p999_ms"):
        vals = [x[key] for x in slices if x.get(key) is not None]
        if vals:
            out[key] = statistics.median(vals)
    return out


def run_cell(
    cell: Cell,
    framework: str,
    opts: argparse.Namespace,
    reference: Reference | None = None,
    round_index: int = 0,
) -> dict[str, Any]:
    """One server process, both phases; returns the round's measurements. With a
    ``reference`` (the floor's server), the saturation phase alternates with it, the
    floor's slice first in odd rounds (``round_index``; see :func:`slice_order`)."""
    kind = DESTS[cell.dest][1] if cell.contender != "null" else None
    stall = (opts.stall_every, opts.stall_ms / 1e3) if kind == "stall" else ()
    peer = start_peer(kind, *stall)
    server: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="aiologsinks-svc-") as tmp:
        try:
            spec = server_spec(framework, cell.contender, cell.dest, tmp, peer)
            if cell.linger is not None:
                spec["linger"] = cell.linger
            if cell.linger_max is not None:
                spec["linger_max"] = cell.linger_max
            port = spec["port"]
            server = start_server(spec)
            out: dict[str, Any] = {}
            # with the floor beside it, in alternating slices: the p99s are paired
            ports = port if reference is None else f"{port},{reference.port}"
            o = _loadgen("open", ports, opts.rate, opts.seconds, opts.warmup)
            sides = o.get("sides") or [o]
            out.update({f"open_{k}": v for k, v in sides[0].items() if k not in _NOT_KEPT})
            if len(sides) > 1:
                out.update({f"open_ref_{k}": v for k, v in sides[1].items() if k in _REF_KEPT})
            # the machine's CPU each side spent during saturation: the server process
            # (its loop, lanes and sink threads) and the destination's processes, which
            # share the same cores here (in production the collector runs elsewhere)
            peer_pids = peer.pids() if peer is not None else []
            # the floor's own cell alternates with the floor beside it too: an A/A
            # check of the method (a bias of the slicing itself would show there)
            if reference is None:
                server0 = server_spent(server.pid, port, before=True)
                peer0 = cpu_seconds(peer_pids)
                c = closed_loop(port, opts.seconds, opts.connections, opts.wrk)
                peer_cpu = cpu_seconds(peer_pids) - peer0
                spent = server_spent(server.pid, port, before=False) - server0
            else:
                c, spent, peer_cpu = sliced_closed_loop(
                    port, reference, server.pid, peer_pids, opts, flip=round_index % 2 == 1
                )
            kreq = max(float(c.get("answered") or 0), 1.0) / 1e3
            out.update(spent.per_kreq(float(c.get("answered") or 0)))
            if peer_pids:
                out["closed_peer_cpu_ms_per_kreq"] = peer_cpu * 1e3 / kreq
            out.update({f"closed_{k}": v for k, v in c.items() if k != "mode"})
            logged = int(_get_json(port, "/stats", timeout=30)["logged"])
            out["logged"] = logged
            if reference is not None:
                out["ref_pid"] = reference.server.pid  # a fresh one per cell (run_rounds)
            out["rss_peak_mb"] = _vmhwm_mb(server.pid)
            t0 = time.perf_counter()
            server.send_signal(signal.SIGTERM)
            drained = True
            try:
                while server.poll() is None and time.perf_counter() - t0 < opts.drain:
                    out["rss_peak_mb"] = _vmhwm_mb(server.pid) or out["rss_peak_mb"]
                    time.sleep(0.02)
                server.wait(0.5)
            except subprocess.TimeoutExpired:
                drained = False
                server.kill()
                server.wait()
            out["shutdown_s"] = time.perf_counter() - t0
            out["drained"] = drained
            if peer is not None:
                # a stalled peer's count stands still for the whole stall: wait past it
                patience = 1.0 + (opts.stall_ms / 1e3 if kind == "stall" else 0.0)
                delivered = peer.settle(logged, patience=patience, limit=10.0 + patience)
            elif cell.contender != "null":
                delivered = 0
                for name in os.listdir(tmp):
                    if name.startswith("service.log"):
                        with open(os.path.join(tmp, name), "rb") as f:
                            delivered += len(RECORD_LINE.findall(f.read()))
            else:
                delivered = None
            out["delivered"] = delivered
            # the destination counts records, not which: a batch delivered twice (a
            # retry) can hide a batch lost, so an excess is kept, never clamped away
            out["lost"] = None if delivered is None else max(logged - delivered, 0)
            out["duplicated"] = None if delivered is None else max(delivered - logged, 0)
            try:
                with open(spec["result"]) as f:
                    out.update({k: v for k, v in json.load(f).items() if k != "logged"})
            except (OSError, ValueError):
                pass
            return out
        finally:
            if server is not None and server.poll() is None:
                server.kill()
                server.wait()
            if peer is not None:
                peer.close()


#: what the open loop's result holds that a run does not keep
_NOT_KEPT = ("mode", "port", "sides")
#: what a run keeps of the floor's side of its open loop
_REF_KEPT = ("p50_ms", "p99_ms", "p999_ms", "timed_out", "errors")


def p99_vs_floor(cell: Cell, floor: Cell) -> Estimate | None:
    """The cell's open-loop p99 minus the floor's, per round, paired within seconds when
    the open loop alternated with the floor beside it (``open_ref_p99_ms``; for the
    floor's own cell, an A/A check), else with the floor's own cell of the round
    (results saved before the open loop alternated)."""
    ours = cell.per_round("open_p99_ms")
    beside = cell.per_round("open_ref_p99_ms")
    if any(v is not None for v in beside.values()):
        return paired(ours, beside, "diff")
    if cell is floor:
        return None
    return paired(ours, floor.per_round("open_p99_ms"), "diff")


def _wait_ready(server: subprocess.Popen[bytes], port: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode} before serving")
        try:
            if _get_json(port, "/health", timeout=1.0).get("ok"):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready within {limit:g} s")


def build_cells(
    dests: list[str],
    only: set[str] | None,
    lingers: list[float] | None = None,
    linger_maxes: list[int] | None = None,
) -> tuple[list[Cell], list[str]]:
    cells = [Cell("null", "file")]
    skipped: list[str] = []
    for dest in dests:
        for contender in PER_DEST[dest]:
            if only and contender not in only:
                continue
            why = unavailable(contender, dest)
            if why:
                skipped.append(f"{dest}/{contender}: {why}")
                continue
            if contender == "aiologsinks" and (lingers or linger_maxes):
                cells.extend(
                    Cell(contender, dest, linger=x, linger_max=m)
                    for x in lingers or [None]
                    for m in linger_maxes or [None]
                )
            else:
                cells.append(Cell(contender, dest))
    return cells, skipped


def run_rounds(
    cells: list[Cell], framework: str, opts: argparse.Namespace, log: Any = print
) -> None:
    for r in range(opts.rounds):
        shift = r % len(cells)
        for cell in cells[shift:] + cells[:shift]:
            t0 = time.perf_counter()
            try:
                # a floor server as fresh as the cell's: one kept for the whole round
                # grew slower than a new one as it aged (an A/A check late in a round
                # gave up to 1.12x), which favoured every cell run late in a round
                with reference_server(framework) as reference:
                    run = cell.runs[r] = run_cell(cell, framework, opts, reference, r)
            except Exception as exc:
                cell.errors.append(f"round {r + 1}: {exc}")
                # on stderr whatever ``log`` is: the verdicts will rest on fewer rounds
                print(
                    f"  round {r + 1}/{opts.rounds} {cell.key:<20} FAILED: {exc}",
                    file=sys.stderr,
                )
                continue
            ratio = run.get("closed_ratio")
            log(
                f"  round {r + 1}/{opts.rounds} {cell.key:<20} "
                f"open p99 {_ms(run['open_p99_ms'])} ms, "
                f"closed {run['closed_rps']:,.0f} req/s"
                f"{f' ({ratio:.2f}x the floor beside it)' if ratio else ''}, "
                f"failed {failed_requests(run)}, "
                f"lost {run['lost']}"
                f"{f', duplicated {dup}' if (dup := run.get('duplicated')) else ''}"
                f" ({time.perf_counter() - t0:.1f} s)"
            )


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _us(e: Estimate | None) -> str:
    return "—" if e is None else f"{e.median:,.0f}"


def _floor_ratio(ratio: Estimate | None, asked: int | None = None) -> str:
    """The floor's row: 1.00x by definition, and the A/A check beside it."""
    return "1.00x" if ratio is None else f"1.00x (A/A: {ratio.fmt(asked=asked)})"


def table(cells: list[Cell], opts: argparse.Namespace | None) -> str:
    """The main table; an interval from fewer rounds than ``opts.rounds`` says ``(n=...)``."""
    floor = cells[0]
    asked = opts.rounds if opts is not None else rounds_asked(cells)
    lines = [
        "| destination | option | req/s at saturation | x floor | p50 ms | p99 ms "
        "| p99.9 ms | p99 - floor ms | failed requests | logging CPU µs/request p50 · exc "
        "| CPU ms per 1k requests: server · destination | lost / logged | duplicated "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        if not cell.runs:
            lines.append(f"| {cell.dest} | {cell.label} | failed: {'; '.join(cell.errors)} |")
            continue
        rps = cell.estimate("closed_rps")
        ratio = cell.estimate("closed_ratio")
        diff = p99_vs_floor(cell, floor)
        med = {m: (cell.estimate(m) or Estimate(0, 0, 0, 0)).median for m in ("open_p50_ms",)}
        p99 = cell.estimate("open_p99_ms")
        p999 = cell.estimate("open_p999_ms")
        rss = cell.estimate("rss_peak_mb")
        lost = cell.lost()
        logged = sum(run["logged"] for run in cell.runs.values())
        timeouts = sum(run.get("open_timed_out", 0) for run in cell.runs.values())
        is_floor = cell is floor
        lost_txt = "—" if lost is None else (f"**{lost:,}**" if lost else "0")
        dup = cell.duplicated()
        dup_txt = "—" if dup is None else (f"**{dup:,}**" if dup else "0")
        cpu = cell.estimate("log_cpu_p50_us")
        exc_cpu = cell.estimate("exc_log_cpu_p50_us")
        cpu_txt = f"{_us(cpu)} · {_us(exc_cpu)}"
        server_cpu = cell.estimate("closed_server_cpu_ms_per_kreq")
        peer_cpu = cell.estimate("closed_peer_cpu_ms_per_kreq")
        machine_txt = (
            f"{server_cpu.median:,.0f} · {peer_cpu.median:,.0f}"
            if server_cpu and peer_cpu
            else (f"{server_cpu.median:,.0f} · —" if server_cpu else "—")
        )
        ratio_txt = (
            _floor_ratio(ratio, asked) if is_floor else ratio.fmt(asked=asked) if ratio else "—"
        )
        failed, ref_failed = cell.failed(), cell.failed("ref_")
        failed_txt = f"**{failed:,}**" if failed else "0"
        if ref_failed:
            failed_txt += f" (the floor beside it: **{ref_failed:,}**)"
        lines.append(
            f"| {'any' if is_floor else cell.dest} | {cell.label} "
            f"| {rps.median:,.0f} | {ratio_txt} "
            f"| {_ms(med['open_p50_ms'])} | {_ms(p99.median if p99 else None)} "
            f"| {_ms(p999.median if p999 else None)}{f' ({timeouts} t/o)' if timeouts else ''} "
            f"| {_p99_diff(diff, is_floor, asked)} | {failed_txt} "
            f"| {cpu_txt} | {machine_txt} | {lost_txt} / {logged:,} | {dup_txt} "
            f"| {rss.median if rss else 0:.0f} |"
        )
    return "\n".join(lines)


def spent_table(cells: list[Cell]) -> str:
    """Where the server's CPU went during saturation: all of it, in the kernel, in the
    cyclic GC (all generations; full collections), per 1,000 requests, medians over
    rounds, and each option's medians less the floor's."""
    lines = [
        "| destination | option | CPU ms per 1k requests | of which kernel | of which GC "
        "(full collections) | over the floor: CPU · kernel · GC |",
        "|---|---|---|---|---|---|",
    ]
    keys = ("cpu", "kernel", "gc", "gc_full")

    def medians(cell: Cell) -> dict[str, float] | None:
        out = {}
        for key in keys:
            e = cell.estimate(f"closed_server_{key}_ms_per_kreq")
            if e is None:
                return None
            out[key] = e.median
        return out

    floor = medians(cells[0]) if cells else None
    for cell in cells:
        m = medians(cell)
        if m is None:
            continue
        over = "—"
        if floor is not None and cell is not cells[0]:
            over = " · ".join(f"{m[k] - floor[k]:+,.1f}" for k in ("cpu", "kernel", "gc"))
        lines.append(
            f"| {'any' if cell is cells[0] else cell.dest} | {cell.label} | {m['cpu']:,.1f} "
            f"| {m['kernel']:,.1f} | {m['gc']:,.1f} ({m['gc_full']:,.1f}) | {over} |"
        )
    return "\n".join(lines)


def _p99_diff(diff: Estimate | None, is_floor: bool, asked: int | None = None) -> str:
    if diff is None:
        return "—"
    text = diff.fmt(1, "", signed=True, asked=asked)
    return f"A/A: {text}" if is_floor else text


def failures_gate(verdict: str, failed: int, ref_failed: int) -> str:
    """``verdict`` of a p99 or requests/s target, unless requests failed: any of the
    option's makes it missed, any of the floor's servers beside it undecided."""
    # a failed request is answered fast or not at all: its option's requests/s and p99
    # would flatter it, whatever their intervals say
    if failed:
        return f"{MISSED} ({failed:,} failed requests)"
    if ref_failed:
        return f"{UNDECIDED} (the floor beside it failed {ref_failed:,} requests)"
    return verdict


def rounds_asked(cells: list[Cell]) -> int:
    """The rounds the run was asked for, as its cells tell it: each round a cell ran
    either completed (``runs``) or failed (``errors``)."""
    return max((len(c.runs) + len(c.errors) for c in cells), default=0)


def rounds_text(cells: list[Cell], asked: int) -> str:
    """For the header: ``9 interleaved rounds``, and how many each option completed
    when some did not complete them all."""
    text = f"{asked} interleaved rounds"
    short = [f"{c.key} {len(c.runs)}" for c in cells if len(c.runs) < asked]
    if not short:
        return f"{text}, all completed"
    return f"{text}, completed by all but: {', '.join(short)}"


def verdicts(
    cells: list[Cell], rounds: int | None = None, quick: bool = False
) -> list[tuple[str, str, str]]:
    """(verdict, target, value) per aiologsinks row and target. ``rounds``: those the
    run was asked for (by default as the cells tell it); an estimate from fewer says
    ``(n=...)``. A ``quick`` run judges nothing."""
    floor = cells[0]
    asked = rounds if rounds is not None else rounds_asked(cells)
    out: list[tuple[str, str, str]] = []
    # the floor's row is an A/A check: a second floor server beside it, sliced alike
    aa_ratio = floor.estimate("closed_ratio")
    aa_diff = p99_vs_floor(floor, floor)
    p99_target = Target("request p99 within 1 ms of the floor", "<=", 1.0)
    rps_target = Target("requests/s >= 0.9x the floor", ">=", 0.9)
    for cell in cells:
        if cell.contender != "aiologsinks":
            continue
        dest = DESTS[cell.dest][0]
        if cell.variant:
            dest = f"{dest}, {cell.variant}"
        whats = (p99_target.what, rps_target.what, "0 lost")
        if not cell.runs:
            gone = f"not measured (all {len(cell.errors)} rounds failed)"
            out.extend((QUICK if quick else gone, f"{dest}: {w}", "—") for w in whats)
            continue
        diff = p99_vs_floor(cell, floor)
        ratio = cell.estimate("closed_ratio")
        lost = cell.lost() or 0
        done = len(cell.runs)

        def judged(verdict: str, cell: Cell = cell) -> str:
            if quick:
                return QUICK
            return failures_gate(verdict, cell.failed(), cell.failed("ref_"))

        p99_verdict = aa_gate(
            p99_target,
            diff,
            aa_diff,
            aa_diff.fmt(2, " ms", signed=True, asked=asked) if aa_diff else "",
        )
        rps_verdict = aa_gate(
            rps_target, ratio, aa_ratio, aa_ratio.fmt(asked=asked) if aa_ratio else ""
        )
        out.append(
            (
                judged(p99_verdict),
                f"{dest}: {p99_target.what}",
                diff.fmt(2, " ms", signed=True, asked=asked) if diff else "—",
            )
        )
        out.append(
            (
                judged(rps_verdict),
                f"{dest}: {rps_target.what}",
                ratio.fmt(asked=asked) if ratio else "—",
            )
        )
        over = f"{done} rounds" if done == asked else f"{done} of {asked} rounds"
        if quick:
            lost_verdict = QUICK
        elif lost:
            lost_verdict = MISSED
        elif cell.duplicated():
            lost_verdict = f"{UNDECIDED} (delivered more than logged: duplicates may hide losses)"
        elif done < asked:
            # a round that failed may be the very one whose records did not arrive
            lost_verdict = f"{UNDECIDED} ({asked - done} of {asked} rounds failed)"
        else:
            lost_verdict = MET
        value = f"{lost:,} lost over {over}"
        if cell.duplicated():
            value += f", {cell.duplicated():,} delivered more than logged"
        out.append((lost_verdict, f"{dest}: {whats[2]}", value))
    return out


def chart(cells: list[Cell], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in cells if c.runs]
    labels = [("" if c.contender == "null" else f"[{c.dest}] ") + c.label for c in rows]
    colors = [
        "tab:green"
        if c.contender == "aiologsinks"
        else "tab:blue"
        if c.contender == "null"
        else "tab:gray"
        for c in rows
    ]
    fig, axes = plt.subplots(1, 2, figsize=(15, 0.36 * len(rows) + 1.8), sharey=True)
    specs = (
        ("closed_rps", "requests/s at saturation (higher is better)", False),
        ("open_p99_ms", "request p99 at a fixed rate, ms (log scale; lower is better)", True),
    )
    for ax, (metric, name, log) in zip(axes, specs, strict=True):
        ests = [c.estimate(metric) for c in rows]
        meds = [e.median if e else 0.0 for e in ests]
        err = [
            [m - (e.low if e else m) for m, e in zip(meds, ests, strict=True)],
            [(e.high if e else m) - m for m, e in zip(meds, ests, strict=True)],
        ]
        ax.barh(range(len(rows)), meds, xerr=err, color=colors, capsize=2)
        if log:
            ax.set_xscale("log")
        fl = rows[0].estimate(metric)
        if fl is not None:
            ax.axvline(fl.median, color="tab:blue", lw=0.8, ls="--")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=9)
    fig.text(
        0.01,
        0.005,
        "bars: median over rounds; whiskers: bootstrap 95% interval of the median; "
        "dashed: the floor (NullHandler)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(path: str, out: str) -> int:
    """Draw the chart of a saved ``service-*.json`` again (e.g. into docs/); a quick
    run's says so in its title and on stderr."""
    with open(path) as f:
        doc = json.load(f)
    title = _title(doc["header"])
    if doc.get("quick"):
        print(f"{path} is a --quick run (no verdicts): its chart says so", file=sys.stderr)
        title = f"QUICK RUN, NOT A MEASUREMENT: {title}"
    cells = []
    for c in doc["cells"]:
        cell = Cell(c["contender"], c["dest"])
        cell.runs = {int(r): run for r, run in c["runs"].items()}
        cells.append(cell)
    chart(cells, out, title)
    return 0


def provenance() -> dict[str, Any]:
    """The code measured and when: the worktree's commit (None outside git), whether it
    had uncommitted changes, and the date (UTC)."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def provenance_text(prov: dict[str, Any]) -> str:
    """``on 2520203 (with uncommitted changes), 2025-01-31 12:00 UTC`` for the header."""
    if not prov.get("commit"):
        return f"commit unknown, {prov['date']}"
    dirty = " (with uncommitted changes)" if prov.get("dirty") else ""
    return f"on {prov['commit']}{dirty}, {prov['date']}"


def _title(header: str) -> str:
    head, _, rest = header.partition("; ")
    return f"A service logging 3 records per request: {head}\n{rest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.service", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 rounds, 1 s phases, floor and aiologsinks (sanity: no verdicts)",
    )
    parser.add_argument("--smoke", action="store_true", help="the code runs: tiny, no stats")
    parser.add_argument("--framework", choices=("fastapi", "aiohttp"), default="fastapi")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (9; quick 2; smoke 1)")
    parser.add_argument("--seconds", type=float, help="seconds per phase (3; quick 1)")
    parser.add_argument("--warmup", type=float, default=0.5, help="uncounted open-loop start")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop requests/s (100)")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--drain", type=float, default=20.0, help="shutdown bound, s (20)")
    parser.add_argument("--stall-ms", type=float, default=200.0, help="stall length (200)")
    parser.add_argument("--stall-every", type=float, default=2.0, help="stall period, s (2)")
    parser.add_argument("--dest", help="comma-separated destinations (file,http,syslog,stall,otlp)")
    parser.add_argument("--only", help="comma-separated contenders (null is always run)")
    parser.add_argument(
        "--linger",
        help="comma-separated Dispatcher linger values, ms: one aiologsinks row per value",
    )
    parser.add_argument(
        "--linger-max",
        help="comma-separated records that end a lingering lane (0: no bound, as shipped): "
        "one aiologsinks row per value",
    )
    parser.add_argument("--no-wrk", action="store_true", help="Python closed loop even with wrk")
    parser.add_argument(
        "--no-pin", action="store_true", help="servers, load and peers share every CPU"
    )
    parser.add_argument("--chart", help="write the chart here (default: benchmarks/results/)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--replot", metavar="JSON", help="redraw the chart of a results file")
    opts = parser.parse_args(argv)
    if opts.replot:
        return replot(opts.replot, opts.chart or opts.replot.replace(".json", ".png"))
    if opts.smoke:
        opts.rounds = opts.rounds or 1
        opts.seconds = opts.seconds or 0.3
        opts.warmup, opts.rate, opts.connections, opts.drain = 0.0, 50.0, 4, 10.0
    opts.rounds = opts.rounds or (2 if opts.quick else 9)
    opts.seconds = opts.seconds or (1.0 if opts.quick else 3.0)
    if opts.quick and not opts.only:
        opts.only = "aiologsinks"
    opts.wrk = not opts.no_wrk and shutil.which("wrk") is not None and not opts.smoke
    opts.pinning = "not pinned (--no-pin)" if opts.no_pin else pin_cpus()
    DESTS["stall"] = (
        f"syslog over TCP, peer stalls {opts.stall_ms:g} ms every {opts.stall_every:g} s",
        "stall",
    )
    dests = (opts.dest or "file,http,syslog,stall,otlp").split(",")
    for d in dests:
        if d not in DESTS:
            parser.error(f"--dest: unknown destination {d!r}")
    only = set(opts.only.split(",")) if opts.only else None
    lingers = None
    if opts.linger:
        try:
            lingers = [float(x) / 1e3 for x in opts.linger.split(",")]
        except ValueError:
            parser.error(f"--linger: expected milliseconds, e.g. 5,1,0; got {opts.linger!r}")
        if any(x < 0 for x in lingers):
            parser.error(f"--linger: a linger cannot be negative; got {opts.linger!r}")
    linger_maxes = None
    if opts.linger_max:
        try:
            linger_maxes = [int(x) for x in opts.linger_max.split(",")]
        except ValueError:
            parser.error(
                f"--linger-max: expected record counts, e.g. 0,256; got {opts.linger_max!r}"
            )
        if any(x < 0 for x in linger_maxes):
            parser.error(f"--linger-max: a count cannot be negative; got {opts.linger_max!r}")
    cells, skipped = build_cells(dests, only, lingers, linger_maxes)
    log = (lambda s: print(s, file=sys.stderr)) if opts.json else print
    log(
        f"{opts.framework}: {len(cells)} options, {opts.rounds} rounds, {opts.seconds:g} s per "
        f"phase, open loop {opts.rate:g} req/s, closed loop "
        f"{'wrk' if opts.wrk else 'python'} x{opts.connections}"
    )
    for s in skipped:
        log(f"  skipped {s}")
    started = time.perf_counter()
    run_rounds(cells, opts.framework, opts, log)
    text = table(cells, opts) + "\n\n" + spent_table(cells)
    prov = provenance()
    checks = verdicts(cells, opts.rounds, opts.quick)
    check_text = "\n".join(f"- **{v}**: {what}: {value}" for v, what, value in checks)
    header = (
        f"{opts.framework} ({'uvicorn, h11' if opts.framework == 'fastapi' else 'aiohttp.web'}),"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other work, "
        f"{opts.pinning}; "
        f"{rounds_text(cells, opts.rounds)}; open loop {opts.rate:g} req/s for {opts.seconds:g} s "
        f"(+{opts.warmup:g} s warm-up) in 0.5 s slices with the floor's, closed loop "
        f"{'wrk -t1' if opts.wrk else 'python'} -c{opts.connections} for {opts.seconds:g} s; "
        f"{time.perf_counter() - started:.0f} s; {provenance_text(prov)}"
    )
    notes = (
        "req/s: median over rounds. x floor: per round, the option's requests/s over the "
        "floor's, from 1 s slices alternating (ABBA; BAAB in odd rounds) with a floor "
        "server running beside it "
        "(the floor's own row: the same for a second floor server, an A/A check); "
        "p99 - floor: per round, the option's open-loop p99 minus the floor server's, "
        "from 0.5 s slices alternating (ABBA) in the same way (the floor's row: A/A); "
        "both the median over rounds with a bootstrap 95% interval. Latencies: open "
        "loop, from when each "
        "request was due, medians over rounds; t/o: requests not answered 5 s after the "
        "phase, counted at that lower bound. failed requests: requests of the measured "
        "phases answered with another status than 200, lost to a socket error or (at "
        "saturation) never answered, summed over rounds; they count in neither req/s nor "
        "the latencies, and any of them makes the option's verdicts missed. lost: records "
        "logged by the app minus records counted at the destination after shutdown "
        "(summed over rounds); duplicated: records counted at the destination beyond "
        "those logged (a batch delivered twice), which can hide as many lost, so 0 lost "
        "with any is not met. Logging CPU: the "
        "loop thread's CPU time in a request's logging calls (open and closed loop), p50 "
        "of the requests without an exception · of those that logged one (medians over "
        "rounds). CPU per 1k requests: user + system CPU time during the saturation phase "
        "of the server process (all its threads) · of the destination's processes, which "
        "run on the CPUs the server is not pinned to (medians over rounds). The second "
        "table splits the server's CPU during saturation: in the kernel (system time) and "
        "in the cyclic GC (the app's gc.callbacks clock; a full collection traverses "
        "every object of the process, the logging option's own included); medians over "
        "rounds, and their differences from the floor's (not paired). When the A/A "
        "check's interval leaves out 1.00x (for p99: +0 ms), each requests/s (p99) "
        "verdict is judged again with the option's interval widened by the A/A's: one "
        "that bias could flip is undecided."
    )
    doc = {
        "header": header,
        "framework": opts.framework,
        "python": platform.python_version(),
        **prov,
        "cells": [
            {
                "key": c.key,
                "label": c.label,
                "dest": c.dest,
                "contender": c.contender,
                "runs": c.runs,
                "errors": c.errors,
            }
            for c in cells
        ],
        "skipped": skipped,
        "quick": opts.quick,
        "rounds": {"asked": opts.rounds, "completed": {c.key: len(c.runs) for c in cells}},
        "verdicts": [{"verdict": v, "target": w, "value": x} for v, w, x in checks],
    }
    if not opts.smoke:
        os.makedirs(RESULTS, exist_ok=True)
        # a sanity run must not replace the full run's results
        name = f"service-{opts.framework}{'-quick' if opts.quick else ''}"
        base = os.path.join(RESULTS, name)
        with open(base + ".json", "w") as f:
            json.dump(doc, f, indent=1)
        with open(base + ".md", "w") as f:
            f.write(f"{header}\n\n{text}\n\n{notes}\n\n{TARGETS_NOTE}:\n\n{check_text}\n")
        try:
            chart(
                cells,
                opts.chart or base + ".png",
                _title(header),
            )
        except ImportError:
            log("  matplotlib is not installed: no chart")
    if opts.json:
        print(json.dumps(doc, indent=1))
    else:
        print()
        print(header)
        print()
        print(text)
        print()
        print(notes)
        print()
        print(TARGETS_NOTE + ":")
        print(check_text)
        for s in skipped:
            print(f"skipped {s}")
    failed = any(c.errors or not c.runs for c in cells)
    for c in cells:
        if c.contender in ("aiologsinks", "stdlib") and c.lost():
            print(f"LOST {c.lost()} record(s): {c.dest} {c.label}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
