"""A batch-only Deployment (`serve: false`) on a real agent process with --listen: fetched,
verified, validated and active in state.json, yet never served (OIP 404, readiness does not wait
for it), while `reconciler batch run` scores files with it from the state directory's blob."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE

SITE = "store-boston-01"
DEPLOYMENT = "demand-forecast"
TIMEOUT = 120
BATCH_ONLY = """\
  batch:
    schedule: "0 2 * * *"
    input: {name: readings, glob: "*.jsonl", format: jsonl}
    output: scores
  serve: false
"""


def active_version(state: Path) -> str | None:
    try:
        deployments = json.loads((state / "state.json").read_text())["deployments"]
    except (OSError, ValueError, KeyError):
        return None
    active = deployments.get(DEPLOYMENT, {}).get("active")
    return active["version"] if active else None


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_a_batch_only_deployment_is_active_but_not_served_and_batch_run_scores_with_it(fleet, tmp_path):
    fleet.edit(f"deployments/{DEPLOYMENT}.yaml", r"^  model: demand-forecast\n", "  model: demand-forecast\n" + BATCH_ONLY)
    fleet.push("demand-forecast runs as a nightly batch only")
    inputs, outputs, state, port = tmp_path / "in", tmp_path / "out", tmp_path / "state", free_port()
    inputs.mkdir()
    (inputs / "day.jsonl").write_text("".join(json.dumps({"features": [0.1 * i, 0.2, 1.0, 0.0]}) + "\n"
                                              for i in range(5)))
    site_yaml = tmp_path / "site.yaml"
    site_yaml.write_text(yaml.safe_dump({
        "site": SITE, "repo": fleet.url, "state": str(state), "interval": "300ms",
        "trustKeys": [str(EXAMPLE / "keys" / "demo.pub")],
        "batch": {"inputs": {"readings": str(inputs)}, "outputs": {"scores": str(outputs)}}}))
    log = tmp_path / "agent.log"
    agent = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config", str(site_yaml),
                              "--listen", f"127.0.0.1:{port}"], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (active_version(state) == "1.0.0" and ready(port)):  # ready: it waits for nothing here
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        base = f"http://127.0.0.1:{port}/v2/models/{DEPLOYMENT}"
        assert httpx.get(base, timeout=5).status_code == 404
        inference = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 1.0, 0.0]}]}
        assert httpx.post(f"{base}/infer", json=inference, timeout=5).status_code == 404
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 404

        done = subprocess.run([sys.executable, "-m", "reconciler", "batch", "run", DEPLOYMENT, "--config",
                               str(site_yaml)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["state"], summary["files"], summary["records"], summary["version"]) == \
            ("Succeeded", 1, 5, "1.0.0")
        lines = [json.loads(line) for line in (outputs / "day.jsonl.out.jsonl").read_text().splitlines()]
        assert [line["record"] for line in lines] == [0, 1, 2, 3, 4]
        assert all(len(line["outputs"]["forecast"]) == 1 for line in lines)
    finally:
        stop_all([agent])
