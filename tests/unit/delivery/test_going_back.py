"""Going back is fast, and the status never says what the site is not doing: the pure plan,
table-driven over what the site runs (active, previous, a canary) and what the fleet asks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fleetfactory import DIGEST_A, DIGEST_B, deployment, fleet_repo, model, site

from reconciler.delivery.canary import CanaryProgress
from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.delivery.plan import plan_site
from reconciler.delivery.same_version import checks_digest
from reconciler.status.record import DeploymentStatus, StatusRecord

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
INTERFACE = model().spec.interface
CANARY = {"steps": [{"setWeight": 50}, {"analysis": {"window": "1m", "minRequests": 20, "maxErrorRate": 0.01}}]}
TWO_WAVES = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                       {"name": "rest", "percent": 100}]}


def installed(version: str, digest: str, minutes_ago: float = 0) -> Installed:
    return Installed(version=version, digest=digest, uri="u", installedAt=NOW - timedelta(minutes=minutes_ago),
                     checks=checks_digest(INTERFACE, []))  # validated against the fleet's checks


def site_state(active: Installed, previous: Installed | None = None, canary: Installed | None = None) -> SiteState:
    progress = CanaryProgress(step=1, stepStartedAt=NOW, weight=50) if canary else None
    return SiteState(site="s1", deployments={"d": DeploymentState(
        model="m", interface=INTERFACE, active=active, previous=previous, canary=canary, canaryProgress=progress)})


ON_1_1 = installed("1.1.0", DIGEST_B, 30)
WAS_1_0 = installed("1.0.0", DIGEST_A, 600)


@pytest.mark.parametrize("case,asks,state,spec,kind,reason", [
    ("a revert to the version served before: no canary, no gate", "1.0.0", site_state(ON_1_1, WAS_1_0),
     {"canary": CANARY, "rollout": TWO_WAVES}, "revert", "RolledBack"),
    ("a revert during the canary stops the canary", "1.0.0", site_state(WAS_1_0, None, ON_1_1),
     {"canary": CANARY}, "revert", "RolledBack"),
    ("the running canary of the asked version goes on", "1.1.0", site_state(WAS_1_0, None, ON_1_1),
     {"canary": CANARY}, "canary", "CanaryInProgress"),
    ("within the rollback window", "1.0.0", site_state(ON_1_1, WAS_1_0),
     {"canary": CANARY, "rollbackWindow": "1h"}, "revert", "RolledBack"),
    ("past the rollback window: a new rollout with its canary", "1.0.0", site_state(ON_1_1, WAS_1_0),
     {"canary": CANARY, "rollbackWindow": "10m"}, "deploy", "NewVersion"),
    ("a version never served here is not a rollback", "1.1.0", site_state(WAS_1_0),
     {"canary": CANARY}, "deploy", "NewVersion"),
    ("served, but not the previous one: its blob is gone", "1.0.0",
     site_state(ON_1_1, installed("0.9.0", "sha256:" + "c" * 64, 900)), {"canary": CANARY}, "deploy", "NewVersion"),
])
def test_going_back(case, asks, state, spec, kind, reason):
    repo = fleet_repo([site("s1", ring="pilot"), site("s2")], [model()], [deployment(version=asks, **spec)])
    plan = plan_site(repo, "s2" if spec.get("rollout") else "s1",
                     state.model_copy(update={"site": "s2" if spec.get("rollout") else "s1"}), NOW, None,
                     {} if spec.get("rollout") else None)
    assert [(a.kind, a.reason) for a in plan.actions] == [(kind, reason)]
    assert not plan.converged  # never "converged" while a canary the fleet no longer asks for runs


def test_the_revert_says_what_the_site_does():
    repo = fleet_repo([site("s1")], [model()], [deployment(version="1.0.0", canary=CANARY)])
    stop = plan_site(repo, "s1", site_state(WAS_1_0, None, ON_1_1), NOW, None).actions[0]
    assert stop.message == "the canary of 1.1.0 stopped: the fleet asks for 1.0.0 again, which serves all traffic"
    back = plan_site(repo, "s1", site_state(ON_1_1, WAS_1_0), NOW, None).actions[0]
    assert back.message == ("1.1.0 -> 1.0.0: served here until 2026-11-18 11:30:00Z, activated again from the "
                            "kept blob, without canary or wave gate")


def pilot_record(state: str, active: str, previous: str | None, rollout: str) -> StatusRecord:
    status = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, previousVersion=previous,
                              rollout=rollout, reason="r", since=NOW - timedelta(minutes=1))
    return StatusRecord(site="s1", state=state, reason="r", deployments={"d": status}, agentVersion="0",
                        writtenAt=NOW - timedelta(minutes=1))


@pytest.mark.parametrize("case,pilot,kind,reason,version", [
    ("the pilot runs the canary: the joining site serves what it ran before", ("progressing", "1.0.0", None),
     "deploy", "WaitingForEarlierWaves", "1.0.0"),
    ("the pilot moved, the gate bakes: its previous version", ("success", "1.1.0", "1.0.0"),
     "deploy", "Baking", "1.0.0"),
    ("nothing known of the version before", ("success", "1.1.0", None), "wait", "Baking", "1.1.0"),
])
def test_a_joining_site_serves_the_from_version_while_its_wave_waits(case, pilot, kind, reason, version):
    repo = fleet_repo([site("s1", ring="pilot"), site("s2")], [model()],
                      [deployment(version="1.1.0", rollout={**TWO_WAVES, "gate": {"bakeTime": "1h"}})])
    rollout = plan_site(repo, "s1", SiteState(site="s1"), NOW, None, {}).actions[0].target.rollout_id
    plan = plan_site(repo, "s2", SiteState(site="s2"), NOW, None, {"s1": pilot_record(*pilot, rollout)})
    [action] = plan.actions
    assert (action.kind, action.reason, action.target.version) == (kind, reason, version)
    if kind == "deploy":
        assert action.target.rollout_id != rollout  # serving the old version is not progress of this rollout
        assert action.message == "serving 1.0.0, what the earlier waves ran before this rollout, until wave rest " \
                                 "may move to 1.1.0"
        assert plan.serving == ["d"]


def test_a_site_in_no_wave_is_not_given_the_from_version():
    pilot_only = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}}]}
    repo = fleet_repo([site("s1", ring="pilot"), site("s2")], [model()], [deployment(version="1.1.0", rollout=pilot_only)])
    rollout = plan_site(repo, "s1", SiteState(site="s1"), NOW, None, {}).actions[0].target.rollout_id
    plan = plan_site(repo, "s2", SiteState(site="s2"), NOW, None,
                     {"s1": pilot_record("progressing", "1.0.0", None, rollout)})
    assert [(a.kind, a.reason) for a in plan.actions] == [("wait", "NotInAnyWave")]
