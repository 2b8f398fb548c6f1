"""A real forward HTTP proxy on loopback, as a site's network would have one: plain http requests
in absolute form are forwarded, https goes through CONNECT tunnels. It can demand Basic
credentials (answering 407) and records what it was asked, so tests can see what a proxy sees."""

from __future__ import annotations

import base64
import http.client
import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "proxy-connection", "proxy-authorization", "keep-alive", "transfer-encoding"}


class ForwardProxy(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread

    def __init__(self, credentials: str | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.credentials = credentials  # "user:password" it demands, or None
        self.requests: list[tuple[str, str]] = []  # (method, target) as the proxy saw them
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    server: ForwardProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_CONNECT(self) -> None:
        if not self._allowed():
            return
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        with upstream:
            self._relay(upstream)

    def do_GET(self) -> None:
        if not self._allowed():
            return
        target = urlsplit(self.path)
        if target.scheme != "http":
            self.send_error(400, "absolute http:// URI expected")
            return
        origin = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            origin.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
            response = origin.getresponse()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.end_headers()
            while chunk := response.read(64 << 10):
                self.wfile.write(chunk)
        finally:
            origin.close()
            self.close_connection = True

    def _allowed(self) -> bool:
        self.server.requests.append((self.command, self.path))
        wanted = self.server.credentials
        if wanted is None or self.headers.get("Proxy-Authorization") == "Basic " + base64.b64encode(wanted.encode()).decode():
            return True
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="test proxy"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = True
        return False

    def _relay(self, upstream: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, self.connection)
            while not self.server.stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    data = key.fileobj.recv(64 << 10)
                    if not data:
                        return
                    key.data.sendall(data)


@contextmanager
def forward_proxy(credentials: str | None = None) -> Iterator[ForwardProxy]:
    proxy = ForwardProxy(credentials)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield proxy
    finally:
        proxy.stop.set()
        proxy.shutdown()
        proxy.server_close()
        thread.join()
