"""Drift from batch runs (issue 15 item 2, "REST, gRPC and batch alike"): a batch-only deployment
whose version has a signed reference profile, on a real agent that serves nothing, scores real
.npy files with onnxruntime; the rows count into the version's windows, and the site's status
record says DriftDetected on the shifted input alone once three windows of shifted rows closed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconciler.agent.config import SiteConfig
from reconciler.agent.wiring import build_agent
from reconciler.devtools.testing import EXAMPLE
from tests.integration.test_drift import features, profiled_fleet  # noqa: F401 -- the fixture

DEPLOYMENT = "demand-forecast"
BATCH_ONLY = """\
  batch:
    schedule: "0 2 * * *"
    input: {name: readings, glob: "*.npy", format: npy}
    output: scores
  serve: false
"""
WINDOW = 1000  # the profile's default window


@pytest.fixture
def agent(profiled_fleet, tmp_path):  # noqa: F811 -- the fixture
    profiled_fleet.edit(f"deployments/{DEPLOYMENT}.yaml", r"^  model: demand-forecast\n",
                        "  model: demand-forecast\n" + BATCH_ONLY)
    profiled_fleet.push("demand-forecast runs as a batch only")
    (tmp_path / "in").mkdir()
    config = SiteConfig(site="store-boston-01", repo=profiled_fleet.url, state=tmp_path / "state", interval="1s",
                        trustKeys=[EXAMPLE / "keys" / "demo.pub"],
                        batch={"inputs": {"readings": tmp_path / "in"}, "outputs": {"scores": tmp_path / "out"}})
    site = build_agent(config, None)
    site.start()
    try:
        assert site.reconcile_once().record.deployments[DEPLOYMENT].activeVersion == "1.0.0"
        yield site
    finally:
        site.stop()


def run_over(agent, tmp_path, name: str, rows: np.ndarray):
    np.save(tmp_path / "in" / name, rows)
    summary = agent.batch.run_now(DEPLOYMENT, "manual")
    assert (summary.state, summary.files, summary.records) == ("Succeeded", 1, len(rows)), summary
    record = agent.reconcile_once().record
    assert record is not None and record.state == "success", record
    return record.deployments[DEPLOYMENT]


def test_batch_rows_fill_the_windows_and_a_shifted_input_is_detected_on_it_alone(agent, tmp_path):
    rng = np.random.default_rng(3)
    calm = run_over(agent, tmp_path, "monday.npy", features(rng, 3 * WINDOW + 400)).drift
    assert (calm.state, calm.windows, calm.rows, calm.drifted) == ("NoDrift", 3, WINDOW, [])
    assert set(calm.features) == {"features[0]", "features[1]", "features[2]", "features[3]", "forecast"}

    # 600 rows fill the open window (400 calm rows already in it), three more windows are all shifted
    shifted = run_over(agent, tmp_path, "tuesday.npy", features(rng, 600 + 3 * WINDOW, shift=0.6))
    drift = shifted.drift
    assert (drift.state, drift.windows, drift.rows) == ("DriftDetected", 7, WINDOW)
    assert [name for name in drift.drifted if name.startswith("features")] == ["features[0]"]
    assert drift.features["features[0]"].score >= 0.1 > max(drift.features[f"features[{i}]"].score for i in (1, 2, 3))
    assert shifted.lastBatchRun.records == 600 + 3 * WINDOW

    outputs = (tmp_path / "out" / "tuesday.npy.out.jsonl").read_text().splitlines()
    assert len(outputs) == 600 + 3 * WINDOW and json.loads(outputs[-1])["record"] == 600 + 3 * WINDOW - 1
