"""Command line: ``python -m aiologsinks demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aiologsinks`` command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="aiologsinks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="log records through every sink and report delivery")
    demo.add_argument("--records", type=int, default=10_000, help="records to log (10000)")
    demo.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._cli.demo import run_demo

        return run_demo(records=args.records, as_json=args.json)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
