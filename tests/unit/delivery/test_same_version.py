"""A version the site serves that the fleet repo changes under the same name: other bytes
(redefined) or other checks (interface, validation cases). The pure plan, the rollback target, the
fleet impact of such a change and its finding, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fleetfactory import DIGEST_A, DIGEST_ARM, DIGEST_B, artifact, deployment, fleet_repo, model, site

from reconciler.cli.change_check import redefined_versions
from reconciler.delivery.impact import fleet_impact
from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.delivery.plan import plan_site
from reconciler.delivery.same_version import checks_digest, rollback_target
from reconciler.manifests.fleet import Origin
from reconciler.manifests.models import ValidationCase

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday, 12:00 UTC
INTERFACE = model().spec.interface
VALIDATED = checks_digest(INTERFACE, [])
NIGHT_WINDOW = [{"days": ["wed"], "start": "02:00", "end": "04:00", "timezone": "UTC"}]
CASE = {"name": "c", "inputs": {"x": [[1.0, 2.0]]}, "expected": {"y": [[3.0]]}}


def with_float64_input(m):
    interface = m.spec.interface.model_copy(update={"inputs": [
        m.spec.interface.inputs[0].model_copy(update={"dtype": "float64"})]})
    return m.model_copy(update={"spec": m.spec.model_copy(update={"interface": interface})})


def installed(version: str, digest: str, checks: str | None = VALIDATED) -> Installed:
    return Installed(version=version, digest=digest, uri="u", installedAt=NOW, checks=checks)


def serving(active: Installed, previous: Installed | None = None) -> SiteState:
    return SiteState(site="s1", deployments={"d": DeploymentState(model="m", interface=INTERFACE, active=active,
                                                                  previous=previous)})


REDEFINED_1_0_0 = model(versions={"1.0.0": [artifact(DIGEST_B)], "1.1.0": [artifact(DIGEST_B)]})

PLANS = [
    # (id, model in the fleet, site windows, what the site serves, expected (kind, reason) or None)
    ("same bytes, same checks: converged", model(), None, installed("1.0.0", DIGEST_A), None),
    ("a state from before checks were recorded: validated once more", model(), None,
     installed("1.0.0", DIGEST_A, None), ("deploy", "ChecksChanged")),
    ("interface changed: validate the kept blob again", with_float64_input(model()), None,
     installed("1.0.0", DIGEST_A), ("deploy", "ChecksChanged")),
    ("same name, other bytes: redefined", REDEFINED_1_0_0, None, installed("1.0.0", DIGEST_A),
     ("deploy", "VersionRedefined")),
    ("redefined outside the maintenance window: fetched now", REDEFINED_1_0_0, NIGHT_WINDOW,
     installed("1.0.0", DIGEST_A), ("prefetch", "OutsideMaintenanceWindow")),
    ("redefined with the previous version's bytes: no rollback", model(versions={"1.0.0": [artifact(DIGEST_ARM)]}),
     None, installed("1.0.0", DIGEST_A), ("deploy", "VersionRedefined")),
    ("another version: new", model(), None, installed("0.9.0", DIGEST_ARM), ("deploy", "NewVersion")),
]


@pytest.mark.parametrize("fleet_model,windows,active,expected", [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_plan_of_a_version_changed_under_its_name(fleet_model, windows, active, expected):
    repo = fleet_repo([site("s1", windows)], [fleet_model], [deployment()])
    plan = plan_site(repo, "s1", serving(active, installed("0.9.0", DIGEST_ARM)), NOW, "c0")
    got = [(a.kind, a.reason) for a in plan.actions]
    assert got == ([] if expected is None else [expected])
    assert [t.deployment for t in plan.converged] == ([] if expected else ["d"])


def test_a_redefined_version_is_reported_with_both_digests():
    plan = plan_site(fleet_repo([site("s1")], [REDEFINED_1_0_0], [deployment()]), "s1",
                     serving(installed("1.0.0", DIGEST_A)), NOW, "c0")
    message = plan.actions[0].message
    assert DIGEST_A in message and DIGEST_B in message and "release a new version" in message


def test_changed_validation_cases_are_checked_again():
    with_case = model()
    version = with_case.spec.versions[0]
    case = ValidationCase.model_validate(CASE)
    with_case = with_case.model_copy(update={"spec": with_case.spec.model_copy(update={"versions": [
        version.model_copy(update={"validation": [case]}), *with_case.spec.versions[1:]]})})
    plan = plan_site(fleet_repo([site("s1")], [with_case], [deployment()]), "s1",
                     serving(installed("1.0.0", DIGEST_A)), NOW, "c0")
    assert [(a.kind, a.reason) for a in plan.actions] == [("deploy", "ChecksChanged")]


PREVIOUS = installed("0.9.0", DIGEST_ARM)
ROLLBACK_TARGETS = [
    ("a new version: the active one", installed("1.0.0", DIGEST_A), installed("1.1.0", DIGEST_B), "1.0.0"),
    ("redefined: the active one's own previous", installed("1.0.0", DIGEST_A), installed("1.0.0", DIGEST_B), "0.9.0"),
    ("checks changed: the active one's own previous", installed("1.0.0", DIGEST_A), installed("1.0.0", DIGEST_A),
     "0.9.0"),
]


@pytest.mark.parametrize("active,new,expected", [r[1:] for r in ROLLBACK_TARGETS], ids=[r[0] for r in ROLLBACK_TARGETS])
def test_rollback_target(active, new, expected):
    current = serving(active, PREVIOUS).deployments["d"]
    kept = rollback_target(current, new)
    assert kept.version == expected
    assert rollback_target(None, new) is None


SITES = [site("s1", tier="store"), site("s2", tier="store"), site("f1", tier="factory")]
STORES = {"matchLabels": {"tier": "store"}}
IMPACTS = [
    ("redefined version: sites deploy other bytes", REDEFINED_1_0_0, "deploy (VersionRedefined)"),
    ("changed interface: sites validate again", with_float64_input(model()), "deploy (ChecksChanged)"),
]


@pytest.mark.parametrize("head_model,step", [i[1:] for i in IMPACTS], ids=[i[0] for i in IMPACTS])
def test_fleet_impact_counts_sites_whose_version_changes_under_its_name(head_model, step):
    base = fleet_repo(SITES, [model()], [deployment(targets=STORES)])
    head = fleet_repo(SITES, [head_model], [deployment(targets=STORES)])
    impact = fleet_impact(base, head, "a" * 40, "b" * 40, NOW)
    moves = [(m.from_version, m.to_version, m.sites, m.next) for d in impact.deployments for m in d.moves]
    assert moves == [("1.0.0", "1.0.0", ("s1", "s2"), step)]
    assert impact.deployments[0].sites_moving == 2


FINDINGS = [
    ("digest of a released version changed", model(), REDEFINED_1_0_0,
     [("spec.versions[0].artifacts[0].digest", "s1, s2")]),
    ("a released version's artifact gained a platform", model(),
     model(versions={"1.0.0": [artifact(DIGEST_A, arch="arm64")], "1.1.0": [artifact(DIGEST_B)]}),
     [("spec.versions[0].artifacts[0]", "none now")]),
    ("an added version is no redefinition", model(versions={"1.0.0": [artifact(DIGEST_A)]}), model(), []),
    ("an interface change is no redefinition", model(), with_float64_input(model()), []),
    ("unchanged", model(), model(), []),
]


@pytest.mark.parametrize("base_model,head_model,expected", [f[1:] for f in FINDINGS], ids=[f[0] for f in FINDINGS])
def test_a_redefined_released_version_is_an_error_naming_the_sites(base_model, head_model, expected):
    base = fleet_repo(SITES, [base_model], [deployment(targets=STORES)])
    head = fleet_repo(SITES, [head_model], [deployment(targets=STORES)])
    head.origins[("Model", "m")] = Origin("models/m/model.yaml", 3)
    findings = redefined_versions(base, head, NOW)
    assert [(f.field, f.message.rsplit(": ", 1)[-1]) for f in findings] == expected
    assert all(f.severity == "error" and f.path == "models/m/model.yaml" and f.line == 3 for f in findings)
    assert all("release a new version instead" in f.message for f in findings)
