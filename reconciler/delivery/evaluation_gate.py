"""PURE: the evaluation gate of a wave (``gate.evaluation``), from the scores the earlier waves'
sites published in their records (reconciler.monitoring.evaluation). Every site computes the same
verdict from the same records: sums are exact-rounded (math.fsum) over sites in name order.

- A site counts when its record scores the rollout's new version and has the gate's metric (an AUC
  is undefined on data of one class: that site does not count for auc).
- Fleet metric = sum(n_i m_i) / sum(n_i) over the counted sites, n_i their reported (rounded)
  example counts: Flower's FedAvg weighting (``weighted_by_key="num-examples"``).
- Gain over the previous version = the same weighting of (m_new_i - m_prev_i) over the counted
  sites that also scored the version they replaced on the same data; signed so that positive is
  better (for the error metrics logLoss, mae and rmse: previous minus new).
- pending (the wave waits, EvaluationPending) while fewer than ``minSites`` sites or
  ``minExamples`` examples count; ``minGainOverPrevious`` does not apply where no counted site
  replaced a version (a first rollout has nothing to gain over);
- below (the wave stops at this gate, EvaluationBelowMinimum) when the fleet metric misses ``min``
  / ``max`` or the gain misses ``minGainOverPrevious``; the message names the worst site."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from reconciler.manifests.evaluation import HIGHER_IS_BETTER, EvaluationGate
from reconciler.monitoring.evaluation import EvaluationSummary

__all__ = ["FleetScore", "SiteScore", "Verdict", "fleet_score", "judge"]


@dataclass(frozen=True)
class SiteScore:
    site: str
    examples: int
    value: float
    previous: float | None  # the replaced version's, on the same data


@dataclass(frozen=True)
class FleetScore:
    metric: str
    sites: tuple[SiteScore, ...]  # in site name order

    @property
    def examples(self) -> int:
        return sum(s.examples for s in self.sites)

    @property
    def value(self) -> float | None:
        """The example-weighted mean over the sites; None with no site."""
        return _weighted([(s.examples, s.value) for s in self.sites])

    @property
    def gain(self) -> float | None:
        """How much better than the replaced versions, example-weighted over the sites that scored both."""
        sign = 1.0 if self.metric in HIGHER_IS_BETTER else -1.0
        return _weighted([(s.examples, sign * (s.value - s.previous)) for s in self.sites if s.previous is not None])

    def worst(self) -> SiteScore:
        return (min if self.metric in HIGHER_IS_BETTER else max)(self.sites, key=lambda s: (s.value, s.site))


@dataclass(frozen=True)
class Verdict:
    kind: Literal["pass", "pending", "below"]
    message: str
    score: FleetScore


def fleet_score(metric: str, summaries: Mapping[str, EvaluationSummary]) -> FleetScore:
    """The sites' scores on ``metric`` (``summaries``: site -> its summary of the rollout's version)."""
    sites = []
    for site in sorted(summaries):
        summary = summaries[site]
        if not summary.scored or metric not in summary.metrics:
            continue
        sites.append(SiteScore(site, summary.numExamples, summary.metrics[metric], summary.previousMetrics.get(metric)))
    return FleetScore(metric, tuple(sites))


def judge(gate: EvaluationGate, score: FleetScore) -> Verdict:
    metric, value = gate.metric, score.value
    counted = f"{len(score.sites)} site(s), {score.examples} example(s)"
    if value is None or len(score.sites) < gate.minSites or score.examples < gate.minExamples:
        return Verdict("pending", f"{counted} of the earlier waves scored the new version on {metric}; the gate "
                                  f"needs {gate.minSites} site(s) and {gate.minExamples} example(s)", score)
    worst = score.worst()
    fleet = f"fleet {metric} {value:.4g} over {counted} (worst: {worst.site} {worst.value:.4g} on {worst.examples})"
    if gate.min is not None and value < gate.min:
        return Verdict("below", f"{fleet} is below the minimum {gate.min:g}", score)
    if gate.max is not None and value > gate.max:
        return Verdict("below", f"{fleet} is above the maximum {gate.max:g}", score)
    if gate.minGainOverPrevious is not None:
        gain = score.gain
        if gain is None:
            return Verdict("pass", f"{fleet}; no site replaced a version, so there is no gain to judge", score)
        if gain < gate.minGainOverPrevious:
            return Verdict("below", f"{fleet} gains {gain:+.4g} over the versions it replaces, needs "
                                    f"{gate.minGainOverPrevious:+g}", score)
        fleet += f", {gain:+.4g} over the versions it replaces"
    return Verdict("pass", fleet, score)


def _weighted(pairs: list[tuple[int, float]]) -> float | None:
    total = sum(n for n, _ in pairs)
    return math.fsum(n * value for n, value in pairs) / total if total else None
