"""The head beacon's HTTP (ingest/beacon.py) against a real loopback server: one connection kept
alive across polls, its validators sent back, a connection the server closed between polls
replaced without an error, and the answers that name no commit refused as HeadBeaconFailed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler import reasons
from reconciler.errors import Transient
from reconciler.ingest.beacon import BODY_LIMIT, Beacon
from reconciler.settings import FetchLimits

HEAD = "0123456789abcdef0123456789abcdef01234567"


class _Beacon(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections = 0
    seen: list[dict[str, str]] = []
    body = f"{HEAD}\n".encode()
    status = 200
    close_after_answer = False

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:
        cls = type(self)
        cls.seen.append(dict(self.headers))
        if cls.status == 200 and self.headers.get("If-None-Match") == '"v1"':
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        else:
            self.send_response(cls.status)
            self.send_header("ETag", '"v1"')
            if cls.status == 302:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", str(len(cls.body)))
            self.end_headers()
            self.wfile.write(cls.body)
        if cls.close_after_answer:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[type[_Beacon], str]]:
    handler = type("Handler", (_Beacon,), {"connections": 0, "seen": []})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/fleet.git.head"
        httpd.shutdown()
        thread.join()


def test_polls_share_one_connection_and_send_the_etag_back(server):
    handler, url = server
    beacon = Beacon(url, FetchLimits())
    try:
        assert [beacon.poll() for _ in range(3)] == [HEAD, None, None]
    finally:
        beacon.close()
    assert handler.connections == 1
    assert [seen.get("If-None-Match") for seen in handler.seen] == [None, '"v1"', '"v1"']


def test_a_connection_the_server_closed_is_replaced_without_an_error(server):
    handler, url = server
    handler.close_after_answer = True
    beacon = Beacon(url, FetchLimits())
    try:
        assert [beacon.poll() for _ in range(3)] == [HEAD, None, None]
    finally:
        beacon.close()
    assert handler.connections == 3


@pytest.mark.parametrize(("status", "body", "said"), [
    (200, b"x" * (BODY_LIMIT + 1), f"a body over {BODY_LIMIT} bytes"),
    (200, b"<html>maintenance</html>", "its body names no commit"),
    (302, b"", "HTTP 302 (redirects are not followed"),
    (503, b"busy", "HTTP 503"),
])
def test_an_answer_that_names_no_commit_is_refused(server, status, body, said):
    handler, url = server
    handler.status, handler.body = status, body
    beacon = Beacon(url, FetchLimits())
    try:
        with pytest.raises(Transient) as refused:
            beacon.poll()
    finally:
        beacon.close()
    assert refused.value.reason == reasons.HeadBeaconFailed
    assert said in refused.value.message
