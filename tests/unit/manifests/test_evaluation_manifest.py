"""Federated evaluation in the fleet language: a Model declares how it is scored, a rollout gate
reads one of its metrics; what cannot be scored or judged is refused at its line."""

from __future__ import annotations

import pytest
from manifest_texts import edit, load

from reconciler.manifests.semantics import check

SCORED = "  interface:\n"
EVALUATION = "  evaluation: {kind: classifier, output: y, metrics: [accuracy, auc]}\n  interface:\n"
GATED = "        percent: 100\n"


def gate(text: str) -> str:
    return GATED + "    gate:\n      evaluation: " + text + "\n"


def with_evaluation(model: str = EVALUATION, deployment: str | None = None) -> dict:
    files = edit("models/m.yaml", SCORED, model)
    if deployment is not None:
        files |= edit("deployments/d.yaml", GATED, deployment)
    return files


def test_a_model_that_declares_its_evaluation_and_a_gate_on_a_declared_metric_load() -> None:
    result = load(with_evaluation(deployment=gate("{metric: auc, min: 0.7, minSites: 2, minExamples: 100}")))
    assert result.errors == [], [f.render() for f in result.errors]
    model = result.repo.models["m"].spec.evaluation
    assert (model.kind, model.output, model.metrics) == ("classifier", "y", ["accuracy", "auc"])
    evaluation = result.repo.deployments["d"].spec.rollout.gate.evaluation
    assert (evaluation.metric, evaluation.min, evaluation.minSites, evaluation.minExamples) == ("auc", 0.7, 2, 100)


@pytest.mark.parametrize("files, path, said", [
    (with_evaluation("  evaluation: {kind: regressor, output: y, metrics: [mae, auc]}\n  interface:\n"), "models/m.yaml",
     "metric(s) auc are not declared for a regressor (it has mae, rmse)"),
    (with_evaluation("  evaluation: {kind: classifier, output: y, metrics: [rmse]}\n  interface:\n"), "models/m.yaml",
     "metric(s) rmse are not declared for a classifier"),
    (with_evaluation("  evaluation: {kind: classifier, output: z, metrics: [accuracy]}\n  interface:\n"), "models/m.yaml",
     "evaluation.output 'z' is not an output of the interface"),
    (with_evaluation("  evaluation: {kind: classifier, output: y, metrics: []}\n  interface:\n"), "models/m.yaml",
     "at least 1 item"),
    (with_evaluation(deployment=gate("{metric: accuracy, max: 0.9}")), "deployments/d.yaml",
     "accuracy: higher is better, bound it with min, not max"),
    (with_evaluation(deployment=gate("{metric: auc}")), "deployments/d.yaml", "needs min, max or minGainOverPrevious"),
])
def test_what_cannot_be_scored_or_judged_is_refused(files, path, said) -> None:
    result = load(files)
    assert any(f.path == path and said in f.message for f in result.errors), [f.render() for f in result.findings]


@pytest.mark.parametrize("files, said", [
    (with_evaluation(deployment=gate("{metric: logLoss, max: 0.4}")),
     "metric logLoss is not declared by model 'm' (spec.evaluation.metrics: accuracy, auc)"),
    (edit("deployments/d.yaml", GATED, gate("{metric: accuracy, min: 0.9}")),
     "(spec.evaluation.metrics: none); sites would never report it"),
])
def test_reconciler_validate_refuses_a_gate_on_a_metric_the_model_does_not_declare(files, said) -> None:
    result = load(files)
    assert result.errors == []
    findings = [f for f in check(result.repo) if f.severity == "error"]
    assert [f.path for f in findings if said in f.message] == ["deployments/d.yaml"], [f.render() for f in findings]
