"""The fleet matrix from the roll-ups of the sites' shard summaries (``reconciler status
--summary-repo``): sites × gated deployments, each cell what the site's newest record said of the
deployment as the gates read it (the version the fleet asks of it, the rollout's state there,
why it failed). Pure: reports and the targeted sites come in; text, markdown or JSON go out.

A summary holds nothing else of a record, and this view does not make it up: no site state, no
served version, no observed commit or inventory, and no age or staleness (a site rewrites its
entry only when its report changes, so an entry's date is not when the site last wrote)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.gates import SiteReport
from reconciler.status.matrix import MARK, NEVER_REPORTED, aligned

__all__ = ["NOT_READ", "ReportMatrix", "build_report_matrix", "render_markdown", "render_text"]

NOT_READ = "what a summary does not hold: site state, served version, age and staleness, observed commit, " \
    "inventory, drift and scores (run without --summary-repo to read the status records)"


@dataclass(frozen=True)
class ReportMatrix:
    sites: list[str]
    targeted: Mapping[str, Collection[str]]  # deployment read -> the sites it targets
    reports: FleetReports

    @property
    def deployments(self) -> list[str]:
        return sorted(self.targeted)

    def cell(self, site: str, deployment: str) -> SiteReport | None:
        return self.reports.of(deployment).get(site)

    def counts(self, deployment: str) -> dict[str, int]:
        """Each state's count among the deployment's targeted sites, and those with no report."""
        states = Counter(report.state if (report := self.cell(site, deployment)) else NEVER_REPORTED
                         for site in self.targeted[deployment])
        return dict(sorted(states.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": "summaries",
            "deployments": self.deployments,
            "sites": [{"site": site, "deployments": {name: _report_json(report) for name in self.deployments
                                                     if (report := self.cell(site, name)) is not None}}
                      for site in self.sites],
            "summary": {name: self.counts(name) for name in self.deployments},
            "notRead": NOT_READ,
        }


def build_report_matrix(reports: FleetReports, inventory: Iterable[str],
                        targeted: Mapping[str, Collection[str]]) -> ReportMatrix:
    """One row per site of the inventory (the fleet repo's Sites) and per site a roll-up reports on."""
    reporting = {site for name in targeted for site in reports.of(name)}
    return ReportMatrix(sorted(set(inventory) | reporting), targeted, reports)


def render_text(matrix: ReportMatrix) -> str:
    table = [["SITE", *matrix.deployments]] + [[site, *(_cell(matrix, site, name) for name in matrix.deployments)]
                                               for site in matrix.sites]
    return "\n".join([*aligned(table), *_summary_lines(matrix)])


def render_markdown(matrix: ReportMatrix) -> str:
    lines = ["| " + " | ".join(["site", *matrix.deployments]) + " |", "|" + "---|" * (len(matrix.deployments) + 1)]
    lines += ["| " + " | ".join([f"`{site}`", *(_cell(matrix, site, name) or "—" for name in matrix.deployments)]) + " |"
              for site in matrix.sites]
    return "\n".join([*lines, "", *_summary_lines(matrix)])


def _cell(matrix: ReportMatrix, site: str, deployment: str) -> str:
    report = matrix.cell(site, deployment)
    if report is None:
        return NEVER_REPORTED if site in matrix.targeted[deployment] else ""
    kind = f" ({report.kind}: {report.reason})" if report.kind else ""  # version evidence or site condition
    return f"{report.version or '-'}{MARK[report.state]}{kind}"


def _summary_lines(matrix: ReportMatrix) -> list[str]:
    counts = [f"{name}: " + ", ".join(f"{n} {state}" for state, n in matrix.counts(name).items())
              for name in matrix.deployments]
    return [f"{len(matrix.sites)} sites, from the summaries; " + ("; ".join(counts) or "no gated deployment"),
            "each cell: the version the fleet asks of the site and the state of its rollout there",
            f"not shown: {NOT_READ}"]


def _report_json(report: SiteReport) -> dict[str, Any]:
    return {"rollout": report.rollout_id, "state": report.state, "version": report.version,
            "since": report.since.isoformat(), "writtenAt": report.written_at.isoformat(), "reason": report.reason,
            "failureKind": report.kind}
