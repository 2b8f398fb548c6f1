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
hashed and written (in chunks, on helper threads, with direct I/O), ``reconciler.ingest.sink``.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler import reasons
from reconciler.atomicfile import atomic_write_bytes, fsync_dir
from reconciler.cancel import CancelToken
from reconciler.errors import ReconcilerError, Stalled, Transient
from reconciler.ingest.fetch import Body, Deadline, RepoRoot, read_small, with_retries
from reconciler.ingest.progress import DownloadProgress
from reconciler.ingest.sink import BUFFERS, Sink, chunk_size_for
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
        return self.blobs / _hex_of(digest)

    def model_path(self, digest: str) -> Path:
        """Where the ONNX file of this digest loads from: in its model directory if it has files, else its blob."""
        in_directory = self.models / _hex_of(digest) / MAIN_FILE
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
            raise _store_error(exc, final) from exc
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
        with progress, _Download(self.tmp, artifact, progress.update, progress.left) as download:
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
        keep_hex = {_hex_of(digest) for digest in keep}
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
            needed = artifact.size - (self.tmp / f"{_hex_of(artifact.digest)}.part").stat().st_size
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


# --- one download ---------------------------------------------------------------------------------

class _Download:
    """The part file of one ingest and the chunk being filled. It outlives a failed attempt, so the
    next one can resume at the very byte where the last one stopped: a chunk cut off midway is kept
    and filled further. Full chunks go to the ``Sink``, which hashes them in order and writes them.

    When the ingest ends with a failure that may pass (a stop, a connection lost for good), the chunk
    being filled is written too and, once everything is on disk, the ``.kept`` file beside the part
    file records how many bytes it holds. The next ingest of the same digest takes all of them up:
    it hashes them again (reading is far cheaper than downloading) and asks for the rest. A part
    file without that record is what a crash left: its last chunks may not have been written (the
    writers run out of order, at most ``BUFFERS`` chunks in flight), so all but those are taken up.
    ``kept`` says how many bytes came from the part file."""

    def __init__(self, tmp_dir: Path, artifact: Artifact | ReferenceProfile, report: Callable[[int], None],
                 left: Callable[[int], None]):
        self.uri = artifact.uri
        self.pinned = artifact.digest
        # an image index is resolved by the artifact's platform; a reference profile has none
        platform = artifact.platform if isinstance(artifact, Artifact) else None
        self.arch = platform.arch if platform else None
        self._report = report  # told the bytes received so far
        self._left = left  # told, when the ingest fails, how many bytes the next one starts from
        self.limit = artifact.size  # one byte more proves the source larger than the manifest says
        self.path = tmp_dir / f"{_hex_of(artifact.digest)}.part"
        self._kept_record = self.path.with_suffix(".kept")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _store_error(exc, tmp_dir) from exc
        self.received = 0
        self._resumable = False
        self._chunk: mmap.mmap | None = None
        self._filled = 0  # bytes of the received ones that are in ``_chunk``
        try:
            self._sink = Sink(self._fd, chunk_size_for(self.limit + 1), lambda exc: _store_error(exc, self.path))
        except OSError as exc:
            self._discard()
            raise _store_error(exc, self.path) from exc
        try:
            self.kept = self._take_up_leftover()
        except BaseException:
            self._sink.close()
            self._discard()
            raise

    def __enter__(self) -> _Download:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Transient) and self.received:
            self._left(self._keep())
        else:
            self._sink.close()
            self._discard()

    def fetch(self, repo_root: RepoRoot, limits: FetchLimits, deadline: Deadline) -> hashlib._Hash:
        with_retries(limits, deadline, lambda: self.attempt(repo_root, limits, deadline))
        return self.finish()

    def start_over(self) -> None:
        self.kept = 0
        self._restart()

    def attempt(self, repo_root: RepoRoot, limits: FetchLimits, deadline: Deadline) -> None:
        """One try at the missing bytes: from where the last try stopped if the source can resume,
        else from the start."""
        offset = self.received if self._resumable else 0
        with open_source(self.uri, repo_root, limits, deadline, offset, self.limit, self.pinned, self.arch) as opened:
            if opened.start != self.received:
                self._restart()
            self._resumable = opened.resumable
            self._fill(opened.body, deadline)
        if self.received < self.limit:
            raise Stalled(reasons.ArtifactSizeMismatch, f"{self.uri}: {self.received} bytes, the manifest says {self.limit}")

    def _fill(self, body: Body, deadline: Deadline) -> None:
        """Append what ``body`` yields, up to one byte past the limit; a read that fails leaves
        the chunk as it is for the next attempt."""
        while True:
            deadline.check()
            if self._chunk is None:
                self._chunk = self._sink.take()
            with memoryview(self._chunk) as view:
                n = body.readinto(view[self._filled : self._filled + self.limit + 1 - self.received])
            if n == 0:
                self._hand_over()
                return
            self._filled += n
            self.received += n
            self._report(self.received)
            if self.received > self.limit:
                raise Stalled(reasons.ArtifactTooLarge, f"{self.uri}: more than the {self.limit} bytes the manifest says")
            if self._filled == len(self._chunk):
                self._hand_over()

    def _hand_over(self) -> None:
        if self._filled:
            self._sink.put(self._chunk, self._filled, self.received - self._filled)
        elif self._chunk is not None:
            self._sink.give_back(self._chunk)
        self._chunk, self._filled = None, 0

    def _keep(self) -> int:
        """Put everything received on disk and record how much that is, for the next ingest of this
        digest; returns where that one will resume. The part file is closed, not removed."""
        try:
            self._hand_over()
            self._sink.finish(self.received)
            atomic_write_bytes(self._kept_record, str(self.received).encode(), 0o600)
            recorded = True
        except (ReconcilerError, OSError):
            recorded = False  # the disk failed: the next ingest takes the part file up as after a crash
        finally:
            self._sink.close()
        try:
            return self._resume_point(recorded)
        finally:
            os.close(self._fd)

    def _take_up_leftover(self) -> int:
        try:
            recorded = self._kept_record.read_bytes()
            # Gone before anything is written again: it speaks only of the bytes it found.
            self._kept_record.unlink()
        except FileNotFoundError:
            recorded = b""
        except OSError as exc:
            raise _store_error(exc, self._kept_record) from exc
        try:
            size = os.fstat(self._fd).st_size
            kept = self._resume_point(recorded=recorded.isdigit() and int(recorded) == size)
            os.ftruncate(self._fd, kept)
            self._chunk = self._sink.take_up(kept)
        except OSError as exc:
            raise _store_error(exc, self.path) from exc
        self._filled = kept % self._sink.chunk_size
        self.received = kept
        self._resumable = kept > 0  # the first attempt asks for the rest; a source that cannot resume sends all
        return kept

    def _resume_point(self, recorded: bool) -> int:
        """Where an ingest starts in the part file: at its end if ``recorded`` (all of it reached the
        disk), else at a chunk boundary before the last ``BUFFERS`` chunks, which may have holes."""
        size = os.fstat(self._fd).st_size
        chunk = self._sink.chunk_size
        usable = size if recorded else max(0, size - BUFFERS * chunk) // chunk * chunk
        # At least one byte is asked for, or a server could not say whether there are more.
        return min(usable, self.limit - 1)

    def _restart(self) -> None:
        """Start over from byte 0 (the source cannot resume)."""
        self._filled = 0
        self._hand_over()
        self._sink.restart()
        self.received = 0
        self._report(0)
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise _store_error(exc, self.path) from exc

    def finish(self) -> hashlib._Hash:
        """The hash of everything received, once it is on disk."""
        self._sink.finish(self.received)
        return self._sink.sha

    def publish(self, path: Path) -> Path:
        try:
            os.fchmod(self._fd, 0o444)
            os.replace(self.path, path)
        except OSError as exc:
            raise _store_error(exc, path) from exc
        if self._sink.direct:
            # Direct writes left the page cache cold, and validation and activation read the blob next.
            os.posix_fadvise(self._fd, 0, self.received, os.POSIX_FADV_WILLNEED)
        return path

    def _discard(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


def _holds_exactly(directory: Path, links: dict[str, Ingested]) -> bool:
    """Whether ``directory`` holds these links to these blobs and no other file."""
    try:
        present = {path.relative_to(directory).as_posix() for path in directory.rglob("*") if not path.is_dir()}
        return present == set(links) and all(os.path.samefile(directory / path, f.path) for path, f in links.items())
    except OSError:
        return False


def _hex_of(digest: str) -> str:
    """The hex digits that name a digest's blob; a digest from state.json is parsed here."""
    try:
        return Digest(digest).hex
    except ValueError as exc:
        raise Stalled(reasons.DigestInvalid, str(exc)) from None


def _digest_named(name: str) -> Digest | None:
    """The digest a file in blobs/sha256 is named for; None for any other file."""
    try:
        return Digest.from_hex(name)
    except ValueError:
        return None


def _store_error(exc: OSError, where: Path) -> ReconcilerError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return Transient(reasons.DiskFull, f"writing {where}: {exc.strerror}")
    return Transient(reasons.StoreWriteFailed, f"writing {where}: {exc.strerror or exc}")
