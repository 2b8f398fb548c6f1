"""One file out of a tar or tar+gzip layer, streamed: the layer's bytes are read once, as they come,
and the member's go to the sink (so the store hashes and checks the file the Model document pins,
not the archive). Nothing is written but that one file, and the archive is refused whole when any
entry could escape an extraction: an absolute path or ``..``, a link whose target leaves the
archive, a device; the member itself must be a regular file (a link is not followed), of the
size pinned, and the entries together no larger than the site's ``fetch.maxBytes``. Not resumable:
a cut-off download starts the layer again.

A layer (by digest) once read to its end and found safe need not be read past the member again: the
next file of a multi-file model out of the same layer stops at its own member. The proof is kept
with the size the entries came to, since it holds only under a ``max_bytes`` at least that large
(two deployments may set different limits), and for the newest layers only: it is a fact about
content-addressed bytes, so it is process-wide, but it must not grow with every layer ever read."""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.ingest.fetch import Body, Opened

__all__ = ["archive_member"]

_PROVEN_SAFE: OrderedDict[str, int] = OrderedDict()  # layer digest -> its entries' size, read to the end, none refused
_PROVEN_KEPT = 64  # layers: more than the files of any one model


@contextmanager
def archive_member(uri: str, source: AbstractContextManager[Opened], member: str, expected: int | None,
                   max_bytes: int, layer: str | None = None) -> Iterator[Opened]:
    """``layer``: the layer's digest, when it names the bytes (a registry blob)."""
    wanted = _safe_name(uri, member)
    with source as opened:
        entries = _Entries(uri, opened.body, max_bytes, layer)
        for entry in entries:
            if posixpath.normpath(entry.name) != wanted:
                continue
            if not entry.isreg():
                raise Stalled(reasons.OciArchiveUnsafe, f"{uri}: {member} in the layer is a {_kind(entry)}, not a file")
            if expected is not None and entry.size != expected:
                reason = reasons.ArtifactTooLarge if entry.size > expected else reasons.ArtifactSizeMismatch
                raise Stalled(reason, f"{uri}: {member} has {entry.size} bytes in the layer, the Model document says {expected}")
            yield Opened(_MemberBody(entries, entry), start=0, resumable=False)
            return
        raise Stalled(reasons.OciLayerNotFound, f"{uri}: the archive layer has no file {member}")


def _safe_name(uri: str, name: str) -> str:
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal == ".." or normal.startswith("../") or "\0" in name:
        raise Stalled(reasons.OciArchiveUnsafe, f"{uri}: {name!r} leaves the archive")
    return normal


def _kind(entry: tarfile.TarInfo) -> str:
    return "symbolic link" if entry.issym() else "hard link" if entry.islnk() else "directory" if entry.isdir() else "special file"


class _Entries:
    """The archive's entries in order, each checked as it comes; iterating on after the member
    checks the rest of the archive too."""

    def __init__(self, uri: str, body: Body, max_bytes: int, layer: str | None):
        self.uri = uri
        self.max_bytes = max_bytes
        self.layer = layer
        self.total = 0
        try:
            self.archive = tarfile.open(fileobj=io.BufferedReader(_Raw(body), 1 << 20), mode="r|*")
        except tarfile.TarError as exc:
            raise Stalled(reasons.OciArchiveInvalid, f"{uri}: the layer is not a tar or tar+gzip archive: {exc}") from None

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        try:
            for entry in self.archive:
                self._check(entry)
                yield entry
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise Stalled(reasons.OciArchiveInvalid, f"{self.uri}: the archive layer is corrupt: {exc}") from None

    def _check(self, entry: tarfile.TarInfo) -> None:
        _safe_name(self.uri, entry.name)
        if entry.issym() or entry.islnk():
            target = entry.linkname if entry.islnk() else posixpath.join(posixpath.dirname(entry.name), entry.linkname)
            if entry.linkname.startswith("/"):
                raise Stalled(reasons.OciArchiveUnsafe, f"{self.uri}: {entry.name} links to {entry.linkname}, outside the archive")
            _safe_name(self.uri, target)
        elif not (entry.isreg() or entry.isdir()):
            raise Stalled(reasons.OciArchiveUnsafe, f"{self.uri}: {entry.name} is a {_kind(entry)}")
        self.total += entry.size
        if self.total > self.max_bytes:
            raise Stalled(reasons.ArtifactTooLarge, f"{self.uri}: the archive layer unpacks to more than {self.max_bytes} bytes")

    def read_rest(self) -> None:
        proven = _PROVEN_SAFE.get(self.layer) if self.layer is not None else None
        if proven is not None and proven <= self.max_bytes:
            return
        for _ in self:
            pass
        if self.layer is not None:
            _PROVEN_SAFE[self.layer] = self.total
            _PROVEN_SAFE.move_to_end(self.layer)
            while len(_PROVEN_SAFE) > _PROVEN_KEPT:
                _PROVEN_SAFE.popitem(last=False)


class _MemberBody:
    def __init__(self, entries: _Entries, entry: tarfile.TarInfo):
        self.entries = entries
        extracted = entries.archive.extractfile(entry)
        assert extracted is not None  # a regular file
        self.file = extracted

    def readinto(self, view: memoryview) -> int:
        try:
            n = self.file.readinto(view)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise Stalled(reasons.OciArchiveInvalid, f"{self.entries.uri}: the archive layer is corrupt: {exc}") from None
        if n == 0:
            self.entries.read_rest()  # the member is whole; nothing after it may be unsafe either
        return n


class _Raw(io.RawIOBase):
    """The layer's body as a file for ``tarfile`` (a failed read's Transient goes through it as it is)."""

    def __init__(self, body: Body):
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self.body.readinto(memoryview(buffer).cast("B"))
