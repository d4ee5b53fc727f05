"""What every bot library's instrumentation keeps per update (aiogram, python-telegram-bot,
pyTelegramBotAPI): the update's state between its start and its end, and the attribute
sets of the bot metrics (``telegram.updates``, ``telegram.update.duration``,
``telegram.updates.active``), built once per key and reused."""

from __future__ import annotations

import time
from typing import Any

from otelbot.core.redaction import remember_token
from otelbot.diagnosis.notes import CodeLocation
from otelbot.semconv import (
    ERROR_TYPE,
    TELEGRAM_HANDLER,
    TELEGRAM_INGRESS,
    TELEGRAM_UPDATE_OUTCOME,
    TELEGRAM_UPDATE_TYPE,
)

# How an update arrived, and how its handling ended (telegram.ingress,
# telegram.update.outcome); every bot library's instrumentation uses these.
INGRESS_POLLING = "polling"
INGRESS_WEBHOOK = "webhook"
INGRESS_DIRECT = "direct"
OUTCOME_HANDLED = "handled"
OUTCOME_UNHANDLED = "unhandled"
OUTCOME_ERROR = "error"


class UpdateState:
    """One update from its start to its end: its span, the context it made current, and
    what the handlers told us."""

    __slots__ = (
        "context_token",
        "exc",
        "handler",
        "handler_code",
        "ingress",
        "notes",
        "span",
        "started",
        "state_token",
        "type",
    )

    def __init__(self, span: Any, update_type: str, ingress: str) -> None:
        self.span = span
        self.type = update_type
        self.ingress = ingress
        self.handler: str | None = None
        self.handler_code: CodeLocation | None = None
        self.notes: Any = None  # the findings' notes of a sampled update
        self.exc: BaseException | None = None
        self.context_token: Any = None
        self.state_token: Any = None
        self.started = time.perf_counter()


class UpdateAttributes:
    """The bot metrics' attribute sets, cached per key (bounded by update types, the
    bot's handlers, ingress kinds, outcomes and error types)."""

    def __init__(self) -> None:
        self._type_attrs: dict[str, dict[str, Any]] = {}
        self._outcome_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._count_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}

    def type_attrs(self, update_type: str) -> dict[str, Any]:
        attrs = self._type_attrs.get(update_type)
        if attrs is None:
            attrs = self._type_attrs[update_type] = {TELEGRAM_UPDATE_TYPE: update_type}
        return attrs

    def outcome_attrs(self, update_type: str, handler: str, outcome: str) -> dict[str, Any]:
        key = (update_type, handler, outcome)
        attrs = self._outcome_attrs.get(key)
        if attrs is None:
            attrs = self._outcome_attrs[key] = {
                TELEGRAM_UPDATE_TYPE: update_type,
                TELEGRAM_HANDLER: handler,
                TELEGRAM_UPDATE_OUTCOME: outcome,
            }
        return attrs

    def count_attrs(
        self, update_type: str, handler: str, ingress: str, outcome: str, err: str | None
    ) -> dict[str, Any]:
        key = (update_type, handler, ingress, outcome, err)
        attrs = self._count_attrs.get(key)
        if attrs is None:
            attrs = {
                TELEGRAM_UPDATE_TYPE: update_type,
                TELEGRAM_HANDLER: handler,
                TELEGRAM_INGRESS: ingress,
                TELEGRAM_UPDATE_OUTCOME: outcome,
            }
            if err is not None:
                attrs[ERROR_TYPE] = err
            self._count_attrs[key] = attrs
        return attrs


def remember_bot_token(bot: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``guarded_sync``'s start hook around a library's ``Bot.__init__(token, ...)``: the
    token is learned before the bot can log or raise with it."""
    token = args[0] if args else kwargs.get("token")
    if isinstance(token, str):
        remember_token(token)


def nothing_to_end(state: Any, result: Any, exc: BaseException | None) -> None:
    """``guarded_sync``'s end hook when only the start matters."""
