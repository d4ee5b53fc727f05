"""A webhook bot written with plain aiohttp, asyncpg and redis (no framework), run by the
end-to-end tests under the real ``opentelemetry-instrument`` command.

Per update it does one pooled SQL query, one Redis command and one sendMessage. Commands
in the message text exercise failure paths: ``/timeout`` (a Bot API call that times out),
``/refused`` (a Bot API server that refuses connections), ``/sqlerror`` (a failing query).

It logs the way bots do, token and all: the URL of a Bot API call that failed, and the
exception of a failed update (log export is on in the tests; otelbot must redact them).
"""

import asyncio
import logging
import os
import signal

import aiohttp
import asyncpg
import redis.asyncio as redis
from aiohttp import web

TOKEN = os.environ["BOT_TOKEN"]
API = os.environ["BOT_API_BASE"]
PORT = int(os.environ.get("PORT", "8080"))
log = logging.getLogger("plain_webhook_bot")


async def main() -> None:
    pool = await asyncpg.create_pool(os.environ["PG_DSN"], min_size=1, max_size=4)
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    session = aiohttp.ClientSession()

    async def send(chat_id: int, text: str, base: str = API, timeout: float = 10) -> int:
        async with session.post(
            f"{base}/bot{TOKEN}/sendMessage",
            json={"chat_id": chat_id, "text": text},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await resp.read()
            if resp.status != 200:
                log.warning("%s answered %d", resp.url, resp.status)
            return resp.status

    async def webhook(request: web.Request) -> web.Response:
        update = await request.json()
        message = update.get("message") or {}
        text = message.get("text", "")
        chat_id = message.get("chat", {}).get("id", 0)
        try:
            if text == "/sqlerror":
                await pool.fetchval("SELECT 1/0")
            n = await pool.fetchval("SELECT $1::int + 1", len(text))
            await cache.incr("otb_e2e:plain:count")
            await cache.get(f"otb_e2e:plain:last:{chat_id}")
            if text == "/timeout":
                await send(chat_id, "slow", timeout=0.3)
            elif text == "/refused":
                await send(chat_id, "nobody there", base="http://127.0.0.1:1")
            else:
                await send(chat_id, f"echo {n}")
        except Exception as exc:  # a bot logs and answers 200 so Telegram does not retry
            print("handler error:", type(exc).__name__, flush=True)
            log.warning("update failed: %r", exc, exc_info=True)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhook/{secret}", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    print(f"listening on {PORT}", flush=True)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()
    await cache.aclose()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
