"""The site side of batch deployments with real sessions: which deployments the scheduler runs,
when (``now`` passed in), the session it scores with (the serving registry's own when it serves
the active version), the summary it leaves for the status record, and `reconciler batch run`."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fleetfactory import deployment, fleet_repo, model, site

from reconciler.agent.statedir import StateDir
from reconciler.batch.scheduler import ActiveModels, BatchScheduler, load_spec
from reconciler.devtools.onnx_builder import dense_model
from reconciler.runtime.registry import ModelRegistry
from tests.batch_site import SITE, BatchSite, read_jsonl, spec, write_jsonl
from tests.runtime_models import LAYERS

ROWS = np.ones((3, 4), dtype=np.float32)
BATCH = {"schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "output": "scores",
         "input": {"name": "readings", "glob": "*.jsonl", "format": "jsonl"}}
BEFORE = datetime(2026, 6, 1, 23, 0, tzinfo=UTC)  # 01:00 in Berlin (CEST)
AT_TWO = datetime(2026, 6, 2, 0, 0, tzinfo=UTC)  # 02:00 in Berlin


@pytest.fixture
def installed(tmp_path) -> BatchSite:
    batch_site = BatchSite(tmp_path)
    batch_site.install("1.0.0", spec())
    write_jsonl(batch_site.inputs / "a.jsonl", ROWS)
    return batch_site


def scheduler_for(batch_site: BatchSite, serving: ModelRegistry | None = None, ran: list | None = None):
    state_dir = StateDir(batch_site.state)
    return BatchScheduler(batch_site.state, batch_site.directories(), ActiveModels(batch_site.state, serving),
                          lambda: state_dir.load(SITE), on_run=lambda: ran.append(1) if ran is not None else None)


def fleet(**batch):
    return fleet_repo([site(SITE)], [model("iris")], [deployment("iris", "iris", batch={**BATCH, **batch}),
                                                      deployment("other", "iris", batch=BATCH)])


def test_runs_start_when_due_once_and_leave_their_summary(installed):
    ran: list = []
    scheduler = scheduler_for(installed, ran=ran)
    scheduler.update(fleet(), StateDir(installed.state).load(SITE), BEFORE)
    assert sorted(scheduler.jobs) == ["iris"]  # "other" is not installed on this site
    assert load_spec(installed.state, "iris").schedule == "0 2 * * *"
    assert scheduler.run_due(BEFORE + timedelta(minutes=59)) == AT_TWO
    assert scheduler.last_run("iris") is None and not ran

    scheduler.run_due(AT_TWO + timedelta(seconds=5))
    summary = scheduler.last_run("iris")
    assert (summary.state, summary.trigger, summary.scheduledFor, summary.files, summary.records) == \
        ("Succeeded", "schedule", AT_TWO, 1, 3)
    assert ran == [1]
    assert scheduler.run_due(AT_TWO + timedelta(minutes=1)) == AT_TWO + timedelta(days=1)
    assert ran == [1]


def test_a_changed_schedule_keeps_the_last_run_and_a_removed_deployment_leaves(installed):
    scheduler = scheduler_for(installed)
    state = StateDir(installed.state).load(SITE)
    scheduler.update(fleet(), state, BEFORE)
    scheduler.update(fleet(schedule="0 3 * * *"), state, BEFORE + timedelta(minutes=30))
    assert scheduler.jobs["iris"].last == BEFORE
    assert load_spec(installed.state, "iris").schedule == "0 3 * * *"
    scheduler.update(fleet_repo([site(SITE)], [model("iris")], []), state, BEFORE)
    assert scheduler.jobs == {}


def test_the_serving_registry_session_is_used_when_it_serves_the_active_version(installed, tmp_path):
    state = StateDir(installed.state).load(SITE)
    own = ActiveModels(installed.state).active("iris", state)
    serving = ModelRegistry()
    serving.activate("iris", "iris", "1.0.0", own.source, own.interface)
    assert ActiveModels(installed.state, serving).active("iris", state).session is serving.get("iris").session

    newer = tmp_path / "iris-2.0.0.onnx"
    newer.write_bytes(dense_model(LAYERS["2.0.0"]))
    serving.activate("iris", "iris", "2.0.0", newer, own.interface)  # serving moved on; state.json not yet
    scored_with = ActiveModels(installed.state, serving).active("iris", state)
    assert (scored_with.version, scored_with.digest) == ("1.0.0", own.digest)
    assert scored_with.session is not serving.get("iris").session


def reconciler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=300)


def test_batch_run_by_hand(installed):
    done = reconciler("batch", "run", "iris", "--config", str(installed.site_yaml))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["trigger"], summary["files"], summary["records"], summary["version"]) == ("manual", 1, 3, "1.0.0")
    assert [line["record"] for line in read_jsonl(installed.outputs / "a.jsonl.out.jsonl")] == [0, 1, 2]
    again = json.loads(reconciler("batch", "run", "iris", "--config", str(installed.site_yaml)).stdout)
    assert (again["files"], again["filesAlreadyDone"]) == (0, 1)


def test_batch_run_of_an_unknown_deployment_says_so(installed):
    refused = reconciler("batch", "run", "nope", "--config", str(installed.site_yaml))
    assert refused.returncode == 1
    assert "BatchNotScheduled: nope is no batch deployment of this site" in refused.stderr


def test_site_yaml_maps_logical_names_to_directories_beside_it(installed):
    from reconciler.agent.config import load_site_config

    directories = load_site_config(installed.site_yaml, {}).batch
    assert (directories.inputs, directories.outputs) == ({"readings": installed.inputs.resolve()},
                                                         {"scores": installed.outputs.resolve()})


def test_no_batch_run_before_a_version_is_active_here(installed):
    from reconciler.delivery.model import SiteState
    from reconciler.errors import Stalled

    scheduler = BatchScheduler(installed.state, installed.directories(), ActiveModels(installed.state),
                               lambda: SiteState(site=SITE))  # deployed, not yet validated and activated
    with pytest.raises(Stalled, match="BatchNotInstalled"):
        scheduler.run_now("iris", "manual")
    assert not installed.outputs.exists()
