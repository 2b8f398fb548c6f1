"""The whole path with real processes: a bare repo behind git's smart-HTTP backend on 127.0.0.1,
two site agents running `reconciler run`, a commit that bumps a model version, both sites moving,
real predictions from the new version, and the status records on their refs."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, git
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import StatusRefs

SITES = ("store-berlin-01", "store-boston-01")  # stores that may activate at any hour
TIMEOUT = 120


@pytest.fixture
def agents(fleet, tmp_path):
    running = {}
    for site in SITES:
        port = free_port()
        log = (tmp_path / f"{site}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--repo", fleet.url, "--site", site,
             "--state", str(tmp_path / site), "--listen", f"127.0.0.1:{port}", "--interval", "500ms",
             "--trust-key", str(EXAMPLE / "keys" / "demo.pub")],
            stdout=log, stderr=subprocess.STDOUT)
        running[site] = (port, process, log)
    yield {site: port for site, (port, _, _) in running.items()}
    stop_all(process for _, process, _ in running.values())
    for _, _, log in running.values():
        log.close()


def await_records(refs: StatusRefs, head: str, want_version: str):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        records = refs.read_all()
        done = {s: r for s, r in records.items() if s in SITES and r.observedCommit == head
                and r.deployments.get("demand-forecast") and r.deployments["demand-forecast"].activeVersion == want_version
                and r.state == "success"}
        if len(done) == len(SITES):
            return done
        time.sleep(0.3)
    raise AssertionError(f"sites did not converge on {head[:12]} with {want_version}: {refs.read_all()}")


def forecast(port: int, features: list[list[float]]) -> tuple[str, list[float]]:
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [len(features), 4],
                        "data": features}]}
    reply = httpx.post(f"http://127.0.0.1:{port}/v2/models/demand-forecast/infer", json=body, timeout=10)
    reply.raise_for_status()
    out = reply.json()
    return out["model_version"], out["outputs"][0]["data"]


def case_of(fleet, version: str) -> tuple[list, list[float]]:
    doc = fleet.model_doc("demand-forecast")
    case = next(v for v in doc["spec"]["versions"] if v["version"] == version)["validation"][0]
    expected = [x for row in case["expected"]["forecast"] for x in row]
    return case["inputs"]["features"], expected


def test_two_sites_converge_bump_and_serve_the_new_version(fleet, agents, tmp_path, request):
    refs = StatusRefs(GitSource(fleet.url, "main", tmp_path / "observer.git"))
    request.addfinalizer(refs.close)
    first = git("rev-parse", "HEAD", cwd=fleet.clone).strip()
    await_records(refs, first, "1.0.0")
    features, expected_old = case_of(fleet, "1.0.0")
    for port in agents.values():
        version, output = forecast(port, features)
        assert version == "1.0.0" and output == pytest.approx(expected_old, abs=1e-4)

    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    head = fleet.push("Roll out demand-forecast 1.1.0")
    records = await_records(refs, head, "1.1.0")

    features, expected_new = case_of(fleet, "1.1.0")
    for port in agents.values():
        version, output = forecast(port, features)
        assert version == "1.1.0" and output == pytest.approx(expected_new, abs=1e-4)
    for site, record in records.items():
        status = record.deployments["demand-forecast"]
        assert (status.state, status.version, status.previousVersion) == ("success", "1.1.0", "1.0.0")
        assert record.appliedCommit == head
        history = refs.history(site)
        assert [r.observedCommit for _, r in history][-1] == head
        assert len(history) >= 2  # one record per change, the first from the initial convergence
