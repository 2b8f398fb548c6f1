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
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import git
from git.exc import GitCommandError

from reconciler.errors import Stalled, Transient, UsageError
from reconciler.gitdoor.committree import CommitTree
from reconciler.manifests.loader import RepoFile

_REGULAR_FILE_MODES = ("100644", "100755")  # symlinks and submodules are not fleet files
# A site has no one to type a password: fail at once instead of waiting on a prompt.
_NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0"}
_REMOTE = "origin"  # the promisor remote: where the blobs the partial clone left out come from
_BLOB_FILTER = "blob:none"
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class CommitInfo:
    author: str  # "Name <email>"
    committer: str
    date: datetime  # committer date, with its offset
    message: str


class GitSource:
    def __init__(self, url: str, branch: str, cache_dir: Path, timeout: float = 60.0):
        self.url = url
        self.branch = branch
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self._remote_git = git.Git()
        self._remote_git.update_environment(**_NO_PROMPT)
        self._repo: git.Repo | None = None

    @property
    def repo(self) -> git.Repo:
        """The bare cache repository, created on first use."""
        if self._repo is None:
            if (self.cache_dir / "HEAD").is_file():
                self._repo = git.Repo(self.cache_dir)
            else:
                self._repo = git.Repo.init(self.cache_dir, bare=True, mkdir=True)
            self._repo.git.update_environment(**_NO_PROMPT)
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

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
            listing = self._remote_git.ls_remote("--heads", "--", self.url, ref, kill_after_timeout=self.timeout)
        except GitCommandError as error:
            raise git_failure(error, f"git ls-remote {self.url}", "SourceUnreachable") from error
        for line in listing.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref:  # ls-remote patterns match on the tail; only the exact ref counts
                return sha
        raise Stalled("BranchNotFound", f"{self.url} has no branch {self.branch!r}")

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
            self.repo.git.fetch("--quiet", "--no-tags", f"--filter={_BLOB_FILTER}", "--", _REMOTE, refspec,
                                kill_after_timeout=self.timeout)
        except GitCommandError as error:
            if "couldn't find remote ref" in git_error_message(error):
                raise Stalled("BranchNotFound", f"{self.url} has no branch {self.branch!r}") from error
            raise git_failure(error, f"git fetch {self.url}", "SourceFetchFailed") from error
        return self.repo.git.rev_parse("--verify", f"{tracking}^{{commit}}")

    def _clone_partially(self) -> None:
        """Make the cache a partial clone of ``url`` (what ``git clone --filter`` sets up), so git
        knows where a blob it lacks can be had. Only fetched caches: a local repository read in
        place is left as it is."""
        config, section = self.repo.config_reader("repository"), f'remote "{_REMOTE}"'
        if config.has_section(section) and config.get_value(section, "url", default=None) == self.url:
            return
        for key, value in (("core.repositoryformatversion", "1"), ("extensions.partialClone", _REMOTE),
                           (f"remote.{_REMOTE}.url", self.url), (f"remote.{_REMOTE}.promisor", "true"),
                           (f"remote.{_REMOTE}.partialCloneFilter", _BLOB_FILTER)):
            self.repo.git.config(key, value)

    def _is_partial_clone(self) -> bool:
        config = self.repo.config_reader("repository")
        return config.has_section("extensions") and config.get_value("extensions", "partialClone", "") == _REMOTE

    def has_commit(self, sha: str) -> bool:
        """Whether the cache holds the commit; asking is local (git's lazy fetch would download
        a commit the partial clone lacks, with its whole history)."""
        if not _OBJECT_ID.fullmatch(sha):
            return False
        return self.repo.git.rev_list("--no-walk", "--ignore-missing", "--missing=allow-any", sha) == sha

    def fetch_missing(self, blobs: Iterable[str], timeout: float | None = None) -> None:
        """Bring the blobs the partial clone lacks, all in one fetch (within ``timeout`` seconds,
        by default the source's). Ids that name no object, and objects missing from a repository
        that is no partial clone, are left for the reader to refuse."""
        if not self._is_partial_clone():
            return
        ids = [blob for blob in dict.fromkeys(blobs) if _OBJECT_ID.fullmatch(blob)]
        present = self._git_lines("rev-list", "--objects", "--no-walk", "--ignore-missing", "--missing=allow-any",
                                  "--stdin", given=ids)
        missing = set(ids) - {line.split(" ")[0] for line in present}
        if not missing:
            return
        # As git's own lazy fetch: no negotiation, for the blobs are reachable from commits the
        # cache has, and a server told about those would think the cache has the blobs too.
        command = ["-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                   "--recurse-submodules=no", f"--filter={_BLOB_FILTER}", "--stdin", _REMOTE]
        timeout = timeout or self.timeout
        try:
            self._git_lines(*command, given=sorted(missing), timeout=timeout)
        except subprocess.CalledProcessError as error:
            stderr = error.stderr.decode("utf-8", "replace") if isinstance(error.stderr, bytes) else str(error.stderr)
            message = git_words(stderr) or f"exit status {error.returncode}"
            if "not our ref" in message:
                named = ", ".join(sorted(missing)[:3]) + (", ..." if len(missing) > 3 else "")
                raise Stalled("SourceCacheCorrupt", f"blob(s) {named} missing from {self.repo.git_dir}, and {self.url} "
                                                    f"does not have them: {message}; delete the cache") from error
            raise describe_git_failure(message, f"git fetch {self.url} (blobs)", "SourceFetchFailed") from error
        except subprocess.TimeoutExpired as error:
            raise Transient("SourceFetchFailed", f"git fetch {self.url} (blobs): not done in {timeout:g}s") from error

    def _git_lines(self, *args: str, given: list[str], timeout: float | None = None) -> list[str]:
        """The lines git writes, with ``given`` as its standard input, one a line. Past ``timeout``,
        git and the helpers it started (a fetch's transport, index-pack) are killed together."""
        command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE, "--git-dir", str(self.repo.git_dir), *args]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True, env={**os.environ, **_NO_PROMPT}) as process:
            try:
                out, err = process.communicate("".join(f"{line}\n" for line in given).encode("ascii"), timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                raise
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, command, out, err)
        return out.decode("utf-8", "surrogateescape").splitlines()

    def first_parents(self, commit: str, limit: int) -> list[str]:
        """``commit`` and up to ``limit`` of its first-parent ancestors, newest first (the branch's
        own history: a merged branch's commits are not in it)."""
        return self.repo.git.rev_list("--first-parent", f"--max-count={limit + 1}", commit).split()

    def is_ancestor(self, old: str, new: str) -> bool:
        """Whether ``new`` descends from (or is) ``old``. ``new`` must be fetched; an ``old`` the
        cache has never seen is not in ``new``'s history, since fetches are never shallow."""
        if not self.has_commit(new):
            raise ValueError(f"commit {new} is not in the cache; fetch it first")
        if not self.has_commit(old):
            return False
        try:
            self.repo.git.merge_base("--is-ancestor", old, new)
        except GitCommandError as error:
            if error.status == 1:
                return False
            raise cache_failure(error, self.repo.git_dir) from error
        return True

    def files(self, sha: str) -> list[RepoFile]:
        """Every regular file of the commit's tree, keyed by blob id. Contents are read lazily,
        one by one or all the misses of a load at once (``read_many``), so unchanged files cost
        nothing."""
        listing = self.repo.git.ls_tree("-r", "-z", "--full-tree", sha, stdout_as_string=False)
        read_many = self.read_blobs
        files = []
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, _, path = entry.partition(b"\t")
            mode, kind, blob = meta.decode("ascii").split(" ")
            if kind == "blob" and mode in _REGULAR_FILE_MODES:
                read = functools.partial(self._read_blob, blob)
                files.append(RepoFile(path.decode("utf-8", "surrogateescape"), blob, read, read_many))
        return files

    def _read_blob(self, blob: str) -> bytes:
        return self.repo.git.get_object_data(blob)[3]

    def read_blobs(self, blobs: Iterable[str]) -> dict[str, bytes]:
        """The contents of many blobs by id, through one ``git cat-file --batch`` given every id
        at once: git streams them back-to-back instead of waking up once per blob."""
        wanted = list(dict.fromkeys(blobs))
        if not wanted:
            return {}
        self.fetch_missing(wanted)
        command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE, "--git-dir", str(self.repo.git_dir), "cat-file", "--batch"]
        ids = "".join(f"{blob}\n" for blob in wanted).encode("ascii")
        done = subprocess.run(command, input=ids, capture_output=True, check=False)
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace").strip()
            raise Stalled("SourceCacheCorrupt", f"git cat-file in {self.repo.git_dir}: {stderr}")
        return dict(_batch_contents(done.stdout, wanted, self.repo.git_dir))

    def tree(self, sha: str) -> CommitTree:
        """The commit's files by path, for repo-relative artifact URIs: each read fetches and
        streams one blob, nothing is extracted."""
        if not self.has_commit(sha):
            raise ValueError(f"commit {sha} is not in the cache; fetch it first")
        return CommitTree(self, sha)

    def commit_info(self, sha: str) -> CommitInfo:
        commit = git.Commit(self.repo, bytes.fromhex(sha))
        return CommitInfo(
            author=f"{commit.author.name} <{commit.author.email}>",
            committer=f"{commit.committer.name} <{commit.committer.email}>",
            date=commit.committed_datetime,
            message=str(commit.message),
        )


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
    local = Path(location)
    with tempfile.TemporaryDirectory(prefix="reconciler-rev-") as scratch:
        if local.is_dir():
            try:
                git_dir = Path(git.Repo(local, search_parent_directories=True).git_dir)
            except git.InvalidGitRepositoryError:
                raise UsageError(f"{location} is not in a git repository; --rev, --base and --head read commits") from None
            source = GitSource(location, rev, git_dir)
        else:
            source = GitSource(location, rev, Path(scratch))
        with source:
            try:
                sha = source.repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}") if local.is_dir() \
                    else source.fetch()
            except GitCommandError as error:
                raise Stalled("RevisionNotFound", f"{location} has no commit {rev!r}") from error
            yield source, sha


def _batch_contents(output: bytes, blobs: list[str], git_dir: str) -> Iterator[tuple[str, bytes]]:
    """Splits ``cat-file --batch`` output: per id a ``<id> <type> <size>`` line, the contents
    and a newline; or ``<id> missing`` (or ``ambiguous``) alone."""
    at = 0
    for blob in blobs:
        end = output.index(b"\n", at)
        size = output[at:end].rpartition(b" ")[2]
        if not size.isdigit():  # the cache lacks an object of a tree it holds
            raise Stalled("SourceCacheCorrupt", f"blob {blob} is missing from {git_dir}; delete the cache")
        at = end + 1 + int(size)
        yield blob, output[end + 1 : at]
        at += 1  # the newline after the contents


def git_error_message(error: GitCommandError) -> str:
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
    (("dubious ownership",), "DubiousOwnership",
     "the repository belongs to another user than the agent's; run the agent as the repository's owner, "
     "or mark it safe for the agent's user: git config --global --add safe.directory <path>"),
    (("permission denied", "insufficient permission", "unable to create temporary object directory",
      "read-only file system", "returned error: 403", "returned error: 401"), "PermissionDenied",
     "the agent's user may not {access} this repository: grant it access (file permissions, or credentials "
     "the server accepts){where}"),
)
_CORRUPT_CACHE = ("corrupt", "bad object", "bad tree", "not a git repository", "unable to read", "is empty",
                  "missing blob", "missing tree")


def git_failure(error: GitCommandError, doing: str, reason: str) -> Transient:
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
        return Transient("SourceCacheCorrupt", f"{doing}: {words}")
    return Transient(reason, f"{doing}: {words}")


def cache_failure(error: GitCommandError, git_dir: str | Path) -> Transient:
    """A typed error for a failed git command on a local cache (one whose failure no caller
    expects)."""
    command = error.command[1] if isinstance(error.command, list) and len(error.command) > 1 else ""
    doing = f"git {command} in {git_dir}" if command else f"git in {git_dir}"
    return describe_git_failure(git_error_message(error), doing, "GitCommandFailed")


def not_committable(root: Path, paths: Iterable[str]) -> dict[str, str]:
    """Which of ``paths`` (relative to ``root``, a git working tree) a commit would not give a
    site as they are here: ``untracked`` (never added, or ignored) or ``lfs`` (Git LFS stores a
    pointer in their place). Empty when ``root`` is no git working tree."""
    paths = sorted(set(paths))
    if not paths:
        return {}
    try:
        untracked = _worktree_lines(root, "ls-files", "-z", "--others", "--", *paths)
        attributes = _worktree_lines(root, "check-attr", "-z", "filter", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return {}
    lfs = {attributes[i] for i in range(0, len(attributes) - 2, 3) if attributes[i + 2] == "lfs"}
    return {**{path: "lfs" for path in lfs}, **{path: "untracked" for path in untracked if path}}


def _worktree_lines(root: Path, *args: str) -> list[str]:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True)
    return done.stdout.decode("utf-8", "surrogateescape").split("\0")
