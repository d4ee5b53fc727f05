"""A real ``Watch`` on loopback (ports picked by the OS) in its own thread and event loop,
so a test can send to it with the real SDK exporters and read its API over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from typing import Any

from otelbot.watch.options import WatchOptions
from otelbot.watch.server import Watch
from otelbot.watch.store import WatchStore


class RunningWatch:
    def __init__(self, options: WatchOptions | None = None, store: WatchStore | None = None):
        self.options = options or WatchOptions(
            otlp_http=("127.0.0.1", 0), otlp_grpc=("127.0.0.1", 0), ui=("127.0.0.1", 0)
        )
        self.watch = Watch(self.options, store)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="watch", daemon=True)

    def start(self) -> RunningWatch:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.watch.start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.watch.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on watch's loop (the store is not shared across threads)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    @property
    def store(self) -> WatchStore:
        return self.watch.store

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.watch.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.watch.grpc_port}"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.watch.ui_port}"

    def get(self, path: str, token: str | None = None) -> Any:
        request = urllib.request.Request(self.ui + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.ui + path, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def post(self, signal: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        request = urllib.request.Request(
            f"{self.http_endpoint}/v1/{signal}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-protobuf", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
