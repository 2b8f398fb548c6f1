"""A site's fleet cache is a partial clone: a real agent, the example fleet on the real git
smart-HTTP server, and the cache's objects counted afterwards without fetching anything."""

from __future__ import annotations

import subprocess

from reconciler.agent.loop import Agent
from reconciler.agent.wiring import build_agent
from reconciler.devtools.githttp import GitHttpServer
from reconciler.devtools.testing import EXAMPLE, git
from reconciler.settings import SiteConfig

STORE = "store-boston-01"  # deploys demand-forecast 1.0.0 (and fraud-score, where its flag is on)


def agent_for(fleet, state, site=STORE, url=None) -> Agent:
    agent = build_agent(SiteConfig(site=site, repo=url or fleet.url, state=state, interval="1s",
                             trust_keys=[EXAMPLE / "keys" / "demo.pub"]), None)
    agent.start()
    return agent


def model_blobs(fleet, commit: str) -> dict[str, str]:
    """Every file under models/ in the commit, by path: its blob id."""
    listing = git("ls-tree", "-r", commit, "--", "models", cwd=fleet.bare)
    return {line.split("\t")[1]: line.split()[2] for line in listing.splitlines()}


def held_blobs(cache) -> set[str]:
    """The blob ids the cache holds (rev-list's --missing keeps git from fetching the others)."""
    listing = subprocess.run(["git", "--git-dir", str(cache), "rev-list", "--objects", "--all", "--missing=print"],
                             check=True, capture_output=True, text=True).stdout
    missing = {line[1:] for line in listing.splitlines() if line.startswith("?")}
    objects = subprocess.run(["git", "--git-dir", str(cache), "cat-file", "--batch-all-objects",
                              "--batch-check=%(objectname) %(objecttype)"],
                             check=True, capture_output=True, text=True).stdout
    blobs = {line.split()[0] for line in objects.splitlines() if line.endswith(" blob")}
    assert not blobs & missing
    return blobs


def test_a_site_fetches_the_blobs_of_what_it_deploys_and_no_other_model(fleet, tmp_path):
    agent = agent_for(fleet, tmp_path / "state")
    result = agent.reconcile_once()
    agent.stop()

    assert result.error is None and result.record.deployments["demand-forecast"].state == "success"
    deployed = {f"models/{target.model}/{target.version}/" for target in result.plan.converged}
    deployed |= {f"models/{a.target.model}/{a.target.version}/" for a in result.plan.actions if a.target}
    assert "models/demand-forecast/1.0.0/" in deployed
    held = held_blobs(tmp_path / "state" / "cache" / "fleet.git")
    for path, blob in model_blobs(fleet, result.head).items():
        wanted = path.endswith("model.yaml") or any(path.startswith(version) for version in deployed)
        assert (blob in held) == wanted, path
    assert not (tmp_path / "state" / "cache" / "tree").exists()  # nothing extracted


def test_two_sites_each_fetch_only_their_own_models(fleet, tmp_path):
    """A factory deploys defect-detector, a store does not; neither fetches the other's model."""
    store, factory = agent_for(fleet, tmp_path / "store"), agent_for(fleet, tmp_path / "factory", "factory-pune-01")
    head = store.reconcile_once().head
    factory.reconcile_once()
    store.stop()
    factory.stop()

    models = model_blobs(fleet, head)
    store_held = held_blobs(tmp_path / "store" / "cache" / "fleet.git")
    factory_held = held_blobs(tmp_path / "factory" / "cache" / "fleet.git")
    detector = {blob for path, blob in models.items() if path.startswith("models/defect-detector/") and
                not path.endswith("model.yaml")}
    forecast = models["models/demand-forecast/1.0.0/model.onnx"]
    assert forecast in store_held and not detector & store_held
    assert detector & factory_held and forecast not in factory_held


def test_a_site_upgraded_from_whole_tree_checkouts_drops_its_old_checkout(fleet, tmp_path):
    old_checkout = tmp_path / "state" / "cache" / "tree" / "models"
    old_checkout.mkdir(parents=True)
    (old_checkout / "weights.onnx").write_bytes(b"\0" * 1024)

    agent_for(fleet, tmp_path / "state").stop()

    assert not (tmp_path / "state" / "cache" / "tree").exists()


def test_a_server_that_refuses_filters_sends_everything_and_the_site_deploys(fleet, tmp_path):
    fleet.server.stop()
    with GitHttpServer(fleet.server.root, allow_filter=False) as refusing:
        agent = agent_for(fleet, tmp_path / "state", url=refusing.url("fleet"))
        result = agent.reconcile_once()
        agent.stop()

    assert result.error is None and result.record.deployments["demand-forecast"].state == "success"
    held = held_blobs(tmp_path / "state" / "cache" / "fleet.git")
    assert set(model_blobs(fleet, result.head).values()) <= held  # a full fetch, as before partial clones


def test_an_artifact_behind_a_symlink_out_of_the_tree_is_refused_and_the_site_stays(fleet, tmp_path):
    agent = agent_for(fleet, tmp_path / "state")
    assert agent.reconcile_once().record.deployments["demand-forecast"].activeVersion == "1.0.0"
    artifact = fleet.clone / "models/demand-forecast/1.1.0/model.onnx"
    artifact.unlink()
    artifact.symlink_to("/etc/passwd")
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    fleet.push("1.1.0, its model a link out of the repository")

    status = agent.reconcile_once().record.deployments["demand-forecast"]
    agent.stop()

    assert (status.state, status.reason) == ("failure", "UnsafeRepoPath")
    assert "models/demand-forecast/1.1.0/model.onnx" in status.message
    assert status.activeVersion == "1.0.0"
