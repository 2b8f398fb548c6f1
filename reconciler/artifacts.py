"""Artifact fetching and the content-addressed blob store.

    <state>/blobs/sha256/<hex>   verified artifacts, read-only, named by their digest
    <state>/blobs/tmp/           downloads in progress (same file system, so the final rename is atomic)

Bytes are hashed as they stream in and written to a temp file; only a file whose size and digest
match the manifest is renamed into ``blobs/sha256``. So a blob that exists is a verified blob, and
nothing partial or unverified is ever visible there.

Sources by URI: a repo-relative path (confined to the repository), ``file://`` and ``http(s)://``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from reconciler.errors import ReconcilerError, Stalled, Transient
from reconciler.manifests.models import Artifact
from reconciler.state import fsync_dir

CHUNK_SIZE = 1 << 20
MAX_REDIRECTS = 5
COMPANION_MAX_BYTES = 64 << 10
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
# Failures of the source that another attempt may cure; a full disk is not one of them.
_RETRIED = {"ArtifactUnavailable", "ArtifactTruncated"}

T = TypeVar("T")


@dataclass(frozen=True)
class FetchLimits:
    """Per-site limits on fetching. ``retries`` counts attempts in total when the source fails
    transiently; the delay before attempt n+1 is ``backoff * 2**(n-1)`` plus up to ``backoff`` of jitter."""

    max_bytes: int = 2 << 30
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5


@dataclass(frozen=True)
class Ingested:
    path: Path
    digest: str  # "sha256:<hex>"
    sha256: bytes  # the raw 32-byte digest, for signature checks over the blob's hash
    size: int
    fetched: bool  # False: the blob was already in the store


class ArtifactStore:
    """The verified blobs of one state directory (``root`` is the state directory)."""

    def __init__(self, root: Path):
        self.blobs = Path(root) / "blobs" / "sha256"
        self.tmp = Path(root) / "blobs" / "tmp"

    def path_for(self, digest: str) -> Path:
        return self.blobs / _hex_of(digest)

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def ingest(self, artifact: Artifact, repo_root: Path | None, limits: FetchLimits = FetchLimits()) -> Ingested:
        """Make the artifact present in the store, verified against its manifest size and digest."""
        path = self.path_for(artifact.digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            pass
        else:
            return Ingested(path, artifact.digest, bytes.fromhex(path.name), size, fetched=False)
        if artifact.size > limits.max_bytes:
            raise Stalled(
                "ArtifactTooLarge",
                f"{artifact.uri}: manifest size {artifact.size} exceeds this site's limit of {limits.max_bytes} bytes",
            )
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._ensure_room(artifact)
        return _with_retries(limits, lambda: self._download(artifact, repo_root, limits))

    def garbage_collect(self, keep: set[str]) -> list[str]:
        """Remove blobs whose digest is not in ``keep`` and any download left by a crash; returns
        the removed digests. Call it only while no ingest runs (the agent holds the state lock)."""
        keep_hex = {_hex_of(digest) for digest in keep}
        removed = []
        for blob in sorted(self.blobs.glob("*")):
            if _DIGEST.match(f"sha256:{blob.name}") and blob.name not in keep_hex:
                blob.unlink()
                removed.append(f"sha256:{blob.name}")
        for leftover in self.tmp.glob("*"):
            leftover.unlink()
        if removed:
            fsync_dir(self.blobs)
        return removed

    def _ensure_room(self, artifact: Artifact) -> None:
        # Filling the disk would also break the atomic writes of state.json: refuse up front.
        fs = os.statvfs(self.tmp)
        free = fs.f_bavail * fs.f_frsize
        if free < artifact.size:
            raise Transient("DiskFull", f"{artifact.uri} needs {artifact.size} bytes, {self.tmp} has {free} free")

    def _download(self, artifact: Artifact, repo_root: Path | None, limits: FetchLimits) -> Ingested:
        with _open_source(artifact.uri, repo_root, limits, artifact.size) as chunks, self._temp_file() as (tmp, out):
            sha, received = _receive(chunks, out, artifact.size, artifact.uri)
            if received < artifact.size:
                raise Stalled(
                    "ArtifactSizeMismatch",
                    f"{artifact.uri}: {received} bytes, the manifest says {artifact.size}",
                )
            if f"sha256:{sha.hexdigest()}" != artifact.digest:
                raise Stalled(
                    "ArtifactDigestMismatch",
                    f"{artifact.uri}: expected {artifact.digest}, got sha256:{sha.hexdigest()}",
                )
            path = self._publish(tmp, out, artifact.digest)
        return Ingested(path, artifact.digest, sha.digest(), received, fetched=True)

    @contextmanager
    def _temp_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A temp file in blobs/tmp that is gone again unless it was published."""
        try:
            fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        except OSError as exc:
            raise _store_error(exc, self.tmp) from exc
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                yield tmp, out
        except OSError as exc:
            raise _store_error(exc, tmp) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _publish(self, tmp: Path, out: BinaryIO, digest: str) -> Path:
        out.flush()
        os.fsync(out.fileno())
        os.chmod(tmp, 0o444)
        path = self.path_for(digest)
        os.replace(tmp, path)
        fsync_dir(self.blobs)
        return path


def fetch_bytes(
    uri: str,
    repo_root: Path | None,
    limits: FetchLimits = FetchLimits(),
    max_bytes: int = COMPANION_MAX_BYTES,
) -> bytes:
    """A small companion file (a signature, a bundle) by the same URI rules as artifacts."""

    def read_all() -> bytes:
        parts, received = [], 0
        with _open_source(uri, repo_root, limits, expected=None) as chunks:
            for chunk in chunks:
                received += len(chunk)
                if received > max_bytes:
                    raise Stalled("ArtifactTooLarge", f"{uri}: more than {max_bytes} bytes")
                parts.append(bytes(chunk))
        return b"".join(parts)

    return _with_retries(limits, read_all)


# --- the copy loop --------------------------------------------------------------------------

def _receive(chunks: Iterator[bytes | memoryview], out: BinaryIO, limit: int, uri: str) -> tuple[hashlib._Hash, int]:
    sha = hashlib.sha256()
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise Stalled("ArtifactTooLarge", f"{uri}: more than the {limit} bytes the manifest says")
        sha.update(chunk)
        out.write(chunk)
    return sha, received


def _with_retries(limits: FetchLimits, attempt: Callable[[], T]) -> T:
    for n in range(max(1, limits.retries)):
        if n:
            time.sleep(limits.backoff * 2 ** (n - 1) + random.uniform(0, limits.backoff))
        try:
            return attempt()
        except Transient as exc:
            if exc.reason not in _RETRIED:
                raise
            last = exc
    raise last


def _hex_of(digest: str) -> str:
    match = _DIGEST.match(digest)
    if not match:
        raise Stalled("DigestInvalid", f"{digest!r} is not a sha256:<64 hex> digest")
    return match.group(1)


def _store_error(exc: OSError, where: Path) -> ReconcilerError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return Transient("DiskFull", f"writing {where}: {exc.strerror}")
    return Transient("StoreWriteFailed", f"writing {where}: {exc.strerror or exc}")


# --- sources ----------------------------------------------------------------------------------
# Each yields an iterator of chunks; a chunk may be a view of a reused buffer, valid until the next.

@contextmanager
def _open_source(
    uri: str, repo_root: Path | None, limits: FetchLimits, expected: int | None
) -> Iterator[Iterator[bytes | memoryview]]:
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "":
        source = _file_source(_repo_path(uri, repo_root), uri)
    elif scheme == "file":
        source = _file_source(_file_url_path(uri), uri)
    elif scheme in ("http", "https"):
        source = _http_source(uri, limits, expected)
    else:
        raise Stalled("ArtifactSchemeUnsupported", f"{uri}: scheme {scheme}:// is not supported")
    with source as chunks:
        yield chunks


def _repo_path(uri: str, repo_root: Path | None) -> Path:
    """A path inside the repository; neither '..', an absolute path nor a symlink may leave it."""
    if repo_root is None:
        raise Stalled("ArtifactUriInvalid", f"{uri}: a repo-relative path needs a repository")
    if "\0" in uri:
        raise Stalled("ArtifactUriInvalid", f"{uri!r}: contains a NUL byte")
    if PurePosixPath(uri).is_absolute():
        raise Stalled("ArtifactPathEscapes", f"{uri}: an absolute path is not repo-relative (use file://)")
    root = Path(repo_root).resolve()
    path = (root / uri).resolve()
    if not path.is_relative_to(root):
        raise Stalled("ArtifactPathEscapes", f"{uri}: resolves to {path}, outside the repository")
    return path


def _file_url_path(uri: str) -> Path:
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/") or "\0" in path:
        raise Stalled("ArtifactUriInvalid", f"{uri}: expected file:///absolute/path")
    return Path(path)


@contextmanager
def _file_source(path: Path, uri: str) -> Iterator[Iterator[memoryview]]:
    # O_NONBLOCK: opening a FIFO must not hang the agent; it is refused below as not a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise Stalled("ArtifactNotFound", f"{uri}: no such file {path}") from None
    except PermissionError:
        raise Stalled("ArtifactUnreadable", f"{uri}: permission denied on {path}") from None
    except OSError as exc:
        raise Transient("ArtifactUnavailable", f"{uri}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Stalled("ArtifactNotFound", f"{uri}: {path} is not a regular file")
        yield _file_chunks(fd, uri)
    finally:
        os.close(fd)


def _file_chunks(fd: int, uri: str) -> Iterator[memoryview]:
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    while True:
        try:
            n = os.readv(fd, [buffer])
        except OSError as exc:
            raise Transient("ArtifactUnavailable", f"{uri}: reading failed: {exc.strerror}") from exc
        if n == 0:
            return
        yield view[:n]


@contextmanager
def _http_source(uri: str, limits: FetchLimits, expected: int | None) -> Iterator[Iterator[bytes]]:
    timeout = httpx.Timeout(limits.read_timeout, connect=limits.connect_timeout)
    with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client:
        try:
            request = client.build_request("GET", uri, headers={"Accept-Encoding": "identity"})
        except httpx.InvalidURL as exc:
            raise Stalled("ArtifactUriInvalid", f"{uri}: {exc}") from exc
        try:
            response = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise Transient("ArtifactUnavailable", f"{uri}: {_describe(exc)}") from exc
        try:
            _check_response(response, uri, expected)
            yield _http_chunks(response, uri, expected)
        finally:
            response.close()


def _check_response(response: httpx.Response, uri: str, expected: int | None) -> None:
    code = response.status_code
    if code in (404, 410):
        raise Stalled("ArtifactNotFound", f"{uri}: HTTP {code}")
    if code in (408, 429) or code >= 500:
        raise Transient("ArtifactUnavailable", f"{uri}: HTTP {code}")
    if code != 200:
        raise Stalled("ArtifactRequestRejected", f"{uri}: HTTP {code}")
    declared = _declared_length(response)
    if expected is None or declared is None:
        return
    if declared > expected:
        raise Stalled("ArtifactTooLarge", f"{uri}: server sends {declared} bytes, the manifest says {expected}")
    if declared < expected:
        raise Stalled("ArtifactSizeMismatch", f"{uri}: server sends {declared} bytes, the manifest says {expected}")


def _declared_length(response: httpx.Response) -> int | None:
    """Content-Length, when it counts the bytes we will hash (no content coding)."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _http_chunks(response: httpx.Response, uri: str, expected: int | None) -> Iterator[bytes]:
    received = 0
    try:
        for chunk in response.iter_bytes():
            received += len(chunk)
            yield chunk
    except httpx.TimeoutException as exc:
        raise Transient("ArtifactUnavailable", f"{uri}: stalled after {received} bytes: {_describe(exc)}") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise Transient("ArtifactTruncated", f"{uri}: connection lost after {received} bytes: {_describe(exc)}") from exc
    except httpx.HTTPError as exc:
        raise Transient("ArtifactUnavailable", f"{uri}: {_describe(exc)}") from exc
    if expected is not None and received < expected:
        raise Transient("ArtifactTruncated", f"{uri}: stream ended after {received} of {expected} bytes")


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
