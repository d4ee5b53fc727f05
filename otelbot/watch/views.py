"""The figures ``otelbot watch`` shows, as plain JSON-ready dicts built from a
:class:`~otelbot.watch.store.WatchStore`: the API returns them as they are and the page and
the terminal view draw them::

    handlers(store)                 # [{"handler": "__main__.start", "count": 12, "p95_ms": ...}]
    summary(store)["services"]["my-bot"]["updates_per_second"]
"""

from __future__ import annotations

import os
import resource
from collections import defaultdict
from typing import Any

from otelbot import semconv
from otelbot.testing.otlp_receiver import ReceivedPoint, ReceivedSpan
from otelbot.watch.store import (
    CHART_POINTS,
    STALE_AFTER,
    Finding,
    Update,
    WatchStore,
    percentile,
    service_of,
)

#: Agent metrics whose value says whether a target answered (1) or not (0).
UP_METRICS = (semconv.POSTGRESQL_UP.name, semconv.REDIS_UP.name)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _rss_bytes() -> int:
    """This process's resident memory (Linux /proc; peak RSS elsewhere)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ---------------------------------------------------------------------- health
def health(store: WatchStore) -> dict[str, Any]:
    now = store.clock()
    bots = []
    for svc in store.services.values():
        age = now - svc.last_seen
        bots.append(
            {
                "service": svc.name,
                "status": "up" if age <= STALE_AFTER else "stale",
                "last_seen_age_s": round(age, 3),
                "last_update_age_s": None
                if svc.last_update is None
                else round(now - svc.last_update, 3),
                "spans": svc.spans,
                "metric_points": svc.points,
                "log_records": svc.logs,
            }
        )
    targets = []
    for name in UP_METRICS:
        for p in store.points(name):
            a = p.attributes
            where = f"{a.get(semconv.SERVER_ADDRESS, '?')}:{a.get(semconv.SERVER_PORT, '?')}"
            if a.get(semconv.DB_NAMESPACE):
                where += f"/{a[semconv.DB_NAMESPACE]}"
            targets.append(
                {
                    "service": service_of(p.resource),
                    "system": name.split(".")[0],
                    "target": where,
                    "status": "up" if p.value == 1 else "down",
                    "error": a.get(semconv.ERROR_TYPE, ""),
                }
            )
    return {
        "status": "ok",
        "watch": {
            "uptime_s": round(now - store.started, 3),
            "rss_bytes": _rss_bytes(),
            "spans_kept": store.span_count,
            "traces_kept": store.trace_count,
            "max_spans": store.max_spans,
            "retention_s": store.retention,
            "received": dict(store.received),
            "rejected_requests": store.rejected,
            "dropped_spans": store.dropped_spans,
            "dropped_series": store.dropped_series,
        },
        "bots": sorted(bots, key=lambda b: str(b["service"])),
        "agent_targets": targets,
    }


# ---------------------------------------------------------------------- handlers
def _latency(durations: list[float]) -> dict[str, float]:
    ordered = sorted(durations)
    return {
        "avg_ms": _ms(sum(ordered) / len(ordered)) if ordered else 0.0,
        "p50_ms": _ms(percentile(ordered, 0.50)),
        "p95_ms": _ms(percentile(ordered, 0.95)),
        "p99_ms": _ms(percentile(ordered, 0.99)),
        "max_ms": _ms(ordered[-1]) if ordered else 0.0,
    }


def handlers(store: WatchStore, service: str | None = None) -> list[dict[str, Any]]:
    """Per (service, handler) over the updates kept: count, errors, latency, recent points."""
    groups: dict[tuple[str, str], list[Update]] = defaultdict(list)
    for u in store.updates(service):
        groups[(u.service, u.handler)].append(u)
    rows: list[dict[str, Any]] = []
    for (svc, handler), updates in groups.items():
        durations = [u.duration for u in updates]
        rows.append(
            {
                "service": svc,
                "handler": handler,
                "count": len(updates),
                "errors": sum(1 for u in updates if u.error),
                **_latency(durations),
                "recent_ms": [_ms(d) for d in durations[-CHART_POINTS:]],
            }
        )
    rows.sort(key=lambda r: (-r["count"], r["handler"]))
    return rows


# ---------------------------------------------------------------------- findings
def finding_dict(f: Finding, store: WatchStore) -> dict[str, Any]:
    return {
        "service": f.service,
        "event": f.event,
        "source": f.event.split(".")[1] if f.event.count(".") >= 2 else "",
        "summary": f.body,
        "handler": f.handler,
        "object": f.object,
        "evidence": f.evidence,
        "suggestion": f.suggestion,
        "code": f.code,
        "trace_id": f.trace_id,
        "span_id": f.span_id,
        "trace_kept": bool(f.trace_id) and store.trace(f.trace_id) is not None,
        "time_unix_nano": f.time_ns,
        "age_s": round(store.clock() - f.received, 3),
    }


def findings(store: WatchStore, service: str | None = None) -> list[dict[str, Any]]:
    """Newest first."""
    return [
        finding_dict(f, store)
        for f in reversed(store.findings)
        if service is None or f.service == service
    ]


# ---------------------------------------------------------------------- traces
def traces(
    store: WatchStore,
    handler: str | None = None,
    errors_only: bool = False,
    slowest: bool = False,
    service: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Recent updates (newest first, or slowest first), each a link to its trace."""
    picked = [
        u
        for u in store.updates(service)
        if (not handler or u.handler == handler) and (not errors_only or u.error)
    ]
    if slowest:
        picked.sort(key=lambda u: -u.duration)
    else:
        picked.reverse()
    rows = []
    for u in picked[: max(1, limit)]:
        trace = store.trace(u.trace_id)
        rows.append(
            {
                "trace_id": u.trace_id,
                "service": u.service,
                "handler": u.handler,
                "name": u.name,
                "duration_ms": _ms(u.duration),
                "error": u.error,
                "start_unix_nano": u.start_ns,
                "spans": len(trace.spans) if trace else 0,
            }
        )
    return rows


def _span_dict(span: ReceivedSpan, depth: int, origin: int) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "depth": depth,
        "offset_ms": _ms((span.start_ns - origin) / 1e9),
        "duration_ms": _ms(span.duration),
        "error": span.status_code == 2,
        "status_message": span.status_message,
        "attributes": span.attributes,
        "events": span.events,
        "scope": span.scope,
    }


def trace(store: WatchStore, trace_id: str) -> dict[str, Any] | None:
    """One trace as a waterfall: spans in tree order, each with depth, offset and duration."""
    kept = store.trace(trace_id)
    if kept is None:
        return None
    spans = sorted(kept.spans, key=lambda s: s.start_ns)
    ids = {s.span_id for s in spans}
    children: dict[str, list[ReceivedSpan]] = defaultdict(list)
    roots = []
    for s in spans:
        if s.parent_span_id and s.parent_span_id in ids:
            children[s.parent_span_id].append(s)
        else:
            roots.append(s)
    origin = spans[0].start_ns if spans else 0
    rows: list[dict[str, Any]] = []
    stack = [(r, 0) for r in reversed(roots)]
    while stack:
        span, depth = stack.pop()
        rows.append(_span_dict(span, depth, origin))
        stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))
    end = max((s.end_ns for s in spans), default=origin)
    return {
        "trace_id": trace_id,
        "service": kept.service,
        "duration_ms": _ms((end - origin) / 1e9),
        "spans": rows,
        "findings": [finding_dict(f, store) for f in store.findings if f.trace_id == trace_id],
    }


# ---------------------------------------------------------------------- summary
def _sum(points: list[ReceivedPoint]) -> float:
    return float(sum(p.value or 0 for p in points))


def _histogram(points: list[ReceivedPoint]) -> dict[str, Any] | None:
    count = sum(p.count for p in points)
    if not count:
        return None
    total = sum(p.sum for p in points)
    peaks = [p.max for p in points if p.max is not None]
    return {
        "count": count,
        "avg_ms": _ms(total / count),
        "max_ms": _ms(max(peaks)) if peaks else None,
    }


def _bot_api(store: WatchStore, service: str) -> list[dict[str, Any]]:
    methods: dict[str, dict[str, Any]] = {}
    for p in store.points(semconv.TELEGRAM_API_DURATION.name, service):
        method = str(p.attributes.get(semconv.TELEGRAM_API_METHOD, "?"))
        row = methods.setdefault(
            method, {"method": method, "calls": 0, "errors": 0, "sum": 0.0, "flood_waits": 0}
        )
        row["calls"] += p.count
        row["sum"] += p.sum
        if p.attributes.get(semconv.ERROR_TYPE) or p.attributes.get(
            semconv.TELEGRAM_API_ERROR_CODE
        ):
            row["errors"] += p.count
    for p in store.points(semconv.TELEGRAM_API_FLOOD_WAITS.name, service):
        method = str(p.attributes.get(semconv.TELEGRAM_API_METHOD, "?"))
        row = methods.setdefault(
            method, {"method": method, "calls": 0, "errors": 0, "sum": 0.0, "flood_waits": 0}
        )
        row["flood_waits"] += int(p.value or 0)
    rows = []
    for row in methods.values():
        total = row.pop("sum")
        row["avg_ms"] = _ms(total / row["calls"]) if row["calls"] else 0.0
        rows.append(row)
    return sorted(rows, key=lambda r: -r["calls"])


def _by(points: list[ReceivedPoint], attribute: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for p in points:
        out[str(p.attributes.get(attribute, ""))] += float(p.value or 0)
    return dict(out)


def service_summary(store: WatchStore, service: str) -> dict[str, Any]:
    updates = store.updates(service)
    durations = [u.duration for u in updates]
    processed = _sum(store.points(semconv.TELEGRAM_UPDATES.name, service))
    cache = _by(store.points(semconv.OTELBOT_CACHE_REQUESTS.name, service), semconv.CACHE_RESULT)
    hits, misses = cache.get(semconv.CACHE_HIT, 0.0), cache.get(semconv.CACHE_MISS, 0.0)
    pool = _by(
        store.points(semconv.DB_CLIENT_CONNECTION_COUNT.name, service),
        semconv.DB_CLIENT_CONNECTION_STATE,
    )
    pool_max = store.points(semconv.DB_CLIENT_CONNECTION_MAX.name, service)
    pending = store.points(semconv.DB_CLIENT_CONNECTION_PENDING_REQUESTS.name, service)
    memory = store.points(semconv.PROCESS_MEMORY_USAGE.name, service)
    users = {
        str(p.attributes.get(semconv.TELEGRAM_USERS_WINDOW, "")): p.value
        for p in store.points(semconv.TELEGRAM_USERS_ACTIVE.name, service)
    }
    return {
        # The bot's own counter (since it started) when it arrived; else the updates kept.
        "updates_processed": int(processed) if processed else len(updates),
        "updates_kept": len(updates),
        "updates_per_second": round(store.updates_per_second(service), 3),
        "errors": sum(1 for u in updates if u.error),
        "avg_response_ms": _ms(sum(durations) / len(durations)) if durations else None,
        "p95_response_ms": _ms(percentile(sorted(durations), 0.95)) if durations else None,
        "memory_bytes": max((p.value or 0 for p in memory), default=None),
        "gc_pauses": _histogram(store.points(semconv.OTELBOT_GC_PAUSE_DURATION.name, service)),
        "loop_lag": _histogram(store.points(semconv.OTELBOT_ASYNCIO_LOOP_LAG.name, service)),
        "active_users": users,
        "cache": {
            "hits": int(hits),
            "misses": int(misses),
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        },
        "db_pool": {
            "used": pool.get(semconv.CONNECTION_STATE_USED),
            "idle": pool.get(semconv.CONNECTION_STATE_IDLE),
            "max": _sum(pool_max) if pool_max else None,
            "pending": _sum(pending) if pending else None,
        },
        "bot_api": _bot_api(store, service),
        "findings": sum(1 for f in store.findings if f.service == service),
    }


def summary(store: WatchStore) -> dict[str, Any]:
    """The dashboard's figures per service, and totals over all of them."""
    services = {name: service_summary(store, name) for name in sorted(store.services)}
    return {
        "updates_per_second": round(store.updates_per_second(), 3),
        "updates_kept": store.update_count,
        "findings": len(store.findings),
        "watch_rss_bytes": _rss_bytes(),
        "services": services,
    }
