"""A real aiohttp web server on the test's loop, on 127.0.0.1, that keeps every request.

It records method, path, raw query, body and headers of each request, counts the TCP
connections it accepted (to prove keep-alive reuse), can answer after a ``delay``,
can answer with planned statuses first (``statuses=[500, 500]`` then 200s), and can be
stopped and started again on the same port ("down for a while").
"""

from __future__ import annotations

import ast
import asyncio
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from ._waiting import wait_until


@dataclass
class Request:
    """One captured request."""

    method: str
    path: str
    query: str
    body: bytes
    headers: CIMultiDict[str]
    status: int

    def message(self) -> str:
        """The record's message a form request carries, as a receiver reads it:
        ``msg``, merged with ``args`` when HTTPHandler's form sent them apart
        (``str(tuple)`` of literals)."""
        form = urllib.parse.parse_qs(self.body.decode() or self.query, keep_blank_values=True)
        msg = form["msg"][0]
        args = form.get("args", ["None"])[0]
        if args in ("None", "()", ""):
            return msg
        return msg % ast.literal_eval(args)  # type: ignore[no-any-return]


@dataclass
class HTTPPeer:
    """The server: captured ``requests`` (including failed ones), ``connections`` made."""

    ssl_context: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    port: int = 0
    delay: float = 0.0
    statuses: list[int] = field(default_factory=list)
    #: the largest body taken: a larger one is answered 413, as a server's own limit
    max_body: int | None = None
    #: the ``Location`` a 3xx answer carries
    location: str | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: asyncio.AbstractServer | None = None
    _web: web.Server | None = None

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ok(self) -> list[Request]:
        """The requests that were answered with 2xx."""
        return [r for r in self.requests if r.status < 300]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.max_body is not None and len(body) > self.max_body:
            status = 413
        else:
            status = self.statuses.pop(0) if self.statuses else 200
        self.requests.append(
            Request(
                request.method,
                request.rel_url.raw_path,
                request.rel_url.raw_query_string,
                body,
                CIMultiDict(request.headers),
                status,
            )
        )
        async with self._changed:
            self._changed.notify_all()
        headers = {"Location": self.location} if self.location and 300 <= status < 400 else None
        return web.Response(status=status, text="ok" if status < 300 else "no", headers=headers)

    async def start(self) -> None:
        """Listen (again) on ``port`` (a free one the first time)."""
        loop = asyncio.get_running_loop()
        self._web = web.Server(self._handle)
        server = self._web

        def factory() -> asyncio.Protocol:
            self.connections += 1
            return server()

        self._server = await loop.create_server(factory, self.host, self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
            assert self._web is not None
            await self._web.shutdown(1.0)
            await self._server.wait_closed()
            self._server = None

    async def wait_ok(self, count: int, timeout: float = 5.0) -> list[Request]:
        """Wait until ``count`` requests were answered with 2xx; return those."""
        await wait_until(self._changed, lambda: len(self.ok) >= count, timeout)
        return self.ok

    async def wait_requests(self, count: int, timeout: float = 5.0) -> list[Request]:
        """Wait until ``count`` requests arrived, whatever the answer."""
        await wait_until(self._changed, lambda: len(self.requests) >= count, timeout)
        return self.requests


@asynccontextmanager
async def http_peer(
    *,
    ssl_context: ssl.SSLContext | None = None,
    delay: float = 0.0,
    statuses: list[int] | None = None,
    max_body: int | None = None,
    location: str | None = None,
) -> AsyncIterator[HTTPPeer]:
    """Serve HTTP (HTTPS with ``ssl_context``) on 127.0.0.1 until the block exits."""
    peer = HTTPPeer(
        ssl_context=ssl_context,
        delay=delay,
        statuses=list(statuses or ()),
        max_body=max_body,
        location=location,
    )
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()
