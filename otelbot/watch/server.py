"""One running watch: the OTLP/HTTP and OTLP/gRPC receivers and the page, on one event loop::

watch = Watch(WatchOptions(ui=("127.0.0.1", 4320)))
await watch.start()          # ports of 0 pick free ones: watch.ui_url, watch.http_port
...
await watch.stop()
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from otelbot.watch.api import ui_app
from otelbot.watch.options import Address, WatchOptions
from otelbot.watch.receiver import Forwarder, Intake
from otelbot.watch.store import WatchStore


class Watch:
    def __init__(self, options: WatchOptions, store: WatchStore | None = None) -> None:
        self.options = options
        self.store = store or WatchStore(retention=options.retention, max_spans=options.max_spans)
        self.forwarder = Forwarder(options.forward) if options.forward else None
        self.intake = Intake(self.store, self.forwarder, options.token)
        self._runners: list[web.AppRunner] = []
        self._grpc: Any = None
        self.http_port = 0
        self.grpc_port = 0
        self.ui_port = 0

    async def _serve(self, app: web.Application, address: Address, **kwargs: Any) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, **kwargs)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, address[0], address[1], reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else address[1]

    async def start(self) -> None:
        """Listen on every address; OSError/RuntimeError when one cannot be bound."""
        try:
            self.ui_port = await self._serve(
                ui_app(self.store, self.options.token), self.options.ui
            )
            if self.options.otlp_http is not None:
                # Bodies are inflated by the intake, which bounds what they may grow to.
                self.http_port = await self._serve(
                    self.intake.http_app(), self.options.otlp_http, auto_decompress=False
                )
            if self.options.otlp_grpc is not None:
                host, port = self.options.otlp_grpc
                self._grpc, self.grpc_port = self.intake.grpc_server(f"{host}:{port}")
                if not self.grpc_port:
                    raise OSError(f"cannot listen on {host}:{port} (gRPC)")
                await self._grpc.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.forwarder is not None:
            await self.forwarder.close()

    @property
    def ui_url(self) -> str:
        host = self.options.ui[0]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in shown:
            shown = f"[{shown}]"
        url = f"http://{shown}:{self.ui_port}/"
        return f"{url}?token={self.options.token}" if self.options.token else url

    @property
    def http_endpoint(self) -> str:
        host = self.options.otlp_http[0] if self.options.otlp_http else "127.0.0.1"
        return f"http://{host}:{self.http_port}"
