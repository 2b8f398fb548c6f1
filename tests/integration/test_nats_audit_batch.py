"""Batched audit pushes in NATS mode, against a real nats-server and a real git smart-HTTP server:
each state change is its own commit, made at once in the site's cache and pushed with the others in
one push when the batch falls due; a site killed with commits queued loses none (they live in its
cache repository), pushes them a spread after it starts again, and later changes follow on top."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent.nats_status import NatsStatusChannel
from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git
from reconciler.devtools.natsserver import NatsServer
from reconciler.gitdoor.source import GitSource
from reconciler.settings import NatsSettings
from reconciler.status.gitref import StatusRefs, status_ref
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.nats_summaries import NatsSummaries
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SITE = "store-1"
SPREAD = 3600.0


def record(minute: int, state: str, active: str, message: str = "") -> StatusRecord:
    deployment = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, wave="pilot",
                                  rollout="r1", reason="Rolling", message=message, since=T0)
    return StatusRecord(site=SITE, state=state, reason="Rolling", message=message, deployments={"d": deployment},
                        agentVersion="t", writtenAt=T0 + timedelta(minutes=minute))


@pytest.fixture
def servers(tmp_path):
    bare = init_bare_repo(tmp_path / "srv", "status")
    run_git(bare, "config", "http.receivepack", "true")
    with NatsServer(tmp_path / "nats") as nats, GitHttpServer(tmp_path / "srv") as git:
        yield nats, git, bare


def site_channel(nats: NatsServer, git: GitHttpServer, cache, seed: int) -> NatsStatusChannel:
    channel = NatsChannel(NatsSettings(servers=[nats.url], timeout=10), SITE)
    audit = StatusRefs(GitSource(git.url("status"), "main", cache))
    return NatsStatusChannel(channel, NatsSummaries(channel), audit, audit_spread=SPREAD, rng=random.Random(seed))


def audited(git: GitHttpServer, cache) -> list[StatusRecord]:
    refs = StatusRefs(GitSource(git.url("status"), "main", cache))
    try:
        return [entry for _, entry in refs.history(SITE)]
    finally:
        refs.close()


def test_queued_audit_commits_land_in_one_push_and_survive_a_restart(servers, tmp_path):
    nats, git, bare = servers
    cache = tmp_path / "site-cache"
    changes = [record(0, "progressing", "1.0.0"), record(1, "progressing", "1.0.0", message="baking"),
               record(2, "success", "1.1.0"), record(3, "failure", "1.1.0")]
    first = site_channel(nats, git, cache, seed=1)
    for change in changes:
        first.publish(change, [], {})
    due = first.flush_audit(T0 + timedelta(minutes=3))
    assert due is not None and due > T0 + timedelta(minutes=3)
    assert run_git(bare, "for-each-ref") == ""  # queued, not pushed
    # killed: its connections go, nothing is flushed
    first.nats.close()
    first.audit.close()

    second = site_channel(nats, git, cache, seed=2)
    restarted = T0 + timedelta(hours=5)
    due = second.flush_audit(restarted)
    assert restarted <= due <= restarted + timedelta(seconds=SPREAD) and run_git(bare, "for-each-ref") == ""
    requests = git.requests
    assert second.flush_audit(due) is None
    assert git.requests - requests == 2  # one push: the ref advertisement and receive-pack
    expected = [changes[0], changes[2], changes[3]]  # the message-only change is no audit commit
    assert audited(git, tmp_path / "auditor-1") == expected

    later = record(400, "success", "1.1.0")
    second.publish(later, [], {})
    second.close()  # shutdown pushes what waits
    assert audited(git, tmp_path / "auditor-2") == expected + [later]
    assert run_git(bare, "rev-list", "--count", status_ref(SITE)) == "4"
