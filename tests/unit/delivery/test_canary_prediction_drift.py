"""The canary analysis's `maxPredictionDrift`: the canary's predictions against stable's, in the
canary profile's bins. Pure, table-driven (the runtime side is in tests/unit/monitoring)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.delivery.canary import CanaryProgress, decide_canary
from reconciler.delivery.evidence import failure_kind
from reconciler.manifests.deployments import CanaryStep

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Stats:
    requests: int = 100
    errors: int = 0
    error_rate: float = 0.0
    p99_seconds: float | None = 0.01
    shadow_requests: int = 0
    agreement: float | None = None
    prediction_drift: float | None = None


STEPS = [CanaryStep.model_validate({"setWeight": 50}),
         CanaryStep.model_validate({"analysis": {"window": "1m", "maxPredictionDrift": 0.1, "maxWait": "10m"}})]


@pytest.mark.parametrize("drift, seconds, kind, reason", [
    (0.3, 10, "rollback", "PredictionDriftTooHigh"),  # a breach fails at once, as the other limits do
    (0.05, 10, "wait", "Analyzing"),  # within the limit: the window must still pass
    (0.05, 61, "promote", "Promoted"),
    (0.1, 61, "promote", "Promoted"),  # the limit itself is allowed
    (None, 61, "wait", "WaitingForTraffic"),  # not measurable yet: too few rows on a side, or no profile
    (None, 601, "rollback", "InsufficientTraffic"),  # maxWait passed (onMaxWait: fail)
])
def test_the_canarys_predictions_are_bounded_against_stables(drift, seconds, kind, reason):
    progress = CanaryProgress(step=1, stepStartedAt=T0, weight=50)
    decision = decide_canary(STEPS, progress, Stats(prediction_drift=drift), T0 + timedelta(seconds=seconds))
    assert (decision.kind, decision.reason) == (kind, reason)
    if reason == "PredictionDriftTooHigh":
        assert "0.300 from stable's" in decision.message and failure_kind(reason) == "version"
    if reason == "WaitingForTraffic":
        assert "too few predictions" in decision.message
