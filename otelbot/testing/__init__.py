"""Test and demo helpers that ship with otelbot: a fake Bot API, an OTLP receiver,
and in-memory telemetry for tests."""
