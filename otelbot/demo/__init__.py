"""``otelbot demo``: the whole product on one machine, with no backend to install.

It loads the demo schema into PostgreSQL, starts the fake Bot API, runs
the demo bot (``bot/``, package data) under the real ``opentelemetry-instrument`` and a real
``otelbot-agent run`` beside it, both exporting OTLP to ``otelbot watch`` running inside the
demo (its live page's URL is printed at the start; ``--keep`` leaves it up after the run),
drives a mix of updates at the bot, and prints what watch received (terminal and HTML).

- ``fake_api``: the fake Bot API with per-chat flood control (429 + retry_after);
- ``load``: the update mix and the driver that pushes it;
- ``run``: the orchestration (services, schema, processes, progress display);
- ``analysis``: the report's numbers from watch's store and tap, and the findings the bot
  and the agent sent;
- ``render``: the report as rich tables and as a self-contained HTML file.
"""
