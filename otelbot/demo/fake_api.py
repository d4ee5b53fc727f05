"""The fake Bot API with Telegram's per-chat flood control, as the demo bot meets it.

Telegram refuses bursts into one chat with ``429 Too Many Requests`` and a
``retry_after``. The fake API replays that with ``Fault.flood``: a send into a chat that
already had ``limit`` sends in the last second gets the 429. With ``groups_only`` only group
chats (negative ids) are limited: Telegram is strictest there, and the demo's users' private
chats then never see a 429 by the chance of a few replies landing in the same second.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque

from aiohttp import web

from otelbot.testing.fake_bot_api import Call, FakeBotApi, Fault

SEND_METHODS = frozenset(
    {"sendMessage", "sendPhoto", "sendDocument", "copyMessage", "forwardMessage"}
)


class FloodControlledBotApi(FakeBotApi):
    """``FakeBotApi`` plus flood control: more than ``limit`` sends per second into one chat
    (a group chat, with ``groups_only``) are answered with ``Fault.flood(retry_after)``."""

    def __init__(
        self,
        token: str,
        limit: int = 5,
        retry_after: int = 1,
        groups_only: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(token, **kwargs)  # type: ignore[arg-type]
        self.limit = limit
        self.retry_after = retry_after
        self.groups_only = groups_only
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self.floods = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].rsplit("/", 1)[-1]
        if method not in SEND_METHODS:
            return await super()._handle(request)
        # Form and JSON bodies are cached by aiohttp, so the parent reads them again.
        params = await self._params(request)
        chat = str(params.get("chat_id", ""))
        if self.groups_only and not chat.startswith("-"):
            return await super()._handle(request)
        now = time.monotonic()
        recent = self._recent[chat]
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) < self.limit:
            recent.append(now)
            return await super()._handle(request)
        fault = Fault.flood(self.retry_after)
        token_ok = request.match_info["token"] == self.token
        with self._lock:
            self.state.calls.append(Call(method, params, time.time(), token_ok))
            self.floods += 1
        return self._error(fault.status, fault.description, {"retry_after": fault.retry_after})
