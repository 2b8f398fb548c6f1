"""The fleet repository as a site sees it: one cheap remote check per reconcile, a bare cache
fetched with full history (the no-rollback rule needs ancestry), and trees read blob by blob.

The cache is a partial clone (``--filter=blob:none``): a fetch brings commits and trees, and a
blob comes when it is first read, so a site downloads the manifests and the artifacts it deploys,
never the models of the rest of the fleet. Blobs are fetched in batches (``fetch_missing``: every
cache miss of a load in one request) rather than by git's one-at-a-time lazy fetch. A server
that refuses filters sends everything, as a plain fetch would, and the site works the same.

One ``git cat-file --batch`` process, started on the first read and kept by the cache repository,
serves single blob reads (``RepoFile.read``, ``commit_info()``, the status refs), so reading a
few files costs a few pipe round trips, not a few processes. It ends with ``close()`` (or the
``with`` block). Many blobs at once (the loader's cache misses) go through ``read_blobs()``: one
short-lived ``cat-file --batch`` fed every id at once, which streams without waiting for us
between blobs. A GitSource is not thread-safe: one per thread."""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler import reasons
from reconciler.errors import Stalled, Transient, UsageError
from reconciler.gitdoor.committree import CommitTree
from reconciler.gitdoor.git import CommitInfo, Git, GitError, common_git_dir, in_worktree, ls_remote
from reconciler.manifests.loader import RepoFile

_REMOTE = "origin"  # the promisor remote: where the blobs the partial clone left out come from
_BLOB_FILTER = "blob:none"
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class GitSource:
    def __init__(self, url: str, branch: str, cache_dir: Path, timeout: float = 60.0):
        self.url = url
        self.branch = branch
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self._git: Git | None = None

    @property
    def git(self) -> Git:
        """The bare cache repository, created on first use."""
        if self._git is None:
            self._git = Git(self.cache_dir)
        return self._git

    def close(self) -> None:
        if self._git is not None:
            self._git.close()
            self._git = None

    def __enter__(self) -> GitSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def remote_head(self) -> str:
        """The branch's commit on the remote: one ``git ls-remote``, nothing else, because this is
        all a no-op reconcile costs. ``--heads`` makes git ask the server for ``refs/heads/`` only
        (protocol v2 ``ref-prefix``); a bare pattern is matched on the client after the server
        sent every ref, status refs included: bytes that grew with the fleet."""
        ref = f"refs/heads/{self.branch}"
        try:
            listing = ls_remote(self.url, ref, self.timeout)
        except GitError as error:
            raise git_failure(error, f"git ls-remote {self.url}", reasons.SourceUnreachable) from error
        for line in listing.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref:  # ls-remote patterns match on the tail; only the exact ref counts
                return sha
        raise Stalled(reasons.BranchNotFound, f"{self.url} has no branch {self.branch!r}")

    def fetch(self, sha: str | None = None) -> str:
        """Bring the branch into the cache and return the commit fetched. A ``sha`` the cache
        already holds needs no network and is returned as is; otherwise the result may be newer
        than ``sha`` when the branch moved since ``remote_head()``."""
        if sha is not None and self.has_commit(sha):
            return sha
        tracking = f"refs/remotes/origin/{self.branch}"
        refspec = f"+refs/heads/{self.branch}:{tracking}"
        self._clone_partially()
        try:
            self.git.fetch(_REMOTE, refspec, options=[f"--filter={_BLOB_FILTER}"], timeout=self.timeout)
        except GitError as error:
            if "couldn't find remote ref" in git_error_message(error):
                raise Stalled(reasons.BranchNotFound, f"{self.url} has no branch {self.branch!r}") from error
            raise git_failure(error, f"git fetch {self.url}", reasons.SourceFetchFailed) from error
        return self.git.resolve_commit(tracking)

    def _clone_partially(self) -> None:
        """Make the cache a partial clone of ``url`` (what ``git clone --filter`` sets up), so git
        knows where a blob it lacks can be had. Only fetched caches: a local repository read in
        place is left as it is."""
        if self.git.config_value(f'remote "{_REMOTE}"', "url") == self.url:
            return
        for key, value in (("core.repositoryformatversion", "1"), ("extensions.partialClone", _REMOTE),
                           (f"remote.{_REMOTE}.url", self.url), (f"remote.{_REMOTE}.promisor", "true"),
                           (f"remote.{_REMOTE}.partialCloneFilter", _BLOB_FILTER)):
            self.git.set_config(key, value)

    def _is_partial_clone(self) -> bool:
        return self.git.config_value("extensions", "partialClone") == _REMOTE

    def has_commit(self, sha: str) -> bool:
        """Whether the cache holds the commit; asking is local (git's lazy fetch would download
        a commit the partial clone lacks, with its whole history)."""
        return bool(_OBJECT_ID.fullmatch(sha)) and self.git.has_commit(sha)

    def fetch_missing(self, blobs: Iterable[str], timeout: float | None = None) -> None:
        """Bring the blobs the partial clone lacks, all in one fetch (within ``timeout`` seconds,
        by default the source's). Ids that name no object, and objects missing from a repository
        that is no partial clone, are left for the reader to refuse."""
        if not self._is_partial_clone():
            return
        ids = [blob for blob in dict.fromkeys(blobs) if _OBJECT_ID.fullmatch(blob)]
        missing = set(ids) - self.git.present(ids)
        if not missing:
            return
        timeout = timeout or self.timeout
        try:
            self.git.fetch_objects(_REMOTE, sorted(missing), [f"--filter={_BLOB_FILTER}"], timeout)
        except subprocess.CalledProcessError as error:
            stderr = error.stderr.decode("utf-8", "replace") if isinstance(error.stderr, bytes) else str(error.stderr)
            message = git_words(stderr) or f"exit status {error.returncode}"
            if "not our ref" in message:
                named = ", ".join(sorted(missing)[:3]) + (", ..." if len(missing) > 3 else "")
                raise Transient(reasons.SourceCacheCorrupt, f"blob(s) {named} missing from {self.git.git_dir}, and {self.url} "
                                                    f"does not have them: {message}; delete the cache") from error
            raise describe_git_failure(message, f"git fetch {self.url} (blobs)", reasons.SourceFetchFailed) from error
        except subprocess.TimeoutExpired as error:
            raise Transient(reasons.SourceFetchFailed, f"git fetch {self.url} (blobs): not done in {timeout:g}s") from error

    def first_parents(self, commit: str, limit: int) -> list[str]:
        """``commit`` and up to ``limit`` of its first-parent ancestors, newest first (the branch's
        own history: a merged branch's commits are not in it)."""
        return self.git.first_parents(commit, limit)

    def is_ancestor(self, old: str, new: str) -> bool:
        """Whether ``new`` descends from (or is) ``old``. ``new`` must be fetched; an ``old`` the
        cache has never seen is not in ``new``'s history, since fetches are never shallow."""
        if not self.has_commit(new):
            raise ValueError(f"commit {new} is not in the cache; fetch it first")
        if not self.has_commit(old):
            return False
        try:
            return self.git.is_ancestor(old, new)
        except GitError as error:
            raise cache_failure(error, self.git.git_dir) from error

    def files(self, sha: str) -> list[RepoFile]:
        """Every regular file of the commit's tree, keyed by blob id. Contents are read lazily,
        one by one or all the misses of a load at once (``read_many``), so unchanged files cost
        nothing."""
        return [self.repo_file(path, blob) for path, blob in self.git.regular_files(sha)]

    def repo_file(self, path: str, blob: str) -> RepoFile:
        """The file ``path`` with contents ``blob``, read when asked."""
        return RepoFile(path, blob, functools.partial(self.git.read_object, blob), self.read_blobs)

    def read_blobs(self, blobs: Iterable[str]) -> dict[str, bytes]:
        """The contents of many blobs by id, through one ``git cat-file --batch`` given every id
        at once: git streams them back-to-back instead of waking up once per blob."""
        wanted = list(dict.fromkeys(blobs))
        if not wanted:
            return {}
        self.fetch_missing(wanted)
        try:
            contents = self.git.read_objects(wanted)
        except subprocess.CalledProcessError as error:
            stderr = error.stderr.decode("utf-8", "replace").strip()
            raise Transient(reasons.SourceCacheCorrupt, f"git cat-file in {self.git.git_dir}: {stderr}") from error
        found = {blob: data for blob, data in zip(wanted, contents, strict=True) if data is not None}
        if len(found) < len(wanted):  # the cache lacks an object of a tree it holds
            blob = next(blob for blob in wanted if blob not in found)
            raise Transient(reasons.SourceCacheCorrupt, f"blob {blob} is missing from {self.git.git_dir}; delete the cache")
        return found

    def tree(self, sha: str) -> CommitTree:
        """The commit's files by path, for repo-relative artifact URIs: each read fetches and
        streams one blob, nothing is extracted."""
        if not self.has_commit(sha):
            raise ValueError(f"commit {sha} is not in the cache; fetch it first")
        return CommitTree(self, sha)

    def commit_info(self, sha: str) -> CommitInfo:
        return self.git.commit_info(sha)


@contextmanager
def open_location(location: str, branch: str) -> Iterator[tuple[GitSource, bool]]:
    """A fleet repo for a one-shot read, and whether it is read in place: a local repository is
    read where it is, and only read (nothing is fetched into it or written there); a URL is
    fetched into a throwaway cache, when the caller asks."""
    local = Path(location)
    with tempfile.TemporaryDirectory(prefix="reconciler-read-") as scratch:
        if not local.is_dir():
            with GitSource(location, branch, Path(scratch)) as source:
                yield source, False
            return
        try:
            git_dir = common_git_dir(local)
        except subprocess.CalledProcessError as error:
            stderr = error.stderr.decode("utf-8", "replace").strip()
            raise UsageError(f"{location} is not a git repository: {stderr}") from None
        with GitSource(str(local.resolve()), branch, git_dir) as source:
            yield source, True


@contextmanager
def open_revision(location: str, rev: str) -> Iterator[tuple[str, list[RepoFile]]]:
    """One commit of a fleet repo for a one-shot read (``plan --rev``): a local repository is
    read in place, a URL through a throwaway cache. Files must be read inside the block."""
    with open_commit(location, rev) as (source, sha):
        yield sha, source.files(sha)


@contextmanager
def open_commit(location: str, rev: str) -> Iterator[tuple[GitSource, str]]:
    """The source holding one commit of a fleet repo, and the commit: ``open_revision`` for
    readers that also check the tree out or read status refs."""
    with open_location(location, rev) as (source, in_place):
        try:
            sha = source.git.resolve_commit(rev) if in_place else source.fetch()
        except GitError as error:
            raise Stalled(reasons.RevisionNotFound, f"{location} has no commit {rev!r}") from error
        yield source, sha


def git_error_message(error: GitError) -> str:
    """git's own words for a failed command (see ``git_words``)."""
    # GitPython keeps stderr as "\n  stderr: '<text>'".
    stderr = str(error.stderr or "").strip().removeprefix("stderr: '").removesuffix("'")
    return git_words(stderr) or f"exit status {error.status}"


def git_words(stderr: str) -> str:
    """What git said went wrong: its ``fatal:`` and ``error:`` lines (a remote's too), each once,
    in order; the last line when it said neither. Hints and advice around them are left out."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if line.removeprefix("remote: ").startswith(("fatal:", "error:"))]
    return "; ".join(dict.fromkeys(said)) if said else (lines[-1] if lines else "")


# Problems of who may use a repository, which no retry solves: git's words -> reason, what to do.
_ACCESS_PROBLEMS = (
    (("dubious ownership",), reasons.DubiousOwnership,
     "the repository belongs to another user than the agent's; run the agent as the repository's owner, "
     "or mark it safe for the agent's user: git config --global --add safe.directory <path>"),
    (("permission denied", "insufficient permission", "unable to create temporary object directory",
      "read-only file system", "returned error: 403", "returned error: 401"), reasons.PermissionDenied,
     "the agent's user may not {access} this repository: grant it access (file permissions, or credentials "
     "the server accepts){where}"),
)
_CORRUPT_CACHE = ("corrupt", "bad object", "bad tree", "not a git repository", "unable to read", "is empty",
                  "missing blob", "missing tree")


def git_failure(error: GitError, doing: str, reason: str) -> Transient:
    """A typed error for a failed git command, in git's own words (see ``describe_git_failure``)."""
    return describe_git_failure(git_error_message(error), doing, reason)


def describe_git_failure(words: str, doing: str, reason: str, access: str = "read") -> Transient:
    """``reason`` for what git said, unless it names a problem of its own: access problems get
    their own reason and what to do (``access``: what was denied, "read" or "write to" for a
    push), and a corrupt local cache SourceCacheCorrupt, which the agent rebuilds."""
    lowered = words.lower()
    for needles, access_reason, advice in _ACCESS_PROBLEMS:
        if any(needle in lowered for needle in needles):
            where = ", or give the site a statusRepo it may push to" if access != "read" else ""
            return Transient(access_reason, f"{doing}: {words}; {advice.format(access=access, where=where)}")
    ours = " ".join(line for line in lowered.split("; ") if not line.startswith("remote:"))
    if any(needle in ours for needle in _CORRUPT_CACHE):
        return Transient(reasons.SourceCacheCorrupt, f"{doing}: {words}")
    return Transient(reason, f"{doing}: {words}")


def cache_failure(error: GitError, git_dir: str | Path) -> Transient:
    """A typed error for a failed git command on a local cache (one whose failure no caller
    expects)."""
    command = error.command[1] if isinstance(error.command, list) and len(error.command) > 1 else ""
    doing = f"git {command} in {git_dir}" if command else f"git in {git_dir}"
    return describe_git_failure(git_error_message(error), doing, reasons.GitCommandFailed)


def not_committable(root: Path, paths: Iterable[str]) -> dict[str, str]:
    """Which of ``paths`` (relative to ``root``, a git working tree) a commit would not give a
    site as they are here: ``untracked`` (never added, or ignored) or ``lfs`` (Git LFS stores a
    pointer in their place). Empty when ``root`` is no git working tree."""
    paths = sorted(set(paths))
    if not paths:
        return {}
    try:
        untracked = in_worktree(root, "ls-files", "-z", "--others", "--", *paths).split("\0")
        attributes = in_worktree(root, "check-attr", "-z", "filter", "--", *paths).split("\0")
    except (OSError, subprocess.CalledProcessError):
        return {}
    lfs = {attributes[i] for i in range(0, len(attributes) - 2, 3) if attributes[i + 2] == "lfs"}
    return {**{path: "lfs" for path in lfs}, **{path: "untracked" for path in untracked if path}}

