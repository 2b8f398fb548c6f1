"""What a killed agent leaves behind, cleared by the next one: locks its git processes held in
the agent's own caches, half-written state files, staging trees and validation directories.

Only an agent that holds its state directory's lock calls these: no other agent writes there, and
this one runs its git commands one at a time, so a lock found at start-up or after a git command
failed is one no live git of this site holds. Without this, one kill -9 at the wrong moment stops
a site for good (git refuses to touch a locked ref, and asks a human to remove the file)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from reconciler import reasons
from reconciler.errors import ReconcilerError
from reconciler.gitdoor.source import GitSource
from reconciler.runtime.validation import WORKDIR_PREFIX

log = logging.getLogger(__name__)

# The lock files git takes outside refs/ (each beside the file it replaces, or for maintenance
# a whole run); inside refs/ every <ref>.lock.
_GIT_LOCKS = ("packed-refs.lock", "index.lock", "HEAD.lock", "config.lock", "shallow.lock",
              "objects/maintenance.lock")


def stale_git_locks(git_dir: Path) -> list[Path]:
    """The lock files in ``git_dir``; none while a ``git gc`` a fetch started in the background
    still runs there (it names itself in gc.pid) and may hold some."""
    if _gc_running(git_dir):
        log.info("a git gc is running in %s: its locks are left alone", git_dir)
        return []
    refs = git_dir / "refs"
    ref_locks = sorted(refs.rglob("*.lock")) if refs.is_dir() else []
    return [git_dir / name for name in _GIT_LOCKS if (git_dir / name).exists()] + ref_locks


def remove_git_locks(sources: Iterable[GitSource]) -> list[Path]:
    removed = [lock for source in sources for lock in stale_git_locks(source.cache_dir) if _remove(lock)]
    for lock in removed:
        log.warning("removed %s: a lock a killed git left in this agent's cache", lock)
    return removed


def rebuild_cache(source: GitSource) -> None:
    """Forget a cache git calls corrupt: the next fetch brings everything again from the remote."""
    source.close()
    shutil.rmtree(source.cache_dir, ignore_errors=True)
    log.warning("removed the cache %s, which git found corrupt: the next fetch rebuilds it from %s",
                source.cache_dir, source.url)


def heal_at_start(state_root: Path, sources: Iterable[GitSource], started: float) -> None:
    """Before the first reconcile: a killed run's git locks and its own files."""
    remove_git_locks(sources)
    for leftover in _leftovers(state_root, started):
        if _remove(leftover):
            log.info("removed %s, left by a killed run", leftover)


def heal_after_failure(sources: Iterable[GitSource], error: ReconcilerError) -> bool:
    """After a failed reconcile: locks that may have caused it go, and a corrupt cache is rebuilt.
    True when something was repaired, so trying again may help."""
    sources = list(sources)
    repaired = bool(remove_git_locks(sources))
    if error.reason == reasons.SourceCacheCorrupt:
        for source in sources:
            rebuild_cache(source)
        repaired = True
    return repaired


def _remove(path: Path) -> bool:
    """Whether ``path`` is gone now; a path this user may not remove is said, not raised."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as error:
        log.warning("cannot remove %s, left by a killed run: %s", path, error.strerror or error)
        return False
    return True


def _leftovers(state_root: Path, started: float) -> list[Path]:
    """Temp state files and checkout staging trees (no run of this site is using them while we hold
    the state lock), and validation directories of dead agents made before this run."""
    found = [*state_root.glob(".state.json.*.tmp"), *(state_root / "cache").glob(".tree.*")]
    for workdir in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        owner = workdir.name.removeprefix(WORKDIR_PREFIX).partition("-")[0]
        try:
            made = workdir.stat().st_mtime
        except FileNotFoundError:
            continue
        if owner.isdigit() and made < started and not _alive(int(owner)):
            found.append(workdir)
    return found


def _gc_running(git_dir: Path) -> bool:
    try:
        pid = (git_dir / "gc.pid").read_text().split()[0]  # "<pid> <host name>"
    except (OSError, IndexError):
        return False
    return pid.isdigit() and _alive(int(pid))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a directory from before this run under our pid: an earlier process's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
