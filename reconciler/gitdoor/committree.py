"""One commit's files read by path straight from the site's Git cache, for repo-relative artifact
URIs: no checkout, so a site reads (and, in a partial clone, downloads) only the blobs it
deploys, not every other site's models.

A path is resolved entry by entry through the commit's trees, as the kernel would walk a
checkout: a symlink is followed within the tree, relative to the directory that holds it, and a
link that leaves the tree (an absolute target, or more ``..`` than there are directories) is
refused, as is a ``..`` in the URI itself that climbs above the root."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.gitdoor.git import REGULAR_FILE_MODES

if TYPE_CHECKING:
    import git

    from reconciler.gitdoor.source import GitSource

MAX_SYMLINK_HOPS = 40  # Linux's limit before ELOOP
_SYMLINK = 0o120000
_REGULAR_FILES = tuple(int(mode, 8) for mode in REGULAR_FILE_MODES)


class CommitTree:
    """``fetch.RepoTree`` over one commit of a ``GitSource``'s cache."""

    def __init__(self, source: GitSource, commit: str):
        self._source = source
        self.commit = commit

    @contextmanager
    def open_file(self, path: str, timeout: float) -> Iterator[int]:
        """The blob at ``path``, streamed by ``git cat-file`` through a pipe (its read end is what
        this yields); a blob the cache lacks is fetched first, alone, within ``timeout`` seconds
        (an artifact's deadline, not the short one of a manifest fetch)."""
        blob = self._resolve(path)
        self._source.fetch_missing([blob], timeout)
        with self._source.git.stream_blob(blob, path) as fd:
            yield fd

    def _resolve(self, path: str) -> str:
        """The id of the regular file ``path`` names, links followed."""
        root = self._source.git.root_tree(self.commit)
        trees = [root]  # the directories walked into, the root first
        parts = deque(PurePosixPath(path).parts)
        hops = 0
        while parts:
            name = parts.popleft()
            if name == "..":
                if len(trees) == 1:
                    raise _escape(path, hops)
                trees.pop()
                continue
            entry = _entry(trees[-1], name)
            if entry is None:
                raise Stalled(reasons.ArtifactNotFound, f"{path}: no such file in commit {self.commit}")
            if entry.mode == _SYMLINK:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise Stalled(reasons.UnsafeRepoPath, f"{path}: more than {MAX_SYMLINK_HOPS} symbolic links in a row")
                target = os.fsdecode(self._source.read_blobs([entry.hexsha])[entry.hexsha])
                if target.startswith("/"):
                    raise _escape(path, hops, f"{entry.path} links to {target!r}")
                parts.extendleft(reversed(PurePosixPath(target).parts))
            elif entry.type == "tree":
                trees.append(entry)
            elif entry.mode in _REGULAR_FILES and not parts:
                return entry.hexsha
            else:  # a file used as a directory, or a submodule
                raise Stalled(reasons.ArtifactNotFound, f"{path}: {entry.path} is not a regular file in commit {self.commit}")
        raise Stalled(reasons.ArtifactNotFound, f"{path}: a directory, not a file, in commit {self.commit}")


def _entry(tree: git.Tree, name: str) -> git.objects.base.IndexObject | None:
    for entry in tree:
        if entry.name == name:
            return entry
    return None


def _escape(path: str, hops: int, how: str = "") -> Stalled:
    if hops:  # the repository holds a link out of itself
        return Stalled(reasons.UnsafeRepoPath, f"{path}: {how or 'a symbolic link leads'} outside the repository")
    return Stalled(reasons.ArtifactPathEscapes, f"{path}: '..' leads outside the repository")
