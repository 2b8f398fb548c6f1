"""A throttled artifact server on 127.0.0.1 for the stop tests: the first ``fast`` bytes of a body
go at full speed, the rest trickles (or nothing comes) until the test opens the gate. It answers Range requests and
remembers each request's first byte, so a test can see a download resume."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRICKLE = 16 << 10  # bytes per slice while throttled
PAUSE = 0.05  # seconds between slices: ~320 KiB/s, far above any minimum rate


class SlowServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still trickling when the test ends must not hold it up

    def __init__(self, body: bytes, fast: int, trickle: bool = True):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body
        self.fast = fast
        self.trickle = trickle  # False: silence instead of a trickle, until the gate opens
        self.starts: list[int] = []  # the first byte each request asked for
        self.sent = 0  # body bytes written, every request
        self.throttling = threading.Event()  # set once a response reaches the slow part
        self.throttling_since = 0.0  # time.monotonic() then
        self.gate = threading.Event()  # set: no more throttling
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/model.onnx"

    def __enter__(self) -> SlowServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up mid-body is what these tests do


class _Handler(BaseHTTPRequestHandler):
    server: SlowServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.server.body
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(asked[1]) if asked else 0
        self.server.starts.append(start)
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        at = start
        while at < len(body):
            throttled = at >= self.server.fast and not self.server.gate.is_set()
            end = min(len(body), at + TRICKLE if throttled else max(at + (1 << 20), self.server.fast))
            if throttled and not self.server.throttling.is_set():
                self.server.throttling_since = time.monotonic()
                self.server.throttling.set()
            if throttled and not self.server.trickle:
                self.server.gate.wait()
                continue
            if throttled:
                time.sleep(PAUSE)
            self.wfile.write(body[at:end])
            self.server.sent += end - at
            at = end
