"""The SDK's OTLP/HTTP span exporter with otelbot's encoder (the default on one CPU).

    OTEL_TRACES_EXPORTER=otelbot_otlp opentelemetry-instrument python bot.py
    OTEL_TRACES_EXPORTER=otlp opentelemetry-instrument python bot.py   # the SDK's, untouched

``OtlpHttpSpanExporter`` is the SDK's ``OTLPSpanExporter`` (opentelemetry-exporter-otlp-
proto-http) with one change: a batch is encoded by ``otelbot.export.otlp``, which writes
the same bytes as the SDK's encoder at a tenth of its CPU, not by building protobuf
objects. Everything else is the SDK's own: the ``OTEL_EXPORTER_OTLP_*`` settings, the HTTP
client with its retries, backoff, compression, headers and TLS, the request size limit,
the exporter's own metrics and its log lines (which ``otelbot.export.endpoint`` turns into
one line per outage). The export helper process sends with it only where its own sender
(``otelbot.export.http_send``) does not apply: behind a proxy, a credential provider or a
.netrc (``encode_rows`` for its rows, ``otelbot.export.helper``).

If a later SDK keeps its HTTP client elsewhere (this reads its private ``_client``,
``_metrics`` and ``_max_request_size``), the exporter says so once and exports as the SDK
does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http import trace_exporter as sdk_http
from opentelemetry.sdk.trace.export import SpanExportResult

from otelbot.export import otlp
from otelbot.export.rows import RawBatch

logger = logging.getLogger("otelbot")

#: What ``export`` needs of the SDK exporter besides its public interface...
_NEEDED = ("_client", "_metrics", "_max_request_size", "_shutdown")
#: ... and of its module.
_MODULE_NEEDS = (
    "_logger",
    "_is_request_too_large",
    "RequestPayloadTooLargeError",
    "HTTP_RESPONSE_STATUS_CODE",
)


class OtlpHttpSpanExporter(sdk_http.OTLPSpanExporter):
    """``OTLPSpanExporter`` (HTTP/protobuf) encoding with ``otelbot.export.otlp``; takes
    SDK ``ReadableSpan``s, light spans, or a helper's ``RawBatch`` of rows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = all(hasattr(self, name) for name in _NEEDED) and all(
            hasattr(sdk_http, name) for name in _MODULE_NEEDS
        )
        if not self.fast:
            logger.warning(
                "otelbot: this OTLP/HTTP exporter version keeps its client elsewhere; "
                "spans are encoded by the SDK's encoder"
            )

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if not self.fast:
            if isinstance(spans, RawBatch):  # only the helper passes rows; it checks fast
                return SpanExportResult.FAILURE
            return super().export(spans)
        if self._shutdown:
            return super().export(spans)  # the SDK's line and result
        with self._metrics.export_operation(len(spans)) as result:
            try:
                if isinstance(spans, RawBatch):
                    data = otlp.encode_rows(spans.resources, spans.scopes, spans.rows)
                else:
                    data = otlp.encode_spans(spans)
            except Exception as error:
                sdk_http._logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if sdk_http._is_request_too_large(data, self._max_request_size):
                sdk_http._logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(data),
                    self._max_request_size,
                )
                result.error = sdk_http.RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {sdk_http.HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                    if sent.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
