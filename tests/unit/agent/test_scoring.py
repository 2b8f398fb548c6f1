"""Federated evaluation's schedule at a site: a served version is scored again once its scores are
older than evaluationInterval, or are of another version; beside the previous version kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.agent.scoring import Scoring
from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.delivery.plan import Plan, Target
from reconciler.manifests.models import Artifact, ModelInterface
from reconciler.monitoring.evaluation import EvaluationSummary

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
INTERFACE = ModelInterface.model_validate({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
                                           "outputs": [{"name": "p", "dtype": "float32", "shape": [-1, 2]}]})
ARTIFACT = Artifact.model_validate({"uri": "m.onnx", "digest": "sha256:" + "a" * 64, "size": 1,
                                    "signature": {"uri": "m.sig"}})


class Scorer:
    def __init__(self):
        self.calls: list[tuple[str, str | None, datetime]] = []

    def evaluate(self, target, model_path, replaced, now):
        self.calls.append((model_path.name, replaced[0] if replaced else None, now))
        return EvaluationSummary(version=target.version, numExamples=10, metrics={"accuracy": 1.0}, evaluatedAt=now)


def installed(version: str) -> Installed:
    return Installed(version=version, digest=f"sha256:{version}", uri="m.onnx", installedAt=T0)


def state(evaluation: EvaluationSummary | None) -> SiteState:
    deployment = DeploymentState(model="m", interface=INTERFACE, active=installed("1.1.0"), previous=installed("1.0.0"),
                                 evaluation=evaluation)
    return SiteState(site="s", deployments={"d": deployment})


PLAN = Plan("s", "c", (), (Target("d", "m", "1.1.0", ARTIFACT, INTERFACE, (), None, "r"),))


def scored(version: str, at: datetime) -> EvaluationSummary:
    return EvaluationSummary(version=version, numExamples=10, metrics={"accuracy": 0.5}, evaluatedAt=at)


@pytest.mark.parametrize("evaluation, interval, now, again", [
    (None, DAY, T0, True),  # never scored (the data came later, or an agent from before)
    (scored("1.1.0", T0), DAY, T0 + DAY - timedelta(seconds=1), False),
    (scored("1.1.0", T0), DAY, T0 + DAY, True),
    (scored("1.0.0", T0), DAY, T0, True),  # scores of the version it served before
    (None, None, T0, False),  # no interval: only before activation
])
def test_a_served_version_is_scored_again_when_its_scores_are_due(evaluation, interval, now, again):
    scorer = Scorer()
    scoring = Scoring(scorer, lambda digest: Path(digest.replace("sha256:", "") + ".onnx"), interval)
    after = scoring.rescore(PLAN, state(evaluation), now)
    assert bool(scorer.calls) is again
    if again:
        assert scorer.calls == [("1.1.0.onnx", "1.0.0", now)]  # the served blob, beside the previous one kept
        assert after.deployments["d"].evaluation.evaluatedAt == now
        assert not scoring.due(now + DAY - timedelta(seconds=1)) and scoring.due(now + DAY)
    else:
        assert after == state(evaluation)
