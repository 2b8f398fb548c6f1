"""The wave gate's `evaluation`: the earlier waves' example-weighted score of the new version
(FedAvg weighting), the wait while too few have reported, the stop when it misses its bound.
Pure, table-driven over summaries and records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from reconciler.delivery.evaluation_gate import fleet_score, judge
from reconciler.delivery.gates import SiteReport, decide_gate, site_report
from reconciler.manifests.evaluation import EvaluationGate
from reconciler.manifests.models import Rollout
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RID = "a1b2c3d4e5f6"
SITES = {"p1": {"ring": "pilot"}, "p2": {"ring": "pilot"}, "p3": {"ring": "pilot"}, "e1": {"ring": "early"}}


def scores(examples: int, metrics: dict[str, float], previous: dict[str, float] | None = None,
           version: str = "1.1.0") -> EvaluationSummary:
    return EvaluationSummary(version=version, numExamples=examples, metrics=metrics,
                             previousVersion="1.0.0" if previous is not None else None, previousMetrics=previous or {},
                             evaluatedAt=T0)


@pytest.mark.parametrize("sites, value, examples", [
    ({"a": scores(100, {"accuracy": 0.9})}, 0.9, 100),
    ({"a": scores(100, {"accuracy": 0.9}), "b": scores(300, {"accuracy": 0.5})}, (90 + 150) / 400, 400),
    ({"a": scores(10, {"accuracy": 1.0}), "b": scores(990, {"accuracy": 0.0})}, 0.01, 1000),  # weight, not site count
    ({"a": scores(100, {"accuracy": 0.9}), "b": scores(50, {"auc": 0.7})}, 0.9, 100),  # b has no accuracy: left out
    ({"a": scores(100, {"accuracy": 0.9}), "b": EvaluationSummary(version="1.1.0", evaluatedAt=T0,
                                                                   reason="EvaluationDataInvalid")}, 0.9, 100),
    ({}, None, 0),
])
def test_the_fleet_metric_is_the_example_weighted_mean_of_the_sites_that_scored_it(sites, value, examples):
    score = fleet_score("accuracy", sites)
    assert score.examples == examples
    assert score.value == (pytest.approx(value) if value is not None else None)


def test_the_fleet_metric_does_not_depend_on_the_order_the_records_came_in():
    sites = {f"s{i}": scores(10 * (i + 1), {"rmse": 0.1 * i + 1 / 3}) for i in range(30)}
    reordered = dict(reversed(list(sites.items())))
    assert fleet_score("rmse", sites) == fleet_score("rmse", reordered)
    assert fleet_score("rmse", sites).value == fleet_score("rmse", reordered).value  # bit for bit


@pytest.mark.parametrize("metric, new, old, gain", [
    ("accuracy", (0.8, 0.6), (0.7, 0.7), (10 * 0.1 + 30 * -0.1) / 40),
    ("rmse", (1.0, 2.0), (1.5, 2.0), (10 * 0.5 + 30 * 0.0) / 40),  # an error metric: lower is a gain
])
def test_the_gain_over_the_replaced_version_is_weighted_and_signed_so_that_positive_is_better(metric, new, old, gain):
    sites = {"a": scores(10, {metric: new[0]}, {metric: old[0]}), "b": scores(30, {metric: new[1]}, {metric: old[1]})}
    assert fleet_score(metric, sites).gain == pytest.approx(gain)


def test_sites_without_a_replaced_version_count_for_the_metric_not_for_the_gain():
    sites = {"a": scores(10, {"auc": 0.8}, {"auc": 0.6}), "new": scores(90, {"auc": 0.5})}
    score = fleet_score("auc", sites)
    assert (score.value, score.gain) == (pytest.approx(0.53), pytest.approx(0.2))


GATE = {"metric": "accuracy", "min": 0.8, "minSites": 2, "minExamples": 100}


@pytest.mark.parametrize("gate, sites, kind, said", [
    (GATE, {"a": scores(100, {"accuracy": 0.9})}, "pending", "1 site(s), 100 example(s)"),
    (GATE, {"a": scores(40, {"accuracy": 0.9}), "b": scores(50, {"accuracy": 0.9})}, "pending", "needs 2 site(s) and 100"),
    (GATE, {"a": scores(100, {"accuracy": 0.9}), "b": scores(100, {"accuracy": 0.8})}, "pass", "fleet accuracy 0.85"),
    (GATE, {"a": scores(100, {"accuracy": 0.9}), "b": scores(300, {"accuracy": 0.7})}, "below",
     "0.75 over 2 site(s), 400 example(s) (worst: b 0.7 on 300) is below the minimum 0.8"),
    (GATE, {"a": scores(100, {"accuracy": 0.8}), "b": scores(100, {"accuracy": 0.8})}, "pass", ""),  # min is inclusive
    ({"metric": "logLoss", "max": 0.5}, {"a": scores(10, {"logLoss": 0.6})}, "below", "above the maximum 0.5"),
    ({"metric": "logLoss", "max": 0.5}, {"a": scores(10, {"logLoss": 0.4})}, "pass", "worst: a 0.4"),
    ({"metric": "auc", "minGainOverPrevious": 0.0}, {"a": scores(10, {"auc": 0.7}, {"auc": 0.8})}, "below",
     "gains -0.1 over the versions it replaces, needs +0"),
    ({"metric": "auc", "minGainOverPrevious": 0.0}, {"a": scores(10, {"auc": 0.8}, {"auc": 0.8})}, "pass", "+0"),
    ({"metric": "auc", "minGainOverPrevious": 0.0}, {"a": scores(10, {"auc": 0.8})}, "pass",
     "no site replaced a version"),  # a first rollout: nothing to gain over
    ({"metric": "mae", "max": 2.0, "minGainOverPrevious": 0.1}, {"a": scores(10, {"mae": 1.0}, {"mae": 1.05})}, "below",
     "gains +0.05"),
])
def test_the_gate_waits_for_enough_scores_and_stops_below_its_bound(gate, sites, kind, said):
    verdict = judge(EvaluationGate.model_validate(gate), fleet_score(gate["metric"], sites))
    assert verdict.kind == kind
    assert said in verdict.message


@pytest.mark.parametrize("gate, said", [
    ({"metric": "accuracy"}, "needs min, max or minGainOverPrevious"),
    ({"metric": "accuracy", "max": 0.9}, "higher is better, bound it with min"),
    ({"metric": "rmse", "min": 0.1}, "lower is better, bound it with max"),
    ({"metric": "f1", "min": 0.1}, "Input should be"),
    ({"metric": "auc", "min": 0.5, "minSites": 0}, "greater than or equal to 1"),
])
def test_a_gate_that_cannot_be_judged_is_refused(gate, said):
    with pytest.raises(ValidationError, match=said):
        EvaluationGate.model_validate(gate)


def rollout(gate: dict | None) -> Rollout:
    return Rollout.model_validate({"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                                             {"name": "early", "percent": 100}],
                                   "gate": {"minHealthyRatio": 1.0} | ({"evaluation": gate} if gate else {})})


def report(state: str = "success", evaluation: EvaluationSummary | None = None) -> SiteReport:
    return SiteReport(RID, state, "1.1.0", T0, T0, evaluation=evaluation)  # type: ignore[arg-type]


WORSE, BETTER = scores(100, {"accuracy": 0.6}, {"accuracy": 0.8}), scores(100, {"accuracy": 0.9}, {"accuracy": 0.8})
GAIN_GATE = {"metric": "accuracy", "minGainOverPrevious": 0.0, "minSites": 3}


@pytest.mark.parametrize("gate, records, kind, reason", [
    (None, {"p1": report(), "p2": report(), "p3": report()}, "proceed", "GateHeld"),  # no gate: scores do not matter
    (GAIN_GATE, {"p1": report(evaluation=BETTER), "p2": report(evaluation=BETTER), "p3": report(evaluation=BETTER)},
     "proceed", "GateHeld"),
    (GAIN_GATE, {"p1": report(evaluation=WORSE), "p2": report(evaluation=WORSE), "p3": report(evaluation=BETTER)},
     "wait", "EvaluationBelowMinimum"),
    # healthy but two sites not scored yet: the wave waits for them
    (GAIN_GATE, {"p1": report(evaluation=BETTER), "p2": report(), "p3": report()}, "wait", "EvaluationPending"),
    # not healthy yet: the health gate says why; a stop says so at once, whatever the health
    (GAIN_GATE, {"p1": report(evaluation=BETTER), "p2": report("progressing"), "p3": report()},
     "wait", "WaitingForEarlierWaves"),
    (GAIN_GATE, {"p1": report(evaluation=WORSE), "p2": report("progressing", WORSE), "p3": report(evaluation=WORSE)},
     "wait", "EvaluationBelowMinimum"),
])
def test_a_wave_starts_only_once_the_earlier_waves_scored_the_version_well_enough(gate, records, kind, reason):
    decision = decide_gate(rollout(gate), "d", RID, "e1", SITES, records, T0 + timedelta(minutes=1))
    assert (decision.kind, decision.reason) == (kind, reason)
    if reason == "EvaluationBelowMinimum":
        assert "the rollout stops at wave early" in decision.message and "worst: p1 0.6" in decision.message


def test_the_evaluation_gate_never_aborts_nor_holds_the_first_wave():
    records = {site: report(evaluation=WORSE) for site in ("p1", "p2", "p3")}
    for site in ("p1", "p2", "p3"):
        assert decide_gate(rollout(GAIN_GATE), "d", RID, site, SITES, records, T0).kind == "proceed"


@pytest.mark.parametrize("evaluation, kept", [
    (None, False),
    (scores(10, {"accuracy": 0.9}), True),
    (scores(10, {"accuracy": 0.9}, version="1.0.0"), False),  # scores of another version prove nothing here
])
def test_a_report_keeps_the_scores_of_the_version_it_reports_only(evaluation, kept):
    status = DeploymentStatus(model="m", state="success", version="1.1.0", activeVersion="1.1.0", rollout=RID,
                              reason="Converged", since=T0, evaluation=evaluation)
    record = StatusRecord(site="p1", state="success", reason="Converged", deployments={"d": status},
                          agentVersion="test", writtenAt=T0)
    found = site_report(record, "d")
    assert found is not None and (found.evaluation is not None) is kept
    assert found == replace(found, evaluation=None)  # scores are not part of a report's identity
