"""Test and demo helpers that ship with otelbot (docs/testing.md): a fake Bot API and an
OTLP receiver (both also commands), in-memory telemetry, a token scan for exported bytes,
a child-process wrapper, the test defaults, and a reader of the runtime stats file."""
