"""apply.py against fakes (devtools/fakes.py): activation, upgrades, canary steps, failures and
resuming after a restart, each in milliseconds: no git, no HTTP, no onnxruntime. The state
directory is real (tmp_path): what apply saves is what a restart reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent.apply import Applier, Outcome
from reconciler.agent.statedir import StateDir
from reconciler.delivery.model import SiteState
from reconciler.delivery.plan import Action, Plan, plan_site
from reconciler.devtools.fakes import FakeRuntime, FakeVetting, MemorySource, fleet_files
from reconciler.errors import Cancelled, NeedsOperator, Stalled, Transient
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import load_tree
from reconciler.runtime.metrics import VersionStats

SITE = "store-1"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SLOW_CANARY = [{"setWeight": 20}, {"pause": {"duration": "5m"}}]
JUDGED_CANARY = [{"setWeight": 50}, {"analysis": {"window": "1m", "minRequests": 10, "maxErrorRate": 0.1,
                                                  "maxWait": "3m", "onMaxWait": "fail"}}]


class Counts:
    """CanaryMetrics: the runtime's counters, which a test moves on."""

    def __init__(self) -> None:
        self.requests, self.errors = 0, 0

    def snapshot(self):
        return {("d", "1.1.0"): VersionStats(requests=self.requests, errors=self.errors, invalid=0,
                                             latency_buckets=())}


class Site:
    """An Applier over fakes, and the state it has left so far."""

    def __init__(self, tmp_path, runtime: bool = True, metrics: Counts | None = None):
        self.state_dir = StateDir(tmp_path / "state")
        self.store = ArtifactStore(self.state_dir.root)
        self.vetting = FakeVetting(self.store)
        self.runtime = FakeRuntime() if runtime else None
        self.applier = Applier(self.state_dir, self.store, self.vetting, self.runtime, metrics)
        self.state = SiteState(site=SITE)

    def reconcile(self, version: str, now: datetime = T0, **spec) -> list[Outcome]:
        """Plan ``version`` for the site as the agent would, and apply the plan."""
        return self.apply(plan_site(fleet(version, **spec), SITE, self.state, now, "c1", {}), now)

    def apply(self, plan: Plan, now: datetime = T0) -> list[Outcome]:
        self.state, outcomes = self.applier.apply(plan, self.state, None, now)
        return outcomes

    @property
    def deployment(self):
        return self.state.deployments["d"]


def fleet(version: str, **spec) -> FleetRepo:
    source = MemorySource()
    loaded = load_tree(source.files(source.commit(fleet_files(version, **spec))))
    assert not loaded.errors, loaded.errors
    return loaded.repo


def summary(outcome: Outcome) -> tuple:
    return (outcome.action.kind, outcome.state, outcome.reason or (outcome.error and outcome.error.reason),
            outcome.ok)


def test_a_first_version_is_vetted_activated_and_saved(tmp_path):
    site = Site(tmp_path)
    [outcome] = site.reconcile("1.0.0")
    assert summary(outcome) == ("deploy", None, "Activated", True)
    assert site.vetting.validated == ["1.0.0"]
    assert site.runtime.active == {"d": "1.0.0"}
    assert site.runtime.calls[0] == ("expect", ["d"])
    assert site.state_dir.load(SITE) == site.state  # what a restart reads
    assert [e.event for e in site.deployment.history] == ["activated"]


BATCH = {"schedule": "30 2 * * *", "input": {"name": "readings", "glob": "*.jsonl", "format": "jsonl"},
         "output": "scores"}


def test_a_batch_only_deployment_is_activated_in_state_but_never_given_to_the_runtime(tmp_path):
    site = Site(tmp_path)
    [outcome] = site.reconcile("1.0.0", batch=BATCH, serve=False)
    assert summary(outcome) == ("deploy", None, "Activated", True)
    assert site.vetting.validated == ["1.0.0"]  # validated like any other, before its first batch run
    assert site.deployment.active.version == "1.0.0" and site.state_dir.load(SITE) == site.state
    [outcome] = site.reconcile("1.1.0", batch=BATCH, serve=False)
    assert outcome.ok and (site.deployment.active.version, site.deployment.previous.version) == ("1.1.0", "1.0.0")
    assert site.runtime.active == {}
    assert ("activate", "d", "1.0.0") not in site.runtime.calls and ("activate", "d", "1.1.0") not in site.runtime.calls
    assert site.runtime.calls[0] == ("expect", [])  # readiness does not wait for it

    restarted = Site(tmp_path)
    restarted.applier.restore(restarted.state_dir.load(SITE))
    assert restarted.runtime.calls == [] and not restarted.state_dir.load(SITE).deployments["d"].served
    restarted.state = restarted.state_dir.load(SITE)
    assert restarted.reconcile("1.1.0", batch=BATCH) == []  # served again after the restart: no new version
    assert restarted.runtime.active == {"d": "1.1.0"}


def test_switching_serve_without_a_new_version_takes_it_out_of_the_runtime_and_back(tmp_path):
    site = Site(tmp_path)
    site.reconcile("1.0.0", batch=BATCH)
    assert site.runtime.active == {"d": "1.0.0"}
    assert site.reconcile("1.0.0", batch=BATCH, serve=False) == []  # the same version: nothing to deploy
    assert site.runtime.active == {} and site.runtime.calls[-2:] == [("expect", []), ("remove", "d")]
    assert site.deployment.active.version == "1.0.0"  # still active for its batch runs

    assert site.reconcile("1.0.0", batch=BATCH) == []  # serve again, still no new version
    assert site.runtime.active == {"d": "1.0.0"} and site.runtime.calls[-2:] == [("expect", ["d"]), ("activate", "d", "1.0.0")]


def test_an_upgrade_keeps_the_old_version_to_go_back_to(tmp_path):
    site = Site(tmp_path)
    site.reconcile("1.0.0")
    [outcome] = site.reconcile("1.1.0")
    assert outcome.ok and site.runtime.active == {"d": "1.1.0"}
    assert (site.deployment.active.version, site.deployment.previous.version) == ("1.1.0", "1.0.0")


@pytest.mark.parametrize("where, error", [
    ("refused", Stalled("ArtifactDigestMismatch", "the bytes are not the ones pinned")),
    ("refused", Transient("ArtifactUnavailable", "the server said 503")),
    ("invalid", Stalled("ValidationFailed", "case smoke: y differs")),
])
def test_a_version_that_fails_vetting_is_never_served_and_the_old_one_stays(tmp_path, where, error):
    site = Site(tmp_path)
    site.reconcile("1.0.0")
    before = site.state
    getattr(site.vetting, where)["1.1.0"] = error
    [outcome] = site.reconcile("1.1.0")
    assert (type(outcome.error), outcome.error.reason) == (type(error), error.reason)
    assert outcome.error.message == f"m 1.1.0: {error.message}"  # which version, in the message
    assert site.runtime.active == {"d": "1.0.0"} and site.state == before == site.state_dir.load(SITE)


def test_a_runtime_that_cannot_load_the_version_fails_the_action_and_changes_no_state(tmp_path):
    site = Site(tmp_path)
    site.reconcile("1.0.0")
    before = site.state
    site.runtime.failing["activate"] = Stalled("ModelLoadFailed", "onnxruntime refused the graph")
    [outcome] = site.reconcile("1.1.0")
    assert outcome.error.reason == "ModelLoadFailed" and site.state == before == site.state_dir.load(SITE)


def test_an_activation_whose_state_cannot_be_written_is_undone(tmp_path, monkeypatch):
    site = Site(tmp_path)
    site.reconcile("1.0.0")

    def disk_full(state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(site.state_dir, "save", disk_full)
    [outcome] = site.reconcile("1.1.0")
    assert outcome.error.reason == "StateWriteFailed"
    assert site.runtime.calls[-2:] == [("activate", "d", "1.1.0"), ("activate", "d", "1.0.0")]
    assert site.runtime.active == {"d": "1.0.0"}


# The canary, step by step: (minutes after the canary started, requests, errors) ->
# (outcome state, reason, runtime's canary weight or None when gone, active version).
CANARY_STEPS = [
    ("paused", SLOW_CANARY, [(0, 0, 0, "progressing", "Paused", 20, "1.0.0"),
                             (4, 0, 0, "progressing", "Paused", 20, "1.0.0"),
                             (6, 0, 0, "success", "Promoted", None, "1.1.0")]),
    ("judged and passed", JUDGED_CANARY, [(0, 0, 0, "progressing", "Analyzing", 50, "1.0.0"),
                                          (2, 40, 1, "success", "Promoted", None, "1.1.0")]),
    ("too many errors", JUDGED_CANARY, [(0, 0, 0, "progressing", "Analyzing", 50, "1.0.0"),
                                        (1, 20, 5, "failure", "ErrorRateTooHigh", None, "1.0.0")]),
    ("no traffic", JUDGED_CANARY, [(0, 0, 0, "progressing", "Analyzing", 50, "1.0.0"),
                                   (2, 0, 0, "progressing", "WaitingForTraffic", 50, "1.0.0"),
                                   (4, 0, 0, "failure", "InsufficientTraffic", None, "1.0.0")]),
]


@pytest.mark.parametrize("name, steps, ticks", CANARY_STEPS, ids=[c[0] for c in CANARY_STEPS])
def test_a_canary_moves_step_by_step_to_promotion_or_failure(tmp_path, name, steps, ticks):
    metrics = Counts()
    site = Site(tmp_path, metrics=metrics)
    site.reconcile("1.0.0")
    for minutes, requests, errors, state, reason, weight, active in ticks:
        metrics.requests, metrics.errors = requests, errors
        [outcome] = site.reconcile("1.1.0", T0 + timedelta(minutes=minutes), canary=steps)
        assert (outcome.state, outcome.reason) == (state, reason), minutes
        assert site.runtime.canary.get("d", (None, None))[1] == weight
        assert site.runtime.active["d"] == site.deployment.active.version == active
        assert site.state_dir.load(SITE) == site.state


def test_a_failed_canary_is_returned_as_an_outcome_not_raised(tmp_path):
    site = Site(tmp_path)  # no metrics: the analysis sees no traffic, and maxWait says fail
    site.reconcile("1.0.0")
    site.reconcile("1.1.0", canary=JUDGED_CANARY)
    [outcome] = site.reconcile("1.1.0", T0 + timedelta(minutes=4), canary=JUDGED_CANARY)
    assert outcome.error is None and not outcome.ok  # not applied: the commit stays unapplied
    assert (outcome.state, outcome.reason) == ("failure", "InsufficientTraffic")
    assert outcome.message.startswith("m 1.1.0: step 2/2: 0 of 10 requests")
    assert ("abort_canary", "d") in site.runtime.calls
    assert site.deployment.canary is None and site.deployment.history[-1].event == "canaryRolledBack"


def test_a_restart_serves_the_active_version_and_resumes_the_canary_at_its_weight(tmp_path):
    site = Site(tmp_path)
    site.reconcile("1.0.0")
    site.reconcile("1.1.0", canary=SLOW_CANARY)
    restarted = Site(tmp_path)
    restarted.applier.restore(restarted.state_dir.load(SITE))
    assert restarted.runtime.calls == [("activate", "d", "1.0.0"), ("start_canary", "d", "1.1.0", 20)]
    restarted.state = restarted.state_dir.load(SITE)
    [outcome] = restarted.reconcile("1.1.0", T0 + timedelta(minutes=6), canary=SLOW_CANARY)
    assert (outcome.state, outcome.reason) == ("success", "Promoted") and restarted.runtime.active == {"d": "1.1.0"}


def test_without_a_runtime_a_canary_switches_at_once_and_a_running_one_waits_for_it(tmp_path):
    site = Site(tmp_path, runtime=False)
    site.reconcile("1.0.0")
    [outcome] = site.reconcile("1.1.0", canary=SLOW_CANARY)
    assert outcome.ok and site.deployment.active.version == "1.1.0" and site.deployment.canary is None

    serving = Site(tmp_path / "serving")
    serving.reconcile("1.0.0")
    serving.reconcile("1.1.0", canary=SLOW_CANARY)
    unserved = Site(tmp_path / "serving", runtime=False)
    unserved.state = serving.state
    with pytest.raises(NeedsOperator) as stopped:  # retrying cannot help: the agent stops, the CLI exits 2
        unserved.reconcile("1.1.0", T0 + timedelta(minutes=6), canary=SLOW_CANARY)
    assert stopped.value.reason == "RuntimeNotServing" and "(--listen)" in stopped.value.message


def test_actions_that_decide_their_own_state(tmp_path):
    site = Site(tmp_path)
    site.reconcile("1.0.0")
    site.reconcile("1.1.0")
    target = plan_site(fleet("1.0.0"), SITE, site.state, T0, "c1", {}).actions[0].target
    table = [
        (Action("wait", "d", "m", "1.1.0", target, "WaveNotReached", "an earlier wave"), "pending", "1.1.0"),
        (Action("halt", "d", "m", "1.1.0", target, "RolloutAborted", "3 of 4 failed"), "aborted", "1.1.0"),
        (Action("rollback", "d", "m", "1.1.0", target, "RolloutAborted", "3 of 4 failed"), "aborted", "1.0.0"),
    ]
    for action, state, active in table:
        [outcome] = site.apply(Plan(SITE, "c1", (action,), ()))
        assert (outcome.state, outcome.reason, outcome.ok) == (state, action.reason, True)
        assert site.runtime.active == {"d": active} and site.deployment.active.version == active


def test_an_error_action_is_a_stalled_outcome_and_a_remove_stops_serving(tmp_path):
    site = Site(tmp_path)
    site.reconcile("1.0.0")
    error = Action("error", "d", "m", "1.0.0", None, "VersionNotFound", "m has no version 9.9.9")
    remove = Action("remove", "d", "m", "1.0.0", None, "NotTargeted", "no longer asked")
    failed, removed = site.apply(Plan(SITE, "c1", (error, remove), ()))
    assert isinstance(failed.error, Stalled) and failed.error.reason == "VersionNotFound"
    assert removed.ok and site.runtime.active == {} and site.state.deployments == {}


def test_a_stop_activates_nothing_more(tmp_path):
    site = Site(tmp_path)
    site.applier.stop.set(reason="SIGTERM")
    with pytest.raises(Cancelled):
        site.reconcile("1.0.0")
    assert site.runtime.active == {} and site.vetting.validated == []

