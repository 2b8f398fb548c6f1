"""Rollouts that forgive mistakes, with three real store agents on loopback (issue 9's stories):

(a) a trial `run --once` without a trust key reports a site condition, and the first rollout still
    reaches every store; (b) a store down for a whole rollout does not stop the other two;
(c) a revert under zero traffic brings every store back to the version it served before, without
    canary, gate or download; (c') a revert while a canary runs stops the canary, every answer comes
    from the previous version and the record says so; (d) a store that joins while its wave waits
    serves the rollout's from-version at once; (e) a real bad model (validation fails)
    still aborts the rollout everywhere, with its first cause and how to retry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnx
import pytest
import yaml

from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, add_signed_version, git, serve_fleet
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import StatusRefs

DEPLOYMENT = "demand-forecast"
PILOT, STORES = "store-lyon-01", ("store-lyon-01", "store-paris-01", "store-nice-01")
JOINER = "store-nantes-01"  # opens while a rollout runs
ROLLOUT = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}}, {"name": "all", "percent": 100}],
           "gate": {"progressDeadline": "5s"}}  # the defaults otherwise: unreported ignore, minExecuted unset
ANALYSIS = {"steps": [{"setWeight": 50}, {"analysis": {"window": "2s", "minRequests": 5, "maxErrorRate": 0.05}}]}
LONG_PAUSE = {"steps": [{"setWeight": 50}, {"pause": {"duration": "10m"}}]}
FEATURES = [[0.8, 1.0, 0.0, 0.0]]
TIMEOUT = 120


def write_fleet(root: Path) -> None:
    for name in STORES:
        write_site(root, name)
    shutil.copytree(EXAMPLE / "models" / "demand-forecast", root / "models" / "demand-forecast")
    write_deployment(root, "1.0.0", ANALYSIS)


def write_site(root: Path, name: str) -> None:
    labels = {"tier": "store", "arch": "amd64", **({"ring": "pilot"} if name == PILOT else {})}
    doc = {"apiVersion": "reconciler/v1", "kind": "Site", "metadata": {"name": name, "labels": labels}}
    (root / "sites").mkdir(parents=True, exist_ok=True)
    (root / "sites" / f"{name}.yaml").write_text(yaml.safe_dump(doc))


def write_deployment(root: Path, version: str, canary: dict | None) -> None:
    spec = {"model": "demand-forecast", "version": version, "targets": {"matchLabels": {"tier": "store"}},
            "rollout": ROLLOUT, **({"canary": canary} if canary else {})}
    doc = {"apiVersion": "reconciler/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT}, "spec": spec}
    (root / "deployments").mkdir(exist_ok=True)
    (root / "deployments" / f"{DEPLOYMENT}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def add_version(clone: Path, version: str, off_by: float = 0.0) -> None:
    """1.0.0's network under a new name (other bytes, same answers), signed with the demo key; its
    validation cases expect 1.0.0's answers plus ``off_by`` (so a non-zero one fails validation)."""
    model = onnx.load_from_string((clone / "models/demand-forecast/1.0.0/model.onnx").read_bytes())
    model.graph.name = f"demand-forecast-{version}"
    cases = yaml.safe_load((clone / "models/demand-forecast/model.yaml").read_text())["spec"]["versions"][0]["validation"]
    for case in cases:
        case["expected"]["forecast"] = [[x + off_by for x in row] for row in case["expected"]["forecast"]]
    add_signed_version(clone, version, model.SerializeToString(deterministic=True), cases)


class Fleet:
    def __init__(self, root: Path):
        self.root = root
        write_fleet(root / "fleet-src")
        self.remote = serve_fleet(root, root / "fleet-src")
        self.server, self.url, self.clone = self.remote.server, self.remote.url, self.remote.clone
        self.refs = StatusRefs(GitSource(self.url, "main", root / "observer.git"))
        self.agents: dict[str, subprocess.Popen] = {}
        self.ports = {site: free_port() for site in (*STORES, JOINER)}

    def command(self, site: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "reconciler", "run", "--repo", self.url, "--site", site,
                "--state", str(self.root / "state" / site), *extra]

    def start(self, site: str) -> None:
        log = (self.root / f"{site}.log").open("ab")
        self.agents[site] = subprocess.Popen(
            self.command(site, "--listen", f"127.0.0.1:{self.ports[site]}", "--interval", "1s",
                         "--trust-key", str(EXAMPLE / "keys" / "demo.pub")),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop(self, *sites: str) -> None:
        stop_all(self.agents.pop(site) for site in sites)

    def push(self, message: str) -> str:
        return self.remote.push(message)

    def revert(self, commit: str) -> str:
        git("revert", "--no-edit", commit, cwd=self.clone)
        git("push", "-q", "origin", "HEAD:main", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone).strip()

    def await_sites(self, sites, done, what: str):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            records = self.refs.read_all()
            if all(s in records and done(records[s].deployments.get(DEPLOYMENT)) for s in sites):
                return records
            time.sleep(0.3)
        seen = {s: (d.state, d.reason, d.activeVersion, d.message) for s, r in self.refs.read_all().items()
                if (d := r.deployments.get(DEPLOYMENT))}
        raise AssertionError(f"{what} not reached in {TIMEOUT}s: {seen}")

    def history(self, site: str):
        return [r.deployments[DEPLOYMENT] for _, r in self.refs.history(site) if DEPLOYMENT in r.deployments]

    def close(self) -> None:
        self.refs.close()
        stop_all(self.agents.values())
        self.server.stop()


@pytest.fixture
def fleet(tmp_path):
    fleet = Fleet(tmp_path)
    yield fleet
    fleet.close()


def serving(version: str, reason: str | None = None):
    return lambda d: d is not None and d.state == "success" and d.activeVersion == version and \
        (reason is None or d.reason == reason)


def predict(port: int) -> str:
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": FEATURES}]}
    reply = httpx.post(f"http://127.0.0.1:{port}/v2/models/{DEPLOYMENT}/infer", json=body, timeout=10)
    reply.raise_for_status()
    return reply.json()["model_version"]


def blob(fleet: Fleet, site: str, version: str) -> Path:
    doc = yaml.safe_load((fleet.clone / "models/demand-forecast/model.yaml").read_text())
    digest = next(v for v in doc["spec"]["versions"] if v["version"] == version)["artifacts"][0]["digest"]
    return fleet.root / "state" / site / "blobs" / "sha256" / digest.removeprefix("sha256:")


def test_mistakes_do_not_freeze_the_fleet_and_going_back_is_fast(fleet):
    # (a) a trial run on the pilot without --trust-key: a site condition, reported as such
    trial = subprocess.run(fleet.command(PILOT, "--once"), capture_output=True, text=True, timeout=120)
    assert trial.returncode == 1, trial.stderr
    record = fleet.refs.read_all()[PILOT].deployments[DEPLOYMENT]
    assert (record.state, record.reason, record.failureKind) == ("error", "NoTrustedKeys", "site")
    for site in STORES:
        fleet.start(site)
    fleet.await_sites(STORES, serving("1.0.0"), "1.0.0 on every store after the trial run")
    assert not any(d.state == "aborted" for site in STORES for d in fleet.history(site))

    # (b) one store down for the whole rollout of 1.1.0: the other two finish it
    fleet.stop("store-nice-01")
    write_deployment(fleet.clone, "1.1.0", None)
    fleet.push("Roll out demand-forecast 1.1.0")
    fleet.await_sites(["store-lyon-01", "store-paris-01"], serving("1.1.0"), "1.1.0 without the store that is down")
    fleet.start("store-nice-01")
    fleet.await_sites(STORES, serving("1.1.0"), "1.1.0 on every store once the third is back")

    # (c) a revert under zero traffic (its commit brings the canary block back): every store goes
    # back at once, from the blob it kept
    kept = {site: blob(fleet, site, "1.0.0").stat() for site in STORES}
    fleet.revert("HEAD")  # back to demand-forecast 1.0.0
    pushed = time.monotonic()
    fleet.await_sites(STORES, serving("1.0.0"), "1.0.0 everywhere after the revert")
    assert time.monotonic() - pushed < 30  # an interval of 1 s and a reconcile, with room for a loaded machine
    for site in STORES:
        assert (blob(fleet, site, "1.0.0").stat().st_ino, blob(fleet, site, "1.0.0").stat().st_mtime_ns) == \
            (kept[site].st_ino, kept[site].st_mtime_ns), f"{site} downloaded 1.0.0 again"
        history = fleet.history(site)
        since_revert = history[max(i for i, d in enumerate(history) if d.activeVersion == "1.1.0") + 1:]
        back = since_revert[0]  # no canary step, no wave wait before it
        assert (back.state, back.reason, back.version, back.previousVersion, back.weights) == \
            ("success", "RolledBack", "1.0.0", "1.1.0", {}), (site, since_revert)
        assert predict(fleet.ports[site]) == "1.0.0"

    # (c') a revert while the pilot runs the canary of 1.2.0: the canary stops
    add_version(fleet.clone, "1.2.0")
    write_deployment(fleet.clone, "1.2.0", LONG_PAUSE)
    canary_commit = fleet.push("Roll out demand-forecast 1.2.0 behind a canary")
    fleet.await_sites([PILOT], lambda d: d is not None and d.state == "progressing" and d.weights.get("1.2.0") == 50,
                      "the pilot's canary at 50%")

    # (d) a new store opens while its wave waits for the pilot: it serves 1.0.0 meanwhile
    write_site(fleet.clone, JOINER)
    fleet.push("Open store-nantes-01")
    fleet.start(JOINER)
    fleet.await_sites([JOINER], lambda d: d is not None and d.activeVersion == "1.0.0" and d.version == "1.2.0"
                      and (d.state, d.reason) == ("pending", "WaitingForEarlierWaves"), "the new store waiting on 1.0.0")
    assert predict(fleet.ports[JOINER]) == "1.0.0"

    fleet.revert(canary_commit)
    fleet.await_sites((*STORES, JOINER), serving("1.0.0"), "1.0.0 everywhere after the revert")
    after_canary = fleet.history(PILOT)[[d.weights.get("1.2.0") for d in fleet.history(PILOT)].index(50):]
    stopped = next(d for d in after_canary if d.version == "1.0.0")  # the first record after the revert
    assert (stopped.state, stopped.reason, stopped.activeVersion, stopped.weights) == ("success", "RolledBack", "1.0.0", {})
    assert stopped.message == "the canary of 1.2.0 stopped: the fleet asks for 1.0.0 again, which serves all traffic"
    state = json.loads((fleet.root / "state" / PILOT / "state.json").read_text())["deployments"][DEPLOYMENT]
    assert state["canary"] is None and state["canaryProgress"] is None
    assert {predict(fleet.ports[PILOT]) for _ in range(20)} == {"1.0.0"}

    # (e) a real bad model: its validation fails on the pilot, and the rollout aborts everywhere
    add_version(fleet.clone, "1.3.0", off_by=1.0)
    write_deployment(fleet.clone, "1.3.0", ANALYSIS)
    fleet.push("Roll out demand-forecast 1.3.0")
    records = fleet.await_sites(STORES, lambda d: d is not None and d.version == "1.3.0" and
                                d.state in ("failure", "aborted"), "1.3.0 aborted everywhere")
    # the pilot, which failed first, halts too once it reads the abort (a tick later)
    fleet.await_sites([PILOT], lambda d: d is not None and d.version == "1.3.0" and d.state == "aborted",
                      "the pilot halted too")
    failed = [d for d in fleet.history(PILOT) if d.version == "1.3.0" and d.state == "failure"]
    assert failed and failed[0].reason == "ValidationFailed" and failed[0].failureKind == "version"
    for site in STORES:
        status = records[site].deployments[DEPLOYMENT]
        assert status.activeVersion == "1.0.0" and predict(fleet.ports[site]) == "1.0.0"
        if site != PILOT:
            assert status.state == "aborted"
            assert "store-lyon-01 failed (ValidationFailed)" in status.message
            assert "reconciler rollout retry demand-forecast" in status.message
    # the logs say why: the failure at WARNING, the abort at ERROR with its first cause, never "ok"
    pilot_log = (fleet.root / f"{PILOT}.log").read_text()
    assert "WARNING store-lyon-01: deploy demand-forecast 1.0.0 -> 1.3.0: ValidationFailed: " in pilot_log
    for site in STORES:
        lines = (fleet.root / f"{site}.log").read_text().splitlines()
        assert not [line for line in lines if line.endswith(": ok")], site
        halts = [line for line in lines if " halt demand-forecast 1.0.0 -> 1.3.0: " in line]
        assert halts and all(re.search(rf" ERROR +{site}: ", line) for line in halts), (site, halts)
        assert len({line.split(" ", 1)[1] for line in halts}) == len(halts), halts  # on a change, not every tick
        assert all("the rollout is aborted: 1 of 1 executed sites failed, threshold 20% (store-lyon-01 failed "
                   "(ValidationFailed))" in line for line in halts), halts
