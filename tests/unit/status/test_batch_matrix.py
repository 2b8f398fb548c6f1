"""`reconciler status` shows each batch deployment's newest run beside its version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.status.matrix import build_matrix, render_text
from reconciler.status.record import BatchRunSummary, DeploymentStatus, StatusRecord

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_the_matrix_shows_the_last_batch_run():
    run = BatchRunSummary(state="PartiallySucceeded", trigger="schedule", started=NOW, durationSeconds=2.0,
                          version="1.1.0", files=4, records=120, recordErrors=3)
    deployments = {"scores": DeploymentStatus(model="m", state="success", version="1.1.0", activeVersion="1.1.0",
                                              reason="Converged", since=NOW, lastBatchRun=run),
                   "live": DeploymentStatus(model="m", state="success", version="1.0.0", activeVersion="1.0.0",
                                            reason="Converged", since=NOW)}
    record = StatusRecord(site="s1", state="success", reason="Converged", deployments=deployments, agentVersion="0",
                          writtenAt=NOW)
    matrix = build_matrix({"s1": record}, ["s1"], NOW + timedelta(minutes=1), timedelta(minutes=10))
    text = render_text(matrix)
    assert "1.1.0 (batch PartiallySucceeded: 4 files, 120 records, 3 record errors)" in text
    assert "1.0.0 (batch" not in text
    assert matrix.to_json()["sites"][0]["deployments"]["scores"]["lastBatchRun"]["records"] == 120
