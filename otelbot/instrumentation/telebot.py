"""pyTelegramBotAPI (telebot) instrumentation: ``TeleBot`` and ``AsyncTeleBot``.

Usage (``opentelemetry-instrument python bot.py`` does this for you through the
``otelbot_telebot`` entry point)::

    from otelbot.instrumentation.telebot import TelebotInstrumentor
    TelebotInstrumentor().instrument()
    bot.infinity_polling()          # every update: a trace rooted at "telegram.update message"

telebot hands each update (a message, a callback query, ...) to its handlers in one call,
``_run_middlewares_and_handler(s)``: in a worker thread for a threaded ``TeleBot``, in a
task of its own for ``AsyncTeleBot``. That call is the update's span ``telegram.update
<type>``: the root of its trace (``telegram.ingress`` "polling" while the bot polls,
"webhook" when the bot's code passes updates to ``process_new_updates``), current while the
handler runs, so SQL, Redis and Bot API calls nest under it. ``telegram.handler`` is the
handler function that took the update ("module.qualname"); a handler's error is recorded
on the update even when telebot's exception handler (or its own logging) swallows it.

Bot API calls get one span ``telegram.api <method>`` with the Bot API error code, and for
flood control (429) ``telegram.api.retry_after`` plus a ``telegram.flood_wait`` event.
``TeleBot`` calls go through ``apihelper._make_request`` (requests); ``AsyncTeleBot``
calls through ``asyncio_helper._process_request`` (aiohttp), where the aiohttp client
instrumentation puts the HTTP details on the same span instead of opening a second one.
``getUpdates`` long polls are metrics only unless ``OTELBOT_TRACE_GET_UPDATES=true``. The
token is learned when the bot is created and redacted from everything otelbot records.
"""

from __future__ import annotations

import threading
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
from otelbot.diagnosis import heartbeat, notes
from otelbot.diagnosis.notes import CodeLocation, code_of
from otelbot.instrumentation import botapi
from otelbot.instrumentation.botapi import ApiCall, current_api_call
from otelbot.instrumentation.updates import (
    INGRESS_POLLING,
    INGRESS_WEBHOOK,
    OUTCOME_ERROR,
    OUTCOME_HANDLED,
    OUTCOME_UNHANDLED,
    nothing_to_end,
    remember_bot_token,
)
from otelbot.instrumentation.updates import UpdateState as _UpdateState
from otelbot.runtime import stats_file
from otelbot.semconv import (
    ERROR_TYPE,
    HTTP_RESPONSE_STATUS_CODE,
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
    TELEGRAM_UPDATE_OUTCOME,
    TELEGRAM_UPDATE_TYPE,
    TELEGRAM_UPDATES,
    TELEGRAM_UPDATES_ACTIVE,
    TELEGRAM_USER_ID,
    TELEGRAM_USERS_ACTIVE,
    TELEGRAM_USERS_WINDOW,
)

#: Set in an AsyncTeleBot's polling task: the update tasks it creates inherit it.
_async_polling: ContextVar[bool] = ContextVar("otelbot_telebot_polling", default=False)
_EMPTY_CONTEXT = context.Context()


#: The update being handled: notes.current, shared with the findings' notes (one context
#: variable set per update; see there).
_current_update: ContextVar[_UpdateState | None] = notes.current


class _Telemetry:
    """The tracer, instruments and caches of one ``instrument()`` call."""

    def __init__(self, tracer: trace.Tracer, meter: Any) -> None:
        self.tracer = light_tracer(tracer)
        self.capture_ids = config.capture_ids()
        self.trace_get_updates = config.trace_get_updates()
        self.updates = create_instrument(meter, TELEGRAM_UPDATES)
        self.update_duration = create_instrument(meter, TELEGRAM_UPDATE_DURATION)
        self.active = create_instrument(meter, TELEGRAM_UPDATES_ACTIVE)
        self.api_duration = create_instrument(meter, TELEGRAM_API_DURATION)
        self.flood_waits = create_instrument(meter, TELEGRAM_API_FLOOD_WAITS)
        self.retry_after = create_instrument(meter, TELEGRAM_API_RETRY_AFTER_METRIC)
        # Thread-safe enough for worker threads: a lost register update costs accuracy only.
        self.users = ActiveUsers()
        self.users_gauge = create_instrument(
            meter, TELEGRAM_USERS_ACTIVE, callbacks=[self._observe_users]
        )
        self.diagnosis = diagnosis.diagnosis(meter)
        #: ids of the sync bots polling right now (their updates run in worker threads).
        self.polling: set[int] = set()
        self._lock = threading.Lock()
        self._attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._handler_names: dict[int, tuple[str, CodeLocation | None]] = {}

    def _observe_users(self, options: Any) -> Any:
        return users_observations(self.users, TELEGRAM_USERS_WINDOW)

    def attrs(
        self,
        update_type: str,
        handler: str | None = None,
        outcome: str | None = None,
        ingress: str | None = None,
        err: str | None = None,
    ) -> dict[str, Any]:
        """A metric attribute set, built once per combination (shared: never changed)."""
        key = (update_type, handler, outcome, ingress, err)
        found = self._attrs.get(key)
        if found is None:
            found = {TELEGRAM_UPDATE_TYPE: update_type}
            if handler is not None and outcome is not None:
                found[TELEGRAM_HANDLER] = handler
                found[TELEGRAM_UPDATE_OUTCOME] = outcome
            if ingress is not None:
                found[TELEGRAM_INGRESS] = ingress
            if err is not None:
                found[ERROR_TYPE] = err
            self._attrs[key] = found
        return found

    # ------------------------------------------------------------------ updates
    # start_update / end_update are the guarded hooks around
    # TeleBot._run_middlewares_and_handler / AsyncTeleBot._run_middlewares_and_handlers.
    def start_update(self, bot: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _UpdateState:
        event = args[0] if args else kwargs["message"]
        update_type = str(kwargs.get("update_type") or (args[3] if len(args) > 3 else "unknown"))
        polling = _async_polling.get() or id(bot) in self.polling
        ingress = INGRESS_POLLING if polling else INGRESS_WEBHOOK
        span = self.tracer.start_span(
            SPAN_TELEGRAM_UPDATE + " " + update_type, context=_EMPTY_CONTEXT, kind=SpanKind.SERVER
        )
        user = getattr(event, "from_user", None)
        if user is not None:
            self.users.add(user.id)
        if span.is_recording():
            chat = getattr(event, "chat", None)
            if chat is None:
                chat = getattr(getattr(event, "message", None), "chat", None)
            attrs: dict[str, Any] = {
                TELEGRAM_UPDATE_TYPE: update_type,
                TELEGRAM_INGRESS: ingress,
                TELEGRAM_BOT_ID: str(getattr(bot, "token", "")).split(":", 1)[0],
            }
            if chat is not None:
                attrs[TELEGRAM_CHAT_TYPE] = str(getattr(chat, "type", "") or "")
            if self.capture_ids:
                if chat is not None:
                    attrs[TELEGRAM_CHAT_ID] = chat.id
                if user is not None:
                    attrs[TELEGRAM_USER_ID] = user.id
            span.set_attributes(attrs)
        state = _UpdateState(span, update_type, ingress)
        state.context_token = context.attach(trace.set_span_in_context(span))
        state.state_token = _current_update.set(state)
        if self.diagnosis is not None:
            state.notes = self.diagnosis.begin(span, update_type, make_current=False)
        self.active.add(1, self.attrs(update_type))
        with self._lock:  # TeleBot's worker threads: the stats file's counters are plain ints
            stats_file.update_started()
        return state

    def start_async_update(
        self, bot: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _UpdateState:
        """``start_update`` for ``AsyncTeleBot``, on the bot's event loop: with findings on,
        the first update starts the loop heartbeat there (``otelbot.diagnosis.heartbeat``:
        the blocked-loop finding for a block in a handler, a middleware or a task)."""
        state = self.start_update(bot, args, kwargs)
        if self.diagnosis is not None and heartbeat.beat.loop is None:
            heartbeat.start()
        return state

    def end_update(self, state: _UpdateState, result: Any, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - state.started
        _current_update.reset(state.state_token)
        context.detach(state.context_token)
        with self._lock:
            stats_file.update_ended()
        error = exc or state.exc
        if error is not None:
            outcome = OUTCOME_ERROR
        elif state.handler is None:
            outcome = OUTCOME_UNHANDLED
        else:
            outcome = OUTCOME_HANDLED
        err = error_type(error) if error is not None else None
        handler = state.handler or OUTCOME_UNHANDLED
        self.active.add(-1, self.attrs(state.type))
        self.updates.add(1, self.attrs(state.type, handler, outcome, state.ingress, err))
        self.update_duration.record(elapsed, self.attrs(state.type, handler, outcome))
        if state.notes is not None:
            self.diagnosis.end(state.notes, handler, outcome, state.handler_code)  # type: ignore[union-attr]
        span = state.span
        if span.is_recording():
            span.set_attribute(TELEGRAM_UPDATE_OUTCOME, outcome)
            span.set_attribute(TELEGRAM_HANDLER, handler)
            if exc is not None and exc is not state.exc:
                record_exception(span, exc)
            elif error is not None:
                span.set_attribute(ERROR_TYPE, err)
                span.set_status(StatusCode.ERROR)
        span.end()

    def took_update(self, handler: Any) -> None:
        """telebot picked ``handler`` (its registration dict) for the current update."""
        state = _current_update.get()
        if state is None or state.handler is not None:
            return
        function = handler.get("function") if isinstance(handler, dict) else None
        if function is None:
            return
        key = id(function)
        named = self._handler_names.get(key)
        if named is None:
            module = getattr(function, "__module__", None) or ""
            qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
            named = (f"{module}.{qualname}" if module else qualname, code_of(function))
            self._handler_names[key] = named
        state.handler, state.handler_code = named

    def failed(self, exc: Any) -> None:
        """A handler's error, about to go to telebot's exception handler."""
        state = _current_update.get()
        if state is not None and state.exc is None and isinstance(exc, BaseException):
            state.exc = exc
            record_exception(state.span, exc)

    # ------------------------------------------------------------------ Bot API
    # start_api_call / end_api_call are the guarded hooks around apihelper._make_request
    # (token, method_name, ...) and asyncio_helper._process_request (token, url, ...).
    def start_api_call(self, token: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ApiCall:
        method = str(args[0] if args else kwargs.get("method_name") or kwargs.get("url"))
        bot_id = ""
        if isinstance(token, str):
            remember_token(token)
            bot_id = token.split(":", 1)[0]
        if method == "getUpdates" and not self.trace_get_updates:
            span = None
        else:
            span = self.tracer.start_span(
                SPAN_TELEGRAM_API + " " + method,
                kind=SpanKind.CLIENT,
                attributes=botapi.span_attrs(method, bot_id),
            )
        call = ApiCall(span, method)
        call.context_token = current_api_call.set(call)
        call.started = time.perf_counter()
        return call

    def end_api_call(self, call: ApiCall, result: Any, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - call.started
        api_method = call.method
        if call.context_token is not None:
            current_api_call.reset(call.context_token)
        if call.http is not None:  # no response checked: the HTTP request itself failed
            call.end_http(0, (exc.__cause__ or exc) if exc is not None else None)
        code = call.status if call.status >= 400 else 0
        retry_after = None
        if exc is not None:
            telegram_code = getattr(exc, "error_code", None)
            if isinstance(telegram_code, int):
                code = telegram_code
            if code == 429:
                parameters = (getattr(exc, "result_json", None) or {}).get("parameters") or {}
                retry_after = parameters.get("retry_after")
        err = error_type(exc) if exc is not None else None
        self.api_duration.record(elapsed, botapi.metric_attrs(api_method, code, err))
        if notes.noting():
            where = notes.bot_code_location() if code else None
            ended = call.started + elapsed
            notes.note(notes.API, api_method, call.started, ended, (code, retry_after, where))
        if code == 429:
            only_method = botapi.metric_attrs(api_method)
            self.flood_waits.add(1, only_method)
            if retry_after is not None:
                self.retry_after.record(retry_after, only_method)
        span = call.span
        if span is None:
            return
        if span.is_recording():
            if call.status:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, call.status)
            if code:
                span.set_attribute(TELEGRAM_API_ERROR_CODE, code)
            if retry_after is not None:
                span.set_attribute(TELEGRAM_API_RETRY_AFTER, retry_after)
                span.add_event(SPAN_EVENT_FLOOD_WAIT, {TELEGRAM_API_RETRY_AFTER: retry_after})
            if exc is not None:
                record_exception(span, exc)
        span.end()


# ---------------------------------------------------------------------- wrappers


def _wrap_check_result(original: Any) -> Any:
    # telebot hands the HTTP response to _check_result (requests: status_code, aiohttp:
    # status): the status of the open call, and the end of a joined aiohttp request.
    def check_result(method_name: Any, result: Any, *args: Any, **kwargs: Any) -> Any:
        call = current_api_call.get()
        if call is not None:
            try:
                status = getattr(result, "status_code", None) or getattr(result, "status", 0)
                call.status = int(status or 0)
                call.end_http(call.status, None)
            except Exception as exc:
                internal_error("telebot Bot API response", exc)
        return original(method_name, result, *args, **kwargs)

    return check_result


def _wrap_test_handler(original: Any, telemetry: _Telemetry) -> Any:
    def test_message_handler(bot: Any, handler: Any, *args: Any, **kwargs: Any) -> Any:
        taken = original(bot, handler, *args, **kwargs)
        if taken:
            try:
                telemetry.took_update(handler)
            except Exception as exc:
                internal_error("telebot handler", exc)
        return taken

    return test_message_handler


def _wrap_async_test_handler(original: Any, telemetry: _Telemetry) -> Any:
    async def test_message_handler(bot: Any, handler: Any, *args: Any, **kwargs: Any) -> Any:
        taken = await original(bot, handler, *args, **kwargs)
        if taken:
            try:
                telemetry.took_update(handler)
            except Exception as exc:
                internal_error("telebot handler", exc)
        return taken

    return test_message_handler


def _wrap_handle_exception(original: Any, telemetry: _Telemetry) -> Any:
    # A plain function for both bots: AsyncTeleBot's returns its coroutine unchanged.
    def handle_exception(bot: Any, exception: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            telemetry.failed(exception)
        except Exception as exc:
            internal_error("telebot exception handler", exc)
        return original(bot, exception, *args, **kwargs)

    return handle_exception


def _wrap_sync_polling(original: Any, telemetry: _Telemetry) -> Any:
    def polling(bot: Any, *args: Any, **kwargs: Any) -> Any:
        key = id(bot)
        nested = key in telemetry.polling
        telemetry.polling.add(key)
        try:
            return original(bot, *args, **kwargs)
        finally:
            if not nested:
                telemetry.polling.discard(key)

    return polling


def _wrap_async_polling(original: Any) -> Any:
    async def process_polling(bot: Any, *args: Any, **kwargs: Any) -> Any:
        _async_polling.set(True)
        return await original(bot, *args, **kwargs)

    return process_polling


class TelebotInstrumentor(OtelbotInstrumentor):
    """Traces pyTelegramBotAPI updates, handlers and Bot API calls (sync and asyncio)."""

    _instruments: Collection[str] = ("pyTelegramBotAPI >= 4.0",)

    def _instrument(self, **kwargs: Any) -> None:
        from telebot import TeleBot, apihelper

        tracer, meter = self.tracer_and_meter(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        wrap = self.patches.wrap
        remember = lambda o: guarded_sync(  # noqa: E731
            o, remember_bot_token, nothing_to_end, "telebot bot"
        )
        wrap(TeleBot, "__init__", remember)
        wrap(
            TeleBot,
            "_run_middlewares_and_handler",
            lambda o: guarded_sync(o, telemetry.start_update, telemetry.end_update, "telebot"),
        )
        wrap(TeleBot, "_test_message_handler", lambda o: _wrap_test_handler(o, telemetry))
        wrap(TeleBot, "_handle_exception", lambda o: _wrap_handle_exception(o, telemetry))
        wrap(TeleBot, "polling", lambda o: _wrap_sync_polling(o, telemetry))
        wrap(
            apihelper,
            "_make_request",
            lambda o: guarded_sync(
                o, telemetry.start_api_call, telemetry.end_api_call, "telebot Bot API call"
            ),
        )
        wrap(apihelper, "_check_result", _wrap_check_result)
        try:
            from telebot import asyncio_helper
            from telebot.async_telebot import AsyncTeleBot
        except ImportError:  # aiohttp missing: no AsyncTeleBot
            return
        wrap(AsyncTeleBot, "__init__", remember)
        wrap(
            AsyncTeleBot,
            "_run_middlewares_and_handlers",
            lambda o: guarded_async(
                o, telemetry.start_async_update, telemetry.end_update, "telebot"
            ),
        )
        wrap(
            AsyncTeleBot,
            "_test_message_handler",
            lambda o: _wrap_async_test_handler(o, telemetry),
        )
        wrap(AsyncTeleBot, "_handle_exception", lambda o: _wrap_handle_exception(o, telemetry))
        wrap(AsyncTeleBot, "_process_polling", _wrap_async_polling)
        wrap(
            asyncio_helper,
            "_process_request",
            lambda o: guarded_async(
                o, telemetry.start_api_call, telemetry.end_api_call, "telebot Bot API call"
            ),
        )
        wrap(asyncio_helper, "_check_result", _wrap_check_result)
