"""Federated evaluation at real sites: three agents on loopback with real onnxruntime (the
validation child) score each new version of a tiny linear classifier on their own labeled data
(CSV, .npy beside labels, JSON Lines), publish only scores and rounded counts in their status
records, and the later wave's evaluation gate reads them. A version worse on the two pilot sites'
data stops the rollout at the gate (the third site keeps its version); a better one passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from reconciler.agent.wiring import build_agent
from reconciler.cli.main import main
from reconciler.devtools.onnx_builder import dense_model
from reconciler.devtools.testing import EXAMPLE, add_signed_version, serve_fleet
from reconciler.settings import SiteConfig

MODEL = DEPLOYMENT = "churn"
PILOTS, LATE = ("store-a", "store-b"), "store-c"
GATE = {"metric": "accuracy", "minGainOverPrevious": 0.0, "minSites": 2, "minExamples": 300}
# logits [0, x . w]: class 1 when x . w > 0. The labels are x0 > 0, so a weight on x0 alone is right,
# on x1 alone is a coin toss, and the tilted 1.0.0 is right about 85% of the time (1 - atan(0.5)/pi).
WEIGHTS = {"1.0.0": (3.0, 1.5), "1.1.0": (0.0, 3.0), "1.2.0": (3.0, 0.0)}


def classifier(version: str) -> bytes:
    w0, w1 = WEIGHTS[version]
    weights = np.array([[0.0, w0], [0.0, w1]], dtype=np.float32)
    return dense_model([(weights, np.zeros(2, dtype=np.float32), "softmax")], input_name="x", output_name="probability")


def write_fleet(fleet) -> None:
    files = {f"sites/{site}.yaml": {"apiVersion": "reconciler/v1", "kind": "Site",
                                    "metadata": {"name": site, "labels": {"tier": "store",
                                                                          **({"ring": "pilot"} if site in PILOTS else {})}}}
             for site in (*PILOTS, LATE)}
    files[f"models/{MODEL}/model.yaml"] = {
        "apiVersion": "reconciler/v1", "kind": "Model", "metadata": {"name": MODEL},
        "spec": {"interface": {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
                               "outputs": [{"name": "probability", "dtype": "float32", "shape": [-1, 2]}]},
                 "evaluation": {"kind": "classifier", "output": "probability", "metrics": ["accuracy", "logLoss", "auc"]},
                 "versions": []}}
    files[f"deployments/{DEPLOYMENT}.yaml"] = {
        "apiVersion": "reconciler/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT},
        "spec": {"model": MODEL, "version": "1.0.0", "targets": {"matchLabels": {"tier": "store"}},
                 "rollout": {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                                       {"name": "rest", "percent": 100}],
                             "gate": {"minHealthyRatio": 1.0, "evaluation": GATE}}}}
    for path, doc in files.items():
        (fleet.clone / path).parent.mkdir(parents=True, exist_ok=True)
        (fleet.clone / path).write_text(yaml.safe_dump(doc, sort_keys=False))
    for version in WEIGHTS:
        add_signed_version(fleet.clone, version, classifier(version), [], model=MODEL)
    fleet.push("churn: a classifier scored on the sites' own data")


def labeled(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (rows, 2)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def write_data(folder, site: str) -> dict:
    """Each site keeps its labeled data its own way: CSV, .npy beside labels, JSON Lines."""
    folder.mkdir(parents=True)
    if site == "store-a":
        x, y = labeled(1, 200)
        rows = ["x[0],x[1],label", *(f"{a},{b},{label}" for (a, b), label in zip(x.tolist(), y.tolist(), strict=True))]
        (folder / "eval.csv").write_text("\n".join(rows) + "\n")
        return {"inputs": str(folder / "eval.csv")}
    if site == "store-b":
        x, y = labeled(2, 200)
        np.save(folder / "x.npy", x)
        np.save(folder / "labels.npy", y)
        return {"inputs": str(folder / "x.npy"), "labels": str(folder / "labels.npy")}
    # store-c's file is written later: at first its data is missing
    return {"inputs": str(folder / "eval.jsonl")}


def write_late_data(folder) -> None:
    x, y = labeled(3, 55)  # reported as 50
    lines = [json.dumps({"x": row, "label": label}) for row, label in zip(x.tolist(), y.tolist(), strict=True)]
    (folder / "eval.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def fleet(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "README").write_text("fleet\n")
    remote = serve_fleet(tmp_path, tmp_path / "src")
    write_fleet(remote)
    yield remote
    remote.server.stop()


@pytest.fixture
def agents(fleet, tmp_path):
    started = {}
    try:
        for site in (*PILOTS, LATE):
            config = SiteConfig(site=site, repo=fleet.url, state=tmp_path / "state" / site, interval="1s",
                                trustKeys=[EXAMPLE / "keys" / "demo.pub"],
                                evaluation={MODEL: write_data(tmp_path / "data" / site, site)})
            started[site] = build_agent(config, None)
            started[site].start()
        yield started
    finally:
        for agent in started.values():
            agent.stop()


def reconcile(agent):
    result = agent.reconcile_once()
    assert result.error is None, result.error
    return result.record.deployments[DEPLOYMENT]


def test_a_version_worse_on_the_pilots_data_stops_at_the_evaluation_gate_and_a_better_one_passes(
        agents, fleet, tmp_path, capsys):
    first = {site: reconcile(agents[site]) for site in PILOTS}
    for status in first.values():
        assert status.activeVersion == "1.0.0" and status.evaluation.reason == "EvaluationScored"
        assert status.evaluation.numExamples == 200 and status.evaluation.previousVersion is None
        assert 0.75 < status.evaluation.metrics["accuracy"] < 0.95
    late = reconcile(agents[LATE])
    assert late.activeVersion == "1.0.0"  # a first rollout has nothing to gain over
    assert late.evaluation.reason == "EvaluationDataInvalid" and "eval.jsonl" in late.evaluation.message
    assert late.evaluation.metrics == {}  # refused clearly, and still served

    fleet.bump(f"deployments/{DEPLOYMENT}.yaml", "1.0.0", "1.1.0")
    fleet.push("churn 1.1.0")
    worse = {site: reconcile(agents[site]) for site in PILOTS}
    for status in worse.values():
        assert status.activeVersion == "1.1.0" and status.evaluation.previousVersion == "1.0.0"
        assert status.evaluation.metrics["accuracy"] < status.evaluation.previousMetrics["accuracy"] - 0.2
    for _ in range(2):
        held = reconcile(agents[LATE])
        assert (held.state, held.reason, held.activeVersion) == ("pending", "EvaluationBelowMinimum", "1.0.0")
    worst = min(PILOTS, key=lambda site: worse[site].evaluation.metrics["accuracy"])
    assert "the rollout stops at wave rest" in held.message and f"worst: {worst}" in held.message

    capsys.readouterr()
    assert main(["status", "--repo", fleet.url, "--evaluation", "--format", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    fleet_accuracy = next(f for f in view["fleet"] if f["version"] == "1.1.0" and f["metric"] == "accuracy")
    expected = sum(worse[s].evaluation.metrics["accuracy"] * 200 for s in PILOTS) / 400
    assert fleet_accuracy["value"] == pytest.approx(expected) and fleet_accuracy["gain"] < -0.2
    assert (fleet_accuracy["examples"], fleet_accuracy["sites"]) == (400, list(PILOTS))
    assert main(["status", "--repo", fleet.url, "--evaluation"]) == 0
    text = capsys.readouterr().out
    assert "fleet churn 1.1.0: accuracy" in text and "EvaluationDataInvalid" in text

    write_late_data(tmp_path / "data" / LATE)
    fleet.bump(f"deployments/{DEPLOYMENT}.yaml", "1.1.0", "1.2.0")
    fleet.push("churn 1.2.0")
    for site in PILOTS:
        better = reconcile(agents[site])
        assert better.activeVersion == "1.2.0" and better.evaluation.metrics["accuracy"] == 1.0
    passed = reconcile(agents[LATE])
    assert (passed.state, passed.activeVersion) == ("success", "1.2.0")
    scored = passed.evaluation
    assert (scored.numExamples, scored.previousVersion, scored.metrics["accuracy"]) == (50, "1.0.0", 1.0)
    assert scored.metrics["auc"] == 1.0 and scored.previousMetrics["accuracy"] < 1.0
