"""OTLP/HTTP for the span export helper, with the standard library only.

    from otelbot.export import http_send
    if http_send.needs_sdk_client() is None:        # no proxy, no credential provider, ...
        sender = http_send.HttpSender(http_send.settings_from_env())
        sent = sender.send(body)    # body: a serialized ExportTraceServiceRequest
        sent.ok, sent.reason        # True, None; or False, "Connection refused", "HTTP 400 ..."
        sender.close()

The SDK's OTLP/HTTP span exporter sends through ``requests`` and, to be built, imports the
SDK, its protobuf messages and the semantic conventions: about 24 MB of the export
helper's 37 MB (measured here). The helper encodes its rows itself
(``otelbot.export.otlp.encode_rows``), so all it needs of that exporter is the sending.
This module sends the same way on a plain socket (``ssl`` only for an ``https`` endpoint;
even ``http.client`` would load ``ssl`` and the ``email`` parser, ~7 MB):

- where: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is, else ``OTEL_EXPORTER_OTLP_ENDPOINT``
  + ``/v1/traces``, else ``http://localhost:4318/v1/traces``; user and password in the
  URL become Basic authentication, as ``requests`` makes them;
- what: ``Content-Type: application/x-protobuf`` and the SDK exporter's ``User-Agent``
  (``OTel-OTLP-Exporter-Python/<its version>``), then the headers of
  ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` or ``OTEL_EXPORTER_OTLP_HEADERS`` (``key=value``
  pairs, URL-decoded, names lower-cased, values not URL-encoded accepted too);
  ``OTEL_EXPORTER_OTLP[_TRACES]_COMPRESSION`` ``gzip``, ``deflate`` or ``none`` (with
  ``Content-Encoding``); a request over 64 MiB before compression is dropped, not sent;
- TLS: the server's certificate is checked against ``OTEL_EXPORTER_OTLP[_TRACES]_CERTIFICATE``
  (a CA file or directory) and ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` (which
  ``requests`` prefers even to the first), else against the ``certifi`` bundle ``requests``
  uses (the system's when it is missing); ``..._CLIENT_CERTIFICATE`` and
  ``..._CLIENT_KEY`` for mutual TLS;
- retries: ``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT`` (seconds, default 10) bounds one
  export, retries included; at most 6 attempts; HTTP 429, 502, 503 and 504 and
  connection errors are retried after 1, 2, 4, ... s (±20%), or the ``Retry-After`` the
  server asks for, while that fits in the time left; a connection error is retried once
  at once first (a kept-alive connection the server had closed); any other status is
  final; 2xx and 3xx are success (redirects are not followed).

``needs_sdk_client()`` names what only the SDK's ``requests`` client honours (a proxy, a
credential provider, a ``.netrc``); the helper then sends with the SDK's exporter as
before.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

logger = logging.getLogger("otelbot.export.http_send")

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "v1/traces"
DEFAULT_TIMEOUT = 10.0
#: Larger requests (before compression) are dropped, as the SDK's exporter drops them.
MAX_REQUEST_SIZE = 64 * 1024 * 1024
MAX_ATTEMPTS = 6
JITTER = 0.2
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
COMPRESSIONS = ("none", "gzip", "deflate")

#: What only the SDK's client (``requests``) honours: with any of these set, the helper
#: sends with it.
SDK_CLIENT_VARIABLES = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NETRC",
)
_NETRC_FILES = ("~/.netrc", "~/_netrc")

_MAX_LINE = 65536
_MAX_HEADERS = 100

# The header list format of the OTLP exporter specification (W3C baggage without
# properties): a key is a token, a value URL-encoded printable ASCII; "liberal" parsing
# also takes values with spaces that are not URL-encoded, as is.
_OWS = "[ \t]*"
_KEY = r"[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+"
_ENCODED_VALUE = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_PLAIN_VALUE = r"[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_VERSION = re.compile(r"""__version__\s*=\s*["']([^"']+)["']""")


class HttpSettings(NamedTuple):
    """Where and how the spans go, as the SDK's OTLP/HTTP span exporter reads them."""

    endpoint: str
    headers: dict[str, str]  # lower-case names
    compression: str  # one of COMPRESSIONS
    timeout: float  # seconds, for one export with its retries
    #: CA files or directories the server's certificate may chain to; none: certifi's
    #: bundle (as requests), else the system's.
    ca_certificates: tuple[str, ...]
    client_certificate: str | None
    client_key: str | None
    max_request_size: int = MAX_REQUEST_SIZE  # 0 or less: no limit


class Sent(NamedTuple):
    """The outcome of one export: ``reason`` says in a few words why it failed."""

    ok: bool
    status: int | None = None
    reason: str | None = None


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


def needs_sdk_client(env: Mapping[str, str] | None = None) -> str | None:
    """The setting only the SDK's ``requests`` client honours, if one is set: a proxy, a
    credential provider, a ``.netrc`` (credentials by host)."""
    env = os.environ if env is None else env
    for name in SDK_CLIENT_VARIABLES:
        if env.get(name):
            return name
    for path in _NETRC_FILES:
        if os.path.exists(os.path.expanduser(path)):
            return path
    return None


def parse_headers(text: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` as the SDK reads ``OTEL_EXPORTER_OTLP_HEADERS``: URL-encoded
    pairs are decoded, others (values with spaces) taken as they are; names lower-cased; a
    pair that fits neither is left out with a warning."""
    encoded = re.compile(f"{_OWS}{_KEY}{_OWS}={_OWS}{_ENCODED_VALUE}{_OWS}")
    plain = re.compile(f"{_OWS}{_KEY}{_OWS}={_OWS}{_PLAIN_VALUE}{_OWS}")
    headers: dict[str, str] = {}
    for pair in re.split(r"[ \t]*,[ \t]*", text):
        pair = pair.strip()
        if not pair:
            continue
        if encoded.fullmatch(pair):
            name, value = pair.split("=", 1)
            headers[unquote(name).strip().lower()] = unquote(value).strip()
        elif plain.fullmatch(pair):
            name, value = pair.split("=", 1)
            headers[name.strip().lower()] = value.strip()
        else:
            logger.warning(
                "otelbot: an OTLP header is left out: %r is not name=value (a URL-encoded "
                "value, or plain text without commas, quotes, semicolons or backslashes)",
                pair,
            )
    return headers


def user_agent() -> str:
    """The SDK's OTLP/HTTP exporter's User-Agent, read from its version file (importing
    the package, or ``importlib.metadata``, would cost more than this whole sender)."""
    version = None
    relative = os.path.join("opentelemetry", "exporter", "otlp", "proto", "http", "version")
    for entry in sys.path:
        try:
            with open(os.path.join(entry or ".", relative, "__init__.py"), encoding="utf-8") as f:
                found = _VERSION.search(f.read())
        except OSError:
            continue
        if found:
            version = found.group(1)
            break
    return "OTel-OTLP-Exporter-Python/" + version if version else "OTel-OTLP-Exporter-Python"


def settings_from_env(env: Mapping[str, str] | None = None) -> HttpSettings:
    """The trace exporter's settings from the ``OTEL_EXPORTER_OTLP_*`` variables; a value the
    SDK would refuse (compression, timeout) falls back to its default with a warning."""
    env = os.environ if env is None else env
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT).removesuffix("/")
        + "/"
        + TRACES_PATH
    )
    headers = {"content-type": "application/x-protobuf", "user-agent": user_agent()}
    headers.update(
        parse_headers(
            _first(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or ""
        )
    )
    compression = (
        (
            _first(env, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
            or "none"
        )
        .strip()
        .lower()
    )
    if compression not in COMPRESSIONS:
        logger.warning(
            "otelbot: unsupported OTLP compression %r; sending uncompressed", compression
        )
        compression = "none"
    timeout_text = _first(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    try:
        timeout = DEFAULT_TIMEOUT if timeout_text is None else float(timeout_text)
    except ValueError:
        logger.warning(
            "otelbot: invalid OTLP timeout %r; using %s seconds", timeout_text, DEFAULT_TIMEOUT
        )
        timeout = DEFAULT_TIMEOUT
    return HttpSettings(
        endpoint=endpoint,
        headers=headers,
        compression=compression,
        timeout=timeout,
        ca_certificates=tuple(
            path
            for path in (
                _first(
                    env, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"
                ),
                _first(env, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
            )
            if path
        ),
        client_certificate=_first(
            env,
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ),
        client_key=_first(
            env, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"
        ),
    )


class _Unsendable(Exception):
    """The request cannot be made as configured (URL, TLS files, headers): not retried."""


class _BadResponse(OSError):
    """The server's answer is not HTTP/1.x: retried as a connection error (the socket is
    dropped)."""


def reason_of(error: BaseException) -> str:
    """A connection error in a few words: ``Connection refused``, ``timed out``,
    ``Name or service not known``, ``certificate verify failed: self-signed certificate``."""
    verify_message = getattr(error, "verify_message", None)  # ssl.SSLCertVerificationError
    if verify_message:
        return f"certificate verify failed: {verify_message}"
    if isinstance(error, TimeoutError):
        return "timed out"
    library = getattr(error, "library", None)  # ssl.SSLError
    if library is not None:
        return f"TLS: {getattr(error, 'reason', None) or error}"
    if isinstance(error, OSError) and error.strerror and not isinstance(error, _BadResponse):
        return error.strerror
    return str(error) or type(error).__name__


class _Connection:
    """One kept-alive HTTP/1.1 connection: the socket and a buffered reader on it."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class HttpSender:
    """POSTs OTLP requests to one endpoint with the SDK exporter's retry rules, on one
    connection kept open between exports. Not thread-safe: the helper sends one batch at a
    time."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self._conn: _Connection | None = None
        self._context: Any = None  # ssl.SSLContext, made at the first https connection
        self._problem: str | None = None  # why nothing can be sent (a bad URL or header)
        self._head = b""
        try:
            url = urlsplit(settings.endpoint)
            self._tls = url.scheme.lower() == "https"
            if url.scheme.lower() not in ("http", "https") or not url.hostname:
                raise ValueError(f"not an http(s) URL: {settings.endpoint!r}")
            self._host = url.hostname
            self._port = url.port or (443 if self._tls else 80)
            self._head = self._request_head(url, settings)
        except (ValueError, UnicodeError) as exc:
            self._problem = f"cannot send to {settings.endpoint}: {exc}"
            logger.warning("otelbot: %s", self._problem)

    @staticmethod
    def _request_head(url: Any, settings: HttpSettings) -> bytes:
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        if url.port is not None:
            host += f":{url.port}"
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = dict(settings.headers)
        if settings.compression != "none" and "content-encoding" not in headers:
            headers["content-encoding"] = settings.compression
        if url.username is not None or url.password is not None:
            import base64

            pair = f"{unquote(url.username or '')}:{unquote(url.password or '')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode("latin-1")).decode()
        host = headers.pop("host", host)  # a Host header of the user's wins, as in requests
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"the header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    # ------------------------------------------------------------------ exports
    def send(self, data: bytes) -> Sent:
        """Send one serialized request; retry as the SDK's exporter does; say how it went."""
        if self._problem is not None:
            return Sent(False, None, self._problem)
        limit = self.settings.max_request_size
        if 0 < limit < len(data):
            logger.warning(
                "otelbot: a span batch of %d bytes is dropped: over the OTLP request size "
                "limit of %d bytes",
                len(data),
                limit,
            )
            return Sent(False, None, f"request of {len(data)} bytes over the size limit")
        body = self._compress(data)
        deadline = time.monotonic() + self.settings.timeout
        status: int | None = None
        reason: str | None = None
        for attempt in range(MAX_ATTEMPTS):
            status, reason, retry_after, retryable = self._post(body, deadline)
            if status is not None and 200 <= status < 400:
                return Sent(True, status, None)
            if not retryable:
                break
            backoff = retry_after
            if backoff is None:
                import random

                backoff = 2**attempt * random.uniform(1 - JITTER, 1 + JITTER)
            if attempt + 1 == MAX_ATTEMPTS or backoff > deadline - time.monotonic():
                break
            logger.debug(
                "otelbot: exporting spans to %s: %s; retrying in %.2fs",
                self.endpoint,
                reason,
                backoff,
            )
            time.sleep(backoff)
        return Sent(False, status, reason)

    def _compress(self, data: bytes) -> bytes:
        if self.settings.compression == "gzip":
            import gzip

            return gzip.compress(data)
        if self.settings.compression == "deflate":
            import zlib

            return zlib.compress(data)
        return data

    def _post(self, body: bytes, deadline: float) -> tuple[int | None, str, float | None, bool]:
        """One attempt: (status, reason, Retry-After seconds, retryable). A connection error
        is tried again at once, on a new connection, while time is left."""
        error: BaseException | None = None
        for _ in range(2):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if error is None:
                    return None, "timed out", None, True
                break
            try:
                status, phrase, retry_after = self._exchange(body, remaining)
            except _Unsendable as exc:
                self.close()
                return None, str(exc), None, False
            except (OSError, ValueError) as exc:  # ValueError: a socket closed under us
                self.close()
                error = exc
                continue
            reason = f"HTTP {status} {phrase}".strip()
            if status in RETRYABLE_STATUSES:
                return status, reason, _retry_after_seconds(retry_after), True
            return status, reason, None, False
        assert error is not None
        return None, reason_of(error), None, True

    def _exchange(self, body: bytes, timeout: float) -> tuple[int, str, str | None]:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect(timeout)
        else:
            conn.sock.settimeout(timeout)
        conn.sock.sendall(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, phrase, headers, keep_alive = _read_response(conn.reader)
        if not keep_alive:
            self.close()
        return status, phrase, headers.get("retry-after")

    def _connect(self, timeout: float) -> _Connection:
        context = self._tls_context() if self._tls else None
        sock = socket.create_connection((self._host, self._port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _tls_context(self) -> Any:
        if self._context is not None:
            return self._context
        import ssl

        settings = self.settings
        cas = settings.ca_certificates or tuple(filter(None, [_certifi_bundle()]))
        try:
            if not cas:
                context = ssl.create_default_context()  # the system's CAs
            else:
                cafile, capath = _ca_location(cas[0])
                context = ssl.create_default_context(cafile=cafile, capath=capath)
                for ca in cas[1:]:
                    cafile, capath = _ca_location(ca)
                    context.load_verify_locations(cafile=cafile, capath=capath)
            if settings.client_certificate:
                context.load_cert_chain(settings.client_certificate, settings.client_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise _Unsendable(f"cannot load the TLS certificates: {reason_of(exc)}") from exc
        self._context = context
        return context

    def close(self) -> None:
        """Close the kept-alive connection (the next export opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


def _ca_location(path: str) -> tuple[str | None, str | None]:
    """(cafile, capath) for a CA file or directory."""
    return (None, path) if os.path.isdir(path) else (path, None)


def _certifi_bundle() -> str | None:
    """The CA bundle ``requests`` verifies with by default, where ``certifi`` is installed."""
    try:
        import certifi

        return str(certifi.where())
    except Exception:
        return None


def _retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if seconds == seconds and seconds != float("inf") else None
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        from datetime import timezone

        when = when.replace(tzinfo=timezone.utc)
    return max(when.timestamp() - time.time(), 0.0)


# ---------------------------------------------------------------------------- responses


def _line(reader: Any) -> bytes:
    line: bytes = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _BadResponse("a response line is too long")
    return line


def _read_response(reader: Any) -> tuple[int, str, dict[str, str], bool]:
    """Status, reason phrase, headers (lower-case names) and whether the connection stays
    open; the body is read and dropped (a collector's answer says nothing we use)."""
    while True:
        line = _line(reader)
        if not line:
            raise _BadResponse("the server closed the connection without a response")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, phrase = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _BadResponse(f"not an HTTP/1.x response: {line[:40]!r}")
        status = int(code)
        headers = _read_headers(reader)
        if 100 <= status < 200 and status != 101:
            continue  # an interim response: the real one follows
        break
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    if status in (101, 204, 304):
        return status, phrase.strip(), headers, keep_alive and status != 101
    if "chunked" in headers.get("transfer-encoding", "").lower():
        _skip_chunks(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise _BadResponse("a bad Content-Length") from None
        _skip(reader, length)
    else:  # the body ends with the connection
        while reader.read(_MAX_LINE):
            pass
        keep_alive = False
    return status, phrase.strip(), headers, keep_alive


def _read_headers(reader: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = _line(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise _BadResponse("the server closed the connection in the response headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            continue  # obsolete line folding or garbage: nothing we need
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise _BadResponse("too many response headers")


def _skip(reader: Any, length: int) -> None:
    while length > 0:
        chunk = reader.read(min(length, _MAX_LINE))
        if not chunk:
            raise _BadResponse("the server closed the connection in the response body")
        length -= len(chunk)


def _skip_chunks(reader: Any) -> None:
    while True:
        size_line = _line(reader)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadResponse("a bad chunk size") from None
        if size == 0:
            break
        _skip(reader, size + 2)  # the chunk and its CRLF
    while _line(reader) not in (b"\r\n", b"\n", b""):  # trailers
        pass
