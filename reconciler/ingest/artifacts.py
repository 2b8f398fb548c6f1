"""The content-addressed blob store and the ingest of artifacts into it.

    <state>/blobs/sha256/<hex>   verified artifacts, read-only, named by their digest
    <state>/blobs/tmp/<hex>.part downloads in progress (same file system, so the final rename is atomic)
    <state>/blobs/tmp/<hex>.kept how many bytes of that part file a stopped download left on disk
    <state>/models/<hex>/        a model with files (ONNX external data): hard links to its verified
                                 blobs, the ONNX file (digest <hex>) as model.onnx, each file at its path

Bytes are hashed as they stream in and written to a temp file; only a file whose size and digest
match the manifest is renamed into ``blobs/sha256``. So a blob that exists is a verified blob, and
nothing partial or unverified is ever visible there. A download that fails for a reason that may
pass (a lost connection, a deadline, a stopped agent) leaves its part file, and the next ingest of
the same digest, in this run or after a restart, asks only for the rest: from the very byte where
it stopped, or, after a crash, from a few chunks before the end of what it finds. Where bytes come
from, and how (timeouts, redirects, credentials, resume), is ``reconciler.ingest.sources`` (over HTTP,
``reconciler.ingest.httpsource``) under the settings of ``reconciler.ingest.fetch``; how they are
hashed and written (in chunks, on helper threads, with direct I/O), ``reconciler.ingest.sink``;
one download's part file and its resumption, ``reconciler.ingest.download``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler import reasons
from reconciler.atomicfile import fsync_dir
from reconciler.cancel import CancelToken
from reconciler.errors import Stalled, Transient
from reconciler.ingest.download import Download, hex_of, store_error
from reconciler.ingest.fetch import Deadline, RepoRoot, read_small, with_retries
from reconciler.ingest.progress import DownloadProgress
from reconciler.ingest.sources import open_source
from reconciler.manifests.models import MAIN_FILE, Artifact, ReferenceProfile
from reconciler.manifests.types import Digest
from reconciler.settings import FetchLimits

__all__ = ["ArtifactStore", "Ingested", "fetch_bytes"]

COMPANION_MAX_BYTES = 64 << 10
DEFAULT_LIMITS = FetchLimits()


@dataclass(frozen=True)
class Ingested:
    path: Path
    digest: Digest
    size: int
    fetched: bool  # False: the blob was already in the store


class ArtifactStore:
    """The verified blobs of one state directory (``root`` is the state directory).
    ``count_bytes`` is told every downloaded byte (the agent's metrics)."""

    def __init__(self, root: Path, count_bytes: Callable[[int], None] | None = None):
        self.blobs = Path(root) / "blobs" / "sha256"
        self.tmp = Path(root) / "blobs" / "tmp"
        self.models = Path(root) / "models"
        self.count_bytes = count_bytes

    def path_for(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def model_path(self, digest: str) -> Path:
        """Where the ONNX file of this digest loads from: in its model directory if it has files, else its blob."""
        in_directory = self.models / hex_of(digest) / MAIN_FILE
        return in_directory if in_directory.is_file() else self.path_for(digest)

    def materialize(self, model: Ingested, files: dict[str, Ingested]) -> Ingested:
        """The model's directory: its ONNX file and its files (paths checked by ``ArtifactFile``), hard
        links to the verified blobs and nothing else. A directory of other links is made afresh beside
        it and swapped in whole, so a load never sees it half made."""
        final = self.models / model.digest.hex
        links = {MAIN_FILE: model, **files}
        made = Ingested(final / MAIN_FILE, model.digest, model.size, model.fetched or any(f.fetched for f in files.values()))
        if _holds_exactly(final, links):
            return made
        building, retired = (self.models / f".{model.digest.hex}.{os.getpid()}{end}" for end in ("", ".old"))
        try:
            for leftover in (building, retired):
                shutil.rmtree(leftover, ignore_errors=True)
            building.mkdir(parents=True)
            for path, ingested in links.items():
                target = building / path
                if not target.resolve().is_relative_to(building.resolve()):
                    raise Stalled(reasons.ArtifactPathEscapes, f"{path}: leaves the model's directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(ingested.path, target)
            if final.exists():
                os.replace(final, retired)
            os.replace(building, final)
        except OSError as exc:
            raise store_error(exc, final) from exc
        finally:
            for leftover in (building, retired):
                shutil.rmtree(leftover, ignore_errors=True)
        fsync_dir(self.models)
        return made

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def ingest(self, artifact: Artifact | ReferenceProfile, repo_root: RepoRoot, limits: FetchLimits = DEFAULT_LIMITS,
               stop: CancelToken | None = None) -> Ingested:
        """Make the artifact present in the store, verified against its manifest size and digest.
        A download cut off midway is resumed, by the next attempt or the next ingest, when the
        server allows ranges; ``stop`` cuts it off within a read (Cancelled)."""
        path = self.path_for(artifact.digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            pass
        else:
            # The bytes were proven once; a manifest that misstates their size is still refused,
            # as it would be on a site that has to download them.
            if size != artifact.size:
                reason = reasons.ArtifactTooLarge if size > artifact.size else reasons.ArtifactSizeMismatch
                raise Stalled(reason, f"{artifact.uri}: manifest size {artifact.size}, but {artifact.digest} has {size} bytes")
            return Ingested(path, artifact.digest, size, fetched=False)
        if artifact.size > limits.max_bytes:
            raise Stalled(
                reasons.ArtifactTooLarge,
                f"{artifact.uri}: manifest size {artifact.size} exceeds this site's limit of {limits.max_bytes} bytes",
            )
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._ensure_room(artifact)
        deadline = Deadline(limits.deadline, artifact.uri, stop)
        progress = DownloadProgress(artifact.uri, artifact.size, self.count_bytes)
        with progress, Download(self.tmp, artifact, progress.update, progress.left) as download:
            progress.begin(download.kept)
            sha = download.fetch(repo_root, limits, deadline)
            if download.kept and Digest.of(sha) != artifact.digest:
                # Bytes kept from an earlier run may not be the server's: a crash before they reached
                # the disk, or a file replaced on the server since. They decide nothing: once more from byte 0.
                download.start_over()
                sha = download.fetch(repo_root, limits, deadline)
            if (got := Digest.of(sha)) != artifact.digest:
                raise Stalled(reasons.ArtifactDigestMismatch, f"{artifact.uri}: expected {artifact.digest}, got {got}")
            path = download.publish(self.path_for(artifact.digest))
        fsync_dir(self.blobs)
        return Ingested(path, artifact.digest, artifact.size, fetched=True)

    def garbage_collect(self, keep: set[str]) -> list[str]:
        """Remove blobs whose digest is not in ``keep`` and every part file but those of ``keep``;
        returns the removed digests. Call it only while no ingest runs (the agent holds the state lock)."""
        keep_hex = {hex_of(digest) for digest in keep}
        linked = set()  # the files of kept model directories, so their blobs stay for the next check too
        for directory in self.models.glob("*") if self.models.is_dir() else ():
            if directory.name in keep_hex:
                linked |= {path.stat().st_ino for path in directory.rglob("*") if path.is_file()}
            else:
                shutil.rmtree(directory, ignore_errors=True)
        removed = []
        for blob in sorted(self.blobs.glob("*")):
            if blob.name not in keep_hex and (digest := _digest_named(blob.name)) is not None \
                    and blob.stat().st_ino not in linked:
                blob.unlink()
                removed.append(digest)
        for leftover in self.tmp.glob("*"):
            name, dot, suffix = leftover.name.partition(".")
            if name not in keep_hex or dot + suffix not in (".part", ".kept"):
                leftover.unlink()
        if removed:
            fsync_dir(self.blobs)
        return removed

    def _ensure_room(self, artifact: Artifact) -> None:
        # Filling the disk would also break the atomic writes of state.json: refuse up front.
        fs = os.statvfs(self.tmp)
        free = fs.f_bavail * fs.f_frsize
        try:
            needed = artifact.size - (self.tmp / f"{hex_of(artifact.digest)}.part").stat().st_size
        except FileNotFoundError:
            needed = artifact.size
        if free < needed:
            raise Transient(reasons.DiskFull, f"{artifact.uri} needs {needed} more bytes, {self.tmp} has {free} free")


def fetch_bytes(
    uri: str,
    repo_root: RepoRoot,
    limits: FetchLimits = DEFAULT_LIMITS,
    max_bytes: int = COMPANION_MAX_BYTES,
    stop: CancelToken | None = None,
) -> bytes:
    """A small companion file (a signature, a bundle) by the same URI rules as artifacts."""
    deadline = Deadline(limits.deadline, uri, stop)

    def read_all() -> bytes:
        with open_source(uri, repo_root, limits, deadline) as opened:
            return read_small(opened.body, max_bytes, uri)

    return with_retries(limits, deadline, read_all)


def _holds_exactly(directory: Path, links: dict[str, Ingested]) -> bool:
    """Whether ``directory`` holds these links to these blobs and no other file."""
    try:
        present = {path.relative_to(directory).as_posix() for path in directory.rglob("*") if not path.is_dir()}
        return present == set(links) and all(os.path.samefile(directory / path, f.path) for path, f in links.items())
    except OSError:
        return False


def _digest_named(name: str) -> Digest | None:
    """The digest a file in blobs/sha256 is named for; None for any other file."""
    try:
        return Digest.from_hex(name)
    except ValueError:
        return None
