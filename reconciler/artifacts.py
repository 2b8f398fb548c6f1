"""The content-addressed blob store and the ingest of artifacts into it.

    <state>/blobs/sha256/<hex>   verified artifacts, read-only, named by their digest
    <state>/blobs/tmp/           downloads in progress (same file system, so the final rename is atomic)

Bytes are hashed as they stream in and written to a temp file; only a file whose size and digest
match the manifest is renamed into ``blobs/sha256``. So a blob that exists is a verified blob, and
nothing partial or unverified is ever visible there. Where bytes come from, and how (timeouts,
redirects, credentials, resume), is ``reconciler.fetch``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ReconcilerError, Stalled, Transient
from reconciler.fetch import AuthConfig, Body, Deadline, FetchLimits, open_source, with_retries
from reconciler.manifests.models import Artifact
from reconciler.state import fsync_dir

__all__ = ["ArtifactStore", "AuthConfig", "FetchLimits", "Ingested", "fetch_bytes"]

CHUNK_SIZE = 4 << 20  # large reads keep the per-chunk Python work negligible next to hashing
BUFFERS = 4  # in flight between the network and the hashing thread
WRITEBACK_STEP = 16 << 20
COMPANION_MAX_BYTES = 64 << 10
DEFAULT_LIMITS = FetchLimits()
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


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

    def ingest(self, artifact: Artifact, repo_root: Path | None, limits: FetchLimits = DEFAULT_LIMITS) -> Ingested:
        """Make the artifact present in the store, verified against its manifest size and digest.
        A download cut off midway is resumed by the next attempt when the server allows ranges."""
        path = self.path_for(artifact.digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            pass
        else:
            # The bytes were proven once; a manifest that misstates their size is still refused,
            # as it would be on a site that has to download them.
            if size != artifact.size:
                reason = "ArtifactTooLarge" if size > artifact.size else "ArtifactSizeMismatch"
                raise Stalled(reason, f"{artifact.uri}: manifest size {artifact.size}, but {artifact.digest} has {size} bytes")
            return Ingested(path, artifact.digest, bytes.fromhex(path.name), size, fetched=False)
        if artifact.size > limits.max_bytes:
            raise Stalled(
                "ArtifactTooLarge",
                f"{artifact.uri}: manifest size {artifact.size} exceeds this site's limit of {limits.max_bytes} bytes",
            )
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._ensure_room(artifact)
        deadline = Deadline(limits.deadline, artifact.uri)
        with _Download(self.tmp, artifact) as download:
            with_retries(limits, deadline, lambda: download.attempt(repo_root, limits, deadline))
            sha = download.finish()
            if f"sha256:{sha.hexdigest()}" != artifact.digest:
                raise Stalled(
                    "ArtifactDigestMismatch",
                    f"{artifact.uri}: expected {artifact.digest}, got sha256:{sha.hexdigest()}",
                )
            path = download.publish(self.path_for(artifact.digest))
        fsync_dir(self.blobs)
        return Ingested(path, artifact.digest, sha.digest(), artifact.size, fetched=True)

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


def fetch_bytes(
    uri: str,
    repo_root: Path | None,
    limits: FetchLimits = DEFAULT_LIMITS,
    max_bytes: int = COMPANION_MAX_BYTES,
) -> bytes:
    """A small companion file (a signature, a bundle) by the same URI rules as artifacts."""
    deadline = Deadline(limits.deadline, uri)

    def read_all() -> bytes:
        buffer = memoryview(bytearray(max_bytes + 1))
        received = 0
        with open_source(uri, repo_root, limits, deadline) as opened:
            while received <= max_bytes and (n := opened.body.readinto(buffer[received:])):
                received += n
        if received > max_bytes:
            raise Stalled("ArtifactTooLarge", f"{uri}: more than {max_bytes} bytes")
        return bytes(buffer[:received])

    return with_retries(limits, deadline, read_all)


# --- one download ---------------------------------------------------------------------------------

class _Download:
    """The temp file and running SHA-256 of one ingest. It outlives a failed attempt, so the next
    one can resume where the bytes stopped.

    While the network fills the next buffer, a helper thread hashes the previous one (hashlib lets
    go of the GIL for large buffers) and another starts writing the file to disk, so the fsync
    before publishing has only the tail left. The hash covers exactly the bytes written: each
    buffer is written before it is queued for hashing, in order."""

    def __init__(self, tmp_dir: Path, artifact: Artifact):
        self.uri = artifact.uri
        self.limit = artifact.size  # one byte more proves the source larger than the manifest says
        try:
            fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
        except OSError as exc:
            raise _store_error(exc, tmp_dir) from exc
        self.path = Path(name)
        self._fd = fd
        self.received = 0
        self._resumable = False
        self._sha = hashlib.sha256()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(BUFFERS):
            self._free.put(bytearray(min(CHUNK_SIZE, self.limit + 1)))
        self._hashing: queue.SimpleQueue[tuple[hashlib._Hash, bytearray, int] | None] = queue.SimpleQueue()
        self._hasher = threading.Thread(target=self._hash_queued, name="artifact-hash", daemon=True)
        self._writeback = _Writeback(fd)

    def __enter__(self) -> _Download:
        self._hasher.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_helpers()
        os.close(self._fd)
        self.path.unlink(missing_ok=True)

    def attempt(self, repo_root: Path | None, limits: FetchLimits, deadline: Deadline) -> None:
        """One try at the missing bytes: from where the last try stopped if the source can resume,
        else from the start."""
        offset = self.received if self._resumable else 0
        with open_source(self.uri, repo_root, limits, deadline, offset, self.limit) as opened:
            if opened.start != self.received:
                self._restart()
            self._resumable = opened.resumable
            self._fill(opened.body)
        if self.received < self.limit:
            raise Stalled("ArtifactSizeMismatch", f"{self.uri}: {self.received} bytes, the manifest says {self.limit}")

    def _fill(self, body: Body) -> None:
        """Append what ``body`` yields, up to one byte past the limit."""
        while True:
            buffer = self._free.get()
            try:
                n = self._take(body, buffer)
            except BaseException:
                self._free.put(buffer)
                raise
            if n == 0:
                self._free.put(buffer)
                return
            self.received += n
            self._hashing.put((self._sha, buffer, n))
            self._writeback.wrote(self.received)

    def _restart(self) -> None:
        """Start over from byte 0 (the source cannot resume); buffers still queued for hashing go
        into the old hash object, which is dropped."""
        self._sha = hashlib.sha256()
        self.received = 0
        self._writeback.restart()
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise _store_error(exc, self.path) from exc

    def finish(self) -> hashlib._Hash:
        """The hash of everything received, once it is on disk."""
        self._stop_helpers()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _store_error(exc, self.path) from exc
        return self._sha

    def publish(self, path: Path) -> Path:
        try:
            os.fchmod(self._fd, 0o444)
            os.replace(self.path, path)
        except OSError as exc:
            raise _store_error(exc, path) from exc
        return path

    def _take(self, body: Body, buffer: bytearray) -> int:
        """Read once into ``buffer`` and write what came to the file; returns the count."""
        n = body.readinto(memoryview(buffer)[: self.limit + 1 - self.received])
        if self.received + n > self.limit:
            raise Stalled("ArtifactTooLarge", f"{self.uri}: more than the {self.limit} bytes the manifest says")
        view = memoryview(buffer)[:n]
        written = 0
        try:
            while written < n:
                written += os.pwrite(self._fd, view[written:], self.received + written)
        except OSError as exc:
            raise _store_error(exc, self.path) from exc
        return n

    def _hash_queued(self) -> None:
        while (item := self._hashing.get()) is not None:
            sha, buffer, n = item
            sha.update(memoryview(buffer)[:n])
            self._free.put(buffer)

    def _stop_helpers(self) -> None:
        if self._hasher.is_alive():
            self._hashing.put(None)
            self._hasher.join()
        self._writeback.stop()


class _Writeback:
    """fdatasync on a helper thread every WRITEBACK_STEP bytes: the disk writes while the network
    reads. An error here shows again in the final fsync, which reports it."""

    def __init__(self, fd: int):
        self._fd = fd
        self._due = threading.Event()
        self._stopping = False
        self._synced_at = 0
        self._thread: threading.Thread | None = None

    def wrote(self, total: int) -> None:
        if total - self._synced_at < WRITEBACK_STEP:
            return
        self._synced_at = total
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="artifact-writeback", daemon=True)
            self._thread.start()
        self._due.set()

    def restart(self) -> None:
        self._synced_at = 0

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._due.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._stopping:
                return
            try:
                os.fdatasync(self._fd)
            except OSError:
                return


def _hex_of(digest: str) -> str:
    match = _DIGEST.match(digest)
    if not match:
        raise Stalled("DigestInvalid", f"{digest!r} is not a sha256:<64 hex> digest")
    return match.group(1)


def _store_error(exc: OSError, where: Path) -> ReconcilerError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return Transient("DiskFull", f"writing {where}: {exc.strerror}")
    return Transient("StoreWriteFailed", f"writing {where}: {exc.strerror or exc}")
