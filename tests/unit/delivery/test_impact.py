"""Fleet impact of a change, table-driven over pairs of in-memory fleets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fleetfactory import DIGEST_ARM, artifact, deployment, fleet_repo, model, site

from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.gates import site_report
from reconciler.delivery.impact import fleet_impact, render_markdown, render_text
from reconciler.delivery.plan import target_for
from reconciler.status.record import DeploymentStatus, StatusRecord

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
SITES = [site("s1", tier="store", ring="pilot"), site("s2", tier="store"), site("f1", tier="factory")]
WAVES = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}}, {"name": "all", "percent": 100}]}
STORES = {"matchLabels": {"tier": "store"}}


def impact_of(base_deployments, head_deployments, head_models=None):
    base = fleet_repo(SITES, [model()], base_deployments)
    head = fleet_repo(SITES, head_models or [model()], head_deployments)
    return fleet_impact(base, head, "a" * 40, "b" * 40, NOW)


CASES = [
    ("version bump moves targeted sites by wave",
     [deployment(targets=STORES, rollout=WAVES)], [deployment(version="1.1.0", targets=STORES, rollout=WAVES)],
     [("d", "changed", [("pilot", "1.0.0", "1.1.0", ("s1",), None), ("all", "1.0.0", "1.1.0", ("s2",), None)])]),
    ("retargeting adds and removes sites",
     [deployment(targets=STORES)], [deployment(targets={"matchLabels": {"tier": "factory"}})],
     [("d", "changed", [(None, "-", "1.0.0", ("f1",), None), (None, "1.0.0", "-", ("s1", "s2"), None)])]),
    ("new deployment", [], [deployment(targets=STORES)],
     [("d", "added", [(None, "-", "1.0.0", ("s1", "s2"), None)])]),
    ("removed deployment", [deployment(targets=STORES)], [],
     [("d", "removed", [(None, "1.0.0", "-", ("s1", "s2"), None)])]),
    ("unchanged deployment is not listed", [deployment()], [deployment()], []),
    ("dangling version cannot apply", [deployment(targets=STORES)], [deployment(version="9.0.0", targets=STORES)],
     [("d", "changed", [(None, "1.0.0", "?", ("s1", "s2"), "VersionNotFound")])]),
]


@pytest.mark.parametrize("base,head,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fleet_impact(base, head, expected):
    impact = impact_of(base, head)
    got = [(d.name, d.change, [(m.wave, m.from_version, m.to_version, m.sites,
                                m.problem.split(":")[0] if m.problem else None) for m in d.moves])
           for d in impact.deployments]
    assert got == expected
    assert impact.blocked == any(m[4] for d in expected for m in d[2])


def test_model_change_alone_is_an_impact():
    only_arm = model(versions={"1.0.0": [artifact(DIGEST_ARM, arch="arm64")], "1.1.0": [artifact(DIGEST_ARM)]})
    impact = impact_of([deployment(targets=STORES)], [deployment(targets=STORES)], head_models=[only_arm])
    assert [m.problem.split(":")[0] for m in impact.deployments[0].moves] == ["NoMatchingArtifact"]


def test_renderings_name_waves_rules_and_verdict():
    impact = impact_of([deployment(targets=STORES, rollout=WAVES)],
                       [deployment(version="1.1.0", targets=STORES, rollout=WAVES,
                                   canary={"steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}]})])
    markdown = render_markdown(impact)
    assert "| pilot | 1.0.0 | 1.1.0 | s1 |" in markdown
    assert "canary: 20% → pause 1m" in markdown and "waves pilot (selector), all (100%)" in markdown
    # Issue 10: the verdict says which checks ran, never "validation passes" for checks it did not run.
    assert "Validation passes" not in markdown
    assert markdown.rstrip().endswith("No problem found by the checks above; not checked: the artifacts.")
    assert "not known: no status records were read" in markdown
    assert render_text(impact).splitlines()[-1] == "ok: No problem found by the checks above; not checked: the artifacts."
    assert impact.to_json()["deployments"][0]["sitesMoving"] == 2


def record(site_name: str, state: str, active: str, rollout: str) -> StatusRecord:
    # a failure is evidence against the version (a site condition would not count toward the abort)
    reason = "ValidationFailed" if state == "failure" else "Converged"
    status = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, reason=reason,
                              rollout=rollout, since=NOW - timedelta(minutes=10))
    return StatusRecord(site=site_name, state=state, reason=reason, deployments={"d": status}, agentVersion="0",
                        writtenAt=NOW - timedelta(minutes=10))


@pytest.mark.parametrize(("records", "expected", "unreported"), [
    ({}, {"s1": "deploy (FirstWave)", "s2": "wait (WaitingForEarlierWaves)"}, ("s1", "s2")),
    ({"s1": ("success", "1.1.0")}, {"s1": "deploy (FirstWave)", "s2": "deploy (GateHeld)"}, ("s2",)),
    ({"s1": ("failure", "1.0.0")},
     {"s1": "halt (FailureThresholdReached)", "s2": "halt (FailureThresholdReached)"}, ("s2",)),
    ({"s1": ("success", "1.1.0"), "s2": ("failure", "1.0.0")},
     {"s1": "rollback (FailureThresholdReached)", "s2": "halt (FailureThresholdReached)"}, ()),
])
@pytest.mark.parametrize("from_summaries", [False, True])
def test_what_each_moving_site_does_next_follows_the_status_records(records, expected, unreported, from_summaries):
    """The same answers from the reports of the deployment's summaries (``plan --summary-repo``)."""
    base = fleet_repo(SITES, [model()], [deployment(targets=STORES, rollout=WAVES)])
    head = fleet_repo(SITES, [model()], [deployment(version="1.1.0", targets=STORES, rollout=WAVES)])
    rollout = target_for(head, head.deployments["d"], head.sites["s1"], NOW).rollout_id
    status = {site: record(site, state, active, rollout) for site, (state, active) in records.items()}
    read = FleetReports({"d": {site: site_report(r, "d") for site, r in status.items()}}) if from_summaries else status
    impact = fleet_impact(base, head, "a" * 40, "b" * 40, NOW, status=read)
    assert {site: m.next for m in impact.deployments[0].moves for site in m.sites} == expected
    assert impact.unreported == unreported
    assert not impact.blocked


def test_from_summaries_a_deployment_not_read_names_no_site_unreported():
    """A deployment with no rollout has no summary: nothing is known of its sites there."""
    base = fleet_repo(SITES, [model()], [deployment(targets=STORES)])
    head = fleet_repo(SITES, [model()], [deployment(version="1.1.0", targets=STORES)])
    assert fleet_impact(base, head, "a" * 40, "b" * 40, NOW, status=FleetReports({})).unreported == ()
    assert fleet_impact(base, head, "a" * 40, "b" * 40, NOW, status={}).unreported == ("s1", "s2")


def test_a_site_in_no_wave_blocks_the_change():
    waves = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}}]}
    impact = impact_of([deployment(targets=STORES)], [deployment(version="1.1.0", targets=STORES, rollout=waves)])
    assert impact.deployments[0].no_wave == ("s2",)
    assert impact.blocked
    assert "**in no wave** (never move): s2" in render_markdown(impact)
