"""A real ``logrotate`` run against a test directory (generated config, own state file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import require_program


class Logrotate:
    """Rotates ``log`` with ``logrotate -f`` the way a cron job would (create mode)."""

    def __init__(self, log: Path, *, rotate: int = 1000, compress: bool = False) -> None:
        self.program = require_program("logrotate")
        self.log = log
        self.state = log.parent / "logrotate.state"
        self.config = log.parent / "logrotate.conf"
        options = ["missingok", "create 0644", f"rotate {rotate}", "notifempty"]
        options.append("compress" if compress else "nocompress")
        body = "".join(f"    {line}\n" for line in options)
        self.config.write_text(f"{log} {{\n{body}}}\n")
        self.runs = 0

    async def rotate(self) -> None:
        """Run ``logrotate -f -s <state> <config>`` to completion; fail on a non-zero exit."""
        proc = await asyncio.create_subprocess_exec(
            self.program,
            "-f",
            "-s",
            str(self.state),
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(
                f"logrotate failed ({proc.returncode}): {err.decode()}{out.decode()}"
            )
        self.runs += 1
