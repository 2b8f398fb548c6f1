"""A version changed under its own name, end to end: real git remote, real signed artifacts, real
runtime and agent, and ``plan --base/--head`` over the same commits (same_version.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from test_agent import SITE, forecast, make_agent

from reconciler.cli.artifact_check import ArtifactOptions
from reconciler.cli.change_check import check_change
from reconciler.devtools.testing import EXAMPLE
from reconciler.runtime.registry import ModelRegistry
from reconciler.trust import TrustRoots, load_public_key

DEPLOYMENT = "demand-forecast"
MODEL_FILE = f"models/{DEPLOYMENT}/model.yaml"
ROOTS = TrustRoots(keys=(load_public_key((EXAMPLE / "keys" / "demo.pub").read_bytes(), name="demo.pub"),))


@pytest.fixture
def site(fleet, tmp_path):
    registry = ModelRegistry()
    agent = make_agent(fleet, tmp_path, registry)
    yield agent, registry
    agent.stop()


def test_a_redefined_version_is_blocked_in_review_and_reported_honestly_at_the_site(fleet, site, caplog):
    agent, registry = site
    agent.reconcile_once()
    fleet.bump(f"deployments/{DEPLOYMENT}.yaml", "1.0.0", "1.1.0")
    base = fleet.push("bump")
    agent.reconcile_once()
    assert forecast(registry) == ("1.1.0", 23.6278)

    doc = fleet.model_doc(DEPLOYMENT)
    first, second = doc["spec"]["versions"]
    old_digest, new_digest = second["artifacts"][0]["digest"], first["artifacts"][0]["digest"]
    second["artifacts"], second["validation"] = first["artifacts"], first["validation"]  # another valid signed file
    fleet.write_model_doc(DEPLOYMENT, doc)
    redefined = fleet.push("1.1.0 points at other bytes")

    impact = check_change(str(fleet.clone), base, redefined, ArtifactOptions(roots=ROOTS), datetime.now(UTC))
    errors = [f for f in impact.findings if f.severity == "error"]
    assert [(f.path, f.field) for f in errors] == [(MODEL_FILE, "spec.versions[1].artifacts[0].digest")]
    assert errors[0].line > 1 and "release a new version instead" in errors[0].message and SITE in errors[0].message
    assert impact.blocked
    assert [m.next for d in impact.deployments for m in d.moves if SITE in m.sites] == ["deploy (VersionRedefined)"]

    with caplog.at_level(logging.WARNING, logger="reconciler.agent.apply"):
        result = agent.reconcile_once()
    status = result.record.deployments[DEPLOYMENT]
    assert (status.state, status.reason) == ("success", "VersionRedefined")
    assert old_digest in status.message and new_digest in status.message
    assert (status.activeVersion, status.previousVersion) == ("1.1.0", "1.0.0")  # the rollback target is kept
    assert any(r.levelno == logging.WARNING and "redefined" in r.getMessage() for r in caplog.records)
    assert forecast(registry) == ("1.1.0", 24.7041)  # the fleet's bytes, not the old ones
    state = agent.state_dir.load(SITE).deployments[DEPLOYMENT]
    assert (state.active.digest, state.previous.version) == (new_digest, "1.0.0")
    assert result.record.appliedCommit == redefined
    assert agent.reconcile_once().noop or agent.reconcile_once().record.deployments[DEPLOYMENT].reason == "Converged"


def test_a_changed_interface_is_validated_again_at_a_serving_site(fleet, site):
    agent, registry = site
    good = agent.reconcile_once().record.appliedCommit
    blob = agent.state_dir.load(SITE).deployments[DEPLOYMENT].active.digest
    fleet.edit(MODEL_FILE, r"^      dtype: float32$", "      dtype: float64")
    bad = fleet.push("features as float64")

    impact = check_change(str(fleet.clone), good, bad, ArtifactOptions(roots=ROOTS), datetime.now(UTC))
    moving = {s: m.next for d in impact.deployments for m in d.moves for s in m.sites}
    assert moving[SITE] == "deploy (ChecksChanged)" and impact.deployments[0].sites_moving > 0

    fetched = agent.applier.store.path_for(blob).stat()
    result = agent.reconcile_once()
    status = result.record.deployments[DEPLOYMENT]
    assert [(a.kind, a.reason) for a in result.plan.actions] == [("deploy", "ChecksChanged")]
    assert (status.state, status.reason, result.record.state) == ("failure", "ModelInterfaceMismatch", "failure")
    assert result.record.appliedCommit == good  # never the commit it does not serve
    assert forecast(registry) == ("1.0.0", 24.7041)  # keeps serving the version as it validated it
    assert agent.applier.store.path_for(blob).stat().st_mtime_ns == fetched.st_mtime_ns  # no download

    fleet.edit(MODEL_FILE, r"^      dtype: float64$", "      dtype: float32")
    fixed = fleet.push("features as float32 again")
    recovered = agent.reconcile_once()
    assert (recovered.record.state, recovered.record.appliedCommit) == ("success", fixed)
    assert forecast(registry) == ("1.0.0", 24.7041)
