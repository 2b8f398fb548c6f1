"""Enrollment by pull request and signed status records, with real agents on loopback: two sites
enrolled with `reconciler enroll` (the Site documents committed: the merge), a fleet that requires
signed status, and a rollout in two waves. Records pushed on the pilot's own ref by someone who
does not hold its key (right ref, wrong key) neither advance the rollout nor abort it; the pilot's
own signed records do. Then a key rotation by pull request keeps the pilot believed, and once the
old key is removed (revoked), new records signed with it are ignored."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from reconciler import trust
from reconciler.agent.config import load_site_config
from reconciler.devtools.githttp import GitHttpServer, init_bare_repo
from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, git, git_env
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.loader import load_directory
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner, StatusKeyring

DEPLOYMENT = "demand-forecast"
PILOT, STORE = "pilot-1", "store-1"
TIMEOUT = 150
ROLLOUT = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}}, {"name": "all", "percent": 100}],
           "gate": {"minHealthyRatio": 1.0, "bakeTime": "0s", "progressDeadline": "30m"},
           "abort": {"failureThreshold": 0.3, "minExecuted": 1}}


def write_fleet(root: Path) -> None:
    shutil.copytree(EXAMPLE / "models" / DEPLOYMENT, root / "models" / DEPLOYMENT)
    (root / "deployments").mkdir()
    deployment = {"apiVersion": "reconciler/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT},
                  "spec": {"model": DEPLOYMENT, "version": "1.0.0", "targets": {"matchLabels": {"tier": "store"}},
                           "rollout": ROLLOUT}}
    (root / "deployments" / f"{DEPLOYMENT}.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))
    fleet = {"apiVersion": "reconciler/v1", "kind": "Fleet", "metadata": {"name": "signed"},
             "spec": {"requireSignedStatus": True}}
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet, sort_keys=False))


class World:
    def __init__(self, root: Path, url: str, clone: Path):
        self.root, self.url, self.clone = root, url, clone
        self.agents: dict[str, tuple[subprocess.Popen, object]] = {}
        self.observer = StatusRefs(GitSource(url, "main", root / "observer.git"))
        self.forger = StatusRefs(GitSource(url, "main", root / "forger.git"), RecordSigner((trust.generate_private_key(),)))

    def state(self, site: str) -> Path:
        return self.root / "state" / site

    def enroll(self, site: str, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "reconciler", "enroll", "--site", site, "--state", str(self.state(site)),
                        "--fleet", str(self.clone), *args], check=True, capture_output=True)

    def merge(self, message: str) -> str:
        """The pull request merged: the fleet's main branch has the change."""
        git("add", "-A", cwd=self.clone)
        git("commit", "-qm", message, cwd=self.clone)
        git("push", "-q", "origin", "HEAD:main", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone).strip()

    def start(self, site: str) -> None:
        log = (self.root / f"{site}.log").open("ab")
        self.agents[site] = (subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(self.state(site) / "site.yaml"),
             "--interval", "500ms"], stdout=log, stderr=subprocess.STDOUT), log)

    def stop(self, site: str) -> None:
        process, log = self.agents.pop(site)
        stop_all([process])
        log.close()

    def log(self, site: str) -> str:
        return (self.root / f"{site}.log").read_text(errors="replace")

    def verified(self) -> tuple[dict[str, StatusRecord], RecordCheck]:
        """Every site's newest record as gates see it: checked against the Site documents at main."""
        check = RecordCheck(StatusKeyring.of_fleet(load_directory(self.clone).repo))
        return self.observer.read_all(check), check

    def await_record(self, site: str, what: str, holds) -> StatusRecord:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            record = self.verified()[0].get(site)
            if record is not None and holds(record):
                return record
            time.sleep(0.3)
        raise AssertionError(f"{site}: no verified record {what}: {self.verified()}\n{self.log(site)[-3000:]}")

    def await_log(self, site: str, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while text not in self.log(site):
            assert time.monotonic() < deadline, f"{site} never logged {text!r}:\n{self.log(site)[-3000:]}"
            time.sleep(0.3)

    def forge(self, like: StatusRecord, site: str, signer: RecordSigner | None = None, **change) -> str:
        """A record for ``site`` on its own ref, signed by a key that is not (or no longer) its own."""
        status = like.deployments[DEPLOYMENT].model_copy(update=change)
        record = like.model_copy(update={"site": site, "deployments": {DEPLOYMENT: status},
                                         "writtenAt": datetime.now(UTC), "state": status.state})
        refs = self.forger if signer is None else StatusRefs(GitSource(self.url, "main", self.root / "old-key.git"), signer)
        commit = refs.write(record)
        assert commit is not None
        return commit


@pytest.fixture
def world(tmp_path):
    write_fleet(tmp_path / "fleet-src")
    init_bare_repo(tmp_path / "srv", "fleet", source_dir=tmp_path / "fleet-src")
    server = GitHttpServer(tmp_path / "srv").start()
    url = server.url("fleet")
    subprocess.run(["git", "clone", "-q", url, str(tmp_path / "clone")], env=git_env(), check=True)
    world = World(tmp_path, url, tmp_path / "clone")
    yield world
    stop_all(process for process, _ in world.agents.values())
    for _, log in world.agents.values():
        log.close()
    world.observer.close()
    world.forger.close()
    server.stop()


def serving(version: str):
    return lambda r: r.deployments.get(DEPLOYMENT) is not None and r.deployments[DEPLOYMENT].activeVersion == version \
        and r.deployments[DEPLOYMENT].state == "success"


def test_forged_records_neither_advance_nor_abort_and_keys_rotate_and_revoke_by_pull_request(world):
    trust_key = str(EXAMPLE / "keys" / "demo.pub")
    for site, labels in ((PILOT, "tier=store,ring=pilot"), (STORE, "tier=store")):
        world.enroll(site, "--labels", labels, "--listen", f"127.0.0.1:{free_port()}", "--trust-key", trust_key)
    world.merge("Enroll pilot-1 and store-1")

    # The second wave waits for the pilot; a forged "pilot succeeded" on the pilot's ref does not open it.
    world.start(STORE)
    waiting = world.await_record(STORE, "waiting for the pilot wave",
                                 lambda r: DEPLOYMENT in r.deployments and r.deployments[DEPLOYMENT].rollout is not None)
    assert waiting.deployments[DEPLOYMENT].activeVersion is None
    forged_success = world.forge(waiting, PILOT, state="success", activeVersion="1.0.0", wave="pilot",
                                 reason="Converged", message="")
    world.await_log(STORE, f"ignored status record {forged_success[:12]} of site {PILOT}: forged/unknown key")
    time.sleep(2)  # a few more reconciles
    assert world.verified()[0][STORE].deployments[DEPLOYMENT].activeVersion is None
    shown = subprocess.run([sys.executable, "-m", "reconciler", "status", "--repo", world.url, "--format", "json"],
                           capture_output=True, text=True, check=True)
    assert {"site": PILOT, "commit": forged_success} in [{k: i[k] for k in ("site", "commit")}
                                                        for i in json.loads(shown.stdout)["ignored"]]

    # The pilot's own signed records do open it.
    world.start(PILOT)
    pilot = world.await_record(PILOT, "serving 1.0.0", serving("1.0.0"))
    world.await_record(STORE, "serving 1.0.0 after the pilot", serving("1.0.0"))

    # A forged failure of the pilot (version evidence, enough to abort) is ignored too.
    world.stop(PILOT)
    forged_failure = world.forge(pilot, PILOT, state="failure", activeVersion="1.0.0", reason="ValidationFailed",
                                 message="forged", failureKind="version")
    (world.clone / "README.md").write_text("a change every site reads\n")
    head = world.merge("An unrelated change: every site reconciles")
    world.await_log(STORE, f"ignored status record {forged_failure[:12]} of site {PILOT}")
    world.await_record(STORE, "still serving 1.0.0 at the new head", lambda r: serving("1.0.0")(r) and r.observedCommit == head)
    time.sleep(2)
    assert serving("1.0.0")(world.verified()[0][STORE])

    # Rotation by pull request: a new key, the old one retiring; the pilot signs with both.
    old_key_file = load_site_config(world.state(PILOT) / "site.yaml", {}).status_keys[0]
    world.enroll(PILOT, "--rotate")
    rotated = world.merge("Rotate pilot-1's status key")
    world.start(PILOT)
    world.await_record(PILOT, "at the rotation", lambda r: serving("1.0.0")(r) and r.observedCommit == rotated)

    # Revocation by pull request: the retiring key removed. The pilot is believed on its new key;
    # a new record signed with the old key alone is ignored.
    site_file = world.clone / "sites" / f"{PILOT}.yaml"
    document = yaml.safe_load(site_file.read_text())
    document["spec"]["statusKeys"] = [k for k in document["spec"]["statusKeys"] if not k.get("retiring")]
    site_file.write_text(yaml.safe_dump(document, sort_keys=False))
    revoked = world.merge("Revoke pilot-1's old status key")
    genuine = world.await_record(PILOT, "after the revocation", lambda r: r.observedCommit == revoked)
    assert serving("1.0.0")(genuine)
    world.stop(PILOT)
    old_signer = RecordSigner((trust.load_private_key(old_key_file.read_bytes()),))
    with_old_key = world.forge(genuine, PILOT, signer=old_signer, state="failure", reason="ValidationFailed",
                               message="signed with the revoked key", failureKind="version")
    records, check = world.verified()
    assert PILOT not in records
    assert [(i.site, i.commit) for i in check.ignored] == [(PILOT, with_old_key)]
    assert "revoked" in check.ignored[0].why
