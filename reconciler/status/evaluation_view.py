"""The fleet's federated evaluation, from the sites' status records (pure: records in, text or JSON
out): per deployment and version, each site's scores on its own labeled data beside those of the
version it replaced, and the fleet metric an evaluation gate would read (example-weighted,
reconciler.delivery.evaluation_gate). Counts are the sites' rounded ones: the data never left them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.delivery.evaluation_gate import FleetScore, fleet_score
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.status.drift_view import text_table
from reconciler.status.record import DeploymentStatus

__all__ = ["SiteEvaluation", "fleet_scores", "metric_names", "render_text", "site_evaluations", "to_json"]


@dataclass(frozen=True)
class SiteEvaluation:
    site: str
    deployment: str
    model: str
    summary: EvaluationSummary


def site_evaluations(latest: Mapping[str, Mapping[str, DeploymentStatus]]) -> list[SiteEvaluation]:
    """Every deployment's last evaluation, by deployment, version and site (``latest``: per site,
    its latest record's deployments)."""
    found = [SiteEvaluation(site, name, status.model, status.evaluation) for site, deployments in latest.items()
             for name, status in deployments.items() if status.evaluation is not None]
    return sorted(found, key=lambda e: (e.deployment, e.summary.version, e.site))


def fleet_scores(evaluations: list[SiteEvaluation]) -> dict[tuple[str, str], list[FleetScore]]:
    """Per (deployment, version), the example-weighted fleet value of each metric the sites report."""
    groups: dict[tuple[str, str], dict[str, EvaluationSummary]] = {}
    for e in evaluations:
        groups.setdefault((e.deployment, e.summary.version), {})[e.site] = e.summary
    return {key: [fleet_score(metric, summaries) for metric in metric_names(summaries.values())]
            for key, summaries in groups.items()}


def render_text(evaluations: list[SiteEvaluation]) -> str:
    if not evaluations:
        return "no site reports scores: no Model declares spec.evaluation, or no site holds labeled data for it"
    metrics = metric_names(e.summary for e in evaluations)
    header = ["DEPLOYMENT", "VERSION", "SITE", "EXAMPLES", *metrics, "REPLACED", "REASON"]
    rows = [[e.deployment, e.summary.version, e.site, str(e.summary.numExamples),
             *[_cell(e.summary, m) for m in metrics], e.summary.previousVersion or "-", e.summary.reason]
            for e in evaluations]
    lines = text_table([header, *rows])
    for (deployment, version), scores in fleet_scores(evaluations).items():
        lines.append(f"fleet {deployment} {version}: " + ", ".join(_fleet(score) for score in scores if score.sites))
    lines.append("cells: the version's score, (then the replaced version's on the same data); examples rounded "
                 "down to a multiple of 10; fleet: example-weighted mean")
    return "\n".join(lines)


def to_json(evaluations: list[SiteEvaluation]) -> dict[str, Any]:
    return {
        "sites": [{"site": e.site, "deployment": e.deployment, "model": e.model, **e.summary.model_dump(mode="json")}
                  for e in evaluations],
        "fleet": [{"deployment": deployment, "version": version, "metric": s.metric, "value": s.value, "gain": s.gain,
                   "examples": s.examples, "sites": [x.site for x in s.sites]}
                  for (deployment, version), scores in fleet_scores(evaluations).items() for s in scores if s.sites],
    }


def metric_names(summaries: Iterable[EvaluationSummary]) -> list[str]:
    return sorted({name for summary in summaries for name in summary.metrics})


def _cell(summary: EvaluationSummary, metric: str) -> str:
    if metric not in summary.metrics:
        return "-"
    before = summary.previousMetrics.get(metric)
    return f"{summary.metrics[metric]:.4f}" + (f" ({before:.4f})" if before is not None else "")


def _fleet(score: FleetScore) -> str:
    gain = f", {score.gain:+.4f} over replaced" if score.gain is not None else ""
    return f"{score.metric} {score.value:.4f} over {len(score.sites)} site(s), {score.examples} examples{gain}"
