"""The federated-evaluation part of ``reconciler report --html`` (PURE: records in, HTML out): per
deployment and version, each site's scores on its own labeled data (beside the version it replaced,
on the same data) and the example-weighted fleet value an evaluation gate reads. Every text from
the records is escaped."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from reconciler.delivery.evaluation_gate import FleetScore
from reconciler.status.evaluation_view import SiteEvaluation, fleet_scores, metric_names, site_evaluations
from reconciler.status.record import DeploymentStatus

__all__ = ["evaluation_section"]


def evaluation_section(latest: Mapping[str, Mapping[str, DeploymentStatus]]) -> str:
    """``latest``: per site, its latest record's deployments."""
    evaluations = site_evaluations(latest)
    if not evaluations:
        return ("<section><h2>Evaluation</h2><p class=\"muted\">No site reports scores: no Model declares "
                "spec.evaluation, or no site holds labeled data for it.</p></section>")
    groups: dict[tuple[str, str], list[SiteEvaluation]] = {}
    for e in evaluations:
        groups.setdefault((e.deployment, e.summary.version), []).append(e)
    fleet = fleet_scores(evaluations)
    tables = [_table(deployment, version, rows, fleet[(deployment, version)]) for (deployment, version), rows in groups.items()]
    return ("<section><h2>Evaluation</h2><p class=\"muted\">Each site's scores on its own labeled data, in brackets "
            "the version it replaced on the same data; examples rounded down to a multiple of 10. The fleet row "
            "is the example-weighted mean an evaluation gate reads.</p>" + "".join(tables) + "</section>")


def _table(deployment: str, version: str, rows: list[SiteEvaluation], fleet: list[FleetScore]) -> str:
    metrics = metric_names(e.summary for e in rows)
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    body = []
    for e in rows:
        cells = "".join(f"<td>{_score(e, m)}</td>" for m in metrics)
        body.append(f"<tr><td>{escape(e.site)}</td><td>{e.summary.numExamples}</td>{cells}"
                    f"<td>{escape(e.summary.previousVersion or '-')}</td>"
                    f"<td title=\"{escape(e.summary.message)}\">{escape(e.summary.reason)}</td></tr>")
    values = {score.metric: score for score in fleet if score.sites}
    fleet_cells = "".join(f"<td>{values[m].value:.4f}</td>" if m in values else "<td>-</td>" for m in metrics)
    examples = max((score.examples for score in values.values()), default=0)
    body.append(f"<tr><th>fleet</th><th>{examples}</th>{fleet_cells}<td></td><td></td></tr>")
    return (f"<h3>{escape(deployment)} {escape(version)}</h3><table><tr><th>site</th><th>examples</th>{head}"
            f"<th>replaced</th><th>reason</th></tr>{''.join(body)}</table>")


def _score(e: SiteEvaluation, metric: str) -> str:
    value = e.summary.metrics.get(metric)
    if value is None:
        return "-"
    before = e.summary.previousMetrics.get(metric)
    return f"{value:.4f}" + (f" ({before:.4f})" if before is not None else "")
