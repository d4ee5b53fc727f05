"""watch's page and JSON API, one aiohttp app on the UI address::

    GET /                         the page (static/index.html: no build step, no CDN)
    GET /api/health               watch, each bot seen (up/stale), the agent's targets
    GET /api/summary              the dashboard's figures per service
    GET /api/handlers             per-handler count, errors, avg, p50/p95/p99
    GET /api/findings             newest first
    GET /api/traces?handler=&error=1&slowest=1&service=&limit=50
    GET /api/traces/{trace_id}    one trace as a waterfall (404 once it is no longer kept)

With a token (needed to listen beyond loopback) every request carries it, as
``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (the page passes its own along).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from otelbot.watch import views
from otelbot.watch.store import WatchStore

STORE = web.AppKey("store", WatchStore)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in {"1", "true", "yes", "on"}


def _json(data: Any) -> web.Response:
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def page(request: web.Request) -> web.Response:
    html = resources.files("otelbot.watch").joinpath("static/index.html").read_bytes()
    return web.Response(body=html, content_type="text/html", charset="utf-8")


async def api_health(request: web.Request) -> web.Response:
    return _json(views.health(request.app[STORE]))


async def api_summary(request: web.Request) -> web.Response:
    return _json(views.summary(request.app[STORE]))


async def api_handlers(request: web.Request) -> web.Response:
    return _json(views.handlers(request.app[STORE], request.query.get("service") or None))


async def api_findings(request: web.Request) -> web.Response:
    return _json(views.findings(request.app[STORE], request.query.get("service") or None))


async def api_traces(request: web.Request) -> web.Response:
    try:
        limit = min(1000, int(request.query.get("limit", "50")))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a number\n")
    return _json(
        views.traces(
            request.app[STORE],
            handler=request.query.get("handler") or None,
            errors_only=_flag(request, "error"),
            slowest=_flag(request, "slowest"),
            service=request.query.get("service") or None,
            limit=limit,
        )
    )


async def api_trace(request: web.Request) -> web.Response:
    found = views.trace(request.app[STORE], request.match_info["trace_id"].lower())
    if found is None:
        raise web.HTTPNotFound(text="no such trace kept (older than the retention?)\n")
    return _json(found)


def _token_check(token: str) -> Any:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: _Handler) -> web.StreamResponse:
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        if not hmac.compare_digest(given.encode(), expected):
            raise web.HTTPUnauthorized(text="watch: a token is required (?token=...)\n")
        return await handler(request)

    return check


def ui_app(store: WatchStore, token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[_token_check(token)] if token else [])
    app[STORE] = store
    app.router.add_get("/", page)
    app.router.add_get("/api/health", api_health)
    app.router.add_get("/api/summary", api_summary)
    app.router.add_get("/api/handlers", api_handlers)
    app.router.add_get("/api/findings", api_findings)
    app.router.add_get("/api/traces", api_traces)
    app.router.add_get("/api/traces/{trace_id}", api_trace)
    return app
