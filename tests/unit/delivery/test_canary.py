"""The in-site canary step machine: pure, table-driven over steps, progress, traffic and time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest
import yaml

from reconciler.delivery.canary import CanaryProgress, decide_canary, measured_since
from reconciler.errors import Stalled
from reconciler.manifests.deployments import CanaryStep, Deployment

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[3] / "example-fleet-repo"


@dataclass(frozen=True)
class Stats:
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    p99_seconds: float | None = None
    shadow_requests: int = 0
    agreement: float | None = None


def traffic(requests: int, errors: int = 0, p99: float | None = 0.010, shadow: int = 0,
            agreement: float | None = None) -> Stats:
    return Stats(requests, errors, errors / requests if requests else 0.0, p99 if requests else None,
                 shadow, agreement)


def steps(*raw: dict) -> list[CanaryStep]:
    return [CanaryStep.model_validate(s) for s in raw]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def progress(step: int, started: float = 0, weight: int = 0, baseline: float | None = None) -> CanaryProgress:
    return CanaryProgress(step=step, stepStartedAt=at(started), weight=weight,
                          baseline=None if baseline is None else at(baseline))


CHECKED = {"analysis": {"window": "30s", "minRequests": 20, "maxErrorRate": 0.01, "maxLatencyP99": "50ms"}}
MIRRORED = {"analysis": {"window": "30s", "minRequests": 20, "minAgreement": 0.99}}
CANARY = steps({"setWeight": 20}, {"pause": {"duration": "30s"}}, CHECKED, {"setWeight": 50})
PATIENT = {"analysis": {**CHECKED["analysis"], "maxWait": "90s"}}
WAIT_THEN_FAIL = steps({"setWeight": 20}, {"pause": {"duration": "30s"}}, PATIENT, {"setWeight": 50})
WAIT_THEN_PROMOTE = steps({"setWeight": 20}, {"pause": {"duration": "30s"}},
                          {"analysis": {**PATIENT["analysis"], "onMaxWait": "promote"}}, {"setWeight": 50})


@pytest.mark.parametrize("case,steps_,progress_,stats,now,kind,reason,weight,next_step", [
    # setWeight acts at once and moves on; the next step begins now
    ("first weight", CANARY, progress(0), None, 0, "set_weight", "WeightSet", 20, 1),
    ("weight zero is a weight", steps({"setWeight": 0}), progress(0), None, 0, "set_weight", "WeightSet", 0, 1),
    # pause counts from the step's start, and ends exactly at the duration
    ("pausing", CANARY, progress(1, 0, 20), None, 29.999, "wait", "Paused", 20, 1),
    ("pause over: analysis begins", CANARY, progress(1, 0, 20), traffic(500), 30, "wait", "Analyzing", 20, 2),
    ("zero pause passes", steps({"pause": {"duration": "0s"}}, {"setWeight": 30}), progress(0), None, 0,
     "set_weight", "WeightSet", 30, 2),
    # analysis: waits for its window, passes at its end with enough good traffic
    ("window running", CANARY, progress(2, 30, 20), traffic(25), 59, "wait", "Analyzing", 20, 2),
    ("window passed", CANARY, progress(2, 30, 20), traffic(25), 60, "set_weight", "WeightSet", 50, 4),
    ("error rate at the limit passes", CANARY, progress(2, 30, 20), traffic(100, 1), 60, "set_weight",
     "WeightSet", 50, 4),
    ("p99 at the limit passes", CANARY, progress(2, 30, 20), traffic(25, p99=0.050), 60, "set_weight",
     "WeightSet", 50, 4),
    # failures: as soon as traffic suffices, even before the window ends
    ("error rate", CANARY, progress(2, 30, 20), traffic(100, 2), 60, "rollback", "ErrorRateTooHigh", 0, 2),
    ("error rate fails fast", CANARY, progress(2, 30, 20), traffic(20, 20), 35, "rollback", "ErrorRateTooHigh", 0, 2),
    ("latency", CANARY, progress(2, 30, 20), traffic(25, p99=0.0501), 60, "rollback", "LatencyTooHigh", 0, 2),
    ("few bad requests are not judged", CANARY, progress(2, 30, 20), traffic(19, 19), 45, "wait", "Analyzing", 20, 2),
    ("disagreement", steps(MIRRORED), progress(0), traffic(0, shadow=40, agreement=0.95), 30, "rollback",
     "DisagreesWithStable", 0, 0),
    ("agreement at the limit", steps(MIRRORED), progress(0), traffic(0, shadow=40, agreement=0.99), 30, "promote",
     "Promoted", 100, 1),
    # too little traffic is inconclusive: the analysis waits for it, without end unless maxWait is set
    ("short of traffic", CANARY, progress(2, 30, 20), traffic(19), 60, "wait", "WaitingForTraffic", 20, 2),
    ("still short", CANARY, progress(2, 30, 20), traffic(19), 119.999, "wait", "WaitingForTraffic", 20, 2),
    ("traffic came late", CANARY, progress(2, 30, 20), traffic(20), 100, "set_weight", "WeightSet", 50, 4),
    ("no maxWait: a day later it still waits", CANARY, progress(2, 30, 20), traffic(19), 86400, "wait",
     "WaitingForTraffic", 20, 2),
    ("no stats is no traffic", CANARY, progress(2, 30, 20), None, 120, "wait", "WaitingForTraffic", 20, 2),
    ("before maxWait", WAIT_THEN_FAIL, progress(2, 30, 20), traffic(19), 119.999, "wait", "WaitingForTraffic", 20, 2),
    ("maxWait spent, onMaxWait fail (the default)", WAIT_THEN_FAIL, progress(2, 30, 20), traffic(19), 120,
     "rollback", "InsufficientTraffic", 0, 2),
    ("maxWait spent, onMaxWait promote", WAIT_THEN_PROMOTE, progress(2, 30, 20), None, 120, "set_weight",
     "WeightSet", 50, 4),
    ("a breach still fails before maxWait", WAIT_THEN_PROMOTE, progress(2, 30, 20), traffic(20, 5), 119,
     "rollback", "ErrorRateTooHigh", 0, 2),
    ("a live limit needs a request", steps({"analysis": {"window": "10s", "maxErrorRate": 0.1}}), progress(0),
     traffic(0), 10, "wait", "WaitingForTraffic", 0, 0),
    ("latency needs a measurement", CANARY, progress(2, 30, 20), traffic(25, p99=None), 60, "wait",
     "WaitingForTraffic", 20, 2),
    ("agreement needs mirrored requests", steps(MIRRORED), progress(0), traffic(100, shadow=19, agreement=1.0), 30,
     "wait", "WaitingForTraffic", 0, 0),
    ("no limits, no minimum", steps({"analysis": {"window": "10s"}}), progress(0), None, 10, "promote",
     "Promoted", 100, 1),
    # a baseline later than the step's start restarts the measurement there
    ("baseline restarts the window", CANARY, progress(2, 30, 20, baseline=50), traffic(25), 60, "wait",
     "Analyzing", 20, 2),
    ("baseline restarts the patience", CANARY, progress(2, 30, 20, baseline=50), traffic(5), 120, "wait",
     "WaitingForTraffic", 20, 2),
    ("earlier baseline is ignored", CANARY, progress(2, 30, 20, baseline=0), traffic(25), 59, "wait",
     "Analyzing", 20, 2),
    # the end
    ("last step done", CANARY, progress(4, 60, 50), None, 60, "promote", "Promoted", 100, 4),
    ("no steps: blue/green", [], progress(0), None, 0, "promote", "NoCanarySteps", 100, 0),
])
def test_step_machine(case, steps_, progress_, stats, now, kind, reason, weight, next_step):
    decision = decide_canary(steps_, progress_, stats, at(now))
    assert (decision.kind, decision.reason, decision.weight, decision.next.step) == (kind, reason, weight, next_step), \
        decision.message
    assert decision.next.weight == weight
    assert decision.message


def test_a_step_entered_now_starts_now_and_waits_with_a_due_time():
    decision = decide_canary(CANARY, progress(1, 0, 20), traffic(500, 500), at(45))
    assert decision.kind == "wait"  # the bad stats measured the pause, not the analysis that begins
    assert decision.next == CanaryProgress(step=2, stepStartedAt=at(45), weight=20)
    assert decision.due == at(75)


@pytest.mark.parametrize("progress_,now,due", [
    (progress(1, 0, 20), 10, 30),  # pause: its end
    (progress(2, 30, 20), 40, 60),  # analysis: the window's end
    (progress(2, 30, 20), 70, None),  # short of traffic: whenever traffic comes
])
def test_waits_say_when_to_look_again(progress_, now, due):
    decision = decide_canary(CANARY, progress_, traffic(3), at(now))
    assert decision.kind == "wait" and decision.due == (None if due is None else at(due))
    assert decision.next == progress_
    assert decide_canary(WAIT_THEN_FAIL, progress(2, 30, 20), traffic(3), at(70)).due == at(120)  # maxWait's end


def test_messages_say_what_failed():
    decision = decide_canary(CANARY, progress(2, 30, 20), traffic(100, 3), at(60))
    assert decision.message == ("step 3/4: error rate 3.00% over 100 requests is above 1.00%; "
                                "the stable version takes all traffic")
    decision = decide_canary(CANARY, progress(2, 30, 20), traffic(7), at(120))
    assert decision.message == "step 3/4: 7 of 20 requests after 1m30s; waiting for traffic"
    decision = decide_canary(WAIT_THEN_FAIL, progress(2, 30, 20), traffic(7), at(70))
    assert decision.message == "step 3/4: 7 of 20 requests after 40s; waiting up to 1m30s, then fail"
    decision = decide_canary(WAIT_THEN_FAIL, progress(2, 30, 20), traffic(7), at(120))
    assert decision.message == ("step 3/4: 7 of 20 requests after 1m30s (maxWait, onMaxWait: fail); "
                                "the stable version takes all traffic")


MIRROR_STEPS = steps({"setWeight": 0}, MIRRORED, {"setWeight": 20}, CHECKED)


@pytest.mark.parametrize("progress_,stats,now,kind,mirror", [
    (progress(0), None, 0, "set_weight", True),  # entering the mirrored analysis turns mirroring on
    (progress(1), traffic(0, shadow=5, agreement=1.0), 10, "wait", True),
    (progress(1), traffic(0, shadow=40, agreement=1.0), 30, "set_weight", False),  # passed: mirroring off
    (progress(1), traffic(0, shadow=40, agreement=0.5), 30, "rollback", False),
    (progress(3, 0, 20), traffic(5), 10, "wait", False),  # an analysis without minAgreement does not mirror
])
def test_mirror_only_while_an_agreement_analysis_runs(progress_, stats, now, kind, mirror):
    decision = decide_canary(MIRROR_STEPS, progress_, stats, at(now))
    assert (decision.kind, decision.mirror) == (kind, mirror)


def test_measured_since_is_the_later_of_step_start_and_baseline():
    assert measured_since(progress(2, 30)) == at(30)
    assert measured_since(progress(2, 30, baseline=50)) == at(50)
    assert measured_since(progress(2, 30, baseline=10)) == at(30)


def run(canary: list[CanaryStep], rate: float, error_rate: float = 0.0, p99: float = 0.010,
        tick: float = 5, limit: float = 3600) -> list[tuple[str, int, float]]:
    """Drives the machine as the agent would: carry out each decision, persist ``next``, look again
    at once after an action and a tick later after a wait. Traffic arrives at ``rate`` per second."""
    state, now, events = CanaryProgress.start(T0), T0, []
    while now < T0 + timedelta(seconds=limit):
        seconds = (now - measured_since(state)).total_seconds()
        requests = int(rate * seconds)
        stats = Stats(requests, int(requests * error_rate), error_rate, p99 if requests else None)
        decision = decide_canary(canary, state, stats, now)
        state = decision.next
        if decision.kind != "wait":
            events.append((decision.kind, decision.weight, (now - T0).total_seconds()))
            if decision.kind in ("promote", "rollback"):
                return events
        else:
            now += timedelta(seconds=tick)
    raise AssertionError(f"the canary did not finish: {events}")


def demand_forecast_steps() -> list[CanaryStep]:
    text = (EXAMPLE / "deployments" / "demand-forecast.yaml").read_text()
    deployment = Deployment.model_validate(yaml.safe_load(text))
    assert deployment.spec.canary is not None
    return deployment.spec.canary.steps


@pytest.mark.parametrize("rate,error_rate,p99,events", [
    # healthy traffic: 20 % at once, analysis from 30 s to 60 s, 50 %, analysis from 90 s to 120 s
    (2.0, 0.0, 0.010, [("set_weight", 20, 0), ("set_weight", 50, 60), ("promote", 100, 120)]),
    # thin traffic: each analysis waits until it has seen 20 requests (40 s at 0.5/s)
    (0.5, 0.0, 0.010, [("set_weight", 20, 0), ("set_weight", 50, 70), ("promote", 100, 140)]),
    # a broken version fails as soon as it has had 20 requests
    (2.0, 0.5, 0.010, [("set_weight", 20, 0), ("rollback", 0, 40)]),
    # a slow version fails its first analysis as well
    (2.0, 0.0, 0.200, [("set_weight", 20, 0), ("rollback", 0, 40)]),
])
def test_demand_forecast_canary_from_the_example_fleet(rate, error_rate, p99, events):
    assert run(demand_forecast_steps(), rate, error_rate, p99) == events


def test_demand_forecast_canary_without_traffic_waits_and_never_fails():
    with pytest.raises(AssertionError, match=r"did not finish: \[\('set_weight', 20, 0.0\)\]"):
        run(demand_forecast_steps(), rate=0.0, limit=7200)
    waiting = decide_canary(demand_forecast_steps(), progress(2, 30, 20), None, at(86400))
    assert (waiting.kind, waiting.reason, waiting.weight) == ("wait", "WaitingForTraffic", 20)


def test_progress_from_other_steps_is_refused():
    with pytest.raises(Stalled) as caught:
        decide_canary(CANARY, progress(5), None, at(0))
    assert caught.value.reason == "CanaryProgressMismatch"
    assert "step 6 of 4" in caught.value.message


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_canary(CANARY, progress(0), None, datetime(2026, 3, 2, 10, 0))


@pytest.mark.parametrize("raw,field", [
    ({"step": -1, "stepStartedAt": T0}, "step"),
    ({"step": 0, "stepStartedAt": T0, "weight": 101}, "weight"),
    ({"step": 0, "stepStartedAt": T0, "weight": -1}, "weight"),
    ({"step": 0}, "stepStartedAt"),
    ({"step": 0, "stepStartedAt": T0, "extra": 1}, "extra"),
])
def test_bad_progress_is_refused(raw, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        CanaryProgress.model_validate(raw)


def test_progress_survives_state_json():
    state = progress(2, 30, 20, baseline=50)
    assert CanaryProgress.model_validate_json(state.model_dump_json()) == state
