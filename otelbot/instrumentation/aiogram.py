"""aiogram 3 instrumentation: one trace per Telegram update.

Usage (``opentelemetry-instrument python bot.py`` does this for you through the
``otelbot_aiogram`` entry point)::

    from otelbot.instrumentation.aiogram import AiogramInstrumentor
    AiogramInstrumentor().instrument()
    await dp.start_polling(bot)     # every update: a trace rooted at "telegram.update message"

Every update, however it arrives (long polling, aiogram's aiohttp webhook handlers, or a
direct ``Dispatcher.feed_update`` / ``feed_raw_update`` / ``feed_webhook_update`` call),
gets one span ``telegram.update <type>``: the root of its trace under polling, a child of
the webhook's server span under webhooks. It is current while handlers run, so SQL,
Redis and Bot API calls nest under it, also from ``handle_as_tasks`` tasks and from sync
handlers (aiogram runs them in a thread with the context copied).

Bot API calls made through aiogram's ``AiohttpSession`` get one span
``telegram.api <method>`` with the HTTP details on it (the aiohttp client
instrumentation adds them instead of opening a span of its own), the Bot API error code,
and for flood control (429) ``telegram.api.retry_after`` plus a ``telegram.flood_wait``
event.

A ``Bot``'s token is learned when the bot is created: from then on its secret part is
redacted from whatever otelbot records, even where it appears without its ``<id>:``
(``otelbot.core.redaction``).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from contextvars import ContextVar
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, StatusCode

from otelbot.core import config
from otelbot.core.errors import error_type, internal_error, record_exception
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.lightspan import light_tracer
from otelbot.core.patching import OtelbotInstrumentor, guarded_async, guarded_sync
from otelbot.core.redaction import remember_token
from otelbot.core.users import ActiveUsers
from otelbot.core.users import observations as users_observations
from otelbot.diagnosis import engine as diagnosis
from otelbot.diagnosis import heartbeat, notes, steps
from otelbot.diagnosis.notes import CodeLocation, code_of
from otelbot.instrumentation import botapi
from otelbot.instrumentation.botapi import ApiCall, current_api_call
from otelbot.instrumentation.updates import (
    INGRESS_DIRECT,
    INGRESS_POLLING,
    INGRESS_WEBHOOK,
    OUTCOME_ERROR,
    OUTCOME_HANDLED,
    OUTCOME_UNHANDLED,
    UpdateAttributes,
    nothing_to_end,
    remember_bot_token,
)
from otelbot.instrumentation.updates import UpdateState as _UpdateState
from otelbot.runtime import stats_file
from otelbot.semconv import (
    ERROR_TYPE,
    SPAN_EVENT_FLOOD_WAIT,
    SPAN_TELEGRAM_API,
    SPAN_TELEGRAM_UPDATE,
    TELEGRAM_API_DURATION,
    TELEGRAM_API_ERROR_CODE,
    TELEGRAM_API_FLOOD_WAITS,
    TELEGRAM_API_RETRY_AFTER,
    TELEGRAM_API_RETRY_AFTER_METRIC,
    TELEGRAM_BOT_ID,
    TELEGRAM_CHAT_ID,
    TELEGRAM_CHAT_TYPE,
    TELEGRAM_HANDLER,
    TELEGRAM_INGRESS,
    TELEGRAM_UPDATE_DURATION,
    TELEGRAM_UPDATE_ID,
    TELEGRAM_UPDATE_OUTCOME,
    TELEGRAM_UPDATE_TYPE,
    TELEGRAM_UPDATES,
    TELEGRAM_UPDATES_ACTIVE,
    TELEGRAM_USER_ID,
    TELEGRAM_USERS_ACTIVE,
    TELEGRAM_USERS_WINDOW,
    TELEGRAM_WEBHOOK_REPLY_METHOD,
)

#: Set by the polling / webhook entry points so ``feed_update`` knows how the update came.
_ingress: ContextVar[str | None] = ContextVar("otelbot_aiogram_ingress", default=None)


#: The update being handled: notes.current, shared with the findings' notes (one context
#: variable set per update; see there).
_current_update: ContextVar[_UpdateState | None] = notes.current
_EMPTY_CONTEXT = context.Context()


class _Telemetry(UpdateAttributes):
    """The tracer, instruments and caches of one ``instrument()`` call."""

    def __init__(self, tracer: trace.Tracer, meter: Any) -> None:
        super().__init__()
        from aiogram import Dispatcher
        from aiogram.dispatcher.event.bases import UNHANDLED
        from aiogram.exceptions import TelegramRetryAfter
        from aiogram.methods import TelegramMethod
        from aiogram.methods.base import Response
        from aiogram.types import ErrorEvent

        self.unhandled = UNHANDLED
        # The Dispatcher registers its own update listener as a handler: not the bot's.
        self.internal_callbacks = {Dispatcher.__dict__.get("_listen_update")}
        self.retry_after_exc = TelegramRetryAfter
        self.telegram_method = TelegramMethod
        self.response_generic = Response
        # method class -> aiogram's parsed-response class, kept alive (see pin_response).
        self._pinned_responses: dict[type, Any] = {}
        self.error_event = ErrorEvent
        # Update and Bot API call spans without the SDK's per-span cost: see lightspan.
        self.tracer = light_tracer(tracer)
        self.capture_ids = config.capture_ids()
        self.trace_get_updates = config.trace_get_updates()
        self.updates = create_instrument(meter, TELEGRAM_UPDATES)
        self.update_duration = create_instrument(meter, TELEGRAM_UPDATE_DURATION)
        self.active = create_instrument(meter, TELEGRAM_UPDATES_ACTIVE)
        self.api_duration = create_instrument(meter, TELEGRAM_API_DURATION)
        self.flood_waits = create_instrument(meter, TELEGRAM_API_FLOOD_WAITS)
        self.retry_after = create_instrument(meter, TELEGRAM_API_RETRY_AFTER_METRIC)
        self.users = ActiveUsers()
        self.users_gauge = create_instrument(
            meter, TELEGRAM_USERS_ACTIVE, callbacks=[self._observe_users]
        )
        self._span_names: dict[str, str] = {}
        self._handler_names: dict[int, str] = {}
        self._handler_code: dict[int, CodeLocation | None] = {}
        # The bot-side detectors (None with OTELBOT_FINDINGS=off).
        self.diagnosis = diagnosis.diagnosis(meter)
        self._bot_ids: dict[int, str] = {}

    # ------------------------------------------------------------------ updates
    def _observe_users(self, options: Any) -> Any:
        return users_observations(self.users, TELEGRAM_USERS_WINDOW)

    def bot_id(self, bot: Any) -> str:
        key = id(bot)
        value = self._bot_ids.get(key)
        if value is None:
            try:
                value = str(bot.id)
                # A Bot made before instrument(): its token is seen here first.
                remember_token(bot.token)
            except Exception:
                value = ""
            self._bot_ids[key] = value
        return value

    # start_update / end_update are guarded_async's hooks around Dispatcher.feed_update.
    def start_update(
        self, dispatcher: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _UpdateState:
        bot = args[0] if args else kwargs["bot"]
        update = args[1] if len(args) > 1 else kwargs["update"]
        ingress = _ingress.get() or INGRESS_DIRECT
        try:
            update_type = update.event_type
            event = getattr(update, update_type)  # what update.event returns, computed once
        except Exception:
            update_type, event = "unknown", None
        name = self._span_names.get(update_type)
        if name is None:
            name = self._span_names[update_type] = SPAN_TELEGRAM_UPDATE + " " + update_type
        if ingress == INGRESS_POLLING:
            parent, kind = _EMPTY_CONTEXT, SpanKind.SERVER
        else:
            parent, kind = None, SpanKind.INTERNAL
        span = self.tracer.start_span(name, context=parent, kind=kind)
        user = getattr(event, "from_user", None)
        if span.is_recording():
            attrs: dict[str, Any] = {
                TELEGRAM_UPDATE_TYPE: update_type,
                TELEGRAM_INGRESS: ingress,
                TELEGRAM_BOT_ID: self.bot_id(bot),
            }
            chat = getattr(event, "chat", None)
            if chat is None:
                message = getattr(event, "message", None)
                chat = getattr(message, "chat", None)
            if chat is not None:
                attrs[TELEGRAM_CHAT_TYPE] = str(getattr(chat, "type", "") or "")
            if self.capture_ids:
                attrs[TELEGRAM_UPDATE_ID] = update.update_id
                if chat is not None:
                    attrs[TELEGRAM_CHAT_ID] = chat.id
                if user is not None:
                    attrs[TELEGRAM_USER_ID] = user.id
            span.set_attributes(attrs)
        if user is not None:
            self.users.add(user.id)
        state = _UpdateState(span, update_type, ingress)
        state.context_token = context.attach(trace.set_span_in_context(span))
        state.state_token = _current_update.set(state)
        if self.diagnosis is not None:
            state.notes = self.diagnosis.begin(span, update_type, make_current=False)
            if heartbeat.beat.loop is None:  # the loop heartbeat: once per loop
                heartbeat.start()
        self.active.add(1, self.type_attrs(update_type))
        stats_file.update_started()
        return state

    def end_update(self, state: _UpdateState, result: Any, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - state.started
        _current_update.reset(state.state_token)
        context.detach(state.context_token)
        stats_file.update_ended()
        error = exc or state.exc
        if error is not None:
            outcome = OUTCOME_ERROR
        elif result is self.unhandled:
            outcome = OUTCOME_UNHANDLED
        else:
            outcome = OUTCOME_HANDLED
        err = error_type(error) if error is not None else None
        self.active.add(-1, self.type_attrs(state.type))
        handler = state.handler or OUTCOME_UNHANDLED
        self.updates.add(1, self.count_attrs(state.type, handler, state.ingress, outcome, err))
        self.update_duration.record(elapsed, self.outcome_attrs(state.type, handler, outcome))
        span = state.span
        if state.notes is not None:
            self.diagnosis.end(state.notes, handler, outcome, state.handler_code)  # type: ignore[union-attr]
        if span.is_recording():
            span.set_attribute(TELEGRAM_UPDATE_OUTCOME, outcome)
            span.set_attribute(TELEGRAM_HANDLER, handler)
            if exc is not None and exc is not state.exc:
                record_exception(span, exc)
            elif error is not None:
                span.set_attribute(ERROR_TYPE, err)
                span.set_status(StatusCode.ERROR)
            if isinstance(result, self.telegram_method):
                span.set_attribute(TELEGRAM_WEBHOOK_REPLY_METHOD, result.__api_method__)
        span.end()

    # ------------------------------------------------------------------ handlers
    def handler_name(self, handler: Any) -> str | None:
        """The bot's handler's qualified name; None for aiogram's own listeners."""
        key = id(handler)
        name = self._handler_names.get(key)
        if name is None:
            callback = getattr(handler, "callback", handler)
            if getattr(callback, "__func__", None) in self.internal_callbacks:
                self._handler_names[key] = ""
                return None
            module = getattr(callback, "__module__", None) or ""
            qualname = getattr(callback, "__qualname__", None) or type(callback).__qualname__
            name = f"{module}.{qualname}" if module else qualname
            self._handler_names[key] = name
            self._handler_code[key] = code_of(callback)
        return name or None

    def handler_code(self, handler: Any) -> CodeLocation | None:
        return self._handler_code.get(id(handler))

    def handled_error(self, state: _UpdateState, exc: Any) -> None:
        """An errors handler is called with ``exc``: recorded on the update here, so it
        shows even when the errors handler swallows it."""
        if state.exc is None and isinstance(exc, BaseException) and _is_failure(exc):
            state.exc = exc
            record_exception(state.span, exc)

    # ------------------------------------------------------------------ Bot API
    def pin_response(self, method: Any) -> None:
        """Keep aiogram's ``Response[<result type>]`` class for this method alive.

        aiogram parses every Bot API answer with ``Response[method.__returning__]``, and
        pydantic caches such generic classes only weakly: each garbage collection that frees
        one makes the next call rebuild it (a full pydantic model build, milliseconds). The
        objects a traced update allocates make collections, and so these rebuilds, more
        frequent; holding one reference per method class removes that cost. It changes no
        result: the class is the one aiogram would build.
        """
        kind = type(method)
        if kind not in self._pinned_responses:
            try:
                self._pinned_responses[kind] = self.response_generic[method.__returning__]
            except Exception:
                self._pinned_responses[kind] = None

    # start_api_call / end_api_call are guarded_async's hooks around
    # AiohttpSession.make_request.
    def start_api_call(
        self, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ApiCall:
        bot = args[0] if args else kwargs["bot"]
        method = args[1] if len(args) > 1 else kwargs["method"]
        self.pin_response(method)
        api_method = method.__api_method__
        if self.diagnosis is not None and heartbeat.beat.loop is None:
            heartbeat.start()  # the loop heartbeat, from the bot's first call (getMe)
        if api_method == "getUpdates" and not self.trace_get_updates:
            span = None
        else:
            span = self.tracer.start_span(
                SPAN_TELEGRAM_API + " " + api_method,
                kind=SpanKind.CLIENT,
                attributes=botapi.span_attrs(api_method, self.bot_id(bot)),
            )
        call = ApiCall(span, api_method)
        call.context_token = current_api_call.set(call)
        call.started = time.perf_counter()
        return call

    def end_api_call(self, call: ApiCall, result: Any, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - call.started
        api_method = call.method
        if call.context_token is not None:
            current_api_call.reset(call.context_token)
        if call.http is not None:  # no response read: the HTTP request itself failed
            call.end_http(0, (exc.__cause__ or exc) if exc is not None else None)
        code = call.status if call.status >= 400 else 0
        err = error_type(exc) if exc is not None else None
        retry_after = None
        if exc is not None:
            if isinstance(exc, self.retry_after_exc):
                retry_after = exc.retry_after
                code = code or 429
            elif not code:
                code = _error_code(exc)
        self.api_duration.record(elapsed, botapi.metric_attrs(api_method, code, err))
        if notes.noting():
            # Where the bot's code made a failed call (a frame walk: only on errors).
            where = notes.bot_code_location() if code else None
            ended = call.started + elapsed
            notes.note(notes.API, api_method, call.started, ended, (code, retry_after, where))
        if retry_after is not None:
            only_method = botapi.metric_attrs(api_method)
            self.flood_waits.add(1, only_method)
            self.retry_after.record(retry_after, only_method)
        span = call.span
        if span is None:
            return
        if span.is_recording():
            if code:
                span.set_attribute(TELEGRAM_API_ERROR_CODE, code)
            if retry_after is not None:
                span.set_attribute(TELEGRAM_API_RETRY_AFTER, retry_after)
                span.add_event(SPAN_EVENT_FLOOD_WAIT, {TELEGRAM_API_RETRY_AFTER: retry_after})
            if exc is not None:
                record_exception(span, exc)
        span.end()


_ERROR_CODES = {
    "TelegramBadRequest": 400,
    "TelegramMigrateToChat": 400,
    "TelegramUnauthorizedError": 401,
    "TelegramForbiddenError": 403,
    "TelegramNotFound": 404,
    "TelegramConflictError": 409,
    "TelegramEntityTooLarge": 413,
    "TelegramRetryAfter": 429,
    "TelegramServerError": 500,
    "RestartingTelegram": 500,
}


def _error_code(exc: BaseException) -> int:
    return _ERROR_CODES.get(type(exc).__name__, 0)


# ---------------------------------------------------------------------- wrappers


def _wrap_ingress(original: Any, ingress: str) -> Any:
    async def entry(*args: Any, **kwargs: Any) -> Any:
        if _ingress.get() is not None:
            return await original(*args, **kwargs)
        token = _ingress.set(ingress)
        try:
            return await original(*args, **kwargs)
        finally:
            _ingress.reset(token)

    return entry


def _wrap_handler_call(original: Any, telemetry: _Telemetry) -> Any:
    # A plain function returning aiogram's coroutine, not a coroutine of its own: the
    # handler call sits in the await chain of every update (twice: the dispatcher's
    # update listener and the bot's handler), and each extra coroutine layer is crossed
    # at every suspension of the update.
    # For a sampled update with findings on, the bot's own async handler is driven through
    # the step timer (otelbot.diagnosis.steps); a sync handler runs in a thread (aiogram's
    # asyncio.to_thread), holds no loop, and is left alone.
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = _current_update.get()
        timed = None
        if state is not None:
            try:
                if args and isinstance(args[0], telemetry.error_event):
                    telemetry.handled_error(state, args[0].exception)
                else:
                    name = telemetry.handler_name(self)
                    if name is not None:
                        state.handler = name
                        state.handler_code = telemetry.handler_code(self)
                        if state.notes is not None and self.awaitable:
                            timed = name
            except Exception as exc:
                internal_error("aiogram handler", exc)
        coro = original(self, *args, **kwargs)
        if timed is not None:
            try:
                return steps.timed(coro, state.notes, timed)  # type: ignore[union-attr]
            except Exception as exc:
                internal_error("aiogram handler steps", exc)
        return coro

    return call


def _is_failure(exc: BaseException) -> bool:
    # aiogram's control-flow exceptions are not failures.
    return type(exc).__name__ not in ("SkipHandler", "CancelHandler", "CancelledError")


def _wrap_check_response(original: Any) -> Any:
    # aiogram hands the HTTP status and the body it read to check_response: the end of
    # the HTTP request that the aiohttp client instrumentation left to this call.
    def check_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = current_api_call.get()
        if call is not None:
            try:
                status = kwargs["status_code"] if "status_code" in kwargs else args[2]
                call.status = status
                call.end_http(status, None)
            except Exception as exc:
                internal_error("aiogram Bot API response", exc)
        return original(self, *args, **kwargs)

    return check_response


class AiogramInstrumentor(OtelbotInstrumentor):
    """Traces aiogram 3 updates, handlers and Bot API calls."""

    _instruments: Collection[str] = ("aiogram >= 3.0",)

    def _instrument(self, **kwargs: Any) -> None:
        from aiogram import Bot, Dispatcher
        from aiogram.client.session.aiohttp import AiohttpSession
        from aiogram.dispatcher.event.handler import HandlerObject

        tracer, meter = self.tracer_and_meter(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        wrap = self.patches.wrap
        wrap(
            Dispatcher,
            "feed_update",
            lambda o: guarded_async(
                o, telemetry.start_update, telemetry.end_update, "aiogram update"
            ),
        )
        # Set once in the polling task's context: the update tasks it creates inherit it,
        # so no wrapper sits in each update's await chain for it.
        polling = "_polling" if "_polling" in Dispatcher.__dict__ else "_process_update"
        wrap(Dispatcher, polling, lambda o: _wrap_ingress(o, INGRESS_POLLING))
        wrap(Dispatcher, "feed_webhook_update", lambda o: _wrap_ingress(o, INGRESS_WEBHOOK))
        wrap(Dispatcher, "feed_raw_update", lambda o: _wrap_ingress(o, INGRESS_DIRECT))
        try:
            from aiogram.webhook.aiohttp_server import BaseRequestHandler

            wrap(BaseRequestHandler, "handle", lambda o: _wrap_ingress(o, INGRESS_WEBHOOK))
        except ImportError:  # aiohttp missing: no webhook handlers
            pass
        wrap(HandlerObject, "call", lambda o: _wrap_handler_call(o, telemetry), inherited=True)
        wrap(
            AiohttpSession,
            "make_request",
            lambda o: guarded_async(
                o, telemetry.start_api_call, telemetry.end_api_call, "aiogram Bot API call"
            ),
        )
        wrap(AiohttpSession, "check_response", _wrap_check_response, inherited=True)
        wrap(
            Bot,
            "__init__",
            lambda o: guarded_sync(o, remember_bot_token, nothing_to_end, "aiogram Bot"),
        )
