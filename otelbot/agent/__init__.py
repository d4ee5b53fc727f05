"""otelbot's sidecar agent: the bot process, its runtime stats, PostgreSQL and Redis health.

Runs beside the bot (a Kubernetes sidecar or a systemd unit) and exports over OTLP. It never
imports ``otelbot.instrumentation``: the two halves share only the catalogue
(``otelbot.semconv``) and the runtime stats file layout. From the rest of otelbot it uses
``otelbot.export.endpoint`` (the one-line "endpoint down / back" reporting, which imports
only the OpenTelemetry SDK). See docs/agent.md.
"""
