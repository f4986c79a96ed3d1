"""A real ``rsyslogd`` for the syslog tests, confined to a temporary directory.

It runs in the foreground (``-n``) with a generated config (``-f``) and a pid file in
the temp dir (``-i``): imudp and imtcp listen on free unprivileged 127.0.0.1 ports,
imuxsock on a socket in the temp dir (the system socket and imklog stay off), and every
message is written to ``out.log`` as ``facility|severity|msg``. Readiness is awaited by
polling the TCP port and then the output for a probe message, with a timeout.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.peers.records import free_port

CONFIG = """\
global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
input(type="imuxsock" Socket="{sock}")
template(name="probe" type="string"
         string="%syslogfacility-text%|%syslogseverity-text%|%rawmsg-after-pri%\\n")
*.* action(type="omfile" file="{out}" template="probe")
"""


class Rsyslog:
    """A running rsyslogd: its ports, socket path, and what it wrote."""

    def __init__(self, program: str, directory: Path) -> None:
        self.dir = directory
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port()
        self.socket_path = str(directory / "log.sock")
        self.out = directory / "out.log"
        conf = directory / "rsyslog.conf"
        conf.write_text(
            CONFIG.format(
                dir=directory,
                udp=self.udp_port,
                tcp=self.tcp_port,
                sock=self.socket_path,
                out=self.out,
            )
        )
        self.proc = subprocess.Popen(
            [program, "-n", "-f", str(conf), "-i", str(directory / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def lines(self) -> list[str]:
        """The lines written so far (``facility|severity|msg``)."""
        try:
            return self.out.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.tcp_port), 0.2).close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("rsyslogd did not open its TCP port")
            time.sleep(0.02)
        # UDP and the Unix socket have no handshake: send probes until one is written
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            while not any("ready-probe" in line for line in self.lines()):
                if time.monotonic() > deadline:
                    raise TimeoutError("rsyslogd did not write the probe message")
                udp.sendto(b"<14>ready-probe", ("127.0.0.1", self.udp_port))
                time.sleep(0.05)
        while not Path(self.socket_path).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("rsyslogd did not create its Unix socket")
            time.sleep(0.02)

    async def wait_for(self, needle: str, n: int, timeout: float = 10.0) -> list[str]:
        """Wait until ``n`` lines containing ``needle`` were written; return them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [line for line in self.lines() if needle in line]
            if len(found) >= n:
                return found
            if loop.time() > deadline:
                raise TimeoutError(f"{len(found)} of {n} lines with {needle!r}: {self.lines()}")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    """A real rsyslogd for the module's tests; stopped (and waited for) afterwards."""
    program = require_program("rsyslogd")
    # a short path: a Unix socket path must fit in 108 bytes
    directory = tmp_path_factory.mktemp("rsl")
    daemon = Rsyslog(program, directory)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()
