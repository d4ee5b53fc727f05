"""Getting telemetry out: the ``opentelemetry-instrument`` distro and configurator, and the
span export helper (``otelbot_offload``)."""
