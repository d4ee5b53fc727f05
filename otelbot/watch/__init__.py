"""``otelbot watch``: a local OTLP receiver with a live page and a terminal view, for a bot
on one machine with no backend (docs/watch.md)::

    otelbot watch                               # receivers on :4318 (HTTP) and :4317 (gRPC)
    opentelemetry-instrument python bot.py      # the SDK's default endpoint: no configuration
    # open http://127.0.0.1:4320/

``store`` keeps what arrives (bounded by retention and a span cap), ``receiver`` decodes
OTLP into it, ``views`` turns it into the figures, ``api`` serves them and the page,
``server`` runs it all on one event loop and ``cli`` is the command.
"""
