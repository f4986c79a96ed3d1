"""Command line: ``python -m aiologsinks demo`` and ``python -m aiologsinks receive``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


def _int(text: str, expected: str) -> int:
    # argparse words a ValueError as "invalid _port value": say what is expected
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _port(text: str) -> int:
    value = _int(text, "a port 0-65535")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {text}")
    return value


def _records(text: str) -> int:
    value = _int(text, "an int >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def _interval(text: str) -> float:
    # 0 is "no counters", as stats_interval = 0 in a configuration
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: none), got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text}") from None
    # inf and nan would compare their way past the limit the option sets
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """A command's parser: a mistake is one line on stderr and exit code 2, as a
    mistake in the collector's configuration is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aiologsinks`` command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="aiologsinks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser(
        "demo",
        help="log records through every sink to embedded loopback peers and report delivery",
    )
    demo.add_argument("--records", type=_records, default=10_000, help="records to log (10000)")
    demo.add_argument("--json", action="store_true", help="print machine-readable results")
    recv = sub.add_parser(
        "receive",
        help="collect records from socket, datagram, syslog and HTTP sinks (or stdlib handlers)",
        description="Serve until SIGINT/SIGTERM (SIGHUP reopens files). With --config, "
        "records go to the sinks of a configuration file; otherwise one line per record "
        "goes to stdout (or --out). Port 0 picks a free port; the bound ports are printed "
        "on stderr. Command-line options override the [collector] table.",
    )
    recv.add_argument("--config", help="collector configuration (TOML): sinks and [collector]")
    recv.add_argument("--tcp", type=_port, help="pickled frames over TCP (SocketSink)")
    recv.add_argument("--udp", type=_port, help="pickled frames over UDP (DatagramSink)")
    recv.add_argument("--syslog", type=_port, help="syslog over UDP and TCP on this port")
    recv.add_argument("--http", type=_port, help="HTTPSink / HTTPHandler requests")
    recv.add_argument(
        "--host",
        action="append",
        help="address to bind, repeat for several (127.0.0.1; ::1 for IPv6)",
    )
    recv.add_argument("--out", help="append lines to this file instead of stdout")
    recv.add_argument("--max-frame", type=_records, help="largest frame in bytes (1 MiB)")
    recv.add_argument("--max-connections", type=_records, help="connections at once (256)")
    recv.add_argument("--idle-timeout", type=_seconds, help="close silent connections (300 s)")
    recv.add_argument("--read-timeout", type=_seconds, help="time to finish a frame (30 s)")
    recv.add_argument("--drain-timeout", type=_seconds, help="bound of a SIGTERM stop (10 s)")
    recv.add_argument(
        "--stats-interval",
        type=_interval,
        help="print counters every N seconds on stderr (0: none)",
    )
    args, extra = parser.parse_known_args(argv)
    if extra:
        # the command's own usage and error (argparse reports an unknown option of a
        # subcommand with the top-level usage)
        {"demo": demo, "receive": recv}[args.command].error(
            f"unrecognized arguments: {' '.join(extra)}"
        )
    if args.command == "demo":
        from ._cli.demo import run_demo

        try:
            return run_demo(records=args.records, as_json=args.json)
        except KeyboardInterrupt:
            # Ctrl-C: one line, as the shell's convention for SIGINT (no traceback)
            sys.stderr.write("aiologsinks demo: interrupted\n")
            return 130
    if args.command == "receive":
        from ._cli.receive import run_receive

        return run_receive(
            tcp=args.tcp,
            udp=args.udp,
            syslog=args.syslog,
            http=args.http,
            host=args.host,
            out=args.out,
            config=args.config,
            max_frame=args.max_frame,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            read_timeout=args.read_timeout,
            drain_timeout=args.drain_timeout,
            stats_interval=args.stats_interval,
        )
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
