"""Batch runs in the audit trail: each run once, from the first record that carried it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.history.timeline import site_batch_runs
from reconciler.status.record import BatchRunSummary, DeploymentStatus, StatusRecord

T0 = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)


def run(minutes: int, state: str = "Succeeded", files: int = 3) -> BatchRunSummary:
    return BatchRunSummary(state=state, trigger="schedule", started=T0 + timedelta(minutes=minutes), durationSeconds=1.5,
                           version="1.0.0", files=files, records=files * 10)


def record(minutes: int, **runs: BatchRunSummary | None) -> StatusRecord:
    deployments = {name: DeploymentStatus(model="m", state="success", version="1.0.0", activeVersion="1.0.0",
                                          reason="Converged", since=T0, lastBatchRun=last)
                   for name, last in runs.items()}
    return StatusRecord(site="s1", state="success", reason="Converged", deployments=deployments, agentVersion="0",
                        writtenAt=T0 + timedelta(minutes=minutes))


def test_each_run_appears_once_from_the_first_record_that_carried_it():
    history = [("c1", record(0, nightly=None)),
               ("c2", record(1, nightly=run(0))),
               ("c3", record(2, nightly=run(0), hourly=run(1, "PartiallySucceeded"))),  # the same nightly run again
               ("c4", record(60, nightly=run(0), hourly=run(60, files=0)))]
    runs = site_batch_runs("s1", history)
    assert [(r.deployment, r.run.started - T0, r.run.state, r.status_commit) for r in runs] == [
        ("nightly", timedelta(0), "Succeeded", "c2"),
        ("hourly", timedelta(minutes=1), "PartiallySucceeded", "c3"),
        ("hourly", timedelta(minutes=60), "Succeeded", "c4")]
    assert runs[0].to_json()["statusCommit"] == "c2" and runs[0].to_json()["records"] == 30


def test_a_site_without_batch_runs_has_none():
    assert site_batch_runs("s1", [("c1", record(0, serving=None))]) == []
