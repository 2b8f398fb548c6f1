"""A batch deployment rolls out in waves like any other: the later wave waits for the earlier
wave's sites to report the version active in their status records (with their batch run
summaries beside it), then deploys; a record round-trips through JSON with its batch summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fleetfactory import DIGEST_A, deployment, fleet_repo, model, site

from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.delivery.plan import plan_site
from reconciler.status.record import BatchRunSummary, DeploymentStatus, StatusRecord

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BATCH = {"schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "output": "scores",
         "input": {"name": "readings", "glob": "*.csv", "format": "csv", "columns": {"x": ["a", "b"]}}}
WAVES = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}}, {"name": "rest", "percent": 100}],
         "gate": {"bakeTime": "10m"}}


def batch_fleet():
    return fleet_repo([site("p1", ring="pilot"), site("s1")], [model()],
                      [deployment(version="1.1.0", rollout=WAVES, batch=BATCH)])


def on_old_version(name: str) -> SiteState:
    interface = batch_fleet().models["m"].spec.interface
    installed = Installed(version="1.0.0", digest=DIGEST_A, uri="u", installedAt=NOW - timedelta(days=1))
    return SiteState(site=name, deployments={"d": DeploymentState(model="m", interface=interface, active=installed)})


def pilot_record(active: str, ago: timedelta) -> StatusRecord:
    repo = batch_fleet()
    target = plan_site(repo, "p1", on_old_version("p1"), NOW, None, {}).actions[0].target
    run = BatchRunSummary(state="Succeeded", trigger="schedule", started=NOW - ago, durationSeconds=1.5,
                          version=active, files=3, records=30)
    state = "success" if active == "1.1.0" else "progressing"  # as the agent reports a switch under way
    status = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, reason="Converged",
                              rollout=target.rollout_id, since=NOW - ago, lastBatchRun=run)
    record = StatusRecord(site="p1", state=state, reason="Converged", deployments={"d": status},
                          agentVersion="0", writtenAt=NOW - ago)
    return StatusRecord.model_validate_json(record.model_dump_json())  # as read back from its git ref


@pytest.mark.parametrize(("pilot", "expected"), [
    (None, ("wait", "WaitingForEarlierWaves")),
    (("1.0.0", 20), ("wait", "WaitingForEarlierWaves")),  # the pilot still runs the old version
    (("1.1.0", 5), ("wait", "Baking")),
    (("1.1.0", 20), ("deploy", "NewVersion")),
])
def test_a_batch_deployment_waits_for_the_earlier_wave_to_show_the_version_active(pilot, expected):
    status = {} if pilot is None else {"p1": pilot_record(pilot[0], timedelta(minutes=pilot[1]))}
    plan = plan_site(batch_fleet(), "s1", on_old_version("s1"), NOW, None, status)
    assert [(a.kind, a.reason) for a in plan.actions] == [expected]


def test_the_first_wave_deploys_a_batch_deployment_at_once():
    plan = plan_site(batch_fleet(), "p1", on_old_version("p1"), NOW, None, {})
    assert [(a.kind, a.target.wave) for a in plan.actions] == [("deploy", "pilot")]
    assert pilot_record("1.1.0", timedelta(minutes=1)).deployments["d"].lastBatchRun.records == 30
