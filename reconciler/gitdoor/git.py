"""The one door to git: every git command reconciler runs is a function or a method here, so the
command lines, the environments they run in and the parsing of git's output are written once.

Two environments. Commands on a site's cache run with the process's environment and never prompt
for a password (a site has no one to type one). Commands whose output is parsed as a report (log
walks, signature checks, finding a local repository) also leave out the user's and the system's
git config (``ISOLATED_ENV``): ``log.showSignature``, colours or ``gpg.program`` must not change the
answer. A command that fails raises ``GitError`` (GitPython's ``GitCommandError``) or, for the
commands fed through a pipe, ``subprocess.CalledProcessError``; turning those into typed errors
is the caller's business, for only the caller knows what was being done."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import git
from git.exc import GitCommandError
from gitdb import IStream

from reconciler import reasons
from reconciler.errors import Transient

GitError = GitCommandError
NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0"}
ISOLATED_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
REGULAR_FILE_MODES = ("100644", "100755")  # symlinks and submodules are not fleet files
# What a repository read in place may set in its own config is overruled on the command line.
_PLAIN_LOG = ("--no-show-signature", "--no-color")


@dataclass(frozen=True)
class CommitInfo:
    author: str  # "Name <email>"
    committer: str
    date: datetime  # committer date, with its offset
    message: str


def ls_remote(url: str, ref: str, timeout: float) -> str:
    """``git ls-remote --heads`` of one branch: the agent's poll, one process and one round trip.
    ``--heads`` makes git ask the server for branches alone (protocol v2 ``ref-prefix``); a bare
    pattern is matched on the client after the server sent every ref, each site's status ref
    included, so a no-op poll cost grew with the fleet (802 KB at 10 000 sites; 834 B now)."""
    remote = git.Git()
    remote.update_environment(**NO_PROMPT)
    return remote.ls_remote("--heads", "--", url, ref, kill_after_timeout=timeout)


def in_worktree(root: Path, *args: str, isolated: bool = False) -> str:
    """A git command run in the working tree (or repository) ``root``, its output. Raises
    CalledProcessError, with git's stderr, when it fails."""
    env = {**os.environ, **ISOLATED_ENV} if isolated else None
    done = subprocess.run([_executable(), "-C", str(root), *args], capture_output=True, check=True, env=env)
    return done.stdout.decode("utf-8", "surrogateescape")


def common_git_dir(root: Path) -> Path:
    """The repository that holds ``root`` (its objects and refs, shared by its worktrees)."""
    found = in_worktree(root, "rev-parse", "--path-format=absolute", "--git-common-dir", isolated=True)
    return Path(found.strip())


class Git:
    """The git commands on one repository: a site's bare cache (created on first use) or a
    repository read in place. Single blob reads go through one ``cat-file --batch`` process that
    the repository keeps until ``close()``."""

    def __init__(self, git_dir: Path):
        if (git_dir / "HEAD").is_file():
            self._repo = git.Repo(git_dir)
        else:
            self._repo = git.Repo.init(git_dir, bare=True, mkdir=True)
        self._repo.git.update_environment(**NO_PROMPT)

    @property
    def git_dir(self) -> str:
        return str(self._repo.git_dir)

    def close(self) -> None:
        self._repo.close()

    # --- the network ------------------------------------------------------------------------------

    def fetch(self, remote: str, *refspecs: str, options: Iterable[str] = (), timeout: float) -> None:
        self._repo.git.fetch("--quiet", "--no-tags", *options, "--", remote, *refspecs,
                             kill_after_timeout=timeout)

    def fetch_objects(self, remote: str, ids: list[str], options: Iterable[str], timeout: float) -> None:
        """Fetch these objects by id. As git's own lazy fetch: no negotiation, for they are
        reachable from commits the cache has, and a server told about those would think the cache
        has the objects too."""
        self._lines("-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet", "--no-tags",
                    "--no-write-fetch-head", "--recurse-submodules=no", *options, "--stdin", remote,
                    given=ids, timeout=timeout)

    def push(self, url: str, refspecs: Sequence[str], timeout: float, *options: str) -> tuple[int, str, str]:
        """``git push --porcelain`` of ``refspecs`` in one push (``options``: e.g.
        ``--force-with-lease=REF:EXPECTED``): its exit status, standard output and standard error."""
        return self._repo.git.push("--porcelain", *options, "--", url, *refspecs, with_extended_output=True,
                                   with_exceptions=False, kill_after_timeout=timeout)

    # --- commits and trees ------------------------------------------------------------------------

    def resolve_commit(self, rev: str) -> str:
        return self._repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")

    def has_commit(self, sha: str) -> bool:
        """Asked locally (git's lazy fetch would download a commit a partial clone lacks)."""
        return self._repo.git.rev_list("--no-walk", "--ignore-missing", "--missing=allow-any", sha) == sha

    def present(self, ids: list[str]) -> set[str]:
        """Which of these objects the repository holds, asked locally."""
        listing = self._lines("rev-list", "--objects", "--no-walk", "--ignore-missing", "--missing=allow-any",
                              "--stdin", given=ids)
        return {line.split(" ")[0] for line in listing}

    def first_parents(self, commit: str, limit: int) -> list[str]:
        return self._repo.git.rev_list("--first-parent", f"--max-count={limit + 1}", commit).split()

    def is_ancestor(self, old: str, new: str) -> bool:
        try:
            self._repo.git.merge_base("--is-ancestor", old, new)
        except GitError as error:
            if error.status == 1:
                return False
            raise
        return True

    def regular_files(self, sha: str) -> list[tuple[str, str]]:
        """(path, blob) of every regular file in the commit's tree."""
        listing = self._repo.git.ls_tree("-r", "-z", "--full-tree", sha, stdout_as_string=False)
        files = []
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, _, path = entry.partition(b"\t")
            mode, kind, blob = meta.decode("ascii").split(" ")
            if kind == "blob" and mode in REGULAR_FILE_MODES:
                files.append((path.decode("utf-8", "surrogateescape"), blob))
        return files

    def root_tree(self, commit: str) -> git.Tree:
        return git.Commit(self._repo, bytes.fromhex(commit)).tree

    def commit_info(self, sha: str) -> CommitInfo:
        commit = git.Commit(self._repo, bytes.fromhex(sha))
        return CommitInfo(author=f"{commit.author.name} <{commit.author.email}>",
                          committer=f"{commit.committer.name} <{commit.committer.email}>",
                          date=commit.committed_datetime, message=str(commit.message))

    def log(self, *args: str, env: Mapping[str, str] = ISOLATED_ENV) -> str:
        return self._repo.git.log(*_PLAIN_LOG, *args, env=dict(env))

    def log_bytes(self, *args: str, env: Mapping[str, str] = ISOLATED_ENV) -> bytes:
        return self._repo.git.log(*_PLAIN_LOG, *args, env=dict(env), stdout_as_string=False)

    def merge_tree(self, *parents: str) -> str:
        """The tree a clean merge of ``parents`` gives; GitError with status 1 when they conflict."""
        return self._repo.git.merge_tree("--write-tree", *parents, env=dict(ISOLATED_ENV)).split("\n", 1)[0]

    # --- objects ------------------------------------------------------------------------------------

    def read_object(self, name: str) -> bytes:
        """One object's contents (``sha`` or ``rev:path``) through the kept ``cat-file`` process;
        ValueError when there is no such object."""
        return self._repo.git.get_object_data(name)[3]

    def read_objects(self, names: list[str]) -> list[bytes | None]:
        """Many objects' contents, in order (None for a missing one), through one ``cat-file
        --batch`` given every name at once: git streams them back-to-back."""
        if not names:
            return []
        command = [_executable(), "--git-dir", self.git_dir, "cat-file", "--batch"]
        request = "".join(f"{name}\n" for name in names).encode("utf-8", "surrogateescape")
        done = subprocess.run(command, input=request, capture_output=True, check=True,
                              env={**os.environ, **NO_PROMPT})
        return list(batch_contents(done.stdout, len(names)))

    def tree_names(self, rev: str) -> list[str]:
        """The names of the files at the top of ``rev``'s tree."""
        return self._repo.git.ls_tree("--name-only", rev).splitlines()

    @contextmanager
    def stream_blob(self, blob: str, shown: str) -> Iterator[int]:
        """The blob's bytes through a pipe from ``git cat-file`` (its read end is what this
        yields); ``shown`` names the blob in the error when git cannot read it."""
        reader = subprocess.Popen([_executable(), "--git-dir", self.git_dir, "cat-file", "blob", blob],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert reader.stdout is not None and reader.stderr is not None
        try:
            yield reader.stdout.fileno()
        except BaseException:
            reader.kill()
            raise
        finally:
            reader.stdout.close()  # a git still writing gets SIGPIPE: the reader had all it wanted
            stderr = reader.stderr.read().decode("utf-8", "replace").strip()
            reader.stderr.close()
            status = reader.wait()
        if status not in (0, -signal.SIGPIPE):
            raise Transient(reasons.SourceCacheCorrupt, f"git cat-file {blob} ({shown}) in {self.git_dir}: {stderr}")

    def write_commit(self, files: list[tuple[str, bytes]], message: str, parent: str | None,
                     author: tuple[str, str], date: datetime) -> str:
        """A commit whose tree holds ``files`` (name, bytes; flat, in git's order: by name), by
        ``author`` (name, email) at ``date``; no ref moves."""
        tree = self._store(b"tree", b"".join(b"100644 " + name.encode() + b"\0" + self._store(b"blob", data)
                                             for name, data in sorted(files)))
        actor = git.Actor(*author)
        commit = git.Commit.create_from_tree(
            self._repo, git.Tree(self._repo, tree), message,
            parent_commits=[git.Commit(self._repo, bytes.fromhex(parent))] if parent else [],
            author=actor, committer=actor, author_date=date, commit_date=date,
        )
        return commit.hexsha

    def _store(self, kind: bytes, data: bytes) -> bytes:
        return self._repo.odb.store(IStream(kind, len(data), io.BytesIO(data))).binsha

    # --- refs and config ----------------------------------------------------------------------------

    def ref_tip(self, ref: str) -> str | None:
        try:  # read from the ref files, no process
            return git.SymbolicReference.dereference_recursive(self._repo, ref)
        except ValueError:
            return None

    def for_each_ref(self, prefix: str, format: str) -> list[str]:
        return self._repo.git.for_each_ref(f"--format={format}", prefix).splitlines()

    def update_ref(self, ref: str, commit: str) -> None:
        self._repo.git.update_ref(ref, commit)

    def delete_ref(self, ref: str) -> None:
        self._repo.git.update_ref("-d", ref)

    def config_value(self, section: str, option: str) -> str | None:
        """A value of the repository's own config (read from the file, no process)."""
        config = self._repo.config_reader("repository")
        if not config.has_section(section):
            return None
        value = config.get_value(section, option, default=None)
        return None if value is None else str(value)

    def set_config(self, key: str, value: str) -> None:
        self._repo.git.config(key, value)

    def _lines(self, *args: str, given: list[str], timeout: float | None = None) -> list[str]:
        """The lines git writes, with ``given`` as its standard input, one a line. Past ``timeout``,
        git and the helpers it started (a fetch's transport, index-pack) are killed together."""
        command = [_executable(), "--git-dir", self.git_dir, *args]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True, env={**os.environ, **NO_PROMPT}) as process:
            try:
                request = "".join(f"{line}\n" for line in given).encode("ascii")
                out, err = process.communicate(request, timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                raise
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, command, out, err)
        return out.decode("utf-8", "surrogateescape").splitlines()


def batch_contents(output: bytes, count: int) -> Iterator[bytes | None]:
    """Splits ``cat-file --batch`` output for ``count`` names: per name a ``<id> <type> <size>``
    line, the contents and a newline; or ``<name> missing`` (or ``ambiguous``) alone: None."""
    at = 0
    for _ in range(count):
        end = output.index(b"\n", at)
        size = output[at:end].rpartition(b" ")[2]
        if not size.isdigit():
            at = end + 1
            yield None
            continue
        at = end + 1 + int(size)
        yield output[end + 1 : at]
        at += 1  # the newline after the contents


def _executable() -> str:
    return str(git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git")
