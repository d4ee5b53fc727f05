"""watch embedded in another program (the demo): the page falls back to a free port when its
address is taken, the tap keeps every export body as it came, valid or not, and the store is
read on watch's own loop."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from otelbot.watch.embedded import EmbeddedWatch
from otelbot.watch.options import WatchOptions
from tests.watch._bodies import updates


def _options(ui_port: int) -> WatchOptions:
    return WatchOptions(otlp_http=("127.0.0.1", 0), otlp_grpc=None, ui=("127.0.0.1", ui_port))


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _post(url: str, body: bytes, **headers: str) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-protobuf", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_taken_page_address_falls_back_to_a_free_port(taken_port: int) -> None:
    embedded = EmbeddedWatch(_options(taken_port)).start()
    try:
        port = embedded.watch.ui_port
        assert port not in (0, taken_port)
        assert embedded.ui_url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(embedded.ui_url + "api/health", timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
    finally:
        embedded.stop()


def test_without_fallback_a_taken_page_address_is_an_error(taken_port: int) -> None:
    embedded = EmbeddedWatch(_options(taken_port), ui_fallback=False)
    with pytest.raises(OSError):
        embedded.start()


def test_the_tap_keeps_every_body_and_the_store_decodes_the_valid_ones() -> None:
    embedded = EmbeddedWatch(_options(0)).start()
    try:
        good = updates(3, service="tap-bot")
        url = embedded.http_endpoint + "/v1/traces"
        assert _post(url, gzip.compress(good), **{"Content-Encoding": "gzip"}) == 200
        assert _post(url, b"\xff\xfe not protobuf") == 400
        assert embedded.tap.requests == 2
        assert embedded.tap.bodies["traces"] == [good, b"\xff\xfe not protobuf"]
        assert embedded.tap.raw() == good + b"\xff\xfe not protobuf"
        kept = embedded.call(lambda: (embedded.store.update_count, sorted(embedded.store.services)))
        assert kept == (3, ["tap-bot"])
    finally:
        embedded.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(embedded.ui_url + "api/health", timeout=5)
