"""Shared fixtures: an isolated git environment, a real git smart-HTTP server on loopback, and a
small fleet repository served by it with a working clone to commit from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet_fixture import start_fleet_remote

from reconciler.devtools.githttp import DEMO_IDENTITY, GitHttpServer, commit_and_push, init_bare_repo, run_git

SEED_FILES = {
    "README.md": "A tiny fleet for tests.\n",
    "sites/store-1.yaml": "kind: Site\nmetadata:\n  name: store-1\n",
    "models/weights.bin": b"\x00\x01\x02\xff",
}


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config leaks in (a global commit.gpgsign would break every commit),
    and commits have an identity on machines that have none configured."""
    empty = tmp_path_factory.getbasetemp() / "empty-gitconfig"
    empty.touch()
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name, value in DEMO_IDENTITY.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttpServer]:
    with GitHttpServer(tmp_path / "srv") as server:
        yield server


@dataclass(frozen=True)
class FleetRemote:
    server: GitHttpServer
    url: str
    workdir: Path  # a clone of url on branch main

    def commit_and_push(
        self, files: Mapping[str, str | bytes | None], message: str = "change", force: bool = False
    ) -> str:
        return commit_and_push(self.workdir, files, message, force)


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


@pytest.fixture
def fleet_remote(git_http: GitHttpServer, tmp_path: Path) -> FleetRemote:
    init_bare_repo(git_http.root, "fleet", write_tree(tmp_path / "seed", SEED_FILES))
    url = git_http.url("fleet")
    workdir = tmp_path / "work"
    run_git(None, "clone", "--quiet", url, str(workdir))
    return FleetRemote(git_http, url, workdir)


@pytest.fixture
def fleet(tmp_path: Path):
    """The example fleet behind a real git smart-HTTP server, with a clone to commit from; the
    agent, end-to-end, telemetry, self-healing, trial and partial-clone tests share it (a module
    with a fleet of another shape defines its own)."""
    remote = start_fleet_remote(tmp_path)
    yield remote
    remote.server.stop()
