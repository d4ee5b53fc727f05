"""One aiohttp request, one asyncpg query and one Redis command, then exit (flushing)."""

import asyncio
import os

import aiohttp
import asyncpg
import redis.asyncio as redis


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
    print("done", flush=True)


asyncio.run(main())
