"""python-telegram-bot (v20+) instrumentation: one trace per Telegram update.

Usage (``opentelemetry-instrument python bot.py`` does this for you through the
``otelbot_ptb`` entry point)::

    from otelbot.instrumentation.ptb import PtbInstrumentor
    PtbInstrumentor().instrument()
    application.run_polling()       # every update: a trace rooted at "telegram.update message"

Every update ``Application.process_update`` handles gets one span ``telegram.update
<type>``. Updates taken from the application's update queue (long polling, PTB's own
webhook server, or a custom server putting updates on the queue) start a trace of their
own, also with ``concurrent_updates``; a direct ``process_update`` call (a custom webhook
handler) makes the span a child of the caller's span. The span stays current while the
handlers run, so SQL, Redis and Bot API calls nest under it; a ``block=False`` handler
runs in a task of its own, and the update span ends when that task does.

``telegram.handler`` is the first handler callback that took the update ("module.qualname");
an error a handler raises is recorded on the update even when an error handler swallows
it. Each run of a ``JobQueue`` job is a trace of its own, ``telegram.job <callback>`` (named
by the callback's qualified name: job names are often made per chat). For a sampled update
with findings on, each handler's coroutine runs under the step timer
(``otelbot.diagnosis.steps``), so a handler that blocks the event loop is named; the loop
heartbeat (``otelbot.diagnosis.heartbeat``) finds a block anywhere else (a job, a task).

Bot API calls made through PTB's request classes (``HTTPXRequest`` by default) get one span
``telegram.api <method>``: the Bot API error code, ``telegram.api.retry_after`` and a
``telegram.flood_wait`` event for ``RetryAfter``. The httpx client instrumentation puts the
HTTP details (``url.full`` with the token redacted, server, status) on the same span
instead of opening a second one. ``getUpdates`` long polls are metrics only unless
``OTELBOT_TRACE_GET_UPDATES=true``. A ``Bot``'s token is learned when the bot is created,
and redacted from everything otelbot records from then on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, StatusCode

from otelbot.core import config
from otelbot.core.errors import error_type, internal_error, record_exception
from otelbot.core.fastmetrics import create_instrument
from otelbot.core.lightspan import light_tracer
from otelbot.core.patching import OtelbotInstrumentor, guarded_async, guarded_sync
from otelbot.core.users import ActiveUsers
from otelbot.core.users import observations as users_observations
from otelbot.diagnosis import engine as diagnosis
from otelbot.diagnosis import heartbeat, notes, steps
from otelbot.diagnosis.notes import CodeLocation, code_of
from otelbot.instrumentation.botapi import ApiCall, BotApiTarget, current_api_call, parse_path
from otelbot.instrumentation.botapi import metric_attrs as api_metric_attrs
from otelbot.instrumentation.updates import (
    INGRESS_DIRECT,
    INGRESS_POLLING,
    INGRESS_WEBHOOK,
    OUTCOME_ERROR,
    OUTCOME_HANDLED,
    OUTCOME_UNHANDLED,
    UpdateAttributes,
    UpdateState,
    nothing_to_end,
    remember_bot_token,
)
from otelbot.runtime import stats_file
from otelbot.semconv import (
    ERROR_TYPE,
    HTTP_RESPONSE_STATUS_CODE,
    SPAN_EVENT_FLOOD_WAIT,
    SPAN_TELEGRAM_JOB,
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
)

#: Set in the application's update-queue task: updates processed from it start a trace.
_from_queue: ContextVar[Any] = ContextVar("otelbot_ptb_queue", default=None)
_EMPTY_CONTEXT = context.Context()

# PTB's Bot API exceptions -> the error code Telegram sent with them.
_ERROR_CODES = {
    "BadRequest": 400,
    "ChatMigrated": 400,
    "InvalidToken": 401,
    "Forbidden": 403,
    "Conflict": 409,
    "RetryAfter": 429,
}


class _UpdateState(UpdateState):
    """One update (or job run) from its start to its end, plus the non-blocking handler
    tasks still running."""

    __slots__ = ("ended", "finish", "pending")

    def __init__(self, span: Any, update_type: str, ingress: str) -> None:
        super().__init__(span, update_type, ingress)
        self.pending = 0
        #: process_update's own exception, kept while non-blocking handlers still run.
        self.finish: tuple[BaseException | None] | None = None
        self.ended = False


#: The update being handled: notes.current, shared with the findings' notes (one context
#: variable set per update; see there).
_current_update: ContextVar[_UpdateState | None] = notes.current
_current_job: ContextVar[_UpdateState | None] = ContextVar("otelbot_ptb_job", default=None)


class _Telemetry(UpdateAttributes):
    """The tracer, instruments and caches of one ``instrument()`` call."""

    def __init__(self, tracer: trace.Tracer, meter: Any) -> None:
        super().__init__()
        from telegram import Update
        from telegram._utils.defaultvalue import DEFAULT_TRUE
        from telegram.error import RetryAfter
        from telegram.ext import ApplicationHandlerStop

        self.default_true = DEFAULT_TRUE
        self.update_class = Update
        self.update_types: tuple[str, ...] = tuple(str(t) for t in Update.ALL_TYPES)
        self.retry_after_exc = RetryAfter
        self.handler_stop = ApplicationHandlerStop
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
        self._targets: dict[str, BotApiTarget | None] = {}
        self.diagnosis = diagnosis.diagnosis(meter)

    def _observe_users(self, options: Any) -> Any:
        return users_observations(self.users, TELEGRAM_USERS_WINDOW)

    def update_type(self, update: Any) -> str:
        if not isinstance(update, self.update_class):
            return "unknown"
        for name in self.update_types:
            if getattr(update, name, None) is not None:
                return name
        return "unknown"

    # ------------------------------------------------------------------ updates
    # start_update / end_update are guarded_async's hooks around Application.process_update.
    def start_update(
        self, application: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _UpdateState:
        update = args[0] if args else kwargs["update"]
        update_type = self.update_type(update)
        name = self._span_names.get(update_type)
        if name is None:
            name = self._span_names[update_type] = SPAN_TELEGRAM_UPDATE + " " + update_type
        if _from_queue.get() is application:
            ingress = _queue_ingress(application)
            parent, kind = _EMPTY_CONTEXT, SpanKind.SERVER
        else:
            ingress = INGRESS_DIRECT
            parent, kind = None, SpanKind.INTERNAL
        span = self.tracer.start_span(name, context=parent, kind=kind)
        user = None
        if update_type != "unknown":
            user = update.effective_user
            if span.is_recording():
                chat = update.effective_chat
                attrs: dict[str, Any] = {
                    TELEGRAM_UPDATE_TYPE: update_type,
                    TELEGRAM_INGRESS: ingress,
                    TELEGRAM_BOT_ID: _bot_id(application),
                }
                if chat is not None:
                    attrs[TELEGRAM_CHAT_TYPE] = str(chat.type or "")
                if self.capture_ids:
                    attrs[TELEGRAM_UPDATE_ID] = update.update_id
                    if chat is not None:
                        attrs[TELEGRAM_CHAT_ID] = chat.id
                    if user is not None:
                        attrs[TELEGRAM_USER_ID] = user.id
                span.set_attributes(attrs)
        elif span.is_recording():
            span.set_attributes({TELEGRAM_UPDATE_TYPE: update_type, TELEGRAM_INGRESS: ingress})
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
        _current_update.reset(state.state_token)
        context.detach(state.context_token)
        if state.pending:
            # block=False handlers still run in their tasks: the last one ends the update.
            state.finish = (exc,)
            return
        self.finish_update(state, exc)

    def finish_update(self, state: _UpdateState, exc: BaseException | None) -> None:
        if state.ended:
            return
        state.ended = True
        elapsed = time.perf_counter() - state.started
        stats_file.update_ended()
        error = exc or state.exc
        if error is not None:
            outcome = OUTCOME_ERROR
        elif state.handler is None:
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
        span.end()

    # ------------------------------------------------------------------ handlers
    def handler_name(self, handler: Any) -> str | None:
        """The qualified name of a handler's callback; None for a handler without one
        (a ``ConversationHandler``: the handler it picks inside is named instead)."""
        key = id(handler)
        name = self._handler_names.get(key)
        if name is None:
            callback = getattr(handler, "callback", None)
            if callback is None:
                self._handler_names[key] = ""
                return None
            name = self._handler_names[key] = _qualified_name(callback)
            self._handler_code[key] = code_of(callback)
        return name or None

    def took_update(self, state: _UpdateState, handler: Any) -> None:
        if state.handler is None:
            name = self.handler_name(handler)
            if name is not None:
                state.handler = name
                state.handler_code = self._handler_code.get(id(handler))

    def failed(self, state: _UpdateState, exc: Any) -> None:
        """A handler's error, recorded once on the update, even when an error handler
        swallows it."""
        if state.exc is None and isinstance(exc, BaseException) and not state.ended:
            if isinstance(exc, self.handler_stop):
                return
            state.exc = exc
            record_exception(state.span, exc)

    def non_blocking(self, handler: Any, application: Any) -> bool:
        """PTB's own rule (``Application.process_update``) for running a handler in a task."""
        block = handler.block
        if not block:
            return True
        if block is self.default_true:
            defaults = getattr(getattr(application, "bot", None), "defaults", None)
            return defaults is not None and not defaults.block
        return False

    async def run_nonblocking(self, state: _UpdateState, coroutine: Any) -> Any:
        """A ``block=False`` handler's coroutine, in the task PTB makes for it."""
        try:
            return await coroutine
        except Exception as exc:
            try:
                self.failed(state, exc)
            except Exception as inner:
                internal_error("ptb handler", inner)
            raise
        finally:
            state.pending -= 1
            if state.pending == 0 and state.finish is not None:
                try:
                    self.finish_update(state, state.finish[0])
                except Exception as inner:
                    internal_error("ptb update end", inner)

    # ------------------------------------------------------------------ jobs
    # start_job / end_job are guarded_async's hooks around Job._run.
    def start_job(self, job: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _UpdateState:
        # Named by the callback (code, bounded), not by the job's name (often made per chat).
        callback = getattr(job, "callback", None)
        name = _qualified_name(callback) if callback is not None else "unknown"
        span = self.tracer.start_span(
            SPAN_TELEGRAM_JOB + " " + name,
            context=_EMPTY_CONTEXT,
            kind=SpanKind.INTERNAL,
            attributes={TELEGRAM_HANDLER: name},
        )
        state = _UpdateState(span, "job", INGRESS_DIRECT)
        state.handler = name if callback is not None else None
        state.context_token = context.attach(trace.set_span_in_context(span))
        state.state_token = _current_job.set(state)
        return state

    def end_job(self, state: _UpdateState, result: Any, exc: BaseException | None) -> None:
        _current_job.reset(state.state_token)
        context.detach(state.context_token)
        state.ended = True
        span = state.span
        if span.is_recording():
            if exc is not None and exc is not state.exc:
                record_exception(span, exc)
            elif state.exc is not None:
                span.set_attribute(ERROR_TYPE, error_type(state.exc))
                span.set_status(StatusCode.ERROR)
        span.end()

    # ------------------------------------------------------------------ Bot API
    def target(self, url: str) -> BotApiTarget | None:
        try:
            return self._targets[url]
        except KeyError:
            pass
        scheme = url.find("://")
        slash = url.find("/", scheme + 3 if scheme >= 0 else 0)
        path = url[slash:] if slash >= 0 else "/"
        found = parse_path(path.split("?", 1)[0])
        if len(self._targets) >= 2048:
            self._targets.clear()
        self._targets[url] = found
        return found

    # start_api_call / end_api_call are guarded_async's hooks around
    # BaseRequest._request_wrapper (the one place every Bot API request passes).
    def start_api_call(
        self, request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ApiCall | None:
        url = kwargs["url"] if "url" in kwargs else args[0]
        target = self.target(url)
        if target is None:
            return None
        if self.diagnosis is not None and heartbeat.beat.loop is None:
            heartbeat.start()  # the loop heartbeat, from the bot's first call (getMe)
        if target.method == "getUpdates" and not self.trace_get_updates:
            span = None
        else:
            span = self.tracer.start_span(
                target.span_name, kind=SpanKind.CLIENT, attributes=target.attributes
            )
        call = ApiCall(span, target.method)
        call.context_token = current_api_call.set(call)
        call.started = time.perf_counter()
        return call

    def end_api_call(self, call: ApiCall | None, result: Any, exc: BaseException | None) -> None:
        if call is None:
            return
        elapsed = time.perf_counter() - call.started
        api_method = call.method
        if call.context_token is not None:
            current_api_call.reset(call.context_token)
        if call.http is not None:  # no status seen: the HTTP request itself failed
            cause = (exc.__cause__ or exc) if exc is not None else None
            call.end_http(call.status, cause)
        code = call.status if call.status >= 400 else 0
        err = error_type(exc) if exc is not None else None
        retry_after = None
        if exc is not None:
            if isinstance(exc, self.retry_after_exc):
                retry_after = _seconds(exc)
                code = code or 429
            elif not code:
                code = _ERROR_CODES.get(type(exc).__name__, 0)
        self.api_duration.record(elapsed, api_metric_attrs(api_method, code, err))
        if notes.noting():
            where = notes.bot_code_location() if code else None
            ended = call.started + elapsed
            notes.note(notes.API, api_method, call.started, ended, (code, retry_after, where))
        if retry_after is not None:
            only_method = api_metric_attrs(api_method)
            self.flood_waits.add(1, only_method)
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


def _qualified_name(callback: Any) -> str:
    module = getattr(callback, "__module__", None) or ""
    qualname = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    return f"{module}.{qualname}" if module else qualname


def _seconds(exc: Any) -> float | int:
    # The private timedelta: reading the public property warns (PTB's int -> timedelta move).
    value = getattr(exc, "_retry_after", None)
    if value is None:
        value = exc.retry_after
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    return value


def _bot_id(application: Any) -> str:
    try:
        return str(application.bot.token).split(":", 1)[0]
    except Exception:
        return ""


def _queue_ingress(application: Any) -> str:
    updater = getattr(application, "updater", None)
    if updater is not None and updater.running and getattr(updater, "_httpd", None) is None:
        return INGRESS_POLLING
    return INGRESS_WEBHOOK


# ---------------------------------------------------------------------- wrappers


def _wrap_update_fetcher(original: Any) -> Any:
    # Set once in the application's queue task: the update tasks it creates inherit it.
    @functools.wraps(original)
    async def fetcher(application: Any, *args: Any, **kwargs: Any) -> Any:
        _from_queue.set(application)
        return await original(application, *args, **kwargs)

    return fetcher


def _wrap_handle_update(original: Any, telemetry: _Telemetry) -> Any:
    # A plain function returning PTB's coroutine: no coroutine layer for blocking handlers.
    # For a sampled update with findings on, the handler's coroutine is driven through the
    # step timer (otelbot.diagnosis.steps), inside a coroutine of ours (PTB awaits what this
    # returns, or makes a task of it for a block=False handler).
    @functools.wraps(original)
    def handle_update(handler: Any, *args: Any, **kwargs: Any) -> Any:
        coroutine = original(handler, *args, **kwargs)
        state = _current_update.get()
        if state is None or state.ended:
            return coroutine
        try:
            telemetry.took_update(state, handler)
            if state.notes is not None:
                name = telemetry.handler_name(handler)
                if name is not None:  # a ConversationHandler: the handler it picks is timed
                    coroutine = _awaited(steps.timed(coroutine, state.notes, name))
            application = args[1] if len(args) > 1 else kwargs.get("application")
            if state.finish is None and telemetry.non_blocking(handler, application):
                state.pending += 1
                return telemetry.run_nonblocking(state, coroutine)
        except Exception as exc:
            internal_error("ptb handler", exc)
        return coroutine

    return handle_update


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _wrap_process_error(original: Any, telemetry: _Telemetry) -> Any:
    @functools.wraps(original)
    def process_error(application: Any, *args: Any, **kwargs: Any) -> Any:
        state = _current_job.get() or _current_update.get()
        if state is not None:
            try:
                error = args[1] if len(args) > 1 else kwargs.get("error")
                telemetry.failed(state, error)
            except Exception as exc:
                internal_error("ptb error handler", exc)
        return original(application, *args, **kwargs)

    return process_error


def _wrap_status(original: Any) -> Any:
    # HTTPXRequest.do_request returns (status, body): the status of the open Bot API call,
    # and the end of the HTTP request the httpx client instrumentation left to this call.
    @functools.wraps(original)
    async def do_request(request: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(request, *args, **kwargs)
        call = current_api_call.get()
        if call is not None:
            try:
                call.status = result[0]
                call.end_http(result[0], None)
            except Exception as exc:
                internal_error("ptb Bot API response", exc)
        return result

    return do_request


class PtbInstrumentor(OtelbotInstrumentor):
    """Traces python-telegram-bot updates, handlers, jobs and Bot API calls."""

    _instruments: Collection[str] = ("python-telegram-bot >= 20.0",)

    def _instrument(self, **kwargs: Any) -> None:
        from telegram import Bot
        from telegram.ext import Application, BaseHandler, ConversationHandler
        from telegram.request import BaseRequest, HTTPXRequest

        tracer, meter = self.tracer_and_meter(**kwargs)
        telemetry = _Telemetry(tracer, meter)
        wrap = self.patches.wrap
        wrap(
            Application,
            "process_update",
            lambda o: guarded_async(o, telemetry.start_update, telemetry.end_update, "ptb update"),
        )
        wrap(Application, "_update_fetcher", _wrap_update_fetcher)
        wrap(Application, "process_error", lambda o: _wrap_process_error(o, telemetry))
        wrap(BaseHandler, "handle_update", lambda o: _wrap_handle_update(o, telemetry))
        wrap(ConversationHandler, "handle_update", lambda o: _wrap_handle_update(o, telemetry))
        wrap(
            BaseRequest,
            "_request_wrapper",
            lambda o: guarded_async(
                o, telemetry.start_api_call, telemetry.end_api_call, "ptb Bot API call"
            ),
        )
        wrap(HTTPXRequest, "do_request", _wrap_status)
        try:
            from telegram.ext import Job
        except ImportError:
            pass
        else:
            wrap(
                Job,
                "_run",
                lambda o: guarded_async(o, telemetry.start_job, telemetry.end_job, "ptb job"),
            )
        wrap(
            Bot,
            "__init__",
            lambda o: guarded_sync(o, remember_bot_token, nothing_to_end, "ptb Bot"),
        )
