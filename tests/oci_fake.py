"""A small strict fake of the distribution API, only for what Debian's registry cannot show: the
referrers API (an index of the manifests whose ``subject`` is the digest asked for), blobs
sent on with ``307`` to storage on another host (``localhost`` rather than ``127.0.0.1``), a storage
that answers ``416`` with a wrong ``Content-Length``, and a registry whose manifest bytes do not
hash to the digest asked for, and a registry (or storage) too busy to answer, saying when to
come back (``busy``: 429 or 503 with a ``Retry-After``). It asks for a bearer token (its own realm)
on every ``/v2/`` path."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-registry-token"
_RANGE = re.compile(r"^bytes=(\d+)-$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every request
        self.busy: list[tuple[int, str | None]] = []  # answers (status, Retry-After) given before serving
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class FakeRegistry(_Server):
    def __init__(self) -> None:
        super().__init__(_RegistryHandler)
        self.manifests: dict[str, tuple[bytes, str]] = {}  # tag or digest -> (bytes, media type)
        self.blobs: dict[str, bytes] = {}
        self.storage = _Server(_StorageHandler)
        self.storage.blobs = self.blobs
        self.storage.wrong_416 = False  # answer a Range with 416, Content-Range */size, Content-Length size
        self.lying = False  # manifests asked for by digest come back as other bytes
        self.page_size: int | None = None  # referrers per page of the referrers API
        self.token_busy: list[tuple[int, str | None]] = []  # the token service's busy answers

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, tag: str, layer: bytes, media_type: str = "application/vnd.cncf.model.weight.v1.raw") -> str:
        return self.put_manifest(tag, {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                       "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
            "layers": [self.put_blob(layer) | {"mediaType": media_type}]})

    def put_blob(self, data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    def put_manifest(self, tag: str | None, manifest: dict) -> str:
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[digest] = (body, manifest["mediaType"])
        if tag is not None:
            self.manifests[tag] = self.manifests[digest]
        return digest

    def referrers(self, subject: str) -> bytes:
        """The referrers API's answer: an index of the manifests whose subject is ``subject``."""
        found = []
        for reference, (body, media_type) in self.manifests.items():
            manifest = json.loads(body)
            if reference.startswith("sha256:") and (manifest.get("subject") or {}).get("digest") == subject:
                found.append({"mediaType": media_type, "digest": reference, "size": len(body),
                              "artifactType": manifest.get("artifactType") or manifest["config"]["mediaType"],
                              "annotations": manifest.get("annotations", {})})
        return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": found}).encode()

    def close(self) -> None:
        super().close()
        self.storage.close()


@contextmanager
def fake_registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    try:
        yield server
    finally:
        server.close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def too_busy(self, queue: list[tuple[int, str | None]]) -> bool:
        """Answer the next of ``queue``'s busy answers, if it has one left."""
        if not queue:
            return False
        status, retry_after = queue.pop(0)
        self.answer(status, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}', {"Retry-After": retry_after} if retry_after else {})
        return True

    def answer(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
               length: int | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)


class _RegistryHandler(_Handler):
    server: FakeRegistry

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers)))
        if self.path.startswith("/token"):
            if self.too_busy(self.server.token_busy):
                return
            self.answer(200, json.dumps({"token": TOKEN}).encode(), {"Content-Type": "application/json"})
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://127.0.0.1:{self.server.port}/token"
            self.answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                "WWW-Authenticate": f'Bearer realm="{realm}",service="fake",scope="repository:models/fake:pull"'})
            return
        if self.too_busy(self.server.busy):
            return
        kind, _, reference = self.path.rpartition("/")
        if "/referrers/" in self.path:
            self.referrers_page()
        elif kind.endswith("/manifests") and reference in self.server.manifests:
            body, media_type = self.server.manifests[reference]
            if self.server.lying and reference.startswith("sha256:"):
                body = body.replace(b'"schemaVersion":2', b'"schemaVersion": 2')
            self.answer(200, body, {"Content-Type": media_type})
        elif kind.endswith("/blobs") and reference in self.server.blobs:
            location = f"http://localhost:{self.server.storage.port}/storage/{reference}?signature=abc"
            self.answer(307, headers={"Location": location})
        else:
            self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')


    def referrers_page(self) -> None:
        """One page of ``page_size`` referrers (all at once when None), the next named in ``Link``."""
        path, _, query = self.path.partition("?")
        index = json.loads(self.server.referrers(path.rpartition("/")[2]))
        start = int(query.removeprefix("page=") or 0) if query.startswith("page=") else 0
        size = self.server.page_size or len(index["manifests"]) or 1
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        if start + size < len(index["manifests"]):
            headers["Link"] = f'<{path}?page={start + size}>; rel="next"'
        index["manifests"] = index["manifests"][start:start + size]
        self.answer(200, json.dumps(index).encode(), headers)


class _StorageHandler(_Handler):
    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers)))
        if self.too_busy(self.server.busy):  # type: ignore[attr-defined]
            return
        data = self.server.blobs[self.path.split("?")[0].rpartition("/")[2]]
        asked = _RANGE.match(self.headers.get("Range", ""))
        if asked and self.server.wrong_416:
            # Debian's registry does this: the whole blob's length over a 33-byte error body.
            self.answer(416, b"http: invalid range: failed to ov", {"Content-Range": f"bytes */{len(data)}"},
                        length=len(data))
        elif asked:
            start = int(asked[1])
            self.answer(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        else:
            self.answer(200, data, {"Accept-Ranges": "bytes"})
