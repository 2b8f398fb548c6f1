"""The fleet matrix from the summaries' reports (``status --summary-repo``), table-driven: each
site's report on each gated deployment, the sites a deployment targets that have none, and
nothing a summary does not hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.gates import SiteReport
from reconciler.status.report_matrix import NOT_READ, build_report_matrix, render_markdown, render_text

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def report(state: str, version: str = "1.1.0", reason: str = "Converged", kind: str | None = None) -> SiteReport:
    return SiteReport("r1", state, version, NOW - timedelta(minutes=5), NOW - timedelta(minutes=1), reason, "", kind)


REPORTS = FleetReports({
    "forecast": {"store-a": report("success"), "store-b": report("failure", reason="ValidationFailed", kind="version")},
    "fraud": {"store-b": report("progressing", "3.2.0"), "gone-1": report("success", "3.2.0")},
})
TARGETED = {"forecast": {"store-a", "store-b", "store-c"}, "fraud": {"store-b"}}


def matrix():
    return build_report_matrix(REPORTS, ["store-a", "store-b", "store-c"], TARGETED)


@pytest.mark.parametrize(("site", "deployment", "cell"), [
    ("store-a", "forecast", "1.1.0"),
    ("store-b", "forecast", "1.1.0 FAILED (version: ValidationFailed)"),
    ("store-c", "forecast", "unknown"),  # targeted, no report
    ("store-a", "fraud", ""),  # not targeted
    ("store-b", "fraud", "3.2.0 (progressing)"),
    ("gone-1", "fraud", "3.2.0"),  # reported, no longer in the inventory: shown, not counted
])
def test_each_cell_is_the_sites_report_on_the_deployment(site, deployment, cell):
    lines = render_text(matrix()).splitlines()
    header = lines[0].split()
    row = next(line for line in lines if line.startswith(site + " "))
    start = lines[0].index(deployment)
    end = lines[0].index(header[header.index(deployment) + 1]) if header.index(deployment) + 1 < len(header) else None
    assert row[start:end].strip() == cell


def test_counts_are_over_the_targeted_sites():
    assert matrix().counts("forecast") == {"failure": 1, "success": 1, "unknown": 1}
    assert matrix().counts("fraud") == {"progressing": 1}
    assert "3 sites" not in render_text(matrix())  # gone-1 reports: four rows
    assert "4 sites, from the summaries; forecast: 1 failure, 1 success, 1 unknown; fraud: 1 progressing" in \
        render_text(matrix())


def test_what_a_summary_does_not_hold_is_said_not_made_up():
    document = matrix().to_json()
    assert document["notRead"] == NOT_READ
    row = next(r for r in document["sites"] if r["site"] == "store-b")
    assert set(row) == {"site", "deployments"}  # no state, age, staleness or observed commit
    assert row["deployments"]["forecast"] == {
        "rollout": "r1", "state": "failure", "version": "1.1.0", "since": "2026-11-21T11:55:00+00:00",
        "writtenAt": "2026-11-21T11:59:00+00:00", "reason": "ValidationFailed", "failureKind": "version"}
    assert f"not shown: {NOT_READ}" in render_text(matrix()) and f"not shown: {NOT_READ}" in render_markdown(matrix())
    assert "| `store-a` | 1.1.0 | — |" in render_markdown(matrix())
