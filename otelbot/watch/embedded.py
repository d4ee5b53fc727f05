"""watch inside another program (the demo): a :class:`Watch` on its own event loop in a
daemon thread, with a tap that keeps every export body as it arrived::

    embedded = EmbeddedWatch(WatchOptions(otlp_http=("127.0.0.1", 0), otlp_grpc=None))
    embedded.start()                       # the UI port falls back to a free one if taken
    print(embedded.ui_url, embedded.http_endpoint)
    embedded.call(lambda: len(embedded.store.findings))   # read the store on watch's loop
    embedded.stop()

The store belongs to watch's loop; read it through :meth:`EmbeddedWatch.call`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from otelbot.watch.options import WatchOptions
from otelbot.watch.receiver import Forwarder, Intake
from otelbot.watch.server import Watch
from otelbot.watch.store import WatchStore

T = TypeVar("T")


@dataclass
class Tap:
    """Every export body handed to the intake, valid or not, per signal (protobuf, after
    decompression; a JSON export as its protobuf equivalent)."""

    bodies: dict[str, list[bytes]] = field(
        default_factory=lambda: {"traces": [], "metrics": [], "logs": []}
    )
    requests: int = 0

    def raw(self) -> bytes:
        return b"".join(b for bodies in self.bodies.values() for b in bodies)


class TappedIntake(Intake):
    """An intake that also keeps each body in a :class:`Tap` before decoding it."""

    def __init__(
        self,
        store: WatchStore,
        tap: Tap,
        forward: Forwarder | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(store, forward, token)
        self.tap = tap

    def ingest(self, signal: str, body: bytes) -> None:
        self.tap.requests += 1
        self.tap.bodies[signal].append(body)
        super().ingest(signal, body)


class EmbeddedWatch:
    def __init__(self, options: WatchOptions, ui_fallback: bool = True) -> None:
        """``ui_fallback``: when the UI address is taken, serve the page on a free port of the
        same host instead of failing."""
        self.options = options
        self.ui_fallback = ui_fallback
        self.tap = Tap()
        self.watch = self._watch(options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="watch", daemon=True)

    def _watch(self, options: WatchOptions) -> Watch:
        watch = Watch(options)
        watch.intake = TappedIntake(watch.store, self.tap, watch.forwarder, options.token)
        return watch

    def _run(self, coro: Coroutine[Any, Any, None], timeout: float = 30) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> EmbeddedWatch:
        """Listen; OSError when an address cannot be bound (the UI's only without fallback)."""
        self._thread.start()
        try:
            self._run(self.watch.start())
        except OSError:
            if not self.ui_fallback or self.options.ui[1] == 0:
                self._end_loop()
                raise
            self.options.ui = (self.options.ui[0], 0)
            self.watch = self._watch(self.options)
            try:
                self._run(self.watch.start())
            except BaseException:
                self._end_loop()
                raise
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self.watch.stop())
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, fn: Callable[[], T], timeout: float = 60) -> T:
        """``fn()`` run on watch's loop, where the store may be read safely."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    @property
    def store(self) -> WatchStore:
        return self.watch.store

    @property
    def ui_url(self) -> str:
        return self.watch.ui_url

    @property
    def http_endpoint(self) -> str:
        return self.watch.http_endpoint
