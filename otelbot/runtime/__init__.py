"""The bot's runtime seen from inside: garbage collector, event loop, process, and the
runtime stats file the agent reads (``OTELBOT_RUNTIME_DIR``). Installed by
``otelbot.instrumentation.runtime.RuntimeInstrumentor``."""
