"""A real OCI registry for tests and benchmarks: Debian's ``docker-registry`` (CNCF distribution 2.8) run from its
binary on 127.0.0.1 with a config this module writes (never the package's system service), open,
behind htpasswd, or behind a token service run here (JWTs signed with a throwaway EC key whose
certificate the registry trusts); and a pusher that writes blobs and hand-built manifests the way
``oras push`` lays them out (distribution-spec push: POST an upload, PUT it with ``?digest=``)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = "/usr/bin/docker-registry"
SERVICE = "test-registry"
EMPTY_CONFIG = {"mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
USER, PASSWORD = "fleet", "s3cret-pull"
IDENTITY_TOKEN = "refresh-0123456789abcdef"  # what `docker login` keeps when the registry hands out refresh tokens


def registry_missing() -> str | None:
    """Why the registry tests cannot run here, or None."""
    if shutil.which(REGISTRY_BINARY) is None:
        return f"{REGISTRY_BINARY} is not installed (Debian package docker-registry; `make test-deps` installs it)"
    if shutil.which("htpasswd") is None:
        return "htpasswd is not installed (Debian package apache2-utils; `make test-deps` installs it)"
    return None


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; ``push_auth`` what the pusher sends."""

    host: str
    push_auth: dict[str, str] = field(default_factory=dict)
    token_server: TokenServer | None = None

    def push_blob(self, repository: str, data: bytes) -> dict:
        return self._upload(repository, digest_of(data), data, len(data))

    def push_blob_file(self, repository: str, path: Path, digest: str) -> dict:
        """A large blob, streamed from ``path`` (whose ``digest`` the caller knows)."""
        with path.open("rb") as file:
            return self._upload(repository, digest, file, path.stat().st_size)

    def _upload(self, repository: str, digest: str, body: bytes | BinaryIO, size: int) -> dict:
        status, headers, _ = self._call("POST", f"/v2/{repository}/blobs/uploads/", repository, b"")
        if status != 202:
            raise RuntimeError(f"the registry refused an upload: HTTP {status}")
        location = urllib.parse.urlsplit(headers["location"])
        query = location.query + ("&" if location.query else "") + urllib.parse.urlencode({"digest": digest})
        status, _, answer = self._call("PUT", f"{location.path}?{query}", repository, body,
                                       {"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if status != 201:
            raise RuntimeError(f"the registry refused blob {digest}: HTTP {status} {answer[:200]!r}")
        return {"digest": digest, "size": size}

    def push_manifest(self, repository: str, reference: str, manifest: dict, media_type: str = OCI_MANIFEST) -> str:
        body = json.dumps(manifest, separators=(",", ":")).encode()
        status, _, answer = self._call("PUT", f"/v2/{repository}/manifests/{reference}", repository, body,
                                       {"Content-Type": media_type})
        if status != 201:
            raise RuntimeError(f"the registry refused the manifest: HTTP {status} {answer[:300]!r}")
        return digest_of(body)

    def push_file(self, repository: str, tag: str, data: bytes, title: str = "model.onnx",
                  media_type: str = "application/vnd.oci.image.layer.v1.tar",
                  artifact_type: str = "application/vnd.unknown.artifact.v1") -> str:
        """An artifact as ``oras push REG/REPO:TAG model.onnx`` writes it: the raw file as its one
        layer, named by ``org.opencontainers.image.title``, with the empty config. Its manifest digest."""
        self.push_blob(repository, b"{}")
        layer = self.push_blob(repository, data) | {"mediaType": media_type,
                                                    "annotations": {"org.opencontainers.image.title": title}}
        return self.push_manifest(repository, tag, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": EMPTY_CONFIG, "layers": [layer],
            "annotations": {"org.opencontainers.image.created": "2026-12-07T00:00:00Z"}})

    def _call(self, method: str, path: str, repository: str, body: bytes | BinaryIO,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        auth = self.push_auth
        if self.token_server is not None:
            auth = {"Authorization": f"Bearer {self.token_server.issue(repository, ['pull', 'push'])}"}
        host, port = self.host.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request(method, path, body=body, headers=(headers or {}) | auth)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()


@contextmanager
def running_registry(tmp: Path, auth: str = "none") -> Iterator[Registry]:
    """``auth``: "none", "htpasswd" (USER/PASSWORD) or "token" (a TokenServer started here)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    registry = Registry(f"127.0.0.1:{port}")
    auth_section = ""
    tokens = None
    if auth == "htpasswd":
        htpasswd = tmp / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), USER, PASSWORD], check=True, capture_output=True)
        auth_section = f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {htpasswd}\n"
        pair = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        registry.push_auth = {"Authorization": f"Basic {pair}"}
    elif auth == "token":
        tokens = TokenServer(tmp)
        registry.token_server = tokens
        auth_section = (f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n"
                        f"    issuer: test-issuer\n    rootcertbundle: {tokens.cert_path}\n")
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: test-only-secret\n" + auth_section)
    log = (tmp / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        if tokens is not None:
            tokens.start()
        _wait_for(port, process, tmp / "registry.log")
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if tokens is not None:
            tokens.stop()


def _wait_for(port: int, process: subprocess.Popen, log: Path) -> None:
    until = time.monotonic() + 30
    while time.monotonic() < until:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("docker-registry did not listen within 30s")


class TokenServer(ThreadingHTTPServer):
    """The registry's token service (distribution's token spec): Basic USER/PASSWORD, or anonymous
    when ``anonymous`` says so, gets a JWT for the scope asked; so does IDENTITY_TOKEN by the OAuth2
    refresh-token grant (a form POST, distribution's ``oauth.md``); ``requests`` records each query
    or form."""

    daemon_threads = True

    def __init__(self, tmp: Path):
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1)).sign(self.key, hashes.SHA256()))
        self.cert_path = tmp / "token-issuer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.anonymous = False
        self.refuse_all = False  # a token service that refuses everyone
        self.useless = False  # tokens the registry will not accept (a 401 loop)
        self.requests: list[dict[str, list[str]]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/token"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def issue(self, repository: str, actions: list[str]) -> str:
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": "test-issuer", "sub": USER, "aud": "someone-else" if self.useless else SERVICE,
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": str(time.monotonic_ns()),
                  "access": [{"type": "repository", "name": repository, "actions": actions}]}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenHandler(BaseHTTPRequestHandler):
    server: TokenServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        self.server.requests.append(query)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        given = self.headers.get("Authorization")
        if self.server.refuse_all or (given != expected and not (given is None and self.server.anonymous)):
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._grant(query, "token")

    def do_POST(self) -> None:
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        self.server.requests.append(form)
        if self.server.refuse_all or form.get("grant_type") != ["refresh_token"] \
                or form.get("refresh_token") != [IDENTITY_TOKEN] or not form.get("client_id"):
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._grant(form, "access_token")

    def _grant(self, asked: dict[str, list[str]], field: str) -> None:
        _, repository, actions = (asked.get("scope", ["repository::pull"])[0].split(":") + ["", ""])[:3]
        body = json.dumps({field: self.server.issue(repository, actions.split(",")), "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
