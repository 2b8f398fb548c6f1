"""One download into the blob store's temp directory (reconciler.ingest.artifacts): the part file,
the chunk being filled, and what a stopped or crashed download leaves for the next one to resume."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from collections.abc import Callable
from pathlib import Path

from reconciler import reasons
from reconciler.atomicfile import atomic_write_bytes
from reconciler.errors import ReconcilerError, Stalled, Transient
from reconciler.ingest.fetch import Body, Deadline, RepoRoot, with_retries
from reconciler.ingest.sink import BUFFERS, Sink, chunk_size_for
from reconciler.ingest.sources import open_source
from reconciler.manifests.models import Artifact, ReferenceProfile
from reconciler.manifests.types import Digest
from reconciler.settings import FetchLimits

__all__ = ["Download", "hex_of", "store_error"]


class Download:
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
        self.path = tmp_dir / f"{hex_of(artifact.digest)}.part"
        self._kept_record = self.path.with_suffix(".kept")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise store_error(exc, tmp_dir) from exc
        self.received = 0
        self._resumable = False
        self._chunk: mmap.mmap | None = None
        self._filled = 0  # bytes of the received ones that are in ``_chunk``
        try:
            self._sink = Sink(self._fd, chunk_size_for(self.limit + 1), lambda exc: store_error(exc, self.path))
        except OSError as exc:
            self._discard()
            raise store_error(exc, self.path) from exc
        try:
            self.kept = self._take_up_leftover()
        except BaseException:
            self._sink.close()
            self._discard()
            raise

    def __enter__(self) -> Download:
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
            raise store_error(exc, self._kept_record) from exc
        try:
            size = os.fstat(self._fd).st_size
            kept = self._resume_point(recorded=recorded.isdigit() and int(recorded) == size)
            os.ftruncate(self._fd, kept)
            self._chunk = self._sink.take_up(kept)
        except OSError as exc:
            raise store_error(exc, self.path) from exc
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
            raise store_error(exc, self.path) from exc

    def finish(self) -> hashlib._Hash:
        """The hash of everything received, once it is on disk."""
        self._sink.finish(self.received)
        return self._sink.sha

    def publish(self, path: Path) -> Path:
        try:
            os.fchmod(self._fd, 0o444)
            os.replace(self.path, path)
        except OSError as exc:
            raise store_error(exc, path) from exc
        if self._sink.direct:
            # Direct writes left the page cache cold, and validation and activation read the blob next.
            os.posix_fadvise(self._fd, 0, self.received, os.POSIX_FADV_WILLNEED)
        return path

    def _discard(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


def hex_of(digest: str) -> str:
    """The hex digits that name a digest's blob; a digest from state.json is parsed here."""
    try:
        return Digest(digest).hex
    except ValueError as exc:
        raise Stalled(reasons.DigestInvalid, str(exc)) from None


def store_error(exc: OSError, where: Path) -> ReconcilerError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return Transient(reasons.DiskFull, f"writing {where}: {exc.strerror}")
    return Transient(reasons.StoreWriteFailed, f"writing {where}: {exc.strerror or exc}")
