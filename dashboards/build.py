"""Builds the Grafana dashboards (bot-overview.json, postgresql.json, redis.json) from the
panel lists below: `python dashboards/build.py`. A test fails when the JSON files differ
from what this writes, and another runs every query against a real Prometheus.

Metric names are the Prometheus form of otelbot/semconv.py. `$job` selects the bot / agent
(Prometheus job, or service.name through remote write); `$__rate_interval` is Grafana's."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RI = "$__rate_interval"
J = 'job=~"$job"'

Panel = tuple[str, str, list[tuple[str, str]]]  # title, unit, [(expr, legend)]


def q(p: float, metric: str, by: str, extra: str = "") -> str:
    sel = J + (f",{extra}" if extra else "")
    return f"histogram_quantile({p}, sum by (le, {by}) (rate({metric}{{{sel}}}[{RI}])))"


BOT: list[Panel] = [
    (
        "Updates per second",
        "ops",
        [
            (
                f"sum by (telegram_update_type) (rate(telegram_updates_total{{{J}}}[{RI}]))",
                "{{telegram_update_type}}",
            )
        ],
    ),
    (
        "Update latency by type",
        "s",
        [
            (
                q(0.5, "telegram_update_duration_seconds_bucket", "telegram_update_type"),
                "p50 {{telegram_update_type}}",
            ),
            (
                q(0.95, "telegram_update_duration_seconds_bucket", "telegram_update_type"),
                "p95 {{telegram_update_type}}",
            ),
            (
                q(0.99, "telegram_update_duration_seconds_bucket", "telegram_update_type"),
                "p99 {{telegram_update_type}}",
            ),
        ],
    ),
    (
        "Update latency by handler",
        "s",
        [
            (
                q(p, "telegram_update_duration_seconds_bucket", "telegram_handler"),
                f"p{round(p * 100)} {{{{telegram_handler}}}}",
            )
            for p in (0.5, 0.95, 0.99)
        ],
    ),
    (
        "Findings by kind and handler",
        "short",
        [
            (
                f"sum by (otelbot_finding_kind, telegram_handler) "
                f"(increase(otelbot_findings_total{{{J}}}[{RI}]))",
                "{{otelbot_finding_kind}} {{telegram_handler}}",
            )
        ],
    ),
    (
        "Bot API latency p95 by method",
        "s",
        [
            (
                q(0.95, "telegram_api_duration_seconds_bucket", "telegram_api_method"),
                "{{telegram_api_method}}",
            )
        ],
    ),
    (
        "Bot API errors by method",
        "ops",
        [
            (
                f"sum by (telegram_api_method, telegram_api_error_code) "
                f'(rate(telegram_api_duration_seconds_count{{{J},telegram_api_error_code!=""}}[{RI}]))',
                "{{telegram_api_method}} {{telegram_api_error_code}}",
            )
        ],
    ),
    (
        "Flood waits",
        "short",
        [
            (
                f"sum by (telegram_api_method) (increase(telegram_api_flood_waits_total{{{J}}}[{RI}]))",
                "{{telegram_api_method}}",
            )
        ],
    ),
    (
        "Active users",
        "short",
        [
            (
                f"max by (telegram_users_window) (telegram_users_active{{{J}}})",
                "{{telegram_users_window}}",
            )
        ],
    ),
    (
        "Updates in flight",
        "short",
        [
            (
                f"sum by (telegram_update_type) (telegram_updates_active{{{J}}})",
                "{{telegram_update_type}}",
            )
        ],
    ),
    (
        "Event-loop lag p99",
        "s",
        [
            # the bot's own histogram, or (with otelbot-agent) the lag the agent reads from the
            # runtime stats file
            (
                f"histogram_quantile(0.99, sum by (le) "
                f"(rate(otelbot_asyncio_loop_lag_seconds_bucket{{{J}}}[{RI}])))"
                f" or max by (job) (otelbot_asyncio_loop_lag_last_seconds{{{J}}})",
                "lag",
            )
        ],
    ),
    (
        "GC pauses p99 by generation",
        "s",
        [
            (
                q(0.99, "otelbot_gc_pause_duration_seconds_bucket", "cpython_gc_generation"),
                "gen {{cpython_gc_generation}}",
            )
        ],
    ),
    (
        "Memory (resident)",
        "bytes",
        [(f"max by (job) (process_memory_usage_bytes{{{J}}})", "{{job}}")],
    ),
    (
        "Cache hit ratio",
        "percentunit",
        [
            # "or ... * 0": a cache with reads but no hit yet shows 0, not "no data"
            (
                f'(sum by (job) (rate(otelbot_cache_requests_total{{{J},otelbot_cache_result="hit"}}'
                f"[{RI}])) or sum by (job) (rate(otelbot_cache_requests_total{{{J}}}[{RI}])) * 0)"
                f" / sum by (job) (rate(otelbot_cache_requests_total{{{J}}}[{RI}]))",
                "{{job}}",
            )
        ],
    ),
    (
        "Database operation latency p95",
        "s",
        [
            (
                q(
                    0.95,
                    "db_client_operation_duration_seconds_bucket",
                    "db_system_name, db_operation_name",
                ),
                "{{db_system_name}} {{db_operation_name}}",
            )
        ],
    ),
    (
        "Connection pool usage",
        "short",
        [
            (
                f"sum by (db_client_connection_pool_name, db_client_connection_state) "
                f"(db_client_connection_count{{{J}}})",
                "{{db_client_connection_pool_name}} {{db_client_connection_state}}",
            ),
            (
                f"max by (db_client_connection_pool_name) (db_client_connection_max{{{J}}})",
                "{{db_client_connection_pool_name}} max",
            ),
        ],
    ),
]

POSTGRES: list[Panel] = [
    (
        "Up",
        "short",
        [
            (
                f'max by (db_namespace) ({{__name__=~"postgresql_up(_ratio)?",{J}}})',
                "{{db_namespace}}",
            )
        ],
    ),
    (
        "Connections by state",
        "short",
        [
            (
                f"sum by (postgresql_backend_state) (postgresql_backends{{{J}}})",
                "{{postgresql_backend_state}}",
            ),
            (f"max(postgresql_connection_max{{{J}}})", "max_connections"),
        ],
    ),
    (
        "Buffer cache hit ratio",
        "percentunit",
        [
            (
                f"sum by (db_namespace) (rate(postgresql_blks_hit_total{{{J}}}[{RI}])) / "
                f"(sum by (db_namespace) (rate(postgresql_blks_hit_total{{{J}}}[{RI}])) + "
                f"sum by (db_namespace) (rate(postgresql_blks_read_total{{{J}}}[{RI}])))",
                "{{db_namespace}}",
            )
        ],
    ),
    (
        "Index scans by index",
        "ops",
        [
            (
                f"topk(20, sum by (db_collection_name, postgresql_index_name) "
                f"(rate(postgresql_index_scans_total{{{J}}}[{RI}])))",
                "{{db_collection_name}}.{{postgresql_index_name}}",
            )
        ],
    ),
    (
        "Unused indexes (no scans in the range), by size",
        "bytes",
        [
            (
                f"max by (db_collection_name, postgresql_index_name) (postgresql_index_size_bytes{{{J}}})"
                f" and on (db_collection_name, postgresql_index_name) "
                f"(sum by (db_collection_name, postgresql_index_name) "
                f"(increase(postgresql_index_scans_total{{{J}}}[$__range])) == 0)",
                "{{db_collection_name}}.{{postgresql_index_name}}",
            )
        ],
    ),
    (
        "Index count and total index size",
        "short",
        [(f"sum by (db_namespace) (postgresql_index_count{{{J}}})", "indexes {{db_namespace}}")],
    ),
    (
        "Sequential scans by table",
        "ops",
        [
            (
                f"topk(20, sum by (db_collection_name) "
                f"(rate(postgresql_sequential_scans_total{{{J}}}[{RI}])))",
                "{{db_collection_name}}",
            )
        ],
    ),
    (
        "Dead tuples by table",
        "short",
        [
            (
                f"topk(20, sum by (db_collection_name) "
                f'(postgresql_rows{{{J},postgresql_row_state="dead"}}))',
                "{{db_collection_name}}",
            )
        ],
    ),
    (
        "Database size",
        "bytes",
        [(f"max by (db_namespace) (postgresql_db_size_bytes{{{J}}})", "{{db_namespace}}")],
    ),
    (
        "Largest tables",
        "bytes",
        [
            (
                f"topk(10, max by (db_collection_name) (postgresql_table_size_bytes{{{J}}}))",
                "{{db_collection_name}}",
            )
        ],
    ),
    (
        "Slow statements (mean time)",
        "s",
        [
            (
                f"topk(10, max by (db_query_text) (postgresql_statement_mean_time_seconds{{{J}}}))",
                "{{db_query_text}}",
            )
        ],
    ),
    (
        "Longest idle-in-transaction session",
        "s",
        [
            (
                f"max by (db_namespace) (postgresql_idle_in_transaction_max_duration_seconds{{{J}}})",
                "{{db_namespace}}",
            )
        ],
    ),
]

REDIS: list[Panel] = [
    (
        "Up",
        "short",
        [
            (
                f'max by (server_address) ({{__name__=~"redis_up(_ratio)?",{J}}})',
                "{{server_address}}",
            )
        ],
    ),
    (
        "Commands per second",
        "ops",
        [
            (
                f"sum by (server_address) (rate(redis_commands_processed_total{{{J}}}[{RI}]))",
                "{{server_address}}",
            )
        ],
    ),
    (
        "Keyspace hit ratio",
        "percentunit",
        [
            (
                f"sum(rate(redis_keyspace_hits_total{{{J}}}[{RI}])) / "
                f"(sum(rate(redis_keyspace_hits_total{{{J}}}[{RI}])) + "
                f"sum(rate(redis_keyspace_misses_total{{{J}}}[{RI}])))",
                "hits",
            )
        ],
    ),
    (
        "Memory",
        "bytes",
        [
            (f"max by (server_address) (redis_memory_used_bytes{{{J}}})", "used"),
            (f"max by (server_address) (redis_memory_rss_bytes{{{J}}})", "rss"),
        ],
    ),
    (
        "Connected clients",
        "short",
        [(f"max by (server_address) (redis_clients_connected{{{J}}})", "{{server_address}}")],
    ),
    ("Keys", "short", [(f"sum by (db_namespace) (redis_db_keys{{{J}}})", "db {{db_namespace}}")]),
    (
        "Evicted and expired keys",
        "ops",
        [
            (f"sum(rate(redis_keys_evicted_total{{{J}}}[{RI}]))", "evicted"),
            (f"sum(rate(redis_keys_expired_total{{{J}}}[{RI}]))", "expired"),
        ],
    ),
]

DASHBOARDS = {
    "bot-overview.json": ("otelbot-bot-overview", "otelbot: Bot overview", BOT),
    "postgresql.json": ("otelbot-postgresql", "otelbot: PostgreSQL", POSTGRES),
    "redis.json": ("otelbot-redis", "otelbot: Redis", REDIS),
}


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, object]:
    ds = {"type": "prometheus", "uid": "${datasource}"}
    out = []
    for i, (ptitle, unit, targets) in enumerate(panels):
        out.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": ptitle,
                "datasource": ds,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(65 + k), "datasource": ds, "expr": expr, "legendFormat": legend}
                    for k, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["otelbot"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                    "current": {},
                },
                {
                    "name": "job",
                    "type": "query",
                    "label": "Job",
                    "datasource": ds,
                    "query": {"query": "label_values(target_info, job)", "refId": "job"},
                    "definition": "label_values(target_info, job)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "current": {},
                },
            ]
        },
        "panels": out,
    }


def render() -> dict[str, str]:
    return {
        name: json.dumps(dashboard(*spec), indent=2) + "\n" for name, spec in DASHBOARDS.items()
    }


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / name).write_text(text)
