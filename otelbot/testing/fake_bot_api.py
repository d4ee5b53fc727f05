"""A fake Telegram Bot API server with scripted errors, for tests, the demo and benchmarks.

Telegram is the one thing otelbot's tests cannot reach, so they talk to this instead.
It serves ``/bot{token}/{method}`` like the real API (JSON, form and multipart bodies),
hands out updates through ``getUpdates`` long polls, and replays scripted failures::

    api = FakeBotApi(token="123:ABC...").start()          # its own thread and loop
    api.push_updates([api.message_update(text="/start")])
    api.script("sendMessage", [Fault.flood(retry_after=3), Fault.ok()])
    # aiogram: Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(api.base_url)))
    api.stop()

Faults: 429 with ``retry_after``, 400, 403, 5xx, slow responses, responses that never
come (timeouts), broken JSON and dropped connections. As a separate process:
``python -m otelbot.testing.fake_bot_api --port 8081 --token ...``; it is then driven
through ``/_control/*`` (push updates, script faults, read the call log): ``--help`` and
docs/testing.md show each call with curl.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

BOT_ID_DEFAULT = 123456789
#: What Telegram says with each error status (a scripted error without a description).
ERROR_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass
class Fault:
    """One scripted response for a method. ``kind`` is ok, error, flood, slow, hang,
    broken_json or drop."""

    kind: str = "ok"
    status: int = 200
    description: str = ""
    retry_after: int = 0
    delay: float = 0.0

    @classmethod
    def ok(cls, delay: float = 0.0) -> Fault:
        return cls("ok", delay=delay)

    @classmethod
    def flood(cls, retry_after: int = 5) -> Fault:
        return cls(
            "flood", 429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
        )

    @classmethod
    def bad_request(cls, description: str = ERROR_DESCRIPTIONS[400]) -> Fault:
        return cls("error", 400, description)

    @classmethod
    def forbidden(cls, description: str = ERROR_DESCRIPTIONS[403]) -> Fault:
        return cls("error", 403, description)

    @classmethod
    def server_error(cls, status: int = 502, description: str = ERROR_DESCRIPTIONS[502]) -> Fault:
        return cls("error", status, description)

    @classmethod
    def slow(cls, delay: float) -> Fault:
        return cls("ok", delay=delay)

    @classmethod
    def hang(cls, delay: float = 3600.0) -> Fault:
        return cls("hang", delay=delay)

    @classmethod
    def broken_json(cls) -> Fault:
        return cls("broken_json")

    @classmethod
    def drop(cls) -> Fault:
        return cls("drop")

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> Fault:
        """A fault as ``/_control/script`` takes it: ``kind`` plus only the fields that
        differ from that kind's defaults, e.g. ``{"kind": "flood", "retry_after": 3}``,
        ``{"kind": "error", "status": 403}``, ``{"kind": "slow", "delay": 2}``."""
        fields = dict(spec)
        kind = fields.pop("kind", "ok")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}: one of {', '.join(FAULT_KINDS)}")
        unknown = set(fields) - {"status", "description", "retry_after", "delay"}
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if kind == "slow":
            kind = "ok"  # a normal reply, late
        fault = cls(kind, **{**_FAULT_DEFAULTS.get(kind, {}), **fields})
        if kind == "flood" and not fault.description:
            fault.description = f"Too Many Requests: retry after {fault.retry_after}"
        elif kind == "error" and not fault.description:
            fault.description = ERROR_DESCRIPTIONS.get(fault.status, f"Error {fault.status}")
        return fault


FAULT_KINDS = ("ok", "slow", "flood", "error", "hang", "broken_json", "drop")
_FAULT_DEFAULTS: dict[str, dict[str, Any]] = {
    "flood": {"status": 429, "retry_after": 5},
    "error": {"status": 400},
    "hang": {"delay": 3600.0},
}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    token_ok: bool


@dataclass
class _State:
    updates: deque[dict[str, Any]] = field(default_factory=deque)
    scripts: dict[str, deque[Fault]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    message_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    update_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    delivered: int = 0


class FakeBotApi:
    """The fake server. Thread-safe control methods; the server runs on its own loop."""

    def __init__(
        self,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_poll_wait: float = 1.0,
        bot_username: str = "otelbot_test_bot",
    ) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0]) if ":" in token else BOT_ID_DEFAULT
        self.host = host
        self.port = port
        self.max_poll_wait = max_poll_wait
        self.bot_username = bot_username
        self.state = _State()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._new_updates: asyncio.Event | None = None
        self._started = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, method: str) -> str:
        return f"{self.base_url}/bot{self.token}/{method}"

    def start(self) -> FakeBotApi:
        self._thread = threading.Thread(target=self._run, name="fake-bot-api", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake Bot API did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self.serve())
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._cleanup())
        loop.close()

    async def serve(self) -> None:
        """Start serving on the running loop (used directly by the CLI)."""
        self._new_updates = asyncio.Event()
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Requests still sleeping in a scripted fault (slow, hang) end here.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FakeBotApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control
    def push_updates(self, updates: list[dict[str, Any]]) -> None:
        with self._lock:
            self.state.updates.extend(updates)
        self._wake()

    def script(self, method: str, faults: list[Fault]) -> None:
        """Queue responses for ``method``; each call takes the next one, then normal replies."""
        with self._lock:
            self.state.scripts.setdefault(method, deque()).extend(faults)

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.state.calls if method is None or c.method == method]

    @property
    def pending_updates(self) -> int:
        with self._lock:
            return len(self.state.updates)

    @property
    def delivered_updates(self) -> int:
        with self._lock:
            return self.state.delivered

    def _wake(self) -> None:
        loop, event = self._loop, self._new_updates
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)
        elif event is not None:
            event.set()

    # ------------------------------------------------------------------ update factories
    def next_update_id(self) -> int:
        with self._lock:
            return next(self.state.update_ids)

    def message_update(
        self,
        text: str = "hello",
        user_id: int = 1001,
        chat_id: int | None = None,
        chat_type: str = "private",
    ) -> dict[str, Any]:
        chat_id = user_id if chat_id is None else chat_id
        user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        message: dict[str, Any] = {
            "message_id": self.next_update_id(),
            "date": int(time.time()),
            "chat": {
                "id": chat_id,
                "type": chat_type,
                **(
                    {"first_name": user["first_name"]}
                    if chat_type == "private"
                    else {"title": "Group"}
                ),
            },
            "from": user,
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        return {"update_id": self.next_update_id(), "message": message}

    def callback_update(self, data: str = "cb", user_id: int = 1001) -> dict[str, Any]:
        user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        return {
            "update_id": self.next_update_id(),
            "callback_query": {
                "id": str(self.next_update_id()),
                "from": user,
                "chat_instance": "1",
                "data": data,
                "message": {
                    "message_id": 1,
                    "date": int(time.time()),
                    "chat": {"id": user_id, "type": "private"},
                    "text": "menu",
                },
            },
        }

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method:.+}", self._handle)
        app.router.add_post("/_control/updates", self._control_updates)
        app.router.add_post("/_control/script", self._control_script)
        app.router.add_get("/_control/calls", self._control_calls)
        app.router.add_get("/_control/status", self._control_status)
        return app

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.can_read_body:
            return params
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body = {}
            if isinstance(body, dict):
                params.update(body)
        elif ctype.startswith("multipart/"):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if isinstance(part, BodyPartReader) and part.name:
                    params[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")
        else:
            params.update(dict(await request.post()))
        return params

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].rsplit("/", 1)[-1]
        token_ok = request.match_info["token"] == self.token
        params = await self._params(request)
        with self._lock:
            self.state.calls.append(Call(method, params, time.time(), token_ok))
            script = self.state.scripts.get(method)
            fault = script.popleft() if script else None
        if not token_ok:
            return self._error(401, "Unauthorized")
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.kind == "hang":
                return web.Response(status=504)
            if fault.kind in ("error", "flood"):
                extra = {"retry_after": fault.retry_after} if fault.kind == "flood" else None
                return self._error(fault.status, fault.description, extra)
            if fault.kind == "broken_json":
                return web.Response(
                    text='{"ok": true, "result": {', content_type="application/json"
                )
            if fault.kind == "drop":
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)
        result = await self._result(method, params)
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(
        status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {
                "id": self.bot_id,
                "is_bot": True,
                "first_name": "otelbot test",
                "username": self.bot_username,
            }
        if method == "getUpdates":
            return await self._get_updates(params)
        if method in ("sendMessage", "editMessageText", "sendPhoto", "sendDocument"):
            chat_id = params.get("chat_id", 0)
            try:
                chat_id = int(chat_id)
            except (TypeError, ValueError):
                pass
            with self._lock:
                message_id = next(self.state.message_ids)
            return {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": {"id": self.bot_id, "is_bot": True, "first_name": "otelbot test"},
                "text": params.get("text", params.get("caption", "")),
            }
        if method == "getWebhookInfo":
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        return True

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        wait = min(float(params.get("timeout") or 0), self.max_poll_wait)
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                while self.state.updates and self.state.updates[0]["update_id"] < offset:
                    self.state.updates.popleft()  # confirmed by the offset
                batch = list(itertools.islice(self.state.updates, 0, limit))
                if batch:
                    # Telegram redelivers until confirmed; we hand each update out once,
                    # which is what a bot that confirms with the next offset sees.
                    for _ in batch:
                        self.state.updates.popleft()
                    self.state.delivered += len(batch)
                    return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._new_updates is None:
                return []
            self._new_updates.clear()
            try:
                await asyncio.wait_for(self._new_updates.wait(), remaining)
            except asyncio.TimeoutError:
                return []

    # ------------------------------------------------------------------ control over HTTP
    # The endpoints the command's --help and docs/testing.md show with curl.

    @staticmethod
    def _refuse(reason: str) -> web.Response:
        return web.json_response({"ok": False, "description": reason}, status=400)

    @staticmethod
    async def _control_body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    def _update_from_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        kind = spec.get("kind", "message")
        if kind == "message":
            return self.message_update(
                spec.get("text", "hello"),
                spec.get("user_id", 1001),
                spec.get("chat_id"),
                spec.get("chat_type", "private"),
            )
        if kind == "callback_query":
            return self.callback_update(spec.get("data", "cb"), spec.get("user_id", 1001))
        if kind == "raw":
            update = spec.get("update")
            if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                raise ValueError('a raw update needs "update": {"update_id": <int>, ...}')
            return update
        raise ValueError(f"unknown update kind {kind!r}: message, callback_query or raw")

    async def _control_updates(self, request: web.Request) -> web.Response:
        try:
            body = await self._control_body(request)
            updates = [self._update_from_spec(spec) for spec in body.get("updates", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            return self._refuse(str(exc))
        self.push_updates(updates)
        return web.json_response({"queued": len(updates)})

    async def _control_script(self, request: web.Request) -> web.Response:
        try:
            body = await self._control_body(request)
            method = body.get("method")
            if not isinstance(method, str) or not method:
                raise ValueError('"method" is required, e.g. "sendMessage"')
            faults = [Fault.from_json(spec) for spec in body.get("faults", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            return self._refuse(str(exc))
        self.script(method, faults)
        return web.json_response({"ok": True, "scripted": len(faults)})

    async def _control_calls(self, request: web.Request) -> web.Response:
        method = request.query.get("method")
        return web.json_response(
            [
                {"method": c.method, "at": c.at, "token_ok": c.token_ok, "params": c.params}
                for c in self.calls(method)
            ]
        )

    async def _control_status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "pending": self.pending_updates,
                "delivered": self.delivered_updates,
                "calls": len(self.calls()),
            }
        )


USAGE = """\
Point the bot at http://HOST:PORT instead of https://api.telegram.org (aiogram:
AiohttpSession(api=TelegramAPIServer.from_base("http://127.0.0.1:8081"))); it serves
/bot<token>/<method>. Updates reach the bot through getUpdates (long polling); push them,
script faults and read the call log over HTTP:

  curl -s 127.0.0.1:8081/_control/updates -d '{"updates": [
      {"text": "/start", "user_id": 42},
      {"kind": "callback_query", "data": "buy:1", "user_id": 42}]}'
  curl -s 127.0.0.1:8081/_control/script -d '{"method": "sendMessage", "faults": [
      {"kind": "flood", "retry_after": 3}, {"kind": "error", "status": 403}]}'
  curl -s '127.0.0.1:8081/_control/calls?method=sendMessage'
  curl -s 127.0.0.1:8081/_control/status

/_control/updates  queue updates. kind: message (text, user_id, chat_id, chat_type),
                   callback_query (data, user_id), raw (update: a whole Update object).
/_control/script   the next calls of a method get these replies, in order, then normal ones.
                   kind: ok, slow (delay s), flood (retry_after: a 429), error (status,
                   description: 400 by default), hang (no reply for delay s, default 3600),
                   broken_json, drop (the connection is closed).
/_control/calls    every Bot API call so far (method, at, token_ok, params); ?method= filters.
/_control/status   {"pending": queued updates, "delivered": handed out, "calls": count}.

A call with another token gets 401. Ctrl+C stops it.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m otelbot.testing.fake_bot_api",
        description="A fake Telegram Bot API server for tests and local runs.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="default 8081; 0 picks one")
    parser.add_argument("--token", required=True, help="the bot token the bot will use")
    parser.add_argument(
        "--max-poll-wait",
        type=float,
        default=1.0,
        metavar="S",
        help="longest getUpdates long poll, whatever timeout the bot asks for (default 1)",
    )
    parser.add_argument(
        "--updates", type=int, default=0, help="queue this many message updates at start"
    )
    args = parser.parse_args(argv)
    api = FakeBotApi(args.token, args.host, args.port, args.max_poll_wait)
    api.push_updates(
        [api.message_update(f"msg {i}", user_id=1000 + i % 50) for i in range(args.updates)]
    )

    async def run() -> None:
        await api.serve()
        print(f"fake Bot API listening on {api.base_url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
