"""``/healthz`` and ``/readyz`` on a localhost port, for liveness and readiness probes.

``/healthz``: 200 while the agent's event loop answers. ``/readyz``: 200 once every target has
been polled at least once (a target being down does not make the agent unready: restarting
the agent would not bring a database back), with one line per target in the body.
"""

from __future__ import annotations

import asyncio
import logging

from otelbot.agent.pipeline import Pipeline

log = logging.getLogger("otelbot.agent.health")


class HealthServer:
    def __init__(self, pipeline: Pipeline, host: str, port: int) -> None:
        self._pipeline = pipeline
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _ready(self) -> tuple[bool, str]:
        lines = []
        ready = True
        for st in self._pipeline.status:
            if st.up is None:
                ready = False
                state = "not polled yet"
            else:
                state = "up" if st.up else f"down: {st.last_error}"
            lines.append(f"{st.target}: {state}")
        return ready, "\n".join(lines) + "\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/healthz":
                status, body = "200 OK", "ok\n"
            elif path == "/readyz":
                ready, body = self._ready()
                status = "200 OK" if ready else "503 Service Unavailable"
            else:
                status, body = "404 Not Found", "try /healthz or /readyz\n"
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (OSError, asyncio.TimeoutError, UnicodeError):
            pass
        finally:
            writer.close()
