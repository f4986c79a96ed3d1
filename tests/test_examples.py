"""The examples, run for real: uvicorn serving the FastAPI app, the asyncio service, aiohttp."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Retry ``check`` every 20 ms until it is true; fail after ``timeout`` seconds."""

    async def until() -> None:
        while not await check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(until(), timeout)


@asynccontextmanager
async def process(*args: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def serving(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def test_fastapi_example_under_uvicorn_delivers_every_record_on_sigterm(
    tmp_path: Path,
) -> None:
    log = tmp_path / "fastapi.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with process(
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "fastapi_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on",
        env={"AIOLOGSINKS_LOG_FILE": str(log)},
    ) as proc:  # fmt: skip
        async with aiohttp.ClientSession() as session:
            await poll(lambda: serving(session, f"{base}/"))

            async def get(i: int) -> None:
                async with session.get(f"{base}/items/{i}") as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"item_id": i}

            await asyncio.gather(*(get(i) for i in range(200)))
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        # recent uvicorn re-raises the signal once shut down, so -SIGTERM is a clean exit
        assert proc.returncode in (0, -signal.SIGTERM), err.decode()
        assert b"Application shutdown complete" in err
    lines = (await asyncio.to_thread(log.read_text)).splitlines()
    items = sorted(int(line.rsplit(" ", 1)[1]) for line in lines if "request for item" in line)
    assert items == list(range(200))
    assert "app started" in lines[0] and "app stopping" in lines[-1]


async def test_asyncio_service_flushes_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    async with process(
        sys.executable, str(EXAMPLES / "asyncio_service.py"), str(log), env={}
    ) as proc:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"ready\n"

        async def some_jobs() -> bool:
            text = await asyncio.to_thread(lambda: log.read_text() if log.exists() else "")
            return "job 3 done" in text

        await poll(some_jobs)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
    lines = (await asyncio.to_thread(log.read_text)).splitlines()
    jobs = int(lines[-1].split(" after ")[1].split()[0])
    assert [line.split(" ", 3)[3] for line in lines[1:-1]] == [
        f"job {i} done" for i in range(1, jobs + 1)
    ]


async def test_aiohttp_example_cleanup_ctx_delivers(tmp_path: Path) -> None:
    log = tmp_path / "aiohttp.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with process(
        sys.executable, str(EXAMPLES / "aiohttp_app.py"),
        env={"AIOLOGSINKS_LOG_FILE": str(log), "PORT": str(port)},
    ) as proc:  # fmt: skip
        async with aiohttp.ClientSession() as session:
            await poll(lambda: serving(session, f"{base}/hello"))
            for name in ("ann", "bob"):
                async with session.get(f"{base}/hello", params={"name": name}) as resp:
                    assert await resp.json() == {"hello": name}
            async with session.post(f"{base}/flush") as resp:
                assert await resp.json() >= 3
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)
    text = await asyncio.to_thread(log.read_text)
    assert "hello ann" in text and "hello bob" in text


def test_the_collector_configuration_example_is_valid(tmp_path: Path) -> None:
    # the README's daemon command; its file's directory is the one thing changed
    from aiologsinks._cli.receive import load_collector_config
    from aiologsinks._collector._daemon import settings_from
    from aiologsinks.config import from_dict

    data = load_collector_config(EXAMPLES / "collector.toml")
    assert data["sinks"]["app"]["mkdir"] is True  # a fresh machine has no /var/log/myapp
    data["sinks"]["app"]["filename"] = str(tmp_path / "myapp" / "app.log")
    settings, sinks = settings_from(data, file="collector.toml")
    config = from_dict(sinks)
    assert (tmp_path / "myapp").is_dir()
    assert sorted(config.sinks) == ["app", "errors"] and settings.tcp is not None
    for sink in config.sinks.values():
        sink.close()
