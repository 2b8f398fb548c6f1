"""The agent across restarts and history changes: real git remote, real artifacts, real runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import pytest

from reconciler.agent.loop import Agent
from reconciler.agent.wiring import build_agent
from reconciler.devtools.testing import EXAMPLE, git, start_fleet_remote
from reconciler.errors import Transient
from reconciler.runtime.registry import ModelRegistry
from reconciler.settings import SiteConfig

SITE = "store-boston-01"


def make_agent(fleet, tmp_path, registry=None, site=SITE, **settings) -> Agent:
    config = SiteConfig(site=site, repo=fleet.url, state=tmp_path / "state", interval="1s",
                        trust_keys=[EXAMPLE / "keys" / "demo.pub"], **settings)
    agent = build_agent(config, registry)
    agent.start()
    return agent


@contextmanager
def fake_forge(kind: str, monkeypatch):
    """A fake forge of ``kind`` on loopback and the ``forge`` settings of a site that posts to it."""
    from forge_fake import serve

    monkeypatch.setenv("FLEET_FORGE_TOKEN", "tok-secret-123")
    with serve(kind, "tok-secret-123") as forge:
        yield forge, {"kind": kind, "apiUrl": forge.api_url, "allowHttp": True, "repository": "fleet-org/fleet",
                      "tokenEnv": "FLEET_FORGE_TOKEN"}


def forecast(registry: ModelRegistry) -> tuple[str, float]:
    served = registry.get("demand-forecast")
    out = served.session.run(None, {"features": np.array([[0.8, 1.0, 0.0, 0.0]], dtype=np.float32)})
    return served.version, round(float(out[0][0, 0]), 4)


def test_second_reconcile_is_a_noop_and_writes_no_status(fleet, tmp_path):
    agent = make_agent(fleet, tmp_path)
    first = agent.reconcile_once()
    assert first.record.state == "success" and not first.noop
    tip = git("rev-parse", "refs/reconciler/status/" + SITE, cwd=fleet.bare)
    assert agent.reconcile_once().noop
    assert git("rev-parse", "refs/reconciler/status/" + SITE, cwd=fleet.bare) == tip
    agent.stop()


def test_restart_serves_the_last_good_state_before_reading_the_repo(fleet, tmp_path):
    agent = make_agent(fleet, tmp_path, ModelRegistry())
    agent.reconcile_once()
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    fleet.push("bump")
    agent.reconcile_once()
    agent.stop()

    fleet.server.stop()  # the remote is gone: the restarted site must still serve
    registry = ModelRegistry()
    restarted = make_agent(fleet, tmp_path, registry)
    assert forecast(registry) == ("1.1.0", 23.6278)
    result = restarted.reconcile_once()
    assert isinstance(result.error, Transient) and result.error.reason == "SourceUnreachable"
    assert forecast(registry) == ("1.1.0", 23.6278)
    restarted.stop()


def test_second_agent_on_the_same_state_directory_is_refused(fleet, tmp_path):
    agent = make_agent(fleet, tmp_path)
    with pytest.raises(Transient) as refused:
        make_agent(fleet, tmp_path)
    assert refused.value.reason == "StateLocked"
    agent.stop()


def test_rewritten_history_stalls_until_accepted(fleet, tmp_path):
    registry = ModelRegistry()
    agent = make_agent(fleet, tmp_path, registry)
    base = git("rev-parse", "HEAD", cwd=fleet.clone).strip()
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    fleet.push("bump")
    agent.reconcile_once()
    fleet.reset_to(base)
    (fleet.clone / "NOTES.md").write_text("rewritten\n")
    rewritten = fleet.push("rewrite", force=True)

    stalled = agent.reconcile_once()
    assert (stalled.record.state, stalled.record.reason) == ("error", "HistoryRewritten")
    assert f"--accept-history {rewritten}" in stalled.record.message
    assert forecast(registry)[0] == "1.1.0"
    agent.stop()

    accepting = make_agent(fleet, tmp_path, registry, accept_history=rewritten)
    accepted = accepting.reconcile_once()
    assert accepted.record.state == "success" and accepted.record.appliedCommit == rewritten
    assert forecast(registry) == ("1.0.0", 24.7041)
    accepting.stop()


def test_removed_deployment_stops_being_served(fleet, tmp_path):
    registry = ModelRegistry()
    agent = make_agent(fleet, tmp_path, registry)
    agent.reconcile_once()
    fleet.edit("deployments/demand-forecast.yaml", r"^      tier: store$", "      tier: warehouse")
    fleet.push("retarget")
    result = agent.reconcile_once()
    assert [(a.kind, a.deployment) for a in result.plan.actions] == [("remove", "demand-forecast")]
    assert "demand-forecast" not in result.record.deployments
    assert "demand-forecast" not in registry.deployments()
    assert "demand-forecast" not in agent.state_dir.load(SITE).deployments
    agent.stop()


def test_blobs_nothing_asks_for_are_removed_and_the_previous_version_is_kept(fleet, tmp_path):
    agent = make_agent(fleet, tmp_path)
    agent.reconcile_once()
    first = agent.state_dir.load(SITE).deployments["demand-forecast"].active.digest
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    fleet.push("bump")
    agent.reconcile_once()
    second = agent.state_dir.load(SITE).deployments["demand-forecast"].active.digest
    assert agent.applier.store.has(first) and agent.applier.store.has(second)  # 1.0.0: a rollback needs no download

    fleet.edit("deployments/demand-forecast.yaml", r"^      tier: store$", "      tier: warehouse")
    fleet.push("retarget")
    agent.reconcile_once()
    assert agent.state_dir.load(SITE).deployments == {}  # demand-forecast was this site's only deployment
    assert list(agent.applier.store.blobs.iterdir()) == []
    agent.stop()


def test_unreachable_fleet_repo_makes_the_site_stale_in_a_separate_status_repo(fleet, tmp_path):
    status_repo = tmp_path / "status.git"
    git("init", "-q", "--bare", str(status_repo), cwd=tmp_path)
    registry = ModelRegistry()
    agent = make_agent(fleet, tmp_path, registry, status_repo=str(status_repo), stale_after="1s")
    assert agent.reconcile_once().record.state == "success"
    fleet.server.stop()
    later = agent.last_contact + timedelta(seconds=5)

    result = agent.reconcile_once(now=later)

    assert (result.record.reason, result.record.stale) == ("SourceUnreachable", True)
    assert "no contact with the fleet repo since" in result.record.message
    assert result.record.deployments["demand-forecast"].activeVersion == "1.0.0"
    stored = json.loads(git("show", f"refs/reconciler/status/{SITE}:status.json", cwd=status_repo))
    assert (stored["stale"], stored["state"]) == (True, "error")
    assert forecast(registry)[0] == "1.0.0"
    agent.stop()


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (Debian package openssh-client)")
def test_commit_policy_stalls_on_unsigned_commits_and_accepts_signed_ones(fleet, tmp_path):
    key = tmp_path / "release_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release", "-f", str(key)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"release@example.com {key.with_suffix('.pub').read_text().strip()}\n")
    registry = ModelRegistry()
    agent = make_agent(fleet, tmp_path, registry, commit_policy={"sshAllowedSigners": allowed})

    unsigned = agent.reconcile_once()
    assert (unsigned.record.state, unsigned.record.reason) == ("error", "CommitUnsigned")
    assert registry.deployments() == []

    git("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "--allow-empty",
        "-m", "signed release", cwd=fleet.clone)
    git("push", "-q", "origin", "HEAD:main", cwd=fleet.clone)
    signed = agent.reconcile_once()
    assert signed.record.state == "success"
    assert forecast(registry) == ("1.0.0", 24.7041)
    agent.stop()


def test_status_is_mirrored_to_the_forge_once_per_change(fleet, tmp_path, monkeypatch):
    with fake_forge("gitea", monkeypatch) as (forge, settings):
        agent = make_agent(fleet, tmp_path, forge=settings)
        head = git("rev-parse", "HEAD", cwd=fleet.clone).strip()
        agent.reconcile_once()
        shown = forge.shown(head)
        assert shown[f"reconciler/demand-forecast/{SITE}"].state == "success"
        posts = len(forge.posts())
        agent.reconciled_head = None  # force a full reconcile: same record, nothing new to post
        agent.reconcile_once()
        assert len(forge.posts()) == posts
        agent.stop()


def test_a_site_finishing_its_part_posts_the_combined_status_of_its_wave(tmp_path, monkeypatch):
    progressive = start_fleet_remote(tmp_path / "progressive", progressive=True)
    with fake_forge("github", monkeypatch) as (forge, settings):
        agent = make_agent(progressive, tmp_path / "berlin", site="store-berlin-01", forge=settings)
        agent.reconcile_once()
        head = git("rev-parse", "HEAD", cwd=progressive.clone).strip()
        wave = forge.shown(head)["reconciler/demand-forecast/wave-pilot"]
        assert (wave.state, wave.description) == ("pending", "1.0.0: 1/2 healthy, 1 pending")  # mumbai has not reported
        agent.stop()
    progressive.server.stop()


def test_agents_that_may_not_push_gate_on_the_forge_statuses(tmp_path, monkeypatch):
    progressive = start_fleet_remote(tmp_path / "progressive", progressive=True)
    with fake_forge("gitlab", monkeypatch) as (_, settings):
        pilot, later = (make_agent(progressive, tmp_path / site, site=site, gate_source="forge", forge=settings)
                        for site in ("store-berlin-01", "store-boston-01"))
        assert pilot.reconcile_once().record.deployments["demand-forecast"].state == "success"
        waiting = later.reconcile_once().record.deployments["demand-forecast"]
        assert (waiting.state, waiting.reason) == ("pending", "WaitingForEarlierWaves")
        assert "1/2" in waiting.message  # berlin healthy, read from the forge; mumbai silent
        assert "refs/reconciler/status" not in git("ls-remote", progressive.url, cwd=tmp_path)
        pilot.stop()
        later.stop()
    progressive.server.stop()


def test_the_push_webhook_wakes_a_slow_polling_agent(fleet, tmp_path):
    import httpx

    from reconciler.runtime.hooks import HOOK_PATH, hook_routes
    from reconciler.runtime.server import RuntimeServer, build_app

    wake, stop = threading.Event(), threading.Event()
    registry = ModelRegistry()
    server = RuntimeServer(build_app(registry, site=SITE, extra_routes=hook_routes(wake)))
    server.start()
    config = SiteConfig(site=SITE, repo=fleet.url, state=tmp_path / "state", interval="10m",
                        trust_keys=[EXAMPLE / "keys" / "demo.pub"])
    agent = build_agent(config, registry, wake=wake)
    agent.start()
    loop = threading.Thread(target=agent.run, args=(stop,))
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while "demand-forecast" not in registry.deployments() and time.monotonic() < deadline:
            time.sleep(0.1)
        fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
        fleet.push("bump")
        pushed = time.monotonic()
        reply = httpx.post(f"http://127.0.0.1:{server.port}{HOOK_PATH}", json={"ref": "refs/heads/main"})
        assert reply.status_code == 202
        while registry.get("demand-forecast").version != "1.1.0" and time.monotonic() < pushed + 60:
            time.sleep(0.1)
        assert registry.get("demand-forecast").version == "1.1.0"  # long before the 10-minute poll
    finally:
        stop.set()
        wake.set()
        loop.join(timeout=30)
        server.stop()
        agent.stop()
