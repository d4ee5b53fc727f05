"""One aiohttp request, one asyncpg query and one Redis command, then exit (flushing).

Last, a span of the script's own, ``one_of_each done``: the control. Spans are exported in
the order they end, so once it has arrived, every span ended before it has arrived too,
and a test can assert what did *not* arrive.
"""

import asyncio
import os

import aiohttp
import asyncpg
import redis.asyncio as redis
from opentelemetry import trace

CONTROL_SPAN = "one_of_each done"


async def main() -> None:
    conn = await asyncpg.connect(os.environ["PG_DSN"])
    await conn.fetchval("SELECT 1")
    await conn.close()
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    await cache.get("otb_e2e:one_of_each")
    await cache.aclose()
    async with aiohttp.ClientSession() as session:
        url = f"{os.environ['BOT_API_BASE']}/bot{os.environ['BOT_TOKEN']}/getMe"
        async with session.post(url) as resp:
            await resp.read()
    with trace.get_tracer("one_of_each").start_as_current_span(CONTROL_SPAN):
        pass
    print("done", flush=True)


asyncio.run(main())
