"""The site's state directory: what is installed and active, written so a crash at any instant
leaves either the old or the new state on disk, never neither.

    <state>/blobs/sha256/<hex>   verified artifacts (ingest/artifacts.py writes them)
    <state>/models/<hex>/        models with files (ONNX external data): links to their blobs (same)
    <state>/state.json           SiteState (delivery/model.py)
    <state>/lock                 one agent per directory (flock, released by the kernel on death)
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from pydantic import ValidationError

from reconciler import reasons
from reconciler.atomicfile import atomic_write_bytes
from reconciler.delivery.model import SiteState
from reconciler.errors import NeedsOperator, Transient

STATE_FILE = "state.json"
HISTORY_LIMIT = 50


class StateDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the directory for this process; a second agent on it fails at once. Taking it
        again from this process is a no-op (the CLI takes it before it opens the listen port)."""
        if self._lock_fd is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Transient(reasons.StateLocked, f"another agent holds {self.root / 'lock'}") from None
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
            raise NeedsOperator(reasons.StateCorrupt, f"{path} is not a valid state file: {exc}") from exc
        if state.site != site:
            raise NeedsOperator(reasons.StateOfOtherSite, f"{path} belongs to site {state.site!r}, not {site!r}")
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
