"""A real HTTP server on 127.0.0.1 (aiohttp.web, in a thread) that records webhook calls.

Routes: ``/ok`` answers 200; ``/flaky`` answers 500 to the first two calls with a given
``Bayou-Result-Id`` and 200 after; ``/down`` always 503; ``/bad`` always 400; ``/slow`` sleeps
2 s, then 200.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bayou.net import free_port


@dataclass(frozen=True)
class Call:
    path: str
    body: bytes
    headers: dict[str, str]
    at: float


class HookServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``calls`` holds every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls: list[Call] = []
        self._tries: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        with self._lock:
            self.calls.append(Call(path, body, dict(request.headers), time.monotonic()))
            rid = request.headers.get("Bayou-Result-Id", "")
            n = self._tries[path + rid] = self._tries.get(path + rid, 0) + 1
        if path == "/ok":
            return web.Response(text="ok")
        if path == "/flaky":
            return web.Response(status=500 if n <= 2 else 200)
        if path == "/bad":
            return web.Response(status=400)
        if path == "/slow":
            await asyncio.sleep(2.0)
            return web.Response(text="late")
        return web.Response(status=503)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> HookServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def to(self, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == path]

    def __enter__(self) -> HookServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
