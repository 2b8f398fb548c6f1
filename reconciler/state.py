"""The site's state directory: what is installed and active, written so a crash at any instant
leaves either the old or the new state on disk, never neither.

    <state>/blobs/sha256/<hex>   verified artifacts (artifacts.py writes them)
    <state>/state.json           SiteState
    <state>/lock                 one agent per directory (flock, released by the kernel on death)
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler.canary import CanaryProgress
from reconciler.errors import Stalled, Transient
from reconciler.manifests.models import ModelInterface

STATE_FILE = "state.json"
HISTORY_LIMIT = 50


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """temp file in the same directory + fsync + rename + fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class Installed(BaseModel):
    """One verified, validated version of a deployment on this site."""

    model_config = ConfigDict(frozen=True)

    version: str
    digest: str
    uri: str
    installedAt: datetime
    checks: str | None = None  # same_version.checks_digest of the interface and cases it was validated against


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    event: str  # activated, removed, rolledBack, failed
    version: str | None = None
    commit: str | None = None
    reason: str | None = None


class DeploymentState(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    interface: ModelInterface  # kept so a restart serves the active version before the repo is read
    active: Installed | None = None
    previous: Installed | None = None
    canary: Installed | None = None  # validated, taking canaryProgress.weight % of traffic
    canaryProgress: CanaryProgress | None = None
    rollout: str | None = None  # the rollout the active (or canary) version belongs to
    wave: str | None = None
    history: list[HistoryEntry] = []


class SiteState(BaseModel):
    model_config = ConfigDict(frozen=True)

    site: str
    appliedCommit: str | None = None  # last commit whose plan was fully applied
    deployments: dict[str, DeploymentState] = {}


class StateDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the directory for this process; a second agent on it fails at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Transient("StateLocked", f"another agent holds {self.root / 'lock'}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self, site: str) -> SiteState:
        path = self.root / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return SiteState(site=site)
        try:
            state = SiteState.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise Stalled("StateCorrupt", f"{path} is not a valid state file: {exc}") from exc
        if state.site != site:
            raise Stalled("StateOfOtherSite", f"{path} belongs to site {state.site!r}, not {site!r}")
        return state

    def save(self, state: SiteState) -> None:
        trimmed = state.model_copy(
            update={
                "deployments": {
                    name: d.model_copy(update={"history": d.history[-HISTORY_LIMIT:]})
                    for name, d in state.deployments.items()
                }
            }
        )
        atomic_write_bytes(self.root / STATE_FILE, trimmed.model_dump_json(indent=2).encode())
