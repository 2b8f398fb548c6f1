"""Hardened fetching against real HTTP(S) servers on loopback: redirect policy, per-host
credentials, TLS trust from a CA bundle, resume with Range, stalls, the deadline and size caps
while streaming. 127.0.0.2 is loopback too, and a different host for every policy here."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from forward_proxy import forward_proxy
from pydantic import ValidationError

from reconciler.agent.config import load_site_config
from reconciler.errors import Interrupted, ReconcilerError, Stalled, Transient
from reconciler.ingest import httpsource, sink
from reconciler.ingest.artifacts import ArtifactStore, fetch_bytes
from reconciler.manifests.models import Artifact
from reconciler.settings import AuthConfig, FetchLimits

PAYLOAD = os.urandom(600_000)
DIGEST = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
PART = DIGEST.removeprefix("sha256:") + ".part"
KEPT = DIGEST.removeprefix("sha256:") + ".kept"  # how many bytes of PART a failed ingest left on disk
TOKEN = "s3cr3t-token-value"
PASSWORD = "hunter2-password"
FAST = FetchLimits(connect_timeout=2.0, read_timeout=2.0, retries=3, backoff=0.01)


def artifact(uri: str, size: int = len(PAYLOAD)) -> Artifact:
    return Artifact(uri=uri, digest=DIGEST, size=size, signature={"uri": uri + ".sig"})


# --- a scriptable artifact server -----------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: nothing outlives the fixture

    def __init__(self, host: str, tls: ssl.SSLContext | None = None):
        super().__init__((host, 0), Handler)
        self.tls = tls
        self.stop = threading.Event()
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, request headers) of every request
        self.statuses: list[int] = []
        self.sent = 0  # body bytes written, all requests
        self.expected_auth: str | None = None  # the Authorization that /private wants

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def get_request(self):
        conn, address = super().get_request()
        if self.tls is not None:  # the handshake happens in the handler's thread, not the accept loop
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up on refused, oversized or slow bodies are part of the tests

    def headers_of(self, prefix: str) -> list[dict[str, str]]:
        return [headers for path, headers in self.seen if path.startswith(prefix)]


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        if self.server.tls is not None:
            self.request.do_handshake()
        super().setup()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.server.statuses.append(code)
        super().send_response(code, message)

    def do_GET(self) -> None:
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        first = len(self.server.headers_of(self.path)) == 1
        route, _, rest = self.path.lstrip("/").partition("/")
        if route == "file":
            return self.ranged(PAYLOAD)
        if route == "redirect":
            self.send_response(302)
            self.send_header("Location", unquote(rest))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if route == "loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if route == "status":
            return self.refuse(int(rest))
        if route == "private":
            if self.headers.get("Authorization") != self.server.expected_auth:
                return self.refuse(401)
            return self.ranged(PAYLOAD)
        if route == "hang-after":  # the first `rest` bytes, then silence until the test ends; later requests get ranges
            if not first:
                return self.ranged(PAYLOAD)
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.write(PAYLOAD[: int(rest.partition("/")[0])])
            self.wfile.flush()
            self.server.stop.wait()
            return None
        if route in ("drop", "drop-then-full", "drop-no-ranges", "drop-then-wrong-range"):
            cut = int(rest.partition("/")[0])
            if first:
                return self.body(PAYLOAD[:cut], length=len(PAYLOAD), ranges=route != "drop-no-ranges")
            if route == "drop-then-wrong-range":
                return self.partial(PAYLOAD, start=0)  # a 206, but not of the range asked for
            if route in ("drop-then-full", "drop-no-ranges"):
                return self.body(PAYLOAD)
            return self.ranged(PAYLOAD)
        if route == "trickle":  # one byte every `rest` seconds, forever
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for byte in PAYLOAD:
                if self.server.stop.wait(float(rest)):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            return None
        if route == "chunked-endless":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            return self.endless(lambda block: b"%x\r\n%s\r\n" % (len(block), block))
        if route == "close-endless":  # no length: the body runs until the connection closes
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            return self.endless(lambda block: block)
        if route == "gzip":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
            return None
        return self.refuse(404)

    def ranged(self, data: bytes) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            return self.partial(data, start=int(match.group(1)))
        return self.body(data)

    def partial(self, data: bytes, start: int) -> None:
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.write(data[start:])

    def body(self, data: bytes, length: int | None = None, ranges: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.write(data)
        if length is not None and length > len(data):
            self.close_connection = True  # cut short: the client sees the connection drop

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.server.sent += len(data)

    def endless(self, frame) -> None:
        block = os.urandom(64 << 10)
        try:
            while not self.server.stop.is_set():
                self.wfile.write(frame(block))
        except OSError:
            pass
        self.close_connection = True

    def refuse(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


def serve(host: str, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    server = Server(host, tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def here() -> Iterator[Server]:
    yield from serve("127.0.0.1")


@pytest.fixture
def elsewhere() -> Iterator[Server]:
    yield from serve("127.0.0.2")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate it signed for 127.0.0.1."""
    root = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (root / "ca.pem").write_bytes(ca.public_bytes(pem))
    (root / "server.pem").write_bytes(leaf.public_bytes(pem))
    (root / "server.key").write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return {"ca": root / "ca.pem", "cert": root / "server.pem", "key": root / "server.key"}


@pytest.fixture
def tls_server(pki: dict[str, Path]) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["cert"], pki["key"])
    yield from serve("127.0.0.1", context)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    yield ArtifactStore(tmp_path / "state")
    # Every download's helper threads are joined, whatever happened; at most a part file to resume is left.
    assert not [t.name for t in threading.enumerate() if t.name.startswith("artifact-")]
    assert {p.name for p in (tmp_path / "state" / "blobs" / "tmp").glob("*")} <= {PART, KEPT}


def ingested(store: ArtifactStore, uri: str, limits: FetchLimits = FAST) -> bytes:
    got = store.ingest(artifact(uri), None, limits)
    assert got.digest == DIGEST and got.fetched
    return got.path.read_bytes()


def refused(store: ArtifactStore, uri: str, limits: FetchLimits = FAST, size: int = len(PAYLOAD)) -> ReconcilerError:
    with pytest.raises(ReconcilerError) as caught:
        store.ingest(artifact(uri, size), None, limits)
    assert list(store.blobs.glob("*")) == []
    return caught.value


def via(server: Server, target: str) -> str:
    return f"{server.url}/redirect/{quote(target, safe='')}"


# --- redirects ------------------------------------------------------------------------------------

def test_redirect_within_the_host_is_followed(store: ArtifactStore, here: Server) -> None:
    assert ingested(store, via(here, "/file/m.onnx")) == PAYLOAD


@pytest.mark.parametrize("policy", ["same-host", "none"])
def test_redirect_to_another_host_is_refused(store: ArtifactStore, here: Server, elsewhere: Server, policy: str) -> None:
    error = refused(store, via(here, f"{elsewhere.url}/file/m.onnx"), FAST.model_copy(update={"redirects": policy}))

    assert (type(error), error.reason) == (Stalled, "ArtifactRedirectRefused")
    assert "127.0.0.1" in error.message and "127.0.0.2" in error.message
    assert elsewhere.seen == []


def test_no_redirect_at_all_under_policy_none(store: ArtifactStore, here: Server) -> None:
    error = refused(store, via(here, "/file/m.onnx"), FAST.model_copy(update={"redirects": "none"}))
    assert error.reason == "ArtifactRedirectRefused" and "redirects: none" in error.message


def test_redirect_to_another_host_is_followed_under_policy_any(store: ArtifactStore, here: Server,
                                                               elsewhere: Server) -> None:
    limits = FAST.model_copy(update={"redirects": "any"})
    assert ingested(store, via(here, f"{elsewhere.url}/file/m.onnx"), limits) == PAYLOAD


def test_https_to_http_is_refused_even_under_policy_any(store: ArtifactStore, tls_server: Server, here: Server,
                                                       pki: dict[str, Path]) -> None:
    limits = FAST.model_copy(update={"redirects": "any", "ca_bundle": pki["ca"]})
    error = refused(store, via(tls_server, f"{here.url}/file/m.onnx"), limits)

    assert error.reason == "ArtifactRedirectRefused" and "downgrade" in error.message
    assert here.seen == []


def test_a_redirect_loop_ends(store: ArtifactStore, here: Server) -> None:
    error = refused(store, f"{here.url}/loop/m.onnx")
    assert (error.reason, len(here.seen)) == ("ArtifactRedirectRefused", httpsource.MAX_REDIRECTS + 1)


# --- TLS ------------------------------------------------------------------------------------------

def test_https_with_the_ca_bundle_is_trusted(store: ArtifactStore, tls_server: Server, pki: dict[str, Path]) -> None:
    limits = FAST.model_copy(update={"ca_bundle": pki["ca"]})
    assert ingested(store, f"{tls_server.url}/file/m.onnx", limits) == PAYLOAD


def test_https_without_the_ca_bundle_is_refused(store: ArtifactStore, tls_server: Server) -> None:
    error = refused(store, f"{tls_server.url}/file/m.onnx")
    assert (type(error), error.reason) == (Stalled, "ArtifactTlsFailed")
    assert "127.0.0.1" in error.message


def test_unreadable_ca_bundle_is_refused(store: ArtifactStore, tls_server: Server, tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.pem").write_text("garbage")
    error = refused(store, f"{tls_server.url}/file/m.onnx", FAST.model_copy(update={"ca_bundle": tmp_path / "not-a-ca.pem"}))
    assert (type(error), error.reason) == (Stalled, "TlsCaBundleInvalid")


# --- credentials ----------------------------------------------------------------------------------

@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACT_TOKEN", TOKEN)
    monkeypatch.setenv("ARTIFACT_PASSWORD", PASSWORD)


# The servers here speak plain http on loopback: the opt-in a site's own mirror would need.
BEARER = AuthConfig(token_env="ARTIFACT_TOKEN", allow_http=True)
BASIC = AuthConfig(username="fleet", password_env="ARTIFACT_PASSWORD", allow_http=True)


@pytest.mark.parametrize(("auth", "header"), [
    (BEARER, f"Bearer {TOKEN}"),
    (BASIC, "Basic " + base64.b64encode(f"fleet:{PASSWORD}".encode()).decode()),
], ids=["bearer", "basic"])
def test_credentials_go_to_their_host(store: ArtifactStore, here: Server, secrets: None, auth: AuthConfig,
                                      header: str) -> None:
    here.expected_auth = header
    assert ingested(store, f"{here.url}/private/m.onnx", FAST.model_copy(update={"auth": {"127.0.0.1": auth}})) == PAYLOAD


def test_credentials_go_over_https_without_an_opt_in(store: ArtifactStore, tls_server: Server, secrets: None,
                                                   pki: dict[str, Path]) -> None:
    tls_server.expected_auth = f"Bearer {TOKEN}"
    limits = FAST.model_copy(update={"ca_bundle": pki["ca"], "auth": {"127.0.0.1": AuthConfig(token_env="ARTIFACT_TOKEN")}})
    assert ingested(store, f"{tls_server.url}/private/m.onnx", limits) == PAYLOAD


def test_credentials_are_not_sent_over_plain_http_without_the_opt_in(store: ArtifactStore, here: Server,
                                                                    secrets: None) -> None:
    limits = FAST.model_copy(update={"auth": {"127.0.0.1": AuthConfig(token_env="ARTIFACT_TOKEN")}})
    error = refused(store, f"{here.url}/private/m.onnx", limits)

    assert (type(error), error.reason) == (Stalled, "ArtifactAuthInsecure")
    assert "https only" in error.message and "fetch.auth.127.0.0.1.allowHttp" in error.message
    assert TOKEN not in str(error) and here.seen == []


def test_credentials_never_follow_a_redirect_to_another_host(store: ArtifactStore, here: Server, elsewhere: Server,
                                                             secrets: None) -> None:
    limits = FAST.model_copy(update={"redirects": "any", "auth": {"127.0.0.1": BEARER}})
    assert ingested(store, via(here, f"{elsewhere.url}/file/m.onnx"), limits) == PAYLOAD

    assert here.headers_of("/redirect")[0]["authorization"] == f"Bearer {TOKEN}"
    assert [h.get("authorization") for h in elsewhere.headers_of("/file")] == [None]


def test_no_credentials_for_hosts_without_any(store: ArtifactStore, here: Server, secrets: None) -> None:
    here.expected_auth = f"Bearer {TOKEN}"
    error = refused(store, f"{here.url}/private/m.onnx", FAST.model_copy(update={"auth": {"127.0.0.2": BEARER}}))
    assert (type(error), error.reason) == (Stalled, "ArtifactRequestRejected")
    assert here.headers_of("/private")[0].get("authorization") is None


def test_rejected_credentials_stall_without_showing_the_secret(
    store: ArtifactStore, here: Server, secrets: None, caplog: pytest.LogCaptureFixture
) -> None:
    here.expected_auth = "Bearer another-token"
    caplog.set_level(logging.DEBUG)
    error = refused(store, f"{here.url}/private/m.onnx", FAST.model_copy(update={"auth": {"127.0.0.1": BEARER}}))

    assert (type(error), error.reason) == (Stalled, "ArtifactRequestRejected")
    assert "HTTP 401" in error.message and "127.0.0.1" in error.message
    shown = [str(error), repr(error), repr(error.__cause__), caplog.text, repr(FAST.model_copy(update={"auth": {"h": BEARER}}))]
    assert not [text for text in shown if TOKEN in text]
    assert len(here.seen) == 1  # a refusal is not retried


@pytest.mark.parametrize(("env", "reason"), [(None, "ArtifactAuthMissing"), ("line\r\nX-Evil: 1", "ArtifactAuthInvalid")])
def test_bad_credential_variables_are_named_not_shown(store: ArtifactStore, here: Server, monkeypatch: pytest.MonkeyPatch,
                                                     env: str | None, reason: str) -> None:
    if env is None:
        monkeypatch.delenv("ARTIFACT_TOKEN", raising=False)
    else:
        monkeypatch.setenv("ARTIFACT_TOKEN", env)
    error = refused(store, f"{here.url}/private/m.onnx", FAST.model_copy(update={"auth": {"127.0.0.1": BEARER}}))

    assert (type(error), error.reason) == (Stalled, reason)
    assert "$ARTIFACT_TOKEN" in error.message and (env is None or env not in error.message)
    assert here.seen == []


def test_credentials_in_the_uri_are_refused_and_not_shown(store: ArtifactStore, here: Server) -> None:
    uri = here.url.replace("http://", f"http://fleet:{PASSWORD}@") + "/file/m.onnx"
    error = refused(store, uri)
    assert (type(error), error.reason) == (Stalled, "ArtifactUriInvalid")
    assert PASSWORD not in str(error) and here.seen == []


# --- proxies --------------------------------------------------------------------------------------

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_plain_http_goes_through_the_proxy_in_absolute_form(store: ArtifactStore, here: Server,
                                                            proxy_env: pytest.MonkeyPatch) -> None:
    with forward_proxy() as proxy:
        proxy_env.setenv("http_proxy", proxy.url)
        assert ingested(store, f"{here.url}/file/m.onnx") == PAYLOAD
    assert proxy.requests == [("GET", f"{here.url}/file/m.onnx")]
    assert [path for path, _ in here.seen] == ["/file/m.onnx"]


def test_https_goes_through_a_connect_tunnel_the_proxy_cannot_read(
    store: ArtifactStore, tls_server: Server, pki: dict[str, Path], secrets: None, proxy_env: pytest.MonkeyPatch
) -> None:
    tls_server.expected_auth = f"Bearer {TOKEN}"
    limits = FAST.model_copy(update={"ca_bundle": pki["ca"], "auth": {"127.0.0.1": AuthConfig(token_env="ARTIFACT_TOKEN")}})
    with forward_proxy() as proxy:
        proxy_env.setenv("HTTPS_PROXY", proxy.url)
        assert ingested(store, f"{tls_server.url}/private/m.onnx", limits) == PAYLOAD
    assert proxy.requests == [("CONNECT", tls_server.url.removeprefix("https://"))]  # no path, no token


def test_no_proxy_hosts_are_reached_directly(store: ArtifactStore, here: Server, proxy_env: pytest.MonkeyPatch) -> None:
    with forward_proxy() as proxy:
        proxy_env.setenv("http_proxy", proxy.url)
        proxy_env.setenv("no_proxy", "localhost,127.0.0.1")
        assert ingested(store, f"{here.url}/file/m.onnx") == PAYLOAD
    assert proxy.requests == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_proxy_credentials_come_from_the_proxy_url_and_are_never_shown(
    store: ArtifactStore, here: Server, tls_server: Server, pki: dict[str, Path], proxy_env: pytest.MonkeyPatch,
    scheme: str,
) -> None:
    origin = here if scheme == "http" else tls_server
    limits = FAST.model_copy(update={"ca_bundle": pki["ca"]})
    with forward_proxy(credentials=f"fleet:{PASSWORD}") as proxy:
        proxy_env.setenv(f"{scheme}_proxy", proxy.url)
        error = refused(store, f"{origin.url}/file/m.onnx", limits)
        assert (type(error), error.reason) == (Stalled, "ArtifactProxyRejected")
        assert "407" in error.message

        proxy_env.setenv(f"{scheme}_proxy", proxy.url.replace("http://", f"http://fleet:{PASSWORD}@"))
        assert ingested(store, f"{origin.url}/file/m.onnx", limits) == PAYLOAD
    assert len(proxy.requests) == 2  # the refusal was not retried


def test_a_proxy_that_is_not_http_is_refused_without_showing_its_credentials(
    store: ArtifactStore, here: Server, proxy_env: pytest.MonkeyPatch
) -> None:
    proxy_env.setenv("http_proxy", f"socks5://fleet:{PASSWORD}@127.0.0.1:1080")
    error = refused(store, f"{here.url}/file/m.onnx")
    assert (type(error), error.reason) == (Stalled, "ArtifactProxyInvalid")
    assert "socks5://127.0.0.1:1080" in error.message and PASSWORD not in str(error)
    assert here.seen == []


# --- resume ---------------------------------------------------------------------------------------

CUT = 200_000


def test_a_dropped_download_resumes_with_range(store: ArtifactStore, here: Server) -> None:
    assert ingested(store, f"{here.url}/drop/{CUT}/m.onnx") == PAYLOAD

    assert [h.get("range") for h in here.headers_of("/drop")] == [None, f"bytes={CUT}-"]
    assert here.statuses == [200, 206]
    assert here.sent == len(PAYLOAD)  # the first part was not sent twice


def test_a_server_that_ignores_range_gets_a_clean_restart(store: ArtifactStore, here: Server) -> None:
    assert ingested(store, f"{here.url}/drop-then-full/{CUT}/m.onnx") == PAYLOAD
    assert [h.get("range") for h in here.headers_of("/drop")] == [None, f"bytes={CUT}-"]
    assert here.statuses == [200, 200]


def test_a_server_without_ranges_is_not_asked_for_one(store: ArtifactStore, here: Server) -> None:
    assert ingested(store, f"{here.url}/drop-no-ranges/{CUT}/m.onnx") == PAYLOAD
    assert [h.get("range") for h in here.headers_of("/drop")] == [None, None]


def test_a_wrong_content_range_is_refused(store: ArtifactStore, here: Server) -> None:
    error = refused(store, f"{here.url}/drop-then-wrong-range/{CUT}/m.onnx")
    assert (type(error), error.reason) == (Stalled, "ArtifactRangeInvalid")
    assert f"bytes from {CUT}" in error.message


def test_resume_keeps_hashing_across_attempts_with_many_chunks_in_flight(
    store: ArtifactStore, here: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small chunks put many buffers in flight on the hasher and both writers; the cut falls inside one."""
    monkeypatch.setattr(sink, "CHUNK_SIZE", 16 << 10)
    assert CUT % (16 << 10)
    assert ingested(store, f"{here.url}/drop/{CUT}/m.onnx") == PAYLOAD
    assert here.statuses == [200, 206]


def test_a_download_cut_off_resumes_in_the_next_ingest_after_a_restart(
    tmp_path: Path, here: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink, "CHUNK_SIZE", 16 << 10)
    once = FAST.model_copy(update={"retries": 1})
    error = refused(ArtifactStore(tmp_path / "state"), f"{here.url}/drop/{CUT}/m.onnx", once)
    assert (type(error), error.reason) == (Interrupted, "ArtifactTruncated")

    # A new store on the same directory: what an agent finds after a restart.
    assert ingested(ArtifactStore(tmp_path / "state"), f"{here.url}/drop/{CUT}/m.onnx", once) == PAYLOAD
    # The failed ingest wrote all it received, the chunk it was filling too, and said so: the next one
    # resumes at the very byte, in the middle of a chunk, and nothing is sent twice.
    assert CUT % (16 << 10)
    assert [h.get("range") for h in here.headers_of("/drop")] == [None, f"bytes={CUT}-"]
    assert here.sent == len(PAYLOAD)
    assert list((tmp_path / "state" / "blobs" / "tmp").glob("*")) == []


def test_an_agent_killed_mid_download_resumes_after_it_restarts(tmp_path: Path, here: Server,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL: no clean-up ran, chunks were written by two threads out of order."""
    chunk = 16 << 10
    uri = f"{here.url}/hang-after/{CUT}/m.onnx"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from reconciler.ingest import sink\n"
        "from reconciler.ingest.artifacts import ArtifactStore\n"
        "from reconciler.settings import FetchLimits\n"
        "from reconciler.manifests.models import Artifact\n"
        f"sink.CHUNK_SIZE = {chunk}\n"
        "state, uri, digest, size = sys.argv[1:]\n"
        "wanted = Artifact(uri=uri, digest=digest, size=int(size), signature={'uri': uri + '.sig'})\n"
        "ArtifactStore(Path(state)).ingest(wanted, None, FetchLimits(read_timeout=60))\n"
    )
    agent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "state"), uri, DIGEST, str(len(PAYLOAD))],
                             cwd=Path(__file__).resolve().parents[2])
    part = tmp_path / "state" / "blobs" / "tmp" / PART
    written = CUT - CUT % chunk  # every whole chunk of what the server sent
    try:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= written) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        agent.kill()
        agent.wait(timeout=30)
    assert part.stat().st_size == written

    monkeypatch.setattr(sink, "CHUNK_SIZE", chunk)
    assert ingested(ArtifactStore(tmp_path / "state"), uri) == PAYLOAD
    assert [h.get("range") for h in here.headers_of("/hang-after")] == [None, f"bytes={written - sink.BUFFERS * chunk}-"]


def test_a_stale_part_file_costs_one_download_and_decides_nothing(tmp_path: Path, here: Server,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that are not the server's (a crash before they reached the disk, a file replaced since)."""
    monkeypatch.setattr(sink, "CHUNK_SIZE", 16 << 10)
    tmp = tmp_path / "state" / "blobs" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / PART).write_bytes(os.urandom(len(PAYLOAD) - 1000))

    assert ingested(ArtifactStore(tmp_path / "state"), f"{here.url}/file/m.onnx") == PAYLOAD
    ranges = [h.get("range") for h in here.headers_of("/file")]
    assert len(ranges) == 2 and ranges[0].startswith("bytes=") and ranges[1] is None


@pytest.mark.parametrize(("recorded", "resumed_at"), [
    (str(CUT - 1000), CUT - CUT % (16 << 10) - sink.BUFFERS * (16 << 10)),  # not the file's size: as after a crash
    ("garbage", CUT - CUT % (16 << 10) - sink.BUFFERS * (16 << 10)),  # half written
    (str(CUT), CUT),  # the file's size: taken up whole
])
def test_the_kept_record_is_trusted_only_when_it_matches_the_part_file(
    tmp_path: Path, here: Server, monkeypatch: pytest.MonkeyPatch, recorded: str, resumed_at: int
) -> None:
    monkeypatch.setattr(sink, "CHUNK_SIZE", 16 << 10)
    tmp = tmp_path / "state" / "blobs" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / PART).write_bytes(PAYLOAD[:CUT])
    (tmp / KEPT).write_text(recorded)

    assert ingested(ArtifactStore(tmp_path / "state"), f"{here.url}/file/m.onnx") == PAYLOAD
    assert [h.get("range") for h in here.headers_of("/file")] == [f"bytes={resumed_at}-"]
    assert list(tmp.glob("*")) == []


def test_recorded_bytes_that_are_not_the_servers_cost_one_download(tmp_path: Path, here: Server,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A record proves the bytes reached the disk, not that they are right: the digest still decides."""
    monkeypatch.setattr(sink, "CHUNK_SIZE", 16 << 10)
    tmp = tmp_path / "state" / "blobs" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / PART).write_bytes(os.urandom(CUT))
    (tmp / KEPT).write_text(str(CUT))

    assert ingested(ArtifactStore(tmp_path / "state"), f"{here.url}/file/m.onnx") == PAYLOAD
    assert [h.get("range") for h in here.headers_of("/file")] == [f"bytes={CUT}-", None]


def test_a_failure_that_will_not_pass_removes_the_part_file(store: ArtifactStore, here: Server) -> None:
    error = refused(store, f"{here.url}/drop-then-wrong-range/{CUT}/m.onnx")
    assert error.reason == "ArtifactRangeInvalid"
    assert list(store.tmp.glob("*")) == []


# --- stalls and the deadline ----------------------------------------------------------------------

def test_a_trickling_server_is_cut_off_by_the_minimum_rate(store: ArtifactStore, here: Server) -> None:
    limits = FAST.model_copy(update={"stall_timeout": 0.5, "min_rate": 1000, "retries": 1, "deadline": 5})
    start = time.monotonic()
    error = refused(store, f"{here.url}/trickle/0.05", limits)

    assert (type(error), error.reason) == (Interrupted, "ArtifactStalled")
    assert "bytes/s" in error.message
    assert time.monotonic() - start < 2


def test_silence_after_the_headers_is_a_stall(store: ArtifactStore, here: Server) -> None:
    limits = FAST.model_copy(update={"read_timeout": 0.3, "retries": 1})
    start = time.monotonic()
    error = refused(store, f"{here.url}/trickle/60", limits)

    assert (type(error), error.reason) == (Interrupted, "ArtifactStalled")
    assert "no data for 0.3s" in error.message
    assert time.monotonic() - start < 2


def test_stalls_are_retried(store: ArtifactStore, here: Server) -> None:
    limits = FAST.model_copy(update={"read_timeout": 0.2, "retries": 2})
    refused(store, f"{here.url}/trickle/60", limits)
    assert len(here.seen) == 2


def test_the_deadline_bounds_a_slow_but_steady_download(store: ArtifactStore, here: Server) -> None:
    limits = FAST.model_copy(update={"deadline": 0.6, "min_rate": 0})
    start = time.monotonic()
    error = refused(store, f"{here.url}/trickle/0.01", limits)

    assert (type(error), error.reason) == (Transient, "ArtifactDeadlineExceeded")
    assert 0.5 < time.monotonic() - start < 2
    assert len(here.seen) == 1  # a deadline is not retried within the ingest


def test_the_deadline_bounds_the_retries_too(store: ArtifactStore, here: Server) -> None:
    limits = FAST.model_copy(update={"deadline": 0.5, "retries": 1000, "backoff": 0.05})
    start = time.monotonic()
    error = refused(store, f"{here.url}/status/503", limits)

    assert (type(error), error.reason) == (Transient, "ArtifactDeadlineExceeded")
    assert "the last attempt failed with ArtifactUnavailable" in error.message and "HTTP 503" in error.message
    assert time.monotonic() - start < 2
    assert 2 < len(here.seen) < 100


# --- size caps while streaming --------------------------------------------------------------------

@pytest.mark.parametrize("route", ["chunked-endless", "close-endless"])
def test_a_body_longer_than_the_manifest_is_cut_at_one_byte_more(
    store: ArtifactStore, here: Server, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    read = []
    real_readinto = httpsource._HttpBody.readinto

    def counting_readinto(self, view: memoryview) -> int:
        read.append(real_readinto(self, view))
        return read[-1]

    monkeypatch.setattr(httpsource._HttpBody, "readinto", counting_readinto)
    error = refused(store, f"{here.url}/{route}")

    assert (type(error), error.reason) == (Stalled, "ArtifactTooLarge")
    assert sum(read) == len(PAYLOAD) + 1


def test_fetch_bytes_caps_a_chunked_body(here: Server) -> None:
    with pytest.raises(Stalled) as caught:
        fetch_bytes(f"{here.url}/chunked-endless", None, FAST, max_bytes=1000)
    assert caught.value.reason == "ArtifactTooLarge"


def test_a_content_encoding_is_refused(store: ArtifactStore, here: Server) -> None:
    error = refused(store, f"{here.url}/gzip")
    assert (type(error), error.reason) == (Stalled, "ArtifactEncodingUnsupported")


# --- settings as site.yaml writes them -------------------------------------------------------------

def test_site_yaml_settings_map_to_fetch_limits(tmp_path: Path) -> None:
    limits = FetchLimits.model_validate({
        "maxBytes": 1 << 20, "connectTimeout": "2s", "readTimeout": "500ms", "stallTimeout": "1m", "minRate": 10,
        "deadline": "1h30m", "retries": 5, "backoff": "250ms", "redirects": "any",
        "auth": {"Models.Example.com": {"tokenEnv": "T"}, "other": {"username": "u", "passwordEnv": "P"}},
        "caBundle": str(tmp_path / "ca.pem"),
    })
    assert (limits.max_bytes, limits.connect_timeout, limits.read_timeout, limits.stall_timeout) == (1 << 20, 2, 0.5, 60)
    assert (limits.min_rate, limits.deadline, limits.retries, limits.backoff) == (10, 5400, 5, 0.25)
    assert limits.redirects == "any" and limits.ca_bundle == tmp_path / "ca.pem"
    assert set(limits.auth) == {"models.example.com", "other"}


def test_the_site_yaml_in_the_readme_is_a_valid_one(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = re.search(r"`site.yaml`:\n\n```yaml\n(.*?)```", readme, re.S)
    assert example, "README.md: the site.yaml example moved"
    (tmp_path / "site.yaml").write_text(example.group(1))
    config = load_site_config(tmp_path / "site.yaml", {})
    assert config.fetch.auth["mirror.site.lan"].allow_http and not config.fetch.auth["models.example.com"].allow_http


@pytest.mark.parametrize("settings", [
    {"redirects": "sometimes"},
    {"readTimeout": "soon"},
    {"retries": 0},
    {"auth": {"h": {}}},
    {"auth": {"h": {"tokenEnv": "T", "username": "u", "passwordEnv": "P"}}},
    {"auth": {"h": {"username": "u"}}},
    {"auth": {"h": {"token": "inline-secret"}}},
], ids=["redirects", "duration", "retries", "auth-empty", "auth-both", "auth-no-password", "auth-inline-secret"])
def test_bad_fetch_settings_are_refused(settings: dict) -> None:
    with pytest.raises(ValidationError):
        FetchLimits.model_validate(settings)
