"""PURE: the in-site canary, a step machine in Argo Rollouts vocabulary. The site serves the stable
version and the canary version side by side; the steps move traffic to the canary and judge it.

- ``setWeight: N`` gives the canary N % of live traffic and moves on at once.
- ``pause: {duration}`` waits ``duration`` from the moment the step began.
- ``analysis`` judges the canary's traffic measured since the step began (or since
  ``CanaryProgress.baseline``, when the site lost its counters and had to measure afresh):
  * it fails as soon as there is enough traffic and a limit is crossed: error rate above
    ``maxErrorRate`` (ErrorRateTooHigh), p99 latency above ``maxLatencyP99`` (LatencyTooHigh),
    agreement with stable on mirrored requests below ``minAgreement`` (DisagreesWithStable), the
    distance between the canary's and stable's predictions above ``maxPredictionDrift``
    (PredictionDriftTooHigh; each side needs the canary profile's minRows rows to be judged);
  * it passes only once the whole ``window`` has elapsed with enough traffic and no limit crossed;
  * enough traffic is at least ``minRequests`` live requests for the live limits (at least one when
    there is a live limit) and at least ``minRequests`` mirrored requests (at least one) for the
    agreement limit. Without it the analysis is inconclusive and waits (WaitingForTraffic, with
    the counts): a canary nobody used has proven nothing, neither good nor bad. With ``maxWait``
    it waits that long from the start of the measurement, then ``onMaxWait`` decides: ``promote``
    passes the step, ``fail`` rolls back with InsufficientTraffic.
  * while an analysis with ``minAgreement`` is the current step, stable's traffic is mirrored to
    the canary (``mirror``), and the canary's answers are compared, never returned.
- After the last step the canary is promoted; with no steps it is promoted at once (blue/green:
  the version was validated before it got here). A failed step rolls back: weight 0.

One call decides what to do now, passing through every step that is already done, and stops at
the first thing the caller must do (set a weight, promote, roll back) or wait for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.deployments import Analysis, CanaryStep, Pause
from reconciler.manifests.types import format_duration

CanaryKind = Literal["set_weight", "wait", "promote", "rollback"]


class WindowStats(Protocol):
    """The canary version's traffic over the measured span, as the runtime counts it."""

    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def p99_seconds(self) -> float | None: ...  # None: no request measured
    @property
    def shadow_requests(self) -> int: ...  # stable's requests mirrored to the canary
    @property
    def agreement(self) -> float | None: ...  # share of shadow answers equal to stable's; None: none compared
    @property
    def prediction_drift(self) -> float | None: ...  # canary vs stable outputs; None: not measurable yet


class CanaryProgress(BaseModel):
    """Where a site's canary stands; the agent keeps it in state.json beside the canary version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Annotated[int, Field(ge=0)]  # index of the current step; len(steps) once all are done
    stepStartedAt: datetime
    weight: Annotated[int, Field(ge=0, le=100)] = 0  # the canary's share of live traffic now
    baseline: datetime | None = None  # an analysis measures from here when later than stepStartedAt

    @classmethod
    def start(cls, now: datetime) -> CanaryProgress:
        return cls(step=0, stepStartedAt=now)


@dataclass(frozen=True)
class CanaryDecision:
    kind: CanaryKind
    weight: int  # the canary's share of live traffic to serve from now on
    next: CanaryProgress  # what to persist once the decision is carried out
    reason: str  # WeightSet, Paused, Analyzing, WaitingForTraffic, Promoted, NoCanarySteps,
    #              InsufficientTraffic, ErrorRateTooHigh, LatencyTooHigh, DisagreesWithStable
    message: str
    mirror: bool  # mirror stable's traffic to the canary while this decision stands
    due: datetime | None = None  # when waiting: the instant the step next changes on its own, if any


def decide_canary(steps: list[CanaryStep], progress: CanaryProgress, stats: WindowStats | None,
                  now: datetime) -> CanaryDecision:
    """``stats`` measures the canary since ``measured_since(progress)``; None when the runtime has
    nothing to say (counted as no traffic)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if progress.step > len(steps):
        raise Stalled(reasons.CanaryProgressMismatch, f"the canary is at step {progress.step + 1} of {len(steps)}: "
                      "its progress belongs to other steps; start the canary again")
    if not steps:
        return CanaryDecision("promote", 100, progress.model_copy(update={"weight": 100}), reasons.NoCanarySteps,
                              "no canary steps: the validated version takes all traffic at once", False)
    while progress.step < len(steps):
        step = steps[progress.step]
        if step.setWeight is not None:
            return _set_weight(steps, progress, step.setWeight, now)
        if step.pause is not None:
            decision = _pause(steps, progress, step.pause, now)
        else:
            assert step.analysis is not None  # a CanaryStep holds exactly one action
            decision = _analysis(steps, progress, step.analysis, stats, now)
        if decision is not None:
            return decision
        progress = progress.model_copy(update={"step": progress.step + 1, "stepStartedAt": now, "baseline": None})
        stats = None  # the stats measured the step just finished, not the one that begins now
    return CanaryDecision("promote", 100, progress.model_copy(update={"weight": 100}), reasons.Promoted,
                          f"all {len(steps)} canary steps passed", False)


def measured_since(progress: CanaryProgress) -> datetime:
    """The start of the traffic the current analysis judges."""
    return max(progress.stepStartedAt, progress.baseline or progress.stepStartedAt)


def _set_weight(steps: list[CanaryStep], progress: CanaryProgress, weight: int, now: datetime) -> CanaryDecision:
    after = CanaryProgress(step=progress.step + 1, stepStartedAt=now, weight=weight)
    return CanaryDecision("set_weight", weight, after, reasons.WeightSet,
                          f"{_where(steps, progress)}: the canary takes {weight}% of traffic", _mirrors(steps, after))


def _pause(steps: list[CanaryStep], progress: CanaryProgress, pause: Pause, now: datetime) -> CanaryDecision | None:
    until = progress.stepStartedAt + pause.duration
    if now >= until:
        return None
    return _wait(steps, progress, reasons.Paused, f"paused for {format_duration(pause.duration)}", until)


def _analysis(steps: list[CanaryStep], progress: CanaryProgress, analysis: Analysis,
              stats: WindowStats | None, now: datetime) -> CanaryDecision | None:
    since = measured_since(progress)
    elapsed = now - since
    shortfall = _shortfall(analysis, stats)
    if shortfall is None and stats is not None:
        breach = _breach(analysis, stats)
        if breach is not None:
            reason, why = breach
            return CanaryDecision("rollback", 0, progress.model_copy(update={"weight": 0}), reason,
                                  f"{_where(steps, progress)}: {why}; the stable version takes all traffic", False)
    if elapsed < analysis.window:
        return _wait(steps, progress, reasons.Analyzing, f"measuring {format_duration(elapsed)} of "
                     f"{format_duration(analysis.window)}", since + analysis.window)
    if shortfall is None:
        return None
    if analysis.maxWait is None:
        return _wait(steps, progress, reasons.WaitingForTraffic, f"{shortfall} after {format_duration(elapsed)}; "
                     "waiting for traffic", None)
    cap = since + analysis.maxWait
    if now < cap:
        return _wait(steps, progress, reasons.WaitingForTraffic, f"{shortfall} after {format_duration(elapsed)}; "
                     f"waiting up to {format_duration(analysis.maxWait)}, then {analysis.onMaxWait}", cap)
    if analysis.onMaxWait == "promote":
        return None
    return CanaryDecision("rollback", 0, progress.model_copy(update={"weight": 0}), reasons.InsufficientTraffic,
                          f"{_where(steps, progress)}: {shortfall} after {format_duration(elapsed)} "
                          "(maxWait, onMaxWait: fail); the stable version takes all traffic", False)


def _shortfall(analysis: Analysis, stats: WindowStats | None) -> str | None:
    """What traffic the analysis still lacks, or None when there is enough to judge. ``minRequests``
    applies to the traffic each limit judges: live requests for the live limits (and when there is
    no limit at all), mirrored ones for the agreement."""
    live_limits = analysis.maxErrorRate is not None or analysis.maxLatencyP99 is not None
    if live_limits or analysis.minAgreement is None:
        needed = max(analysis.minRequests, 1 if live_limits else 0)
        live = stats.requests if stats else 0
        if live < needed:
            return f"{live} of {needed} requests"
        if analysis.maxLatencyP99 is not None and (stats is None or stats.p99_seconds is None):
            return "no latency measured"
    if analysis.minAgreement is not None:
        needed = max(analysis.minRequests, 1)
        shadow = stats.shadow_requests if stats else 0
        if shadow < needed or stats is None or stats.agreement is None:
            return f"{shadow} of {needed} mirrored requests"
    if analysis.maxPredictionDrift is not None and (stats is None or stats.prediction_drift is None):
        return "too few predictions of canary and stable to compare (or no reference profile on the canary)"
    return None


def _breach(analysis: Analysis, stats: WindowStats) -> tuple[str, str] | None:
    if analysis.maxErrorRate is not None and stats.error_rate > analysis.maxErrorRate:
        return reasons.ErrorRateTooHigh, (f"error rate {stats.error_rate:.2%} over {stats.requests} requests is above "
                                          f"{analysis.maxErrorRate:.2%}")
    limit = analysis.maxLatencyP99
    if limit is not None and stats.p99_seconds is not None and timedelta(seconds=stats.p99_seconds) > limit:
        return reasons.LatencyTooHigh, (f"p99 latency {stats.p99_seconds * 1000:.1f}ms is above "
                                        f"{format_duration(limit)}")
    if analysis.minAgreement is not None and stats.agreement is not None and stats.agreement < analysis.minAgreement:
        return reasons.DisagreesWithStable, (f"agreement with stable {stats.agreement:.2%} over {stats.shadow_requests} "
                                       f"mirrored requests is below {analysis.minAgreement:.2%}")
    limit = analysis.maxPredictionDrift
    if limit is not None and stats.prediction_drift is not None and stats.prediction_drift > limit:
        return reasons.PredictionDriftTooHigh, (f"the canary's predictions are {stats.prediction_drift:.3f} from stable's "
                                          f"(largest distance over its outputs), above {limit:g}")
    return None


def _wait(steps: list[CanaryStep], progress: CanaryProgress, reason: str, what: str,
          due: datetime | None) -> CanaryDecision:
    return CanaryDecision("wait", progress.weight, progress, reason, f"{_where(steps, progress)}: {what}",
                          _mirrors(steps, progress), due)


def _mirrors(steps: list[CanaryStep], progress: CanaryProgress) -> bool:
    current = steps[progress.step] if progress.step < len(steps) else None
    return current is not None and current.analysis is not None and current.analysis.minAgreement is not None


def _where(steps: list[CanaryStep], progress: CanaryProgress) -> str:
    return f"step {progress.step + 1}/{len(steps)}"
