"""Shared fixtures: the isolated git environment, a real git smart-HTTP server on loopback, and
fleet repositories served by it with a clone to commit from (reconciler.devtools.testing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.devtools.githttp import GitHttpServer
from reconciler.devtools.testing import (
    FleetRemote,
    isolated_git_env,
    serve_fleet,
    start_fleet_remote,
    write_tree,
)

SEED_FILES = {
    "README.md": "A tiny fleet for tests.\n",
    "sites/store-1.yaml": "kind: Site\nmetadata:\n  name: store-1\n",
    "models/weights.bin": b"\x00\x01\x02\xff",
}


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path_factory.getbasetemp() / "empty-gitconfig"
    empty.touch()
    for name, value in isolated_git_env(empty).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttpServer]:
    with GitHttpServer(tmp_path / "srv") as server:
        yield server


@pytest.fixture
def fleet_remote(tmp_path: Path) -> Iterator[FleetRemote]:
    """A tiny fleet (SEED_FILES) behind its own server."""
    remote = serve_fleet(tmp_path, write_tree(tmp_path / "seed", SEED_FILES))
    yield remote
    remote.server.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetRemote]:
    """The example fleet behind a real git smart-HTTP server, with a clone to commit from; the
    agent, end-to-end, telemetry, self-healing, trial and partial-clone tests share it (a module
    with a fleet of another shape defines its own)."""
    remote = start_fleet_remote(tmp_path)
    yield remote
    remote.server.stop()
