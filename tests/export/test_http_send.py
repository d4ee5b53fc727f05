"""``otelbot.export.http_send``, the export helper's OTLP/HTTP sender, against a real OTLP
receiver: it reads the settings as the SDK's exporter does, the collector gets the same
request and headers as from the SDK's client, it retries what the SDK retries, keeps its
connection, checks TLS, and the helper process that uses it imports neither the SDK's
exporter nor ``requests`` nor protobuf."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.util.re import parse_env_headers

from otelbot.export import http_send
from otelbot.export.helper import FLUSH, FRAME_HEADER, SPANS
from otelbot.export.otlp import encode_rows
from otelbot.export.otlp_http import OtlpHttpSpanExporter
from otelbot.export.rows import SpanBatch, read_rows
from otelbot.testing.otlp_receiver import OtlpReceiver
from tests.export.test_otlp_http import ended_spans

OTEL_VARIABLES = [
    name
    for name in os.environ
    if name.startswith("OTEL_") or name in http_send.SDK_CLIENT_VARIABLES
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name)


class Receiver(OtlpReceiver):
    """The real receiver, keeping each request's headers and client address, answering the
    statuses in ``script`` first (``Retry-After: 0``), and over TLS when given a context."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(grpc_port=None)
        self.tls = tls
        self.script: list[int] = []
        self.headers: list[dict[str, str]] = []
        self.peers: list[tuple[str, int]] = []

    @property
    def traces_url(self) -> str:
        if self.tls is None:
            return f"{self.http_endpoint}/v1/traces"
        return f"https://localhost:{self.http_port}/v1/traces"

    def start(self) -> Receiver:
        if self.tls is None:
            super().start()
            return self
        server = ThreadingHTTPServer((self.host, 0), self._handler_class())
        server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._http = server
        self.http_port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self
        base: Any = super()._handler_class()

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                receiver.peers.append(self.client_address)
                if not receiver.script:
                    super().do_POST()
                    return
                status = receiver.script.pop(0)
                receiver.reject(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(status)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


def rows_payload() -> bytes:
    batch = SpanBatch()
    for span in ended_spans():
        batch.add(span)
    return batch.payload()


def request_body(payload: bytes) -> bytes:
    rows = read_rows(payload)
    return encode_rows(rows.resources, rows.scopes, rows.rows)


def lean_sender() -> http_send.HttpSender:
    return http_send.HttpSender(http_send.settings_from_env())


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/custom/path",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b,X-Team = bots",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3.5",
        },
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "ignored=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "authorization=Bearer token with spaces",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "deflate",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "7",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2",
        },
        {"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
    ],
)
def test_the_settings_are_read_as_the_sdk_exporter_reads_them(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ours = http_send.settings_from_env()
    sdk = OTLPSpanExporter()
    sdk_headers = {k: v for k, v in sdk._client._headers.items() if k != "Content-Encoding"}
    assert ours.endpoint == sdk._endpoint
    assert ours.headers == sdk_headers
    assert ours.compression == sdk._compression.value
    assert ours.timeout == sdk._client._timeout
    assert ours.headers["user-agent"].startswith("OTel-OTLP-Exporter-Python/1.")
    sdk.shutdown()


@pytest.mark.parametrize(
    "text",
    [
        "a=1,b=2",
        " key = va%2Clue , other=x%3Dy=z",
        "Authorization=Bearer abc def",
        "bad header,ok=1,=novalue,semi=a;b",
        "k=caf%C3%A9, ,",
    ],
)
def test_header_lists_are_parsed_as_the_sdk_parses_them(text: str) -> None:
    assert http_send.parse_headers(text) == dict(parse_env_headers(text, liberal=True))


def test_only_what_requests_alone_honours_needs_the_sdk_client() -> None:
    assert http_send.needs_sdk_client({}) is None
    assert http_send.needs_sdk_client({"REQUESTS_CA_BUNDLE": "/etc/ca.pem"}) is None
    for name in (
        "HTTPS_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    ):
        assert http_send.needs_sdk_client({name: "x"}) == name


# ------------------------------------------------------------------------------ the wire


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
def test_the_collector_gets_what_the_sdk_client_sends(
    compression: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x-team=bots")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    payload = rows_payload()
    sent = lean_sender().send(request_body(payload))
    assert sent == http_send.Sent(True, 200, None)
    sdk = OtlpHttpSpanExporter()  # today's way in the helper: the SDK's client, our encoder
    assert sdk.export(read_rows(payload)) is SpanExportResult.SUCCESS
    assert receiver.rejected == 0
    assert len(receiver.raw) == 2 and receiver.raw[0] == receiver.raw[1]  # decompressed
    assert sorted(s.name for s in receiver.spans()) == ["SELECT", "SELECT", "update", "update"]
    keys = ("content-type", "user-agent", "content-encoding", "api-key", "x-team")
    ours, theirs = ({k: h.get(k) for k in keys} for h in receiver.headers)
    assert ours == theirs
    assert ours["api-key"] == "a b" and ours["content-type"] == "application/x-protobuf"
    assert ours["content-encoding"] == (None if compression == "none" else compression)
    sdk.shutdown()


def test_one_connection_serves_every_export(receiver: Receiver, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    sender = lean_sender()
    body = request_body(rows_payload())
    assert all(sender.send(body).ok for _ in range(3))
    assert len(receiver.peers) == 3 and len(set(receiver.peers)) == 1
    sender.close()
    assert sender.send(body).ok  # a new connection after close
    assert len(set(receiver.peers)) == 2


def test_retryable_statuses_are_retried_until_the_batch_is_taken(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    receiver.script = [503, 429, 502, 504]
    assert lean_sender().send(request_body(rows_payload())).ok
    assert receiver.rejected == 4 and len(receiver.headers) == 5
    assert [s.name for s in receiver.spans()] == ["SELECT", "update"]  # taken once


def test_a_status_that_is_not_retryable_fails_the_export_at_once(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    receiver.script = [400, 503]
    sent = lean_sender().send(request_body(rows_payload()))
    assert sent == http_send.Sent(False, 400, "HTTP 400 Bad Request")
    assert len(receiver.headers) == 1 and receiver.spans() == []


def test_retries_stop_at_the_export_timeout(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    receiver.refuse_status = 503  # always; no Retry-After: the first backoff (~1 s) is too long
    sent = lean_sender().send(request_body(rows_payload()))
    assert sent == http_send.Sent(False, 503, "HTTP 503 Service Unavailable")
    assert receiver.rejected == 1


def test_a_request_over_the_size_limit_is_not_sent(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    settings = http_send.settings_from_env()._replace(max_request_size=10)
    with caplog.at_level(logging.WARNING):
        sent = http_send.HttpSender(settings).send(request_body(rows_payload()))
    assert not sent.ok and receiver.headers == []
    assert "over the OTLP request size limit of 10 bytes" in caplog.text


def test_a_refused_connection_says_so() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        settings = http_send.settings_from_env(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5",
            }
        )
        sent = http_send.HttpSender(settings).send(b"")
    assert sent == http_send.Sent(False, None, "Connection refused")


class ClosingServer:
    """Answers one request per connection with 200 and then closes it, without saying
    ``Connection: close``: what a kept-alive connection the server dropped looks like."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_a_dropped_kept_alive_connection_is_replaced_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = ClosingServer()
    sender = http_send.HttpSender(
        http_send.settings_from_env(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.port}"}
        )
    )
    with caplog.at_level(logging.DEBUG, logger="otelbot"):
        assert sender.send(b"one").ok
        assert sender.send(b"two").ok  # on the dropped connection first, then on a new one
    assert server.connections == 2
    assert "retrying" not in caplog.text  # no backoff: the connection was retried at once
    server.sock.close()


# ------------------------------------------------------------------------------ TLS


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed server certificate for localhost, and a client certificate."""
    where = tmp_path_factory.mktemp("tls")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=otelbot-client")):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(where / f"{name}.key"), "-out", str(where / f"{name}.pem"),
            "-subj", subject, "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        )  # fmt: skip
    return where


def tls_receiver(certificates: Path, client_certificates: bool = False) -> Receiver:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    if client_certificates:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certificates / "client.pem")
    return Receiver(tls=context).start()


def test_https_with_the_configured_ca_certificate(
    certificates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = tls_receiver(certificates)
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
        body = request_body(rows_payload())
        unverified = lean_sender().send(body)  # control: the server's CA is not trusted
        assert not unverified.ok
        assert unverified.reason is not None and "certificate verify failed" in unverified.reason
        assert receiver.headers == []
        server_ca = str(certificates / "server.pem")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", server_ca)
        assert lean_sender().send(body).ok
        assert [s.name for s in receiver.spans()] == ["SELECT", "update"]
        # requests' own CA variable is trusted too, as requests trusts it
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server_ca)
        assert lean_sender().send(body).ok
    finally:
        receiver.stop()


def test_https_with_a_client_certificate(
    certificates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = tls_receiver(certificates, client_certificates=True)
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(certificates / "server.pem"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
        body = request_body(rows_payload())
        assert not lean_sender().send(body).ok  # control: the server wants a certificate
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(certificates / "client.pem")
        )
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(certificates / "client.key"))
        assert lean_sender().send(body).ok
        assert len(receiver.spans()) == 2
    finally:
        receiver.stop()


# ------------------------------------------------------------------------------ the helper

# The helper's own main loop in a real `python -I` process; once it has exited (EOF), the
# modules it had imported, on stderr.
HELPER = """
import sys
from otelbot.export.helper import main
code = main(["--log-level=10"])
sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""

#: Never in the lean helper. (``opentelemetry.trace`` and ``opentelemetry.sdk.util`` are:
#: ``otelbot.export.otlp`` probes their classes when it is imported.)
HEAVY = (
    "requests",
    "urllib3",
    "google.protobuf",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "opentelemetry.semconv",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.resources",
    "opentelemetry.sdk._logs",
    "opentelemetry.sdk.metrics",
    "ssl",
    "http.client",
)


def run_helper(env: dict[str, str]) -> tuple[str, list[str]]:
    frames = FRAME_HEADER.pack(SPANS, len(payload := rows_payload())) + payload
    frames += FRAME_HEADER.pack(FLUSH, 0)
    done = subprocess.run(
        [sys.executable, "-I", "-c", HELPER],
        input=frames,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == b"ok\n", done.stderr.decode()
    err = done.stderr.decode()
    modules = next(line for line in err.splitlines() if line.startswith("MODULES ")).split()[1:]
    return err, modules


def heavy_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_the_helper_sends_without_the_sdk_exporter_requests_or_protobuf(
    receiver: Receiver,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in OTEL_VARIABLES}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint
    err, modules = run_helper(env)
    assert "with otelbot.export.http_send" in err
    assert heavy_modules(modules) == []
    assert sorted(s.name for s in receiver.spans()) == ["SELECT", "update"]


def test_with_a_proxy_variable_the_helper_sends_with_the_sdk_client(receiver: Receiver) -> None:
    env = {k: v for k, v in os.environ.items() if k not in OTEL_VARIABLES}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint
    # requests would use it for an https endpoint; this one is http, so it goes direct.
    env["HTTPS_PROXY"] = "http://127.0.0.1:9"
    err, modules = run_helper(env)
    assert (
        "SDK's exporter otelbot.export.otlp_http.OtlpHttpSpanExporter (HTTPS_PROXY is set)" in err
    )
    assert "requests" in modules and "opentelemetry.exporter.otlp.proto.http" in modules
    assert sorted(s.name for s in receiver.spans()) == ["SELECT", "update"]
