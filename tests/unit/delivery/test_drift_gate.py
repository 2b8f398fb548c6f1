"""The rollout gate's `maxDriftedSites`: drift in the earlier waves holds the next wave; it never
aborts a rollout or rolls a version back. Pure, table-driven over records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.delivery.gates import SiteReport, decide_gate, site_report
from reconciler.manifests.models import Rollout
from reconciler.monitoring.windows import DriftSummary
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RID = "a1b2c3d4e5f6"
SITES = {"p1": {"ring": "pilot"}, "p2": {"ring": "pilot"}, "p3": {"ring": "pilot"}, "e1": {"ring": "early"}}


def rollout(max_drifted: int | None) -> Rollout:
    gate = {"minHealthyRatio": 1.0, "bakeTime": "0s"} | ({} if max_drifted is None else {"maxDriftedSites": max_drifted})
    return Rollout.model_validate({"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                                             {"name": "early", "percent": 100}], "gate": gate})


def healthy(drifted: bool) -> SiteReport:
    return SiteReport(RID, "success", "1.1.0", T0, T0, drifted=drifted)


@pytest.mark.parametrize("drifted_sites, limit, kind, reason", [
    (0, None, "proceed", "GateHeld"),
    (3, None, "proceed", "GateHeld"),  # no limit: drift does not hold a rollout
    (0, 0, "proceed", "GateHeld"),
    (1, 0, "wait", "DriftedSites"),
    (1, 1, "proceed", "GateHeld"),
    (2, 1, "wait", "DriftedSites"),
    (3, 2, "wait", "DriftedSites"),
])
def test_the_next_wave_waits_while_more_earlier_sites_than_the_limit_report_drift(drifted_sites, limit, kind, reason):
    records = {site: healthy(drifted=i < drifted_sites) for i, site in enumerate(("p1", "p2", "p3"))}
    decision = decide_gate(rollout(limit), "d", RID, "e1", SITES, records, T0 + timedelta(minutes=1))
    assert (decision.kind, decision.reason) == (kind, reason)
    if reason == "DriftedSites":
        assert "never rolls one back" in decision.message


def test_drift_never_aborts_and_never_holds_the_first_wave():
    records = {site: healthy(drifted=True) for site in ("p1", "p2", "p3")}
    for site in ("p1", "p2", "p3"):
        assert decide_gate(rollout(0), "d", RID, site, SITES, records, T0).kind == "proceed"


def summary(state: str, version: str) -> DriftSummary:
    return DriftSummary(version=version, profile="sha256:p", state=state, windows=3, rows=1000,  # type: ignore[arg-type]
                        drifted=["x[0]"] if state == "DriftDetected" else [], features={})


@pytest.mark.parametrize("drift, drifted", [
    (None, False),
    (summary("NoDrift", "1.1.0"), False),
    (summary("DriftDetected", "1.1.0"), True),
    (summary("DriftDetected", "1.0.0"), False),  # drift of the version it served before proves nothing here
])
def test_a_report_is_drifted_when_its_record_says_drift_detected_on_the_version_it_reports(drift, drifted):
    status = DeploymentStatus(model="m", state="success", version="1.1.0", activeVersion="1.1.0", rollout=RID,
                              reason="Converged", since=T0, drift=drift)
    record = StatusRecord(site="p1", state="success", reason="Converged", deployments={"d": status},
                          agentVersion="test", writtenAt=T0)
    report = site_report(record, "d")
    assert report is not None and report.drifted is drifted
    assert report == replace(report, drifted=not drifted)  # drift is not part of a report's identity
