"""Progressive delivery across a fleet of real site agents on loopback: a good version rolls out
in three waves (status timestamps prove order and bake times) through an in-site canary under
live traffic, and a bad version that fails its canary analysis in the first wave is aborted: no
later wave ever activates it and every first-wave site is back on the previous version."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

from reconciler.delivery.rollout import wave_of
from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, add_signed_version, serve_fleet
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.models import Rollout
from reconciler.status.gitref import StatusRefs

DEPLOYMENT = "demand-forecast"
BAKE = timedelta(seconds=3)
ROLLOUT = {
    "waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
              {"name": "early", "percent": 50}, {"name": "all", "percent": 100}],
    "gate": {"minHealthyRatio": 1.0, "bakeTime": "3s", "progressDeadline": "3m"},
    "abort": {"failureThreshold": 0.3, "minExecuted": 1},
}
CANARY = {"steps": [{"setWeight": 50},
                    {"analysis": {"window": "3s", "minRequests": 5, "maxErrorRate": 0.05}}]}
SITES = [f"store-{i:02d}" for i in range(1, 13)]
PILOTS = SITES[:3]
WAVES = ("pilot", "early", "all")
TIMEOUT = 240


def write_fleet(root: Path) -> None:
    (root / "sites").mkdir(parents=True)
    for name in SITES:
        labels = {"tier": "store", "region": "eu-central", "arch": "amd64", **({"ring": "pilot"} if name in PILOTS else {})}
        doc = {"apiVersion": "reconciler/v1", "kind": "Site", "metadata": {"name": name, "labels": labels}}
        (root / "sites" / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    shutil.copytree(EXAMPLE / "models" / "demand-forecast", root / "models" / "demand-forecast")
    (root / "deployments").mkdir()
    deployment = {"apiVersion": "reconciler/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT},
                  "spec": {"model": "demand-forecast", "version": "1.0.0", "targets": {"matchLabels": {"tier": "store"}},
                           "rollout": ROLLOUT, "canary": CANARY}}
    (root / "deployments" / "demand-forecast.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))


def add_bad_version(clone: Path) -> None:
    """1.2.0: the 1.0.0 network behind a Reshape to a batch of one. Its own validation case has a
    batch of one and passes; live traffic with larger batches fails."""
    model = onnx.load_from_string((clone / "models/demand-forecast/1.0.0/model.onnx").read_bytes())
    graph = model.graph
    input_name = graph.input[0].name
    for node in graph.node:
        node.input[:] = ["fixed" if name == input_name else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(__import__("numpy").array([1, 4], dtype="int64"), "one_row"))
    graph.node.insert(0, helper.make_node("Reshape", [input_name, "one_row"], ["fixed"]))
    first = yaml.safe_load((clone / "models/demand-forecast/model.yaml").read_text())["spec"]["versions"][0]
    add_signed_version(clone, "1.2.0", model.SerializeToString(deterministic=True), first["validation"][:1])


class Traffic:
    """Live requests (batches of two rows) to every site while a canary needs something to judge."""

    def __init__(self, ports: dict[str, int]):
        self.ports, self.stop = ports, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4],
                            "data": [[0.8, 1.0, 0.0, 0.0], [0.3, 1.1, 0.0, 1.0]]}]}
        with httpx.Client(timeout=2) as client:
            while not self.stop.is_set():
                for port in self.ports.values():
                    try:
                        client.post(f"http://127.0.0.1:{port}/v2/models/{DEPLOYMENT}/infer", json=body)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("progressive")
    write_fleet(root / "fleet-src")
    remote = serve_fleet(root, root / "fleet-src")
    url = remote.url
    agents, ports = {}, {}
    for site in SITES:
        ports[site] = free_port()
        log = (root / f"{site}.log").open("wb")
        agents[site] = (subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--repo", url, "--site", site, "--state", str(root / "state" / site),
             "--listen", f"127.0.0.1:{ports[site]}", "--interval", "1s", "--trust-key", str(EXAMPLE / "keys" / "demo.pub")],
            stdout=log, stderr=subprocess.STDOUT), log)
    refs = StatusRefs(GitSource(url, "main", root / "observer.git"))
    yield remote, refs, ports
    refs.close()
    stop_all(process for process, _ in agents.values())
    for _, log in agents.values():
        log.close()
    remote.server.stop()


def wave_members() -> dict[str, list[str]]:
    rollout = Rollout.model_validate(ROLLOUT)
    members: dict[str, list[str]] = {w: [] for w in WAVES}
    for site in SITES:
        labels = {"ring": "pilot"} if site in PILOTS else {}
        members[wave_of(rollout, DEPLOYMENT, site, labels).name].append(site)
    return members




def await_fleet(refs: StatusRefs, done, what: str):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        records = refs.read_all()
        if all(site in records and done(site, records[site].deployments.get(DEPLOYMENT)) for site in SITES):
            return records
        time.sleep(0.5)
    states = {s: (r.deployments.get(DEPLOYMENT).state, r.deployments.get(DEPLOYMENT).reason)
              for s, r in refs.read_all().items() if r.deployments.get(DEPLOYMENT)}
    raise AssertionError(f"fleet did not reach {what} in {TIMEOUT}s: {states}")


def assert_waves_in_order(records, members) -> None:
    """Each wave's first activation comes at least the bake time after the previous wave's last."""
    activated = {s: records[s].deployments[DEPLOYMENT].since for s in SITES}
    for earlier, later in zip(WAVES, WAVES[1:], strict=False):
        assert min(activated[s] for s in members[later]) >= max(activated[s] for s in members[earlier]) + BAKE, \
            (earlier, later, activated)


def test_waves_canary_and_abort(fleet):
    remote, refs, ports = fleet
    members = wave_members()
    assert all(members[w] for w in WAVES), members
    serving = lambda version: lambda site, d: d is not None and d.state == "success" and d.activeVersion == version  # noqa: E731

    first = await_fleet(refs, serving("1.0.0"), "1.0.0 everywhere")
    assert_waves_in_order(first, members)

    clone = remote.clone
    with Traffic(ports):
        path = clone / "deployments/demand-forecast.yaml"
        path.write_text(path.read_text().replace("version: 1.0.0", "version: 1.1.0"))
        remote.push("Roll out demand-forecast 1.1.0")
        second = await_fleet(refs, serving("1.1.0"), "1.1.0 everywhere")
        assert_waves_in_order(second, members)
        assert all(second[s].deployments[DEPLOYMENT].previousVersion == "1.0.0" for s in SITES)

        add_bad_version(clone)
        path.write_text(path.read_text().replace("version: 1.1.0", "version: 1.2.0"))
        remote.push("Roll out demand-forecast 1.2.0")
        aborted = await_fleet(
            refs, lambda site, d: d is not None and d.version == "1.2.0" and d.state in ("failure", "aborted"),
            "1.2.0 aborted everywhere")

    failed_canaries = [s for s in members["pilot"] for _, r in refs.history(s)
                       if DEPLOYMENT in r.deployments and r.deployments[DEPLOYMENT].reason == "ErrorRateTooHigh"]
    assert failed_canaries, "no first-wave canary failed its analysis"
    for site in SITES:
        status = aborted[site].deployments[DEPLOYMENT]
        assert status.activeVersion == "1.1.0", (site, status)
        served = [r.deployments[DEPLOYMENT].activeVersion for _, r in refs.history(site) if DEPLOYMENT in r.deployments]
        assert "1.2.0" not in served, (site, served)
        if site not in members["pilot"]:
            assert status.state == "aborted", (site, status)
        reply = httpx.post(f"http://127.0.0.1:{ports[site]}/v2/models/{DEPLOYMENT}/infer", timeout=10,
                           json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],
                                             "data": [[0.8, 1.0, 0.0, 0.0]]}]})
        assert reply.json()["model_version"] == "1.1.0"
