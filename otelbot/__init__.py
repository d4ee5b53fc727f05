"""otelbot: OpenTelemetry for Python Telegram bots."""

__version__ = "0.1.0"
