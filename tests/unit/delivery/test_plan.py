"""The pure plan, table-driven: fleet + site + actual state + now -> actions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fleetfactory import DIGEST_A, DIGEST_ARM, DIGEST_B, artifact, deployment, fleet_repo, model, site

from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.delivery.plan import pick_artifact, plan_site
from reconciler.delivery.same_version import checks_digest

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday, 12:00 UTC
INTERFACE = model().spec.interface


def serving(version: str, digest: str, name: str = "d") -> SiteState:
    installed = Installed(version=version, digest=digest, uri="u", installedAt=NOW, checks=checks_digest(INTERFACE, []))
    return SiteState(site="s1", deployments={name: DeploymentState(model="m", interface=INTERFACE, active=installed)})


ON = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
OFF = {**ON, "defaultVariant": "off"}
BY_REGION = {**ON, "defaultVariant": "off",
             "targeting": {"if": [{"==": [{"var": "region"}, "eu"]}, "on", "off"]}}
VERSION_FLAG = {"state": "ENABLED", "variants": {"old": "1.0.0", "new": "1.1.0"}, "defaultVariant": "new"}
MISSING_VERSION_FLAG = {"state": "ENABLED", "variants": {"ghost": "9.9.9"}, "defaultVariant": "ghost"}

NIGHT_WINDOW = [{"days": ["wed"], "start": "02:00", "end": "04:00", "timezone": "UTC"}]
NOON_WINDOW = [{"days": ["wed"], "start": "11:00", "end": "13:00", "timezone": "Europe/London"}]

CASES = [
    # (id, site labels, windows, deployment kwargs, flags, actual, expected [(kind, deployment, to, reason)])
    ("fresh site deploys", {"tier": "store"}, None, {}, None, None,
     [("deploy", "d", "1.0.0", "NewVersion")]),
    ("converged does nothing", {"tier": "store"}, None, {}, None, ("1.0.0", DIGEST_A), []),
    ("version bump", {"tier": "store"}, None, {"version": "1.1.0"}, None, ("1.0.0", DIGEST_A),
     [("deploy", "d", "1.1.0", "NewVersion")]),
    ("not targeted: nothing", {"tier": "factory"}, None, {"targets": {"matchLabels": {"tier": "store"}}}, None, None, []),
    ("no longer targeted: remove", {"tier": "factory"}, None, {"targets": {"matchLabels": {"tier": "store"}}}, None,
     ("1.0.0", DIGEST_A), [("remove", "d", None, "NotTargeted")]),
    ("matchExpressions NotIn", {"region": "us"}, None,
     {"targets": {"matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["eu"]}]}}, None, None,
     [("deploy", "d", "1.0.0", "NewVersion")]),
    ("disabled literally", {}, None, {"enabled": False}, None, None, []),
    ("flag on", {}, None, {"enabled": {"flag": "f"}}, {"f": ON}, None, [("deploy", "d", "1.0.0", "NewVersion")]),
    ("flag off", {}, None, {"enabled": {"flag": "f"}}, {"f": OFF}, None, []),
    ("flag targets region eu", {"region": "eu"}, None, {"enabled": {"flag": "f"}}, {"f": BY_REGION}, None,
     [("deploy", "d", "1.0.0", "NewVersion")]),
    ("flag targets region, us off", {"region": "us"}, None, {"enabled": {"flag": "f"}}, {"f": BY_REGION}, None, []),
    ("version from flag", {}, None, {"version": {"flag": "v"}}, {"v": VERSION_FLAG}, None,
     [("deploy", "d", "1.1.0", "NewVersion")]),
    ("missing flag is an error", {}, None, {"enabled": {"flag": "nope"}}, None, ("1.0.0", DIGEST_A),
     [("error", "d", None, "FlagEvaluationFailed")]),
    ("flag names unknown version", {}, None, {"version": {"flag": "v"}}, {"v": MISSING_VERSION_FLAG}, None,
     [("error", "d", None, "VersionNotFound")]),
    ("dangling model", {}, None, {"model_name": "ghost"}, None, None, [("error", "d", None, "ModelNotFound")]),
    ("dangling version", {}, None, {"version": "7.0.0"}, None, None, [("error", "d", None, "VersionNotFound")]),
    ("outside window: prefetch", {}, NIGHT_WINDOW, {}, None, None,
     [("prefetch", "d", "1.0.0", "OutsideMaintenanceWindow")]),
    ("inside window (London, GMT in November)", {}, NOON_WINDOW, {}, None, None,
     [("deploy", "d", "1.0.0", "NewVersion")]),
]


@pytest.mark.parametrize("labels,windows,spec,flags,actual,expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(labels, windows, spec, flags, actual, expected):
    spec = dict(spec)
    model_name = spec.pop("model_name", "m")
    repo = fleet_repo([site("s1", windows, **labels)], [model()], [deployment(model_name=model_name, **spec)], flags)
    state = serving(*actual) if actual else SiteState(site="s1")
    plan = plan_site(repo, "s1", state, NOW, "c0ffee")
    got = [(a.kind, a.deployment, a.target.version if a.target else None, a.reason) for a in plan.actions]
    assert got == expected


def test_unknown_site_is_an_error_not_a_removal():
    repo = fleet_repo([site("s1")], [model()], [deployment()])
    plan = plan_site(repo, "s9", serving("1.0.0", DIGEST_A), NOW, None)
    assert [(a.kind, a.reason) for a in plan.actions] == [("error", "SiteNotInFleet")]


@pytest.mark.parametrize(("given", "said"), [
    ("store-lyon-1", "no Site named 'store-lyon-1' in the fleet repo (did you mean 'store-lyon-01'?)"),
    ("factory-x", "no Site named 'factory-x' in the fleet repo"),
])
def test_an_unknown_site_name_gets_a_did_you_mean(given, said):
    repo = fleet_repo([site("store-lyon-01"), site("store-paris-01")], [model()], [deployment()])
    (error,) = plan_site(repo, given, serving("1.0.0", DIGEST_A), NOW, None).actions
    assert error.message == said


def test_plan_records_wave_and_reports_converged():
    rollout = {"waves": [{"name": "canary", "selector": {"matchLabels": {"ring": "0"}}},
                         {"name": "all", "percent": 100}]}
    repo = fleet_repo([site("s1", ring="0")], [model()], [deployment(rollout=rollout)])
    plan = plan_site(repo, "s1", serving("1.0.0", DIGEST_A), NOW, None)
    assert plan.empty and [(t.deployment, t.wave) for t in plan.converged] == [("d", "canary")]


def test_fleet_default_rollout_applies():
    default = {"defaultRollout": {"waves": [{"name": "everyone", "percent": 100}]}}
    repo = fleet_repo([site("s1")], [model()], [deployment()], fleet=default)
    assert plan_site(repo, "s1", SiteState(site="s1"), NOW, None).actions[0].target.wave == "everyone"


ARTIFACTS = [artifact(DIGEST_A), artifact(DIGEST_ARM, arch="arm64"), artifact(DIGEST_B, arch="amd64", precision="fp32")]


@pytest.mark.parametrize("labels,expected", [
    ({"arch": "arm64"}, DIGEST_ARM),
    ({"arch": "amd64", "precision": "fp32"}, DIGEST_B),
    ({"arch": "amd64"}, DIGEST_A),  # generic artifact serves sites no specific one covers
    ({}, DIGEST_A),
])
def test_pick_artifact(labels, expected):
    chosen = pick_artifact(model(versions={"1": ARTIFACTS}).spec.versions[0].artifacts, labels)
    assert chosen.digest == expected


def test_no_matching_artifact_is_a_per_site_error():
    only_arm = model(versions={"1.0.0": [artifact(DIGEST_ARM, arch="arm64")]})
    repo = fleet_repo([site("s1", arch="amd64")], [only_arm], [deployment()])
    action = plan_site(repo, "s1", SiteState(site="s1"), NOW, None).actions[0]
    assert (action.kind, action.reason) == ("error", "NoMatchingArtifact")
    assert "arch=amd64" in action.message


# --- gating by the other sites' status records ------------------------------------------------

from datetime import timedelta  # noqa: E402

from reconciler.status.record import DeploymentStatus, StatusRecord  # noqa: E402

TWO_WAVES = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                       {"name": "rest", "percent": 100}],
             "gate": {"bakeTime": "10m"}}


def fleet_with_waves(flags=None, enabled=True):
    sites = [site("p1", ring="pilot", region="eu"), site("p2", ring="pilot", region="us"), site("s1", region="eu")]
    return fleet_repo(sites, [model()], [deployment(version="1.1.0", rollout=TWO_WAVES, enabled=enabled)], flags)


def reported(site_name: str, repo, state: str, active: str, ago: timedelta) -> StatusRecord:
    target = plan_site(repo, site_name, SiteState(site=site_name), NOW, None, {}).actions[0].target
    reason = "ValidationFailed" if state == "failure" else "r"  # a failure here is evidence against the version
    status = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, reason=reason,
                              rollout=target.rollout_id, since=NOW - ago)
    return StatusRecord(site=site_name, state=state, reason="r", deployments={"d": status}, agentVersion="0",
                        writtenAt=NOW - ago)


@pytest.mark.parametrize("pilots,expected", [
    ({}, ("wait", "WaitingForEarlierWaves")),
    ({"p1": ("success", "1.1.0", 20)}, ("wait", "WaitingForEarlierWaves")),
    ({"p1": ("success", "1.1.0", 20), "p2": ("success", "1.1.0", 5)}, ("wait", "Baking")),
    ({"p1": ("success", "1.1.0", 20), "p2": ("success", "1.1.0", 11)}, ("deploy", "NewVersion")),
    # without minExecuted the evidence is real once both pilots ran
    ({"p1": ("failure", "1.0.0", 20)}, ("wait", "WaitingForEarlierWaves")),
    ({"p1": ("failure", "1.0.0", 20), "p2": ("success", "1.1.0", 5)}, ("halt", "FailureThresholdReached")),
])
def test_later_wave_waits_for_earlier_waves(pilots, expected):
    repo = fleet_with_waves()
    status = {name: reported(name, repo, state, active, timedelta(minutes=ago))
              for name, (state, active, ago) in pilots.items()}
    plan = plan_site(repo, "s1", serving("1.0.0", DIGEST_A), NOW, None, status)
    assert [(a.kind, a.reason) for a in plan.actions] == [expected]
    assert plan.watching


def test_first_wave_proceeds_and_aborted_rollout_rolls_back_a_site_that_moved():
    repo = fleet_with_waves()
    assert plan_site(repo, "p1", serving("1.0.0", DIGEST_A), NOW, None, {}).actions[0].kind == "deploy"
    moved = SiteState(site="p1", deployments={"d": DeploymentState(
        model="m", interface=INTERFACE, active=Installed(version="1.1.0", digest=DIGEST_B, uri="u", installedAt=NOW),
        previous=Installed(version="1.0.0", digest=DIGEST_A, uri="u", installedAt=NOW))})
    status = {"p2": reported("p2", repo, "failure", "1.0.0", timedelta(minutes=1)),
              "p1": reported("p1", repo, "success", "1.1.0", timedelta(minutes=2))}
    assert [(a.kind, a.reason) for a in plan_site(repo, "p1", moved, NOW, None, status).actions] == [
        ("rollback", "FailureThresholdReached")]


def test_sites_switched_off_by_a_flag_take_no_part_in_the_gate():
    only_eu = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
               "targeting": {"if": [{"==": [{"var": "region"}, "eu"]}, "on", "off"]}}
    repo = fleet_with_waves({"f": only_eu}, enabled={"flag": "f"})
    status = {"p1": reported("p1", repo, "success", "1.1.0", timedelta(minutes=20))}  # p2 (us) never reports
    assert [a.kind for a in plan_site(repo, "s1", serving("1.0.0", DIGEST_A), NOW, None, status).actions] == ["deploy"]


@pytest.mark.parametrize("canary,watching", [
    (None, False),
    ({"steps": []}, False),
    ({"steps": [{"setWeight": 20}, {"pause": {"duration": "5m"}}]}, True),
])
def test_a_deploy_that_starts_a_canary_is_watched_without_any_rollout(canary, watching):
    """Starting a canary is a deploy; its next steps come with time, not with a commit, so the
    agent must plan again every tick even when no rollout makes it watch (found by the fakes)."""
    spec = {"version": "1.1.0"} | ({"canary": canary} if canary is not None else {})
    repo = fleet_repo([site("s1")], [model()], [deployment(**spec)])
    plan = plan_site(repo, "s1", serving("1.0.0", DIGEST_A), NOW, None, {})
    assert [a.kind for a in plan.actions] == ["deploy"]
    assert plan.watching is watching
