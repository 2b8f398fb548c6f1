"""Test support for tests/ and bench/ (as kopf.testing is kopf's): the one git environment tests run
git in, and a fleet behind a real git smart-HTTP server on loopback with a working clone to commit
changes from (``FleetRemote``): the example fleet (``start_fleet_remote``) or any tree
(``serve_fleet``)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.devtools.githttp import DEMO_IDENTITY, GitHttpServer, commit_and_push, init_bare_repo, run_git
from reconciler.trust import load_private_key, sign_digest

EXAMPLE = Path(__file__).resolve().parents[1] / "example_fleet"  # example-fleet-repo/, as shipped


def isolated_git_env(empty_config: Path) -> dict[str, str]:
    """The environment tests run git in: no user or system git config leaks in (a global
    commit.gpgsign would break every commit), and commits have an identity on machines that have
    none configured. ``empty_config`` is an empty file, the global config git is given."""
    return {"GIT_CONFIG_GLOBAL": str(empty_config), "GIT_CONFIG_NOSYSTEM": "1", **DEMO_IDENTITY}


def git_env() -> dict[str, str]:
    """The process's environment with the identity commits are made with."""
    return {**os.environ, **DEMO_IDENTITY}


def git(*args: str, cwd: Path) -> str:
    """One git command in ``cwd``, its output; fails loudly."""
    return run_git(cwd, *args)


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


@dataclass
class FleetRemote:
    """A fleet repository served over smart HTTP (``url``, stored in ``bare``), with ``clone`` on
    branch main to commit from. ``server.stop()`` when done."""

    server: GitHttpServer
    url: str
    bare: Path
    clone: Path

    def commit_and_push(self, files: Mapping[str, str | bytes | None], message: str = "change",
                        force: bool = False) -> str:
        """Write (None: delete) ``files``, commit and push; the new commit."""
        return commit_and_push(self.clone, files, message, force)

    def push(self, message: str, force: bool = False) -> str:
        """Commit whatever changed in the clone and push it; the new commit."""
        git("add", "-A", cwd=self.clone)
        git("commit", "-qm", message, cwd=self.clone)
        git("push", "-q", *(["--force"] if force else []), "origin", "HEAD:main", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone)

    def reset_to(self, commit: str) -> None:
        git("reset", "-q", "--hard", commit, cwd=self.clone)

    def edit(self, relative: str, pattern: str, replacement: str) -> None:
        path = self.clone / relative
        text, count = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.MULTILINE)
        assert count == 1, f"{pattern!r} not found in {relative}"
        path.write_text(text)

    def bump(self, deployment_file: str, old: str, new: str) -> None:
        self.edit(deployment_file, rf"^(\s+version:\s*){re.escape(old)}\s*$", rf"\g<1>{new}")

    def model_doc(self, model: str) -> dict:
        return yaml.safe_load((self.clone / "models" / model / "model.yaml").read_text())

    def write_model_doc(self, model: str, doc: dict) -> None:
        (self.clone / "models" / model / "model.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def serve_fleet(root: Path, source: Path) -> FleetRemote:
    """``source``'s files as the first commit of a fleet repository served from ``root/srv``,
    cloned to ``root/clone``."""
    bare = init_bare_repo(root / "srv", "fleet", source_dir=source)
    server = GitHttpServer(root / "srv").start()
    url = server.url("fleet")
    clone = root / "clone"
    git("clone", "-q", url, str(clone), cwd=root)
    return FleetRemote(server, url, bare, clone)


def start_fleet_remote(root: Path, progressive: bool = False) -> FleetRemote:
    """The example fleet on a smart-HTTP remote. Unless ``progressive``, without waves and canary
    steps: every targeted site switches as soon as it has validated (what the tests of the basic
    path need; the progressive-delivery tests keep them)."""
    source = EXAMPLE if progressive else without_progressive_delivery(copy_example(root / "example"))
    return serve_fleet(root, source)


def copy_example(dest: Path, progressive: bool = True) -> Path:
    shutil.copytree(EXAMPLE, dest)
    return dest if progressive else without_progressive_delivery(dest)


def without_progressive_delivery(repo: Path) -> Path:
    """Drop every rollout and canary (and the fleet's default rollout) from a copy of the fleet."""
    for path in [repo / "fleet.yaml", *sorted((repo / "deployments").glob("*.yaml"))]:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for document in documents:
            document["spec"].pop("rollout", None)
            document["spec"].pop("canary", None)
            document["spec"].pop("defaultRollout", None)
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return repo


def add_signed_version(clone: Path, version: str, data: bytes, validation: list[dict],
                       model: str = "demand-forecast") -> None:
    """A new version of ``model`` in ``clone``: its ONNX bytes, a cosign signature by the demo key,
    and its entry in the model's model.yaml with ``validation`` cases."""
    folder = clone / "models" / model / version
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(data)
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    (folder / "model.onnx.sig").write_bytes(sign_digest(key, hashlib.sha256(data).digest()))
    path = clone / "models" / model / "model.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["versions"].append({
        "version": version,
        "artifacts": [{"uri": f"models/{model}/{version}/model.onnx",
                       "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data),
                       "signature": {"uri": f"models/{model}/{version}/model.onnx.sig", "format": "cosign"}}],
        "validation": validation,
    })
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
