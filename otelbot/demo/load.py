"""The update mix the demo drives at its bot: messages, commands and callback queries from a
few hundred users, at a steady rate per kind, through the fake Bot API's update queue."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otelbot.testing.fake_bot_api import FakeBotApi

Update = dict[str, Any]
REGULARS = 8


@dataclass(frozen=True)
class Kind:
    """One kind of update: what it is, how many per second, how to make one."""

    name: str
    per_second: float
    make: Callable[[FakeBotApi, random.Random, int], Update]


def _command(
    text: Callable[[random.Random], str],
) -> Callable[[FakeBotApi, random.Random, int], Update]:
    def make(api: FakeBotApi, rng: random.Random, user: int) -> Update:
        return api.message_update(text(rng), user_id=user)

    return make


def _chat(api: FakeBotApi, rng: random.Random, user: int) -> Update:
    return api.message_update(
        rng.choice(["hi", "where is my order?", "thanks!", "help"]), user_id=user
    )


def _buy(api: FakeBotApi, rng: random.Random, user: int) -> Update:
    return api.callback_update(f"buy:{rng.randint(1, 200)}", user_id=user)


def _regulars(
    make: Callable[[FakeBotApi, random.Random, int], Update],
) -> Callable[[FakeBotApi, random.Random, int], Update]:
    """The same few users send it (users 1..REGULARS): what they read is cached already
    after their first time, as a working cache is."""

    def from_regular(api: FakeBotApi, rng: random.Random, user: int) -> Update:
        return make(api, rng, rng.randint(1, REGULARS))

    return from_regular


def update_mix(promo_codes: int) -> list[Kind]:
    """The mix: about 30 updates a second in all."""
    return [
        Kind("text message", 6, _chat),
        Kind("/start", 1, _command(lambda r: "/start")),
        Kind("/profile", 5, _regulars(_command(lambda r: "/profile"))),
        Kind("/orders", 2.5, _command(lambda r: "/orders")),
        Kind("/promo", 4, _command(lambda r: f"/promo PROMO{r.randint(1, promo_codes)}")),
        # A handful of products, so that a working cache would answer most reads.
        Kind("/price", 4, _command(lambda r: f"/price {r.randint(1, 20)}")),
        Kind("/visit", 4, _command(lambda r: f"/visit {r.choice(['home', 'shop', 'cart'])}")),
        Kind("/report", 0.5, _command(lambda r: "/report")),
        Kind("/broadcast", 0.2, _command(lambda r: "/broadcast")),
        Kind("buy button", 3, _buy),
    ]


class LoadDriver:
    """Pushes the mix into the fake Bot API for ``duration`` seconds, in 100 ms steps."""

    STEP = 0.1

    def __init__(self, api: FakeBotApi, kinds: list[Kind], users: int, seed: int = 7) -> None:
        self.api = api
        self.kinds = kinds
        self.users = users
        self.rng = random.Random(seed)
        self.sent: Counter[str] = Counter()
        self._owed = dict.fromkeys((k.name for k in kinds), 0.0)
        self._lock = threading.Lock()

    @property
    def total_sent(self) -> int:
        with self._lock:
            return sum(self.sent.values())

    def one_of_each(self) -> None:
        """One update of every kind (warms the bot up, so every handler has run once)."""
        self._push([(k.name, k.make(self.api, self.rng, self._user())) for k in self.kinds])

    def _user(self) -> int:
        return self.rng.randint(1, self.users)

    def _push(self, batch: list[tuple[str, Update]]) -> None:
        if not batch:
            return
        self.api.push_updates([u for _, u in batch])
        with self._lock:
            self.sent.update(name for name, _ in batch)

    def step(self) -> None:
        batch: list[tuple[str, Update]] = []
        for kind in self.kinds:
            self._owed[kind.name] += kind.per_second * self.STEP
            while self._owed[kind.name] >= 1:
                self._owed[kind.name] -= 1
                batch.append((kind.name, kind.make(self.api, self.rng, self._user())))
        self._push(batch)

    def run(
        self,
        duration: float,
        stop: threading.Event | None = None,
        tick: Callable[[float], None] | None = None,
    ) -> None:
        started = time.monotonic()
        next_step = started
        while (elapsed := time.monotonic() - started) < duration:
            if stop is not None and stop.is_set():
                return
            self.step()
            if tick is not None:
                tick(elapsed)
            next_step += self.STEP
            time.sleep(max(0.0, next_step - time.monotonic()))
