"""Diagnosis: the detectors that turn one bot's telemetry into findings.

The update instrumentations (aiogram, ...) open an :class:`~otelbot.diagnosis.notes.UpdateNotes`
for every sampled update; the SQL, Redis, Bot API and HTTP instrumentations append one
small tuple per operation to it; when the update ends, before its span ends, every
detector looks at the notes (and keeps its own per-handler counters), and what it finds
goes out through :mod:`otelbot.diagnosis.report` as an OTel log record, a span event on
the update and a count in ``otelbot.findings``. docs/findings.md lists every kind.
"""
