"""Reading artifact bytes from where a manifest points — a repo-relative path, ``file://``,
``http(s)://`` (``reconciler.ingest.httpsource``), ``oci://`` or ``oci-layout://``
(``reconciler.ingest.ocisource``) — under the site's fetch settings.

A source is opened at an offset and gives a ``Body`` that reads straight into the caller's buffer
(one kernel copy, no Python-level copies)."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urljoin, urlsplit

from reconciler import reasons
from reconciler.errors import Interrupted, Stalled, Transient
from reconciler.ingest.fetch import Deadline, Opened, RepoRoot, RepoTree
from reconciler.ingest.httpsource import http_source
from reconciler.ingest.ociarchive import archive_member
from reconciler.ingest.ocisource import layout_blob, oci_source
from reconciler.manifests.types import Digest
from reconciler.settings import FetchLimits

__all__ = ["file_uri", "open_source"]


def file_uri(artifact_uri: str, path: str) -> str:
    """Where a file the artifact loads beside it (``Artifact.files``) is: ``path`` in place of the
    last part of the artifact's path; for OCI, of its ``#FILE`` (a member of the same archive layer,
    or without ``#``, the layer named ``path``)."""
    scheme = urlsplit(artifact_uri).scheme.lower()
    if scheme in ("oci", "oci-layout"):
        base, _, member = artifact_uri.partition("#")
        return f"{base}#{posixpath.join(posixpath.dirname(member), path)}"
    if scheme == "":
        return posixpath.join(posixpath.dirname(artifact_uri), path)
    return urljoin(artifact_uri, quote(path))


@contextmanager
def open_source(
    uri: str, repo_root: RepoRoot, limits: FetchLimits, deadline: Deadline,
    offset: int = 0, expected: int | None = None, pinned: Digest | None = None, arch: str | None = None,
) -> Iterator[Opened]:
    """The bytes of ``uri`` from ``offset`` on if the source can, else from 0 (see ``Opened.start``);
    ``expected`` is the artifact's full size and ``pinned`` its digest when the manifest says them,
    ``arch`` the platform it is for (an OCI image index is resolved by them)."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "":
        source = _repo_source(uri, repo_root, deadline)
    elif scheme == "file":
        source = _file_source(_file_url_path(uri), uri)
    elif scheme in ("http", "https"):
        source = http_source(uri, limits, deadline, offset, expected)
    elif scheme == "oci":
        source = oci_source(uri, limits, deadline, offset, expected, pinned, arch)
    elif scheme == "oci-layout":
        path, member = layout_blob(uri, pinned, arch)
        source = _file_source(path, uri)
        if member is not None:
            source = archive_member(uri, source, member, expected, limits.max_bytes)
    else:
        raise Stalled(reasons.ArtifactSchemeUnsupported,
                      f"{uri}: sites cannot fetch {scheme}:// URIs; give a repo-relative path, "
                      "file:///absolute/path, an http(s)://, oci:// or oci-layout:// URI")
    with source as opened:
        yield opened


def _repo_source(uri: str, repo_root: RepoRoot, deadline: Deadline) -> AbstractContextManager[Opened]:
    """A path inside the repository; neither '..', an absolute path nor a symlink may leave it."""
    if repo_root is None:
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: a repo-relative path needs a repository")
    if "\0" in uri:
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri!r}: contains a NUL byte")
    if PurePosixPath(uri).is_absolute():
        raise Stalled(reasons.ArtifactPathEscapes, f"{uri}: an absolute path is not repo-relative (use file://)")
    if isinstance(repo_root, Path):
        return _file_source(_repo_path(uri, repo_root), uri)
    return _tree_source(repo_root, uri, deadline)


@contextmanager
def _tree_source(tree: RepoTree, uri: str, deadline: Deadline) -> Iterator[Opened]:
    with tree.open_file(uri, deadline.bound(deadline.seconds)) as fd:
        yield Opened(_FileBody(fd, uri), start=0, resumable=False)


def _repo_path(uri: str, repo_root: Path) -> Path:
    root = repo_root.resolve()
    path = (root / uri).resolve()
    if not path.is_relative_to(root):
        raise Stalled(reasons.ArtifactPathEscapes, f"{uri}: resolves to {path}, outside the repository")
    return path


def _file_url_path(uri: str) -> Path:
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/") or "\0" in path:
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: expected file:///absolute/path")
    return Path(path)


@contextmanager
def _file_source(path: Path, uri: str) -> Iterator[Opened]:
    # O_NONBLOCK: opening a FIFO must not hang the agent; it is refused below as not a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise Stalled(reasons.ArtifactNotFound, f"{uri}: no such file {path}") from None
    except PermissionError:
        raise Transient(reasons.ArtifactUnreadable, f"{uri}: permission denied on {path}") from None
    except OSError as exc:
        raise Interrupted(reasons.ArtifactUnavailable, f"{uri}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Stalled(reasons.ArtifactNotFound, f"{uri}: {path} is not a regular file")
        yield Opened(_FileBody(fd, uri), start=0, resumable=False)
    finally:
        os.close(fd)


class _FileBody:
    def __init__(self, fd: int, uri: str):
        self._fd = fd
        self._uri = uri

    def readinto(self, view: memoryview) -> int:
        try:
            return os.readv(self._fd, [view])
        except OSError as exc:
            raise Interrupted(reasons.ArtifactUnavailable, f"{self._uri}: reading failed: {exc.strerror}") from exc

