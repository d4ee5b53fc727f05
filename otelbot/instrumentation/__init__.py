"""In-process instrumentation, loaded by ``opentelemetry-instrument`` through entry points.

pip install otelbot
opentelemetry-instrument python bot.py
"""
