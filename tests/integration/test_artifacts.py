"""Artifact fetching and the blob store, against real files and a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.errors import Interrupted, ReconcilerError, Stalled, Transient
from reconciler.ingest.artifacts import ArtifactStore, fetch_bytes
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits

PAYLOAD = os.urandom(300_000)  # spans several network reads
FAST = FetchLimits(connect_timeout=1.0, read_timeout=0.3, retries=3, backoff=0.01)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def part_of(wanted: Artifact) -> str:
    """The name of the part file an interrupted download of ``wanted`` leaves for the next ingest."""
    return wanted.digest.removeprefix("sha256:") + ".part"


def left_by(wanted: Artifact) -> set[str]:
    """What an interrupted download of ``wanted`` may leave: its part file and the record of how much it holds."""
    return {part_of(wanted), wanted.digest.removeprefix("sha256:") + ".kept"}


def artifact(uri: str, data: bytes = PAYLOAD, size: int | None = None, digest: str | None = None) -> Artifact:
    return Artifact(
        uri=uri,
        digest=digest or sha(data),
        size=len(data) if size is None else size,
        signature={"uri": uri + ".sig"},
    )


# --- a real HTTP artifact server --------------------------------------------------------------

class ArtifactServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: nothing outlives the fixture

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[str] = Counter()
        self.failures_left: Counter[str] = Counter()
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up on oversized or slow bodies are part of the tests


class Handler(BaseHTTPRequestHandler):
    server: ArtifactServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        route, _, arg = self.path.lstrip("/").partition("/")
        if route == "flaky" and self.server.failures_left[self.path] > 0:
            self.server.failures_left[self.path] -= 1
            return self.send_error(500)
        if route in ("ok", "flaky"):
            return self.body(PAYLOAD)
        if route == "status":
            return self.send_error(int(arg))
        if route == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/ok/{arg}")
            self.end_headers()
            return None
        if route == "truncated":
            return self.body(PAYLOAD[: len(PAYLOAD) // 2], length=len(PAYLOAD))
        if route == "short":
            return self.body(PAYLOAD[:-1])
        if route == "long":
            return self.body(PAYLOAD + b"x")
        if route == "endless":  # no Content-Length: the body runs until the client hangs up
            self.send_response(200)
            self.end_headers()
            while not self.server.stop.is_set():
                self.wfile.write(b"x" * 65536)
            return None
        if route == "slow":
            self.server.stop.wait(FAST.read_timeout * 3)
            return self.body(PAYLOAD)
        if route == "small":
            return self.body(b"signature")
        return self.send_error(404)

    def body(self, data: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    srv = ArtifactServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
        thread.join()


@dataclass
class World:
    store: ArtifactStore
    state: Path
    repo: Path
    outside: Path
    server: ArtifactServer

    def blobs(self) -> list[str]:
        return sorted(p.name for p in self.store.blobs.glob("*"))

    def temps(self) -> list[str]:
        return sorted(p.name for p in self.store.tmp.glob("*"))


@pytest.fixture
def world(tmp_path: Path, server: ArtifactServer) -> World:
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "m.onnx").write_bytes(PAYLOAD)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.onnx").write_bytes(PAYLOAD)
    return World(ArtifactStore(tmp_path / "state"), tmp_path / "state", repo, outside, server)


# --- good inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "uri",
    [
        lambda w: "models/m.onnx",
        lambda w: "./models/../models/m.onnx",
        lambda w: (w.repo / "models" / "m.onnx").as_uri(),
        lambda w: f"{w.server.url}/ok/m.onnx",
        lambda w: f"{w.server.url}/redirect/m.onnx",
    ],
    ids=["repo-relative", "dot-segments-inside", "file-url", "http", "http-redirect"],
)
def test_ingest_verifies_and_stores_read_only(world: World, uri: Callable[[World], str]) -> None:
    got = world.store.ingest(artifact(uri(world)), world.repo, FAST)

    assert got.fetched is True
    assert got.path == world.store.blobs / hashlib.sha256(PAYLOAD).hexdigest()
    assert got.path.read_bytes() == PAYLOAD
    assert got.digest.raw == hashlib.sha256(PAYLOAD).digest()
    assert (got.digest, got.size) == (sha(PAYLOAD), len(PAYLOAD))
    assert stat.S_IMODE(got.path.stat().st_mode) == 0o444
    assert world.temps() == []


def test_symlink_inside_repo_is_followed(world: World) -> None:
    (world.repo / "latest.onnx").symlink_to("models/m.onnx")
    assert world.store.ingest(artifact("latest.onnx"), world.repo, FAST).path.read_bytes() == PAYLOAD


def test_second_ingest_does_no_io(world: World) -> None:
    uri = f"{world.server.url}/ok/m.onnx"
    world.store.ingest(artifact(uri), None, FAST)
    again = world.store.ingest(artifact(uri), None, FAST)

    assert again.fetched is False
    assert world.server.hits["/ok/m.onnx"] == 1
    assert (again.digest.raw, again.size) == (hashlib.sha256(PAYLOAD).digest(), len(PAYLOAD))
    assert world.store.has(sha(PAYLOAD))


def test_server_errors_are_retried_until_it_recovers(world: World) -> None:
    world.server.failures_left["/flaky/m.onnx"] = 2
    got = world.store.ingest(artifact(f"{world.server.url}/flaky/m.onnx"), None, FAST)
    assert got.fetched and world.server.hits["/flaky/m.onnx"] == 3


# --- bad inputs: refused, nothing left behind -------------------------------------------------

def _fifo(w: World) -> tuple[Artifact, Path]:
    os.mkfifo(w.repo / "pipe.onnx")
    return artifact("pipe.onnx"), w.repo


def _symlink_out(w: World) -> tuple[Artifact, Path]:
    (w.repo / "models" / "escape.onnx").symlink_to(w.outside / "secret.onnx")
    return artifact("models/escape.onnx"), w.repo


def _closed_port(w: World) -> tuple[Artifact, Path]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return artifact(f"http://127.0.0.1:{port}/m.onnx"), w.repo


BAD = [
    ("digest-mismatch", lambda w: (artifact("models/m.onnx", digest=sha(b"other")), w.repo), Stalled, "ArtifactDigestMismatch"),
    ("file-larger-than-manifest", lambda w: (artifact("models/m.onnx", size=len(PAYLOAD) - 1), w.repo), Stalled, "ArtifactTooLarge"),
    ("file-smaller-than-manifest", lambda w: (artifact("models/m.onnx", size=len(PAYLOAD) + 1), w.repo), Stalled, "ArtifactSizeMismatch"),
    ("missing-file", lambda w: (artifact("models/nope.onnx"), w.repo), Stalled, "ArtifactNotFound"),
    ("missing-file-url", lambda w: (artifact((w.repo / "nope.onnx").as_uri()), w.repo), Stalled, "ArtifactNotFound"),
    ("directory", lambda w: (artifact("models"), w.repo), Stalled, "ArtifactNotFound"),
    ("fifo", _fifo, Stalled, "ArtifactNotFound"),
    ("dotdot-escape", lambda w: (artifact("../outside/secret.onnx"), w.repo), Stalled, "ArtifactPathEscapes"),
    ("absolute-repo-path", lambda w: (artifact(str(w.outside / "secret.onnx")), w.repo), Stalled, "ArtifactPathEscapes"),
    ("symlink-escape", _symlink_out, Stalled, "ArtifactPathEscapes"),
    ("repo-path-without-repo", lambda w: (artifact("models/m.onnx"), None), Stalled, "ArtifactUriInvalid"),
    ("file-url-with-host", lambda w: (artifact("file://example.com/m.onnx"), w.repo), Stalled, "ArtifactUriInvalid"),
    ("unsupported-scheme", lambda w: (artifact("s3://bucket/m/1/model.onnx"), w.repo), Stalled, "ArtifactSchemeUnsupported"),
    ("over-site-limit", lambda w: (artifact("models/m.onnx", size=(2 << 30) + 1), w.repo), Stalled, "ArtifactTooLarge"),
    ("http-404", lambda w: (artifact(f"{w.server.url}/status/404"), None), Stalled, "ArtifactNotFound"),
    ("http-403", lambda w: (artifact(f"{w.server.url}/status/403"), None), Stalled, "ArtifactRequestRejected"),
    ("http-500-always", lambda w: (artifact(f"{w.server.url}/status/500"), None), Interrupted, "ArtifactUnavailable"),
    ("http-truncated", lambda w: (artifact(f"{w.server.url}/truncated/m"), None), Interrupted, "ArtifactTruncated"),
    ("http-slow", lambda w: (artifact(f"{w.server.url}/slow/m"), None), Interrupted, "ArtifactUnavailable"),
    ("http-refused", _closed_port, Interrupted, "ArtifactUnavailable"),
    ("http-content-length-too-long", lambda w: (artifact(f"{w.server.url}/long/m"), None), Stalled, "ArtifactTooLarge"),
    ("http-content-length-too-short", lambda w: (artifact(f"{w.server.url}/short/m"), None), Stalled, "ArtifactSizeMismatch"),
    ("http-endless-body", lambda w: (artifact(f"{w.server.url}/endless/m"), None), Stalled, "ArtifactTooLarge"),
    ("http-digest-mismatch", lambda w: (artifact(f"{w.server.url}/ok/m", digest=sha(b"x")), None), Stalled, "ArtifactDigestMismatch"),
]


@pytest.mark.parametrize(("make", "kind", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_and_nothing_is_published(
    world: World, make: Callable[[World], tuple[Artifact, Path | None]], kind: type, reason: str
) -> None:
    """Only a failure that may pass keeps what it received, as a part file for the next ingest."""
    bad, repo_root = make(world)
    with pytest.raises(ReconcilerError) as caught:
        world.store.ingest(bad, repo_root, FAST)

    assert (type(caught.value), caught.value.reason) == (kind, reason), str(caught.value)
    assert bad.uri in caught.value.message
    assert world.blobs() == []
    assert set(world.temps()) <= (left_by(bad) if issubclass(kind, Transient) else set())


def test_digest_mismatch_names_both_digests(world: World) -> None:
    with pytest.raises(Stalled) as caught:
        world.store.ingest(artifact("models/m.onnx", digest=sha(b"other")), world.repo, FAST)
    assert sha(b"other") in caught.value.message and sha(PAYLOAD) in caught.value.message


@pytest.mark.parametrize(("path", "attempts"), [("/status/500", 3), ("/status/404", 1)])
def test_only_transient_failures_are_retried(world: World, path: str, attempts: int) -> None:
    with pytest.raises(ReconcilerError):
        world.store.ingest(artifact(world.server.url + path), None, FAST)
    assert world.server.hits[path] == attempts


def test_bad_digest_string_is_refused(world: World) -> None:
    with pytest.raises(Stalled) as caught:
        world.store.path_for("sha256:../../etc/passwd")
    assert caught.value.reason == "DigestInvalid"


def test_artifact_larger_than_free_space_is_refused_before_fetching(world: World) -> None:
    roomy = FetchLimits(max_bytes=1 << 60, retries=1)
    with pytest.raises(Transient) as caught:
        world.store.ingest(artifact(f"{world.server.url}/ok/m", size=1 << 55), None, roomy)
    assert caught.value.reason == "DiskFull"
    assert world.server.hits["/ok/m"] == 0


def test_disk_filling_up_while_writing_is_transient_and_publishes_nothing(world: World) -> None:
    """A real write failure: the child's file-size limit makes the temp file's write fail (EFBIG)."""
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from reconciler.ingest.artifacts import ArtifactStore\n"
        "from reconciler.settings import FetchLimits\n"
        "from reconciler.errors import ReconcilerError\n"
        "from reconciler.manifests.models import Artifact\n"
        "state, repo, digest, size = sys.argv[1:]\n"
        "wanted = Artifact(uri='models/m.onnx', digest=digest, size=int(size), signature={'uri': 'm.sig'})\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    ArtifactStore(Path(state)).ingest(wanted, Path(repo), FetchLimits(retries=1))\n"
        "except ReconcilerError as exc:\n"
        "    print(exc.reason)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(world.state), str(world.repo), sha(PAYLOAD), str(len(PAYLOAD))],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )
    assert done.stdout.strip() == "DiskFull", done.stderr
    assert world.blobs() == [] and set(world.temps()) <= left_by(artifact("models/m.onnx"))


# --- companions and garbage collection ----------------------------------------------------------

def test_fetch_bytes_reads_small_files_by_the_same_rules(world: World) -> None:
    (world.repo / "m.sig").write_bytes(b"sig")
    assert fetch_bytes("m.sig", world.repo, FAST) == b"sig"
    assert fetch_bytes(f"{world.server.url}/small/x", None, FAST) == b"signature"
    with pytest.raises(Stalled) as caught:
        fetch_bytes("../outside/secret.onnx", world.repo, FAST)
    assert caught.value.reason == "ArtifactPathEscapes"


@pytest.mark.parametrize("uri", ["models/m.onnx", "http:SERVER/ok/m"])
def test_fetch_bytes_caps_the_size(world: World, uri: str) -> None:
    with pytest.raises(Stalled) as caught:
        fetch_bytes(uri.replace("http:SERVER", world.server.url), world.repo, FAST, max_bytes=1000)
    assert caught.value.reason == "ArtifactTooLarge"


def test_garbage_collect_keeps_only_what_is_wanted(world: World) -> None:
    other = b"other artifact"
    (world.repo / "other.onnx").write_bytes(other)
    world.store.ingest(artifact("models/m.onnx"), world.repo, FAST)
    world.store.ingest(artifact("other.onnx", data=other), world.repo, FAST)
    (world.store.tmp / "crashed.part").write_bytes(b"partial")
    wanted_hex = hashlib.sha256(b"wanted").hexdigest()
    for leftover in left_by(artifact("x", data=b"unwanted")) | left_by(artifact("x", data=b"wanted")):
        (world.store.tmp / leftover).write_bytes(b"7")
    (world.store.tmp / f"{wanted_hex}.other").write_bytes(b"not ours")
    (world.store.tmp / f".{wanted_hex}.kept.x1y2.tmp").write_bytes(b"7")  # a record half written at a crash
    (world.store.blobs / "README").write_bytes(b"not ours")

    removed = world.store.garbage_collect({sha(PAYLOAD), sha(b"wanted")})

    assert removed == [sha(other)]
    assert world.blobs() == sorted([hashlib.sha256(PAYLOAD).hexdigest(), "README"])
    assert set(world.temps()) == left_by(artifact("x", data=b"wanted"))  # a download to resume
    assert not world.store.has(sha(other))
